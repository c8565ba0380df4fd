import pytest
import torch

from plmkit.models.gpt2 import GPT2Config, GPT2LMHeadModel
from plmkit.models.llama import LlamaConfig, LlamaForCausalLM
from plmkit.nn.lora import apply_lora

TOL = dict(atol=1e-5, rtol=1e-5)


def _models(tie: bool):
    """Two copies of a tiny GPT-2 and of a tiny Llama (dropout off, so two runs compute the same)."""
    gpt2 = lambda: GPT2LMHeadModel(GPT2Config.from_preset("gpt2-tiny", vocab_size=97, n_positions=32, resid_pdrop=0.0,
                                                          embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=tie))
    llama = lambda: LlamaForCausalLM(LlamaConfig.from_preset("llama-tiny", vocab_size=97, tie_word_embeddings=tie))
    for build in (gpt2, llama):
        torch.manual_seed(0)
        a = build()
        b = build()
        b.load_state_dict(a.state_dict())
        yield a, b


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 97, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # right padding, as in training
    labels = ids.masked_fill(mask == 0, -100)
    labels[2, :5] = -100  # a prompt without loss, as in SFT
    return dict(input_ids=ids, attention_mask=mask, labels=labels)


@pytest.mark.parametrize("tie", [True, False])
def test_training_step_with_fused_loss_equals_plain_one(tie):
    """The default training call (labels, train mode) takes the fused loss: the same loss, gradients
    and step as the call that asks for the logits."""
    for plain, fused in _models(tie):
        batch = _batch()
        steps = []
        for model, kwargs in ((plain, {"return_logits": True}), (fused, {})):
            opt = torch.optim.SGD(model.parameters(), lr=0.1)  # (Adam would magnify rounding in ~0 gradients)
            out = model(**batch, **kwargs)
            out.loss.backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters()}
            opt.step()
            steps.append((out, grads, model.state_dict()))
        (out_p, grads_p, state_p), (out_f, grads_f, state_f) = steps
        assert out_p.logits is not None and out_f.logits is None
        torch.testing.assert_close(out_f.loss, out_p.loss, **TOL)
        assert grads_f.keys() == grads_p.keys()
        for name in grads_p:  # the tied weight gets embedding + LM-head gradients
            torch.testing.assert_close(grads_f[name], grads_p[name], **TOL, msg=name)
        for name in state_p:
            torch.testing.assert_close(state_f[name], state_p[name], **TOL, msg=name)


def test_fused_loss_falls_back_for_a_lora_head():
    plain, fused = next(_models(tie=False))
    for model in (plain, fused):
        torch.manual_seed(2)
        apply_lora(model, targets=("lm_head",), rank=2)
        torch.nn.init.normal_(model.lm_head.lora_B)  # a non-zero update that the fused path must not skip
    batch = _batch()
    torch.testing.assert_close(fused(**batch, return_logits=False).loss, plain(**batch, return_logits=True).loss, **TOL)


def test_logits_come_back_in_eval_mode_without_labels_or_when_asked():
    for model, _ in _models(tie=True):
        batch = _batch()
        assert model.training and model(**batch).logits is None  # the fast path: training with labels
        asked = model(**batch, return_logits=True)
        assert asked.logits.shape == (3, 12, 97)
        assert model(batch["input_ids"]).logits.shape == (3, 12, 97)  # no labels: logits
        assert model(batch["input_ids"], return_logits=False).logits is None
        model.eval()
        evaluated = model(**batch)
        assert evaluated.logits.shape == (3, 12, 97)  # eval mode: as Hugging Face
        torch.testing.assert_close(evaluated.loss, asked.loss, **TOL)  # (dropout is off)
        assert model(**batch, return_logits=False).logits is None


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_padded_batch_runs_on_its_real_tokens_alone(side):
    """Without a cache, padding is removed before the first block and attention runs on groups of equal
    length (Llama's rotations at the packed tokens' positions): each row's logits and gradients are those
    of the row alone, and padding positions come out as zeros."""
    for model, alone in _models(tie=True):
        g = torch.Generator().manual_seed(2)
        ids, lengths = torch.randint(0, 97, (3, 10), generator=g), [10, 6, 3]
        mask = torch.zeros_like(ids)
        for i, n in enumerate(lengths):
            mask[i, :n] = 1
        if side == "left":
            mask = mask.flip(1)
        out = model(ids, attention_mask=mask, output_hidden_states=True)
        keep = mask.bool()
        assert all(h[~keep].abs().max() == 0 for h in out.hidden_states)  # never computed
        for i in range(3):
            row = ids[i:i + 1, keep[i]]
            torch.testing.assert_close(out.logits[i, keep[i]], alone(row).logits[0], **TOL)
        with torch.no_grad():  # probabilities asked for: the padded batch, the same logits
            shown = model(ids, attention_mask=mask, output_attentions=True)
        assert shown.attentions[0].shape[0] == 3 and shown.attentions[0].shape[2:] == (10, 10)
        torch.testing.assert_close(shown.logits[keep], out.logits[keep], **TOL)
        out.logits[keep].sum().backward()
        sum(alone(ids[i:i + 1, keep[i]]).logits.sum() for i in range(3)).backward()
        for (name, p), q in zip(model.named_parameters(), alone.parameters()):  # (sums of up to 19 positions)
            scale = float(q.grad.abs().max())
            assert (p.grad - q.grad).abs().max() <= 1e-5 * max(1.0, scale), name
