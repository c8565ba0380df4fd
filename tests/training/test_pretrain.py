"""plmkit.training.pretrain: how a fresh model is initialised before pretraining."""
import math

import numpy as np
import pytest
import torch

from plmkit.data.masking import PretrainingCollator
from plmkit.data.shards import build_token_shards
from plmkit.errors import ConfigError
from plmkit.training.pretrain import PretrainConfig, PretrainDataConfig, build_datasets, build_model, initialise
from plmkit.tokenization import Tokenizer

TEXT = ["the cat sat on the mat .", "a dog ran in the park and the dog barked .", "the sun is hot ."] * 20


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("init")
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(TEXT) + "\n")
    tokenizer = Tokenizer.train_wordpiece(TEXT, 60)
    shards = build_token_shards([corpus], tokenizer, root / "cache", log=lambda line: None)
    data = PretrainDataConfig(corpus=[str(corpus)], seq_len=32, batch_size=8)
    return tokenizer, shards, data


def model_for(setup, **init):
    tokenizer, shards, data = setup
    model_cfg = {**PretrainConfig().model, "preset": "bert-tiny", **init}
    torch.manual_seed(0)
    model = build_model(model_cfg, tokenizer, data)
    initialise(model, model_cfg, shards, log=lambda line: None)
    return model


def test_unigram_bias_starts_at_the_corpus_word_frequencies(setup):
    tokenizer, shards, data = setup
    model = model_for(setup)
    bias = model.mlm.decoder.bias.detach()
    counts = np.bincount(shards.tokens, minlength=len(tokenizer)) + 1.0
    torch.testing.assert_close(bias, torch.log(torch.from_numpy(counts / counts.sum())).float())
    # the untrained model's MLM loss is about the unigram entropy, far below a uniform guess
    train, _ = build_datasets(shards, tokenizer, data, seed=0)
    batch = PretrainingCollator(tokenizer, 0.15, nsp=True)([train[i] for i in range(8)])
    with torch.no_grad():
        out = model(**{k: v for k, v in batch.items() if k != "next_sentence_label"})
    masked = batch["labels"][batch["labels"] != -100]
    unigram = -torch.log_softmax(bias, 0)[masked].mean()
    assert abs(float(out.loss) - float(unigram)) < 0.5
    plain = model_for(setup, unigram_bias_init=False)
    assert torch.count_nonzero(plain.mlm.decoder.bias) == 0
    assert float(unigram) < math.log(len(tokenizer)) - 0.5


def test_sinusoidal_positions_keep_the_embedding_scale(setup):
    table = model_for(setup, sinusoidal_position_init=True).bert.embeddings.position.weight.detach()
    assert table.std().item() == pytest.approx(0.02, rel=0.1)
    sims = table @ table[10]  # (P,) nearer positions are more alike
    assert sims[10] > sims[11] > sims[14] > sims[30]
    assert model_for(setup).bert.embeddings.position.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_init_keys_are_validated_with_the_model_section():
    PretrainConfig.from_dict({"model": {"sinusoidal_position_init": True}, "train": {"max_steps": 1}})
    with pytest.raises(ConfigError, match="sinusoidal_positions"):
        PretrainConfig.from_dict({"model": {"sinusoidal_positions": True}, "train": {"max_steps": 1}})
