"""Parity with Hugging Face transformers' Llama in fp32 (GQA, tied and untied heads): logits, loss,
hidden states with padding; checkpoints both ways; greedy generation token for token."""
import json
import logging

import pytest
import torch

transformers = pytest.importorskip("transformers")

from plmkit import convert  # noqa: E402
from plmkit.errors import ConfigError  # noqa: E402
from plmkit.models import AutoModelForCausalLM  # noqa: E402
from plmkit.models.llama import LlamaConfig, LlamaForCausalLM, LlamaModel  # noqa: E402
from decoder_checks import assert_same_outputs  # noqa: E402

TOL = dict(atol=1e-5, rtol=1e-5)
TINY = dict(vocab_size=99, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, rope_theta=500.0, bos_token_id=1, eos_token_id=2,
            pad_token_id=0)


def hf_model(tmp_path, cls="LlamaForCausalLM", **overrides):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**{**TINY, **overrides}, attn_implementation="eager")
    hf = getattr(transformers, cls)(config).eval()
    with torch.no_grad():  # non-trivial norms and larger weights so that differences would show
        for name, p in hf.named_parameters():
            p.add_(torch.randn_like(p) * (0.2 if "norm" in name else 0.05))
    hf.save_pretrained(tmp_path)
    return hf


def padded_batch(side="right"):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 99, (3, 12), generator=g)
    mask = torch.ones(3, 12, dtype=torch.long)
    if side == "right":
        mask[1, 8:], mask[2, 5:] = 0, 0
    else:
        mask[1, :4], mask[2, :7] = 0, 0
    return ids.masked_fill(mask == 0, 0), mask, (mask.cumsum(-1) - 1).clamp_min(0)


def lm_labels(ids, mask):
    before = torch.cat([torch.zeros_like(mask[:, :1]), mask[:, :-1]], dim=1)
    return ids.masked_fill((mask * before) == 0, -100)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("tied", [False, True])
def test_lm_logits_loss_hidden_states_match(tmp_path, side, tied):
    hf = hf_model(tmp_path, tie_word_embeddings=tied)
    model = LlamaForCausalLM.from_pretrained(tmp_path)
    assert (model.lm_head.weight is model.model.embeddings["word"].weight) == tied
    ids, mask, pos = padded_batch(side)
    labels = lm_labels(ids, mask)
    with torch.no_grad():
        h = hf(ids, attention_mask=mask, position_ids=pos, labels=labels, output_hidden_states=True,
               output_attentions=True)
        o = model(ids, attention_mask=mask, labels=labels, output_hidden_states=True, output_attentions=True)
    keep = mask.bool()
    assert h.logits.abs().max() > 0.1
    assert_same_outputs(o, h, keep)


def test_base_model_and_old_rotary_buffers(tmp_path):
    hf = hf_model(tmp_path, "LlamaModel")
    model = LlamaModel.from_pretrained(tmp_path)
    ids, mask, pos = padded_batch()
    state = dict(hf.state_dict())
    state["layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)
    model.load_hf_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(model(ids, mask).last_hidden_state[mask.bool()],
                                   hf(ids, attention_mask=mask).last_hidden_state[mask.bool()], **TOL)


@pytest.mark.parametrize("tied", [False, True])
def test_our_checkpoint_loads_in_hf(tmp_path, tied):
    model = LlamaForCausalLM(LlamaConfig(**TINY, tie_word_embeddings=tied)).eval()
    model.save_pretrained(tmp_path)
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    hf.load_state_dict(convert.to_hf("llama", model.state_dict()), strict=True)
    ids, mask, pos = padded_batch()
    labels = lm_labels(ids, mask)
    with torch.no_grad():
        torch.testing.assert_close(model(ids, mask, labels=labels).loss,
                                   hf(ids, attention_mask=mask, labels=labels).loss, **TOL)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(again) is LlamaForCausalLM
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


def test_config_keys(tmp_path):
    hf_model(tmp_path)
    d = json.loads((tmp_path / "config.json").read_text())
    c = LlamaConfig.from_json_file(tmp_path / "config.json")
    assert (c.num_key_value_heads, c.head_dim) == (2, 8)
    assert d["rope_parameters"] == {"rope_theta": 500.0, "rope_type": "default"} and c.rope_theta == 500.0  # 5.x
    LlamaConfig(**TINY).save_pretrained(tmp_path / "ours")
    assert transformers.AutoConfig.from_pretrained(tmp_path / "ours").rope_parameters["rope_theta"] == 500.0
    with pytest.raises(ConfigError, match="rope_scaling"):
        LlamaConfig.from_dict({**d, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})
    with pytest.raises(ConfigError, match="multiple"):
        LlamaConfig.from_dict({**d, "num_key_value_heads": 3})


@pytest.mark.parametrize("batched", [False, True])
def test_greedy_generation_matches_hf(tmp_path, batched):
    hf = hf_model(tmp_path)
    model = LlamaForCausalLM.from_pretrained(tmp_path)
    ids, mask = (padded_batch("left")[:2]) if batched else (torch.randint(3, 99, (1, 6)), None)
    kw = dict(max_new_tokens=15, eos_token_id=7, pad_token_id=0)
    expected = hf.generate(ids, attention_mask=mask if mask is not None else torch.ones_like(ids), do_sample=False,
                           **kw)
    assert torch.equal(model.generate(ids, attention_mask=mask, **kw), expected)


def test_beam_search_matches_hf(tmp_path):
    hf = hf_model(tmp_path)
    model = LlamaForCausalLM.from_pretrained(tmp_path)
    ids, mask, _ = padded_batch("left")
    kw = dict(max_new_tokens=8, num_beams=3, eos_token_id=7, pad_token_id=5)
    assert torch.equal(model.generate(ids, attention_mask=mask, **kw),
                       hf.generate(ids, attention_mask=mask, do_sample=False, **kw))


def test_generation_settings_plmkit_does_not_use_are_saved_back(tmp_path, caplog):
    """min_p, suppress_tokens ...: plmkit's generate says once that it ignores them, and save_pretrained writes
    them back, so that transformers samples from the re-saved directory as from the original."""
    hf = hf_model(tmp_path / "hf")
    hf.generation_config.update(do_sample=True, temperature=0.7, min_p=0.1, suppress_tokens=[5], repetition_penalty=1.2)
    hf.save_pretrained(tmp_path / "hf")
    with caplog.at_level(logging.WARNING, logger="plmkit"):
        LlamaForCausalLM.from_pretrained(tmp_path / "hf").save_pretrained(tmp_path / "ours")
    assert [r.getMessage().split(": ", 2)[-1] for r in caplog.records if r.levelno >= logging.WARNING] == [
        "generate() ignores min_p, suppress_tokens of generation_config.json (kept when the model is saved)"]
    original, resaved = (transformers.GenerationConfig.from_pretrained(tmp_path / d).to_diff_dict()
                         for d in ("hf", "ours"))
    bookkeeping = ("transformers_version", "_from_model_config")
    assert {k: v for k, v in resaved.items() if k not in bookkeeping} == {
        k: v for k, v in original.items() if k not in bookkeeping}
    ids = torch.randint(3, 99, (2, 5), generator=torch.Generator().manual_seed(3))
    outputs = []
    for d in ("hf", "ours"):
        torch.manual_seed(4)
        outputs.append(transformers.LlamaForCausalLM.from_pretrained(tmp_path / d).generate(ids, max_new_tokens=8))
    assert torch.equal(*outputs)


def test_special_ids_beyond_the_vocabulary_load_and_are_saved_back_as_read(tmp_path, caplog):
    """bos/eos 150 and 151 in a 99-token vocabulary (transformers loads it): loaded with a warning, the same
    logits, generate runs to max_new_tokens (no such token can end it), and the saved config keeps them."""
    hf = hf_model(tmp_path / "hf", bos_token_id=150, eos_token_id=[151, 2])
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert "bos_token_id=150, eos_token_id=151 lie outside the 99-token vocabulary" in caplog.text
    ids = torch.randint(3, 99, (1, 6))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, hf(ids).logits, **TOL)
    kw = dict(max_new_tokens=10, pad_token_id=0)
    assert torch.equal(model.generate(ids, **kw), hf.generate(ids, do_sample=False, **kw))  # (eos 2 still ends it)
    model.save_pretrained(tmp_path / "ours")
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"]) == (150, [151, 2])
    assert transformers.AutoConfig.from_pretrained(tmp_path / "ours").eos_token_id == [151, 2]
