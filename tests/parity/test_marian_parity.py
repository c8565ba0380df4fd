"""Parity with Hugging Face transformers' Marian in fp32: logits and loss with padded sources and targets
(shared and separate target vocabularies), the unsaved sinusoids, checkpoints both ways, generation
token for token, and the decoding defaults an Opus-MT-style checkpoint carries."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

transformers = pytest.importorskip("transformers")

from plmkit import AutoModelForSeq2SeqLM, MarianConfig, MarianMTModel  # noqa: E402
from plmkit.generation import PACK_FROM_STEPS  # noqa: E402
from seq2seq_checks import (assert_agree_on_unpadded_sources, TINY, assert_exact_checkpoint_keys, assert_models_agree, assert_same_outputs,  # noqa: E402
                            assert_generates_alike, assert_trained_alike, labels_of, padded, roughen,
                            strict_hf_load)

PAD, EOS = 98, 0
OPUS = dict(TINY, pad_token_id=PAD, decoder_start_token_id=PAD, eos_token_id=EOS, forced_eos_token_id=EOS,
            activation_function="swish", scale_embedding=True)
OWN_TARGET_VOCAB = dict(decoder_vocab_size=120, share_encoder_decoder_embeddings=False)
FIXTURES = Path(__file__).parent.parent / "fixtures" / "hf_configs"


def hf_marian(tmp_path, **overrides):
    torch.manual_seed(0)
    hf = roughen(transformers.MarianMTModel(transformers.MarianConfig(**{**OPUS, **overrides})), eos=EOS)
    hf.save_pretrained(tmp_path)
    return hf


@pytest.mark.parametrize("vocab", ["shared", "own target vocabulary"])
def test_logits_and_loss_match_with_padded_sources_and_targets(tmp_path, vocab):
    hf = hf_marian(tmp_path, **(OWN_TARGET_VOCAB if vocab != "shared" else {}))
    model = MarianMTModel.from_pretrained(tmp_path)
    assert assert_models_agree(model, hf, PAD, vocab=97) < 1e-5
    assert_agree_on_unpadded_sources(model, hf, PAD, vocab=97)
    assert model.lm_head.out_features == (120 if vocab != "shared" else 99)


def test_sinusoids_are_rebuilt_not_saved_and_old_checkpoints_with_them_load(tmp_path, caplog):
    hf = hf_marian(tmp_path / "hf")
    torch.testing.assert_close(MarianMTModel(MarianConfig(**OPUS)).model.encoder.embeddings.sinusoids,
                               hf.model.encoder.embed_positions.weight, atol=0, rtol=0)  # [sin | cos], bit for bit
    with safe_open(tmp_path / "hf" / "model.safetensors", "pt") as f:
        hf_state = {k: f.get_tensor(k) for k in f.keys()}
    assert not any("embed_positions" in k for k in hf_state)
    model = MarianMTModel.from_pretrained(tmp_path / "hf")
    assert_exact_checkpoint_keys(model, hf_state, caplog)
    old = tmp_path / "old"  # what older releases saved: the sinusoid tables too
    shutil.copytree(tmp_path / "hf", old)
    table = hf.model.encoder.embed_positions.weight.detach()
    tables = {f"model.{side}.embed_positions.weight": table.clone() for side in ("encoder", "decoder")}
    save_file({**hf_state, **tables}, old / "model.safetensors", metadata={"format": "pt"})
    ids, mask = padded([9, 5], 97, PAD)
    labels = labels_of([4, 6], 97)
    with torch.no_grad():
        assert_same_outputs(MarianMTModel.from_pretrained(old)(input_ids=ids, attention_mask=mask, labels=labels),
                            hf(input_ids=ids, attention_mask=mask, labels=labels), mask, labels)


@pytest.mark.parametrize("vocab", ["shared", "own target vocabulary"])
def test_our_checkpoint_loads_in_hf(tmp_path, vocab):
    config = MarianConfig(**OPUS, **(OWN_TARGET_VOCAB if vocab != "shared" else {}))
    torch.manual_seed(0)
    model = MarianMTModel(config).eval()
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert not any("embed_positions" in k for k in keys)
    assert ("model.shared.weight" in keys) == (vocab == "shared")
    hf = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    assert type(hf) is MarianMTModel
    back = transformers.MarianMTModel.from_pretrained(tmp_path).eval()
    strict_hf_load(back, model, missing_ok="embed_positions")
    assert_models_agree(model, back, PAD, vocab=97, sources=(10, 3), targets=(6, 4))


def test_training_steps_match_hf(tmp_path):
    hf = hf_marian(tmp_path, dropout=0.0)
    model = MarianMTModel.from_pretrained(tmp_path)
    ids, mask = padded([11, 7, 4], 97, PAD)
    assert_trained_alike(model, hf, dict(input_ids=ids, attention_mask=mask, labels=labels_of([8, 5, 2], 97)))


@pytest.mark.parametrize("settings", [dict(), dict(num_beams=4, no_repeat_ngram_size=3, length_penalty=0.6),
                                      dict(bad_words_ids=[[5], [7, 8]], min_new_tokens=3, no_repeat_ngram_size=1)])
def test_generation_matches_hf(tmp_path, settings):
    hf = hf_marian(tmp_path)
    model = MarianMTModel.from_pretrained(tmp_path)
    ids, mask = padded([12, 6, 3, 9], 97, PAD, seed=5)
    assert_generates_alike(model, hf, ids, mask, 12, PAD, **settings)  # Marian's decoder starts with the pad token


def test_long_beam_search_matches_hf_with_packed_weights(tmp_path):
    """A call long enough that generate packs its per-step weights for oneDNN (plmkit.nn.decoding)."""
    hf = hf_marian(tmp_path)
    model = MarianMTModel.from_pretrained(tmp_path)
    ids, mask = padded([12, 6, 3], 97, PAD, seed=7)
    assert_generates_alike(model, hf, ids, mask, PACK_FROM_STEPS, PAD, num_beams=4)


def test_an_opus_mt_style_checkpoint_decodes_with_its_own_defaults(tmp_path):
    """An older Opus-MT config.json keeps num_beams, max_length and bad_words_ids ([[pad]]): generate()
    without settings uses them, as Hugging Face does."""
    hf_marian(tmp_path / "new")
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    shutil.copy(tmp_path / "new" / "model.safetensors", legacy)
    shutil.copy(FIXTURES / "marian-legacy-4.x.json", legacy / "config.json")
    hf = transformers.MarianMTModel.from_pretrained(legacy, dtype=torch.float32).eval()  # config says fp16
    assert next(MarianMTModel.from_pretrained(legacy).parameters()).dtype == torch.float16  # as in transformers 5
    model = MarianMTModel.from_pretrained(legacy, dtype=torch.float32)
    assert model.generation_config == {"bad_words_ids": [[98]], "max_length": 64, "num_beams": 4,  # and the ids
                                       "bos_token_id": 0, "decoder_start_token_id": 98, "eos_token_id": 0,
                                       "forced_eos_token_id": 0, "pad_token_id": 98}
    ids, mask = padded([12, 6, 3], 97, PAD, seed=6)
    torch.testing.assert_close(model(input_ids=ids, attention_mask=mask, labels=labels_of([5, 5, 5], 97)).logits,
                               hf(input_ids=ids, attention_mask=mask, labels=labels_of([5, 5, 5], 97)).logits)
    assert torch.equal(model.generate(ids, attention_mask=mask), hf.generate(ids, attention_mask=mask))
    model.save_pretrained(tmp_path / "ours")  # the defaults move to generation_config.json, as in HF 5.x
    assert json.loads((tmp_path / "ours" / "generation_config.json").read_text())["num_beams"] == 4
    assert MarianMTModel.from_pretrained(tmp_path / "ours").generation_config == model.generation_config


@pytest.mark.parametrize("tied", [True, False])
def test_resizing_the_source_vocabulary_leaves_an_own_target_vocabulary_of_the_same_size_as_hf(tmp_path, tied):
    """share_encoder_decoder_embeddings=false with decoder_vocab_size = vocab_size: resizing grows the source
    embedding only; the LM head stays the decoder embedding's (tied) or its own, 99 rows, as in Hugging Face."""
    hf = hf_marian(tmp_path / "hf", decoder_vocab_size=99, share_encoder_decoder_embeddings=False,
                   tie_word_embeddings=tied)
    model = MarianMTModel.from_pretrained(tmp_path / "hf")
    hf.resize_token_embeddings(120, mean_resizing=False)
    model.resize_token_embeddings(120)
    target = model.model.decoder.embeddings.word
    assert (model.lm_head.weight is target.weight) == tied
    assert model.lm_head.weight.shape == hf.lm_head.weight.shape == (99, 32)
    assert model.final_logits_bias.shape == hf.final_logits_bias.shape == (1, 99)
    assert (model.config.vocab_size, model.config.decoder_vocab_size) == (hf.config.vocab_size,
                                                                          hf.config.decoder_vocab_size) == (120, 99)
    with torch.no_grad():  # the new source rows alike, so that a source may hold the new ids
        model.model.encoder.embeddings.word.weight[99:] = hf.model.encoder.embed_tokens.weight[99:]
    ids, mask = padded([9, 5], 120, PAD)
    labels = labels_of([4, 6], 97)
    model.save_pretrained(tmp_path / "ours")
    for ours in (model, MarianMTModel.from_pretrained(tmp_path / "ours")):
        with torch.no_grad():
            assert_same_outputs(ours(input_ids=ids, attention_mask=mask, labels=labels),
                                hf(input_ids=ids, attention_mask=mask, labels=labels), mask, labels)
