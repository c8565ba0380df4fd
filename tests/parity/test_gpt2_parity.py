"""Parity with Hugging Face transformers' GPT-2 in fp32: logits, loss, hidden states, attentions with
left and right padding; checkpoints both ways; greedy and beam generation token for token."""
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from plmkit import convert  # noqa: E402
from plmkit.errors import ConfigError  # noqa: E402
from plmkit.generation import PACK_FROM_STEPS  # noqa: E402
from plmkit.models import AutoModelForCausalLM  # noqa: E402
from plmkit.models.gpt2 import GPT2Config, GPT2LMHeadModel, GPT2Model  # noqa: E402
from decoder_checks import assert_same_outputs  # noqa: E402

TOL = dict(atol=1e-5, rtol=1e-5)
TINY = dict(vocab_size=99, n_positions=64, n_embd=32, n_layer=2, n_head=4, n_inner=37, bos_token_id=1,
            eos_token_id=2, pad_token_id=0)


def hf_model(tmp_path, cls="GPT2LMHeadModel", **overrides):
    torch.manual_seed(0)
    config = transformers.GPT2Config(**{**TINY, **overrides}, attn_implementation="eager")
    hf = getattr(transformers, cls)(config).eval()
    with torch.no_grad():  # larger-than-default weights so that differences would show
        for name, p in hf.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    hf.save_pretrained(tmp_path)
    return hf


def padded_batch(side="right"):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 99, (3, 12), generator=g)
    mask = torch.ones(3, 12, dtype=torch.long)
    if side == "right":
        mask[1, 8:] = 0
        mask[2, 5:] = 0
    else:
        mask[1, :4] = 0
        mask[2, :7] = 0
    ids = ids.masked_fill(mask == 0, 0)
    positions = (mask.cumsum(-1) - 1).clamp_min(0)  # what plmkit derives; HF's forward needs them explicitly
    return ids, mask, positions


def lm_labels(ids, mask):
    """-100 wherever the predicting position (one to the left) is padding: those logits are arbitrary."""
    before = torch.cat([torch.zeros_like(mask[:, :1]), mask[:, :-1]], dim=1)
    return ids.masked_fill((mask * before) == 0, -100)


@pytest.mark.parametrize("side", ["right", "left"])
def test_lm_logits_loss_hidden_states_match(tmp_path, side):
    hf = hf_model(tmp_path)
    model = GPT2LMHeadModel.from_pretrained(tmp_path)
    ids, mask, pos = padded_batch(side)
    labels = lm_labels(ids, mask)
    with torch.no_grad():
        h = hf(ids, attention_mask=mask, position_ids=pos, labels=labels, output_hidden_states=True,
               output_attentions=True)
        o = model(ids, attention_mask=mask, labels=labels, output_hidden_states=True, output_attentions=True)
    keep = mask.bool()
    assert_same_outputs(o, h, keep)
    assert len(o.hidden_states) == TINY["n_layer"] + 1


def test_base_model_matches_and_loads_lm_checkpoint(tmp_path):
    hf = hf_model(tmp_path, "GPT2Model")
    model = GPT2Model.from_pretrained(tmp_path)
    ids, mask, pos = padded_batch()
    with torch.no_grad():
        torch.testing.assert_close(model(ids, mask).last_hidden_state[mask.bool()],
                                   hf(ids, attention_mask=mask).last_hidden_state[mask.bool()], **TOL)
    hf_model(tmp_path / "lm")  # an LM checkpoint (prefixed keys) loads into the base model
    GPT2Model.from_pretrained(tmp_path / "lm")


def test_old_checkpoint_buffers_are_ignored(tmp_path):
    hf = hf_model(tmp_path)
    state = dict(hf.state_dict())
    state["transformer.h.0.attn.bias"] = torch.ones(1, 1, 64, 64).tril()
    state["transformer.h.0.attn.masked_bias"] = torch.tensor(-1e4)
    model = GPT2LMHeadModel(GPT2Config(**TINY)).eval()
    model.load_hf_state_dict(state)
    ids = torch.randint(0, 99, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, hf(ids).logits, **TOL)


@pytest.mark.parametrize("tied", [True, False])
def test_our_checkpoint_loads_in_hf(tmp_path, tied):
    model = GPT2LMHeadModel(GPT2Config(**TINY, tie_word_embeddings=tied)).eval()
    model.save_pretrained(tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    hf.load_state_dict(convert.to_hf("gpt2", model.state_dict()), strict=True)
    assert (hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()) == tied
    ids, mask, pos = padded_batch()
    with torch.no_grad():
        labels = lm_labels(ids, mask)
        torch.testing.assert_close(model(ids, mask, labels=labels).loss, hf(ids, attention_mask=mask, labels=labels).loss,
                                   **TOL)
        torch.testing.assert_close(model(ids, mask).logits[mask.bool()],
                                   hf(ids, attention_mask=mask).logits[mask.bool()], **TOL)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(again) is GPT2LMHeadModel
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


def test_config_keys(tmp_path):
    hf_model(tmp_path)
    d = json.loads((tmp_path / "config.json").read_text())
    assert "summary_type" in d and "scale_attn_weights" in d  # HF writes them: they must load
    GPT2Config.from_json_file(tmp_path / "config.json")
    with pytest.raises(ConfigError, match="scale_attn_by_inverse_layer_idx"):
        GPT2Config.from_dict({**d, "scale_attn_by_inverse_layer_idx": True})
    with pytest.raises(ConfigError, match="unknown key"):
        GPT2Config.from_dict({**d, "rotary_dim": 8})
    assert GPT2Config.from_preset("gpt2").n_layer == 12


@pytest.mark.parametrize("batched", [False, True])
def test_greedy_generation_matches_hf(tmp_path, batched):
    hf = hf_model(tmp_path)
    model = GPT2LMHeadModel.from_pretrained(tmp_path)
    if batched:
        ids, mask, _ = padded_batch("left")
    else:
        ids, mask = torch.randint(3, 99, (1, 6)), None
    kw = dict(max_new_tokens=15, eos_token_id=7, pad_token_id=0)
    expected = hf.generate(ids, attention_mask=mask if mask is not None else torch.ones_like(ids), do_sample=False,
                           **kw)
    assert torch.equal(model.generate(ids, attention_mask=mask, **kw), expected)


def test_beam_search_matches_hf(tmp_path):
    hf = hf_model(tmp_path)
    model = GPT2LMHeadModel.from_pretrained(tmp_path)
    ids, mask, _ = padded_batch("left")
    for eos, lp, new in ((7, 1.0, 10), (None, 0.5, PACK_FROM_STEPS)):  # (the second packs its weights)
        kw = dict(max_new_tokens=new, num_beams=3, length_penalty=lp, pad_token_id=5)
        expected = hf.generate(ids, attention_mask=mask, do_sample=False, eos_token_id=eos, **kw)
        got = model.generate(ids, attention_mask=mask, eos_token_id=eos if eos is not None else [], **kw)
        assert torch.equal(got, expected), (eos, lp)


def test_repetition_penalty_matches_hf(tmp_path):
    hf = hf_model(tmp_path)
    model = GPT2LMHeadModel.from_pretrained(tmp_path)
    ids = torch.randint(3, 99, (1, 6))
    kw = dict(max_new_tokens=15, eos_token_id=[], pad_token_id=0, repetition_penalty=1.7)
    expected = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, **{**kw, "eos_token_id": None})
    assert torch.equal(model.generate(ids, **kw), expected)


@pytest.mark.parametrize("settings", [dict(no_repeat_ngram_size=2, bad_words_ids=[[9], [5, 6]], min_new_tokens=4),
                                      dict(num_beams=3, no_repeat_ngram_size=3, early_stopping=True,
                                           num_return_sequences=2, forced_eos_token_id=7)])
def test_generation_with_the_seq2seq_processors_matches_hf(tmp_path, settings):
    """The processors added for encoder-decoders work for decoder-only models too, with left padding."""
    hf = hf_model(tmp_path)
    model = GPT2LMHeadModel.from_pretrained(tmp_path)
    ids, mask, _ = padded_batch("left")
    kw = dict(max_new_tokens=10, eos_token_id=7, pad_token_id=5, **settings)
    assert torch.equal(model.generate(ids, attention_mask=mask, **kw),
                       hf.generate(ids, attention_mask=mask, do_sample=False, **kw))


def test_the_default_special_ids_beyond_a_small_vocabulary_load_generate_and_save_back_as_hf(tmp_path, caplog):
    """GPT2Config(vocab_size=99) keeps bos/eos 50256, as many tiny test checkpoints do: transformers loads it, and
    so does plmkit, with a warning; no such token can be generated, so generate runs as transformers' does; the
    saved files keep 50256, so that transformers reads the same. A pad id beyond the vocabulary stays refused
    (it is fed to the model)."""
    hf = hf_model(tmp_path / "hf", bos_token_id=50256, eos_token_id=50256, pad_token_id=None)
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["eos_token_id"] == 50256
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert "bos_token_id=50256, eos_token_id=50256 lie outside the 99-token vocabulary" in caplog.text
    assert (model.config.bos_token_id, model.config.eos_token_id) == (50256, 50256)
    ids, mask, pos = padded_batch("left")
    with torch.no_grad():
        torch.testing.assert_close(model(ids, attention_mask=mask).logits[mask.bool()],
                                   hf(ids, attention_mask=mask, position_ids=pos).logits[mask.bool()], **TOL)
    expected = hf.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(ids, attention_mask=mask, max_new_tokens=6), expected)
    model.save_pretrained(tmp_path / "ours")
    again = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "ours")
    assert (again.config.bos_token_id, again.config.eos_token_id, again.generation_config.eos_token_id) == (50256,) * 3
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "ours").config.eos_token_id == 50256
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    with pytest.raises(ConfigError, match="pad_token_id=50256 is not a token id of the 99-token vocabulary"):
        GPT2Config.from_dict({**config, "pad_token_id": 50256})
