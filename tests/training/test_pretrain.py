"""plmkit.training.pretrain (BERT pretraining): how a fresh model is initialised, its tokenizer, its checks."""
import math

import numpy as np
import pytest
import torch

from plmkit.data.masking import PretrainingCollator
from plmkit.data.shards import build_token_shards
from plmkit.errors import ConfigError
from plmkit.recipes.pretrain import PretrainData, PretrainModel, PretrainRun, run
from plmkit.training.pretrain import _tokenizer, build_datasets, build_model, initialise
from plmkit.tokenization import Tokenizer

TEXT = ["the cat sat on the mat .", "a dog ran in the park and the dog barked .", "the sun is hot ."] * 20


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("init")
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(TEXT) + "\n")
    tokenizer = Tokenizer.train_wordpiece(TEXT, 60)
    shards = build_token_shards([corpus], tokenizer, root / "cache")
    data = PretrainData(corpus=[str(corpus)], seq_len=32, batch_size=8)
    return tokenizer, shards, data


def model_for(setup, **init):
    tokenizer, shards, data = setup
    model_cfg = PretrainModel(preset="bert-tiny", **init)
    torch.manual_seed(0)
    model = build_model(model_cfg, tokenizer, data)
    initialise(model, model_cfg, shards)
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
    PretrainRun.build({"model": {"sinusoidal_position_init": True}, "train": {"max_steps": 1}})
    with pytest.raises(ConfigError, match="sinusoidal_positions.*did you mean 'sinusoidal_position_init'"):
        PretrainRun.build({"model": {"sinusoidal_positions": True}, "train": {"max_steps": 1}})


def test_run_file_reads_exponent_floats_as_numbers(tmp_path):
    # PyYAML (YAML 1.1) reads `5e-4` as the string '5e-4'; a run file must read it as the number people mean
    from plmkit.training.run_config import read_run_file
    run_file = tmp_path / "run.yaml"
    run_file.write_text("train:\n  lr: 5e-4\n  max_steps: 2\n  eps: 1E-8\nmodel:\n  layer_norm_eps: 1e-12\n"
                        "data:\n  seq_len: 64\n  corpus: [1e3.txt]\n")
    values = read_run_file(run_file)
    assert values["train"] == {"lr": 5e-4, "max_steps": 2, "eps": 1e-8}
    assert values["model"]["layer_norm_eps"] == 1e-12 and values["data"]["seq_len"] == 64
    assert values["data"]["corpus"] == ["1e3.txt"]
    cfg = PretrainRun.build(values)
    assert cfg.train.lr == 5e-4 and cfg.model.config["layer_norm_eps"] == 1e-12


def test_a_tokenizer_without_bert_special_tokens_is_a_clear_error(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(TEXT) + "\n")
    Tokenizer.train_bpe(TEXT, 300).save_pretrained(tmp_path / "bpe")  # GPT-2 style: no [CLS]/[SEP]/[MASK]/[PAD]
    cfg = PretrainRun.build({"out": str(tmp_path / "run"), "model": {"preset": "bert-tiny"},
                                    "data": {"corpus": [str(corpus)], "tokenizer": str(tmp_path / "bpe"),
                                             "cache_dir": str(tmp_path / "cache")},
                                    "train": {"max_steps": 1, "progress_bar": False}})
    with pytest.raises(ConfigError, match=r"bpe.*\[CLS\].*\[SEP\].*\[MASK\].*\[PAD\]"):
        run(cfg)
    assert not (tmp_path / "cache").exists()  # refused before tokenizing the corpus


def test_tokenizer_settings_that_cannot_apply_are_named_in_one_line(tmp_path, caplog):
    tokenizer = Tokenizer.train_wordpiece(TEXT + [" ".join(f"w{i}" for i in range(300))], 300)
    tokenizer.save_pretrained(tmp_path / "tok")
    size = len(tokenizer)
    assert 100 <= size < 300

    def ignored(**data):
        caplog.clear()
        with caplog.at_level("INFO", logger="plmkit"):
            _tokenizer(PretrainData(**data), tmp_path / "out")
        return [line for line in caplog.messages if "ignored" in line]

    given = str(tmp_path / "tok")
    assert ignored(tokenizer=given) == [] and ignored(tokenizer=given, vocab_size=size, lowercase=True) == []
    [line] = ignored(tokenizer=given, vocab_size=500)
    assert line.startswith("vocab_size 500 is ignored: the tokenizer in") and f"({size} tokens, lowercase)" in line
    [line] = ignored(tokenizer=given, vocab_size=500, lowercase=False)
    assert line.startswith("vocab_size 500 and lowercase false are ignored")
    tokenizer.save_pretrained(tmp_path / "out" / "tokenizer")  # a rerun reuses the tokenizer trained in OUT
    [line] = ignored(vocab_size=500)
    assert "trained earlier" in line and "--overwrite (or another --out) starts one that trains another" in line
    assert ignored() == []
