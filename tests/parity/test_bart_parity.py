"""Parity with Hugging Face transformers' BART in fp32: logits, loss and states with padded sources and
targets, training steps, checkpoints both ways, and generation (greedy, beams) token for token."""
import json

import pytest
import torch
from safetensors import safe_open

transformers = pytest.importorskip("transformers")

from plmkit import AutoModelForSeq2SeqLM, BartConfig, BartForConditionalGeneration, BartModel  # noqa: E402
from seq2seq_checks import (assert_agree_on_unpadded_sources, TINY, TOL, assert_exact_checkpoint_keys, assert_models_agree,  # noqa: E402
                            assert_generates_alike, assert_trained_alike, labels_of, padded, roughen,
                            strict_hf_load)

PAD, EOS = 1, 2


def hf_bart(tmp_path, cls="BartForConditionalGeneration", **overrides):
    torch.manual_seed(0)
    hf = roughen(getattr(transformers, cls)(transformers.BartConfig(**{**TINY, **overrides})), eos=EOS)
    hf.save_pretrained(tmp_path)
    return hf


def test_logits_loss_and_states_match_with_padded_sources_and_targets(tmp_path, caplog):
    hf = hf_bart(tmp_path)
    model = BartForConditionalGeneration.from_pretrained(tmp_path)
    assert assert_models_agree(model, hf, PAD, hidden_states=True) < 1e-5
    assert_agree_on_unpadded_sources(model, hf, PAD)
    ids, mask = padded([11, 7, 4], 99, PAD)
    # decoder inputs given with their padding mask (Hugging Face's meaning: padded keys hidden)
    dec, dec_mask = padded([6, 3, 5], 99, PAD, seed=3)
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dec_mask)
        ours = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dec_mask)
    torch.testing.assert_close(ours.logits[dec_mask.bool()], theirs.logits[dec_mask.bool()], **TOL)


def test_base_model_matches(tmp_path):
    hf = hf_bart(tmp_path, "BartModel")
    model = BartModel.from_pretrained(tmp_path)
    ids, mask = padded([9, 6], 99, PAD)
    with torch.no_grad():  # no decoder inputs: the source shifted right (denoising)
        theirs, ours = hf(input_ids=ids, attention_mask=mask), model(input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(ours.encoder_last_hidden_state[mask.bool()],
                               theirs.encoder_last_hidden_state[mask.bool()], **TOL)
    torch.testing.assert_close(ours.last_hidden_state, theirs.last_hidden_state, **TOL)


def test_checkpoints_move_both_ways(tmp_path, caplog):
    hf_bart(tmp_path / "hf")
    with safe_open(tmp_path / "hf" / "model.safetensors", "pt") as f:
        hf_state = {k: f.get_tensor(k) for k in f.keys()}
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "hf")
    assert type(model) is BartForConditionalGeneration
    assert_exact_checkpoint_keys(model, hf_state, caplog)
    model.save_pretrained(tmp_path / "ours")
    with safe_open(tmp_path / "ours" / "model.safetensors", "pt") as f:
        saved = set(f.keys())
    assert saved == set(hf_state)  # model.shared.weight once, final_logits_bias, no tied copies
    back = transformers.BartForConditionalGeneration.from_pretrained(tmp_path / "ours").eval()
    strict_hf_load(back, model)
    assert_models_agree(model, back, PAD, sources=(10, 3), targets=(6, 4))
    again = BartForConditionalGeneration.from_pretrained(tmp_path / "ours")
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    d = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert (d["model_type"], d["is_encoder_decoder"], d["decoder_start_token_id"]) == ("bart", True, 2)


def test_training_steps_match_hf(tmp_path):
    hf = hf_bart(tmp_path, dropout=0.0)
    model = BartForConditionalGeneration.from_pretrained(tmp_path)
    ids, mask = padded([11, 7, 4], 99, PAD)
    batch = dict(input_ids=ids, attention_mask=mask, labels=labels_of([8, 5, 2], 99))
    assert_trained_alike(model, hf, batch)
    assert_trained_alike(model, hf, batch, steps=1, label_smoothing=0.1)


@pytest.mark.parametrize("settings", [dict(), dict(num_beams=4, no_repeat_ngram_size=2, length_penalty=0.8),
                                      dict(num_beams=4, early_stopping=True, num_return_sequences=2),
                                      dict(num_beams=3, early_stopping="never", length_penalty=1.5, min_length=4)])
def test_generation_matches_hf(tmp_path, settings):
    """Greedy and beam search on a batch of sources of different lengths, the same tokens as Hugging
    Face's generate (which starts the decoder with </s> and forces </s> at max length, as here)."""
    hf = hf_bart(tmp_path)
    model = BartForConditionalGeneration.from_pretrained(tmp_path)
    ids, mask = padded([11, 7, 4], 99, PAD, seed=4)
    got = assert_generates_alike(model, hf, ids, mask, 12, 2, **settings)  # (BART's decoder starts with </s>)
    assert (got == EOS)[:, 1:].any(1).sum() >= 2  # some ended early


def test_config_keys_and_presets():
    assert BartConfig.from_preset("bart-base").d_model == 768
    assert BartConfig.from_preset("bart-tiny", vocab_size=300).vocab_size == 300
    from plmkit.errors import ConfigError
    with pytest.raises(ConfigError, match="tie_word_embeddings=false"):
        BartConfig(tie_word_embeddings=False)
    with pytest.raises(ConfigError, match="is_encoder_decoder"):
        BartConfig.from_dict({"is_encoder_decoder": False})


def test_decoding_settings_of_an_older_config_json_are_saved_with_the_token_ids(tmp_path):
    """config.json's num_beams ... (a 4.x-era directory, no generation_config.json) move to the
    generation_config.json plmkit writes with config.json's special ids, as transformers'
    from_model_config: transformers reads that file alone, and generates from it as from the original."""
    hf_bart(tmp_path / "old")
    (tmp_path / "old" / "generation_config.json").unlink()
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    (tmp_path / "old" / "config.json").write_text(json.dumps({**config, "num_beams": 2, "max_length": 12,
                                                               "no_repeat_ngram_size": 3}))
    BartForConditionalGeneration.from_pretrained(tmp_path / "old").save_pretrained(tmp_path / "ours")
    ids, mask = padded([9, 6], 99, PAD)
    original, resaved = (transformers.BartForConditionalGeneration.from_pretrained(tmp_path / d).eval()
                         for d in ("old", "ours"))
    assert torch.equal(resaved.generate(ids, attention_mask=mask), original.generate(ids, attention_mask=mask))


def test_an_eos_beyond_the_vocabulary_loads_and_is_saved_back_as_read(tmp_path, caplog):
    """eos and forced_eos 150 in a 99-token vocabulary: transformers loads it (its generate then fails forcing
    that id); plmkit loads it too, with a warning, gives the same logits, generates without the id, and saves
    the config as read."""
    hf = hf_bart(tmp_path / "hf", eos_token_id=150, forced_eos_token_id=150, bos_token_id=120)
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "hf")
    assert "eos_token_id=150, forced_eos_token_id=150 lie outside the 99-token vocabulary" in caplog.text
    assert assert_models_agree(model, hf, PAD) < 1e-5
    ids, mask = padded([6, 4], 99, PAD, seed=4)
    assert model.generate(ids, attention_mask=mask, max_new_tokens=5).shape == (2, 6)  # none ends early
    model.save_pretrained(tmp_path / "ours")
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"], config["forced_eos_token_id"]) == (120, 150, 150)
    again = transformers.AutoConfig.from_pretrained(tmp_path / "ours")
    assert (again.eos_token_id, again.forced_eos_token_id) == (150, 150)
