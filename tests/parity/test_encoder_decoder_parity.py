"""Parity with Hugging Face transformers' EncoderDecoderModel (BERT-to-BERT) in fp32: logits and loss
with padded sources and targets, training steps, checkpoints both ways (config.json with the nested
configs), generation token for token, and the warm start from the real all-MiniLM-L6-v2 weights."""
import json

import pytest
import torch
from safetensors import safe_open

transformers = pytest.importorskip("transformers")

from plmkit import AutoModelForSeq2SeqLM, BertLMHeadModel, EncoderDecoderConfig, EncoderDecoderModel  # noqa: E402
from seq2seq_checks import (assert_agree_on_unpadded_sources, assert_exact_checkpoint_keys, assert_models_agree, assert_same_outputs,  # noqa: E402
                            assert_generates_alike, assert_trained_alike, labels_of, padded, roughen,
                            strict_hf_load)

BERT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64)
PAD, START, EOS = 0, 2, 3
pytestmark = pytest.mark.filterwarnings("ignore:Version v4.12.0 introduces:FutureWarning")  # HF's, on labels


def hf_bert2bert(tmp_path, decoder_width: int = 32, **overrides):
    torch.manual_seed(0)
    halves = transformers.BertConfig(**{**BERT, **overrides}), transformers.BertConfig(
        **{**BERT, **overrides, "hidden_size": decoder_width})
    config = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(
        *halves, decoder_start_token_id=START, pad_token_id=PAD, eos_token_id=EOS)
    hf = roughen(transformers.EncoderDecoderModel(config), skip="@none")
    with torch.no_grad():
        hf.decoder.cls.predictions.bias[EOS] += 2.0  # some sequences end early
    hf.save_pretrained(tmp_path)
    return hf


@pytest.mark.parametrize("decoder_width", [32, 48])
def test_logits_and_loss_match_with_padded_sources_and_targets(tmp_path, decoder_width):
    """48: the decoder is wider than the encoder, and enc_to_dec_proj bridges them."""
    hf = hf_bert2bert(tmp_path, decoder_width)
    model = EncoderDecoderModel.from_pretrained(tmp_path)
    assert (model.enc_to_dec_proj is not None) == (decoder_width != 32)
    assert assert_models_agree(model, hf, PAD, hidden_states=True) < 1e-5
    assert_agree_on_unpadded_sources(model, hf, PAD)


def test_checkpoints_and_config_move_both_ways(tmp_path, caplog):
    hf_bert2bert(tmp_path / "hf")
    with safe_open(tmp_path / "hf" / "model.safetensors", "pt") as f:
        hf_state = {k: f.get_tensor(k) for k in f.keys()}
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "hf")
    assert type(model) is EncoderDecoderModel and type(model.decoder) is BertLMHeadModel
    assert_exact_checkpoint_keys(model, hf_state, caplog)
    model.save_pretrained(tmp_path / "ours")
    with safe_open(tmp_path / "ours" / "model.safetensors", "pt") as f:
        assert set(f.keys()) == set(hf_state) | {"decoder.cls.predictions.decoder.bias"}  # (both MLM bias names)
    d = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert (d["model_type"], d["is_encoder_decoder"], d["decoder_start_token_id"], d["pad_token_id"]) == (
        "encoder-decoder", True, START, PAD)
    assert (d["decoder"]["model_type"], d["decoder"]["is_decoder"], d["decoder"]["add_cross_attention"]) == (
        "bert", True, True)
    assert not d["encoder"]["is_decoder"]
    assert EncoderDecoderConfig.from_pretrained(tmp_path / "ours") == model.config
    back = transformers.EncoderDecoderModel.from_pretrained(tmp_path / "ours").eval()
    assert back.config.decoder.add_cross_attention and back.config.decoder_start_token_id == START
    strict_hf_load(back, model)
    assert_models_agree(model, back, PAD, sources=(10, 3), targets=(6, 4))


def test_training_steps_match_hf(tmp_path):
    hf = hf_bert2bert(tmp_path, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = EncoderDecoderModel.from_pretrained(tmp_path)
    ids, mask = padded([11, 7, 4], 99, PAD)
    assert_trained_alike(model, hf, dict(input_ids=ids, attention_mask=mask, labels=labels_of([8, 5, 2], 99)))


@pytest.mark.parametrize("settings", [dict(), dict(num_beams=4, no_repeat_ngram_size=2, length_penalty=0.8)])
def test_generation_matches_hf(tmp_path, settings):
    hf = hf_bert2bert(tmp_path)
    model = EncoderDecoderModel.from_pretrained(tmp_path)
    ids, mask = padded([11, 7, 4, 9], 99, PAD, seed=4)
    assert_generates_alike(model, hf, ids, mask, 10, START, **settings)


def test_warm_start_from_all_minilm_l6_v2(minilm_dir, tmp_path, caplog):
    """Both halves from the real MiniLM weights (Rothe et al., 2020): the pretrained weights are Hugging
    Face's, the new cross-attention (a copy of the self-attention here, random in HF) and LM transform are
    said to be new, the model
    generates, and on the same weights the logits are Hugging Face's."""
    tok = transformers.BertTokenizerFast.from_pretrained(minilm_dir)
    ids = dict(decoder_start_token_id=tok.cls_token_id, pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id)
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(minilm_dir, minilm_dir, **ids)
    assert "initialised" in caplog.text and "cross_attn" in caplog.text
    torch.manual_seed(0)
    hf = transformers.EncoderDecoderModel.from_encoder_decoder_pretrained(str(minilm_dir), str(minilm_dir)).eval()
    for name, value in ids.items():  # (HF reads decoder_* keyword arguments as the decoder's settings)
        setattr(hf.config, name, value)
        setattr(hf.generation_config, name, value)
    ours = model.converter().to_hf(model.state_dict())
    theirs = hf.state_dict()
    pretrained = [k for k in theirs if "crossattention" not in k and ".cls." not in k]
    assert len(pretrained) > 100
    for k in pretrained:  # every weight that comes from the checkpoint, in both halves
        torch.testing.assert_close(ours[k], theirs[k], atol=0, rtol=0, msg=k)

    hf.save_pretrained(tmp_path)  # the same new weights in both
    model = EncoderDecoderModel.from_pretrained(tmp_path)
    source = tok(["The quick brown fox jumps over the lazy dog.", "A short one.",
                  "Numbers like 3.14 and names such as Shakespeare's Hamlet."], padding=True, return_tensors="pt")
    target = tok(["a fox jumped", "short", "Hamlet and pi"], padding=True, return_tensors="pt")
    labels = target["input_ids"].masked_fill(target["attention_mask"] == 0, -100)
    with torch.no_grad():
        theirs = hf(input_ids=source["input_ids"], attention_mask=source["attention_mask"], labels=labels)
        ours = model(input_ids=source["input_ids"], attention_mask=source["attention_mask"], labels=labels)
    assert_same_outputs(ours, theirs, source["attention_mask"], labels)
    kw = dict(attention_mask=source["attention_mask"], max_new_tokens=6, num_beams=2)
    out = model.generate(source["input_ids"], **kw)
    assert out.shape[0] == 3 and (out[:, 0] == tok.cls_token_id).all()
    assert torch.equal(out, hf.generate(source["input_ids"], do_sample=False, **kw))
