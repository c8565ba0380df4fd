"""What the encoder-decoder parity tests share (BART, Marian, BERT-to-BERT): tiny Hugging Face models
with weights large enough for differences to show, padded batches, and the comparisons."""
import logging

import torch

from plmkit import convert

TOL = dict(atol=1e-5, rtol=1e-5)
# BART-style sizes of the tiny models (Marian takes the same)
TINY = dict(vocab_size=99, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64)


def roughen(hf, eos: int | None = None, skip: str = "embed_positions", seed: int = 0):
    """Hugging Face's init (std 0.02) makes attention nearly uniform; larger random weights make every
    weight matter. ``eos``: raise its final bias so that generation ends at different steps."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if skip not in name:
                small = name.endswith("bias") or "norm" in name.lower()
                p.add_(torch.randn(p.shape, generator=g) * (0.1 if small else 0.15))
        bias = getattr(hf, "final_logits_bias", None)
        if bias is not None:
            bias.normal_(0, 0.5, generator=g)
            if eos is not None:
                bias[0, eos] += 2.0
    return hf.eval()


def padded(lengths, vocab: int, pad: int, low: int = 3, seed: int = 1):
    """(B, T) ids of the given lengths, right-padded with ``pad``, and their (B, T) mask."""
    g = torch.Generator().manual_seed(seed)
    t = max(lengths)
    ids = torch.randint(low, vocab, (len(lengths), t), generator=g)
    mask = (torch.arange(t)[None] < torch.tensor(lengths)[:, None]).long()
    return ids.masked_fill(mask == 0, pad), mask


def labels_of(lengths, vocab: int, low: int = 3, seed: int = 2):
    """(B, T) target ids, -100 after each row's length."""
    ids, mask = padded(lengths, vocab, 0, low, seed)
    return ids.masked_fill(mask == 0, -100)


def assert_same_outputs(ours, theirs, source_mask, labels) -> None:
    """Logits at the labelled positions, the loss, and the encoder's output at real source tokens."""
    keep, real = labels != -100, source_mask.bool()
    torch.testing.assert_close(ours.logits[keep], theirs.logits[keep], **TOL)
    torch.testing.assert_close(ours.loss, theirs.loss, **TOL)
    torch.testing.assert_close(ours.encoder_last_hidden_state[real], theirs.encoder_last_hidden_state[real], **TOL)


def assert_models_agree(model, hf, pad: int, vocab: int = 99, sources=(11, 7, 4), targets=(8, 5, 2),
                        hidden_states: bool = False) -> float:
    """Both models on a batch of padded sources and labels (-100 after each target): the same logits,
    loss and encoder output (and decoder hidden states); returns the largest logit difference."""
    ids, mask = padded(list(sources), vocab, pad)
    labels = labels_of(list(targets), vocab)
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, labels=labels, output_hidden_states=hidden_states)
        ours = model(input_ids=ids, attention_mask=mask, labels=labels, output_hidden_states=hidden_states)
    assert_same_outputs(ours, theirs, mask, labels)
    keep = labels != -100
    if hidden_states:
        for a, b in zip(ours.decoder_hidden_states, theirs.decoder_hidden_states, strict=True):
            torch.testing.assert_close(a[keep], b[keep], **TOL)
        for a, b in zip(ours.encoder_hidden_states, theirs.encoder_hidden_states, strict=True):
            torch.testing.assert_close(a[mask.bool()], b[mask.bool()], **TOL)
    return float((ours.logits[keep] - theirs.logits[keep]).abs().max())


def assert_agree_on_unpadded_sources(model, hf, pad: int, vocab: int = 99) -> None:
    """Sources of one length (no padding) under padded targets: the decoder's own padding must not be
    taken for the source's (targets as long as the sources; and shorter)."""
    for sources, targets in (((7, 7, 7), (7, 4, 2)), ((9, 9), (5, 2))):
        assert assert_models_agree(model, hf, pad, vocab, sources=sources, targets=targets) < 1e-5


def assert_exact_checkpoint_keys(model, hf_state: dict, caplog) -> None:
    """Every parameter of ``model`` comes from the Hugging Face checkpoint and nothing is left over
    (tied parameters and unsaved buffers aside), and loading said nothing about initialising."""
    ours = set(model.converter().from_hf(hf_state))
    expected = set(model.state_dict()) - set(model.tied_keys)
    assert ours - set(model.tied_keys) == expected, (sorted(ours ^ expected)[:8])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def assert_trained_alike(model, hf, batch: dict, steps: int = 2, label_smoothing: float = 0.0) -> None:
    """The loss (our fused head in training mode), every gradient and two AdamW steps follow Hugging
    Face's (dropout off). ``label_smoothing``: HF's loss from its logits with CrossEntropyLoss."""
    model.train(), hf.train()
    opt_ours, opt_hf = (torch.optim.AdamW(m.parameters(), lr=1e-3) for m in (model, hf))
    for _ in range(steps):
        ours = model(**batch, label_smoothing=label_smoothing)
        assert ours.logits is None  # the fused LM head + loss
        out = hf(**batch)
        theirs = out.loss if not label_smoothing else torch.nn.functional.cross_entropy(
            out.logits.reshape(-1, out.logits.shape[-1]), batch["labels"].reshape(-1), label_smoothing=label_smoothing)
        torch.testing.assert_close(ours.loss, theirs, **TOL)
        ours.loss.backward()
        theirs.backward()
        grads = model.converter().to_hf({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
        checked = 0
        for name, p in hf.named_parameters():
            if p.grad is not None and name in grads:
                torch.testing.assert_close(grads[name], p.grad, **TOL, msg=lambda m: f"{name}: {m}")
                checked += 1
        assert checked >= len([p for p in model.parameters() if p.grad is not None]) - 1
        for opt in (opt_ours, opt_hf):
            opt.step()
            opt.zero_grad()
    model.eval(), hf.eval()


def strict_hf_load(hf, model, missing_ok: str | None = None) -> None:
    """Our state dict under Hugging Face's names fills every parameter of ``hf``; ``missing_ok`` names
    the keys HF has that plmkit rebuilds instead of saving (Marian's sinusoids)."""
    result = hf.load_state_dict(convert.to_hf(model.config.model_type, model.state_dict()), strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    assert all(missing_ok and missing_ok in k for k in result.missing_keys), result.missing_keys


def assert_generates_alike(model, hf, ids, mask, new: int, start: int, **settings):
    """`model.generate` gives Hugging Face's tokens for the same sources and settings, each row starting
    with the decoder's `start` token; returns them."""
    expected = hf.generate(ids, attention_mask=mask, max_new_tokens=new, do_sample=False, **settings)
    got = model.generate(ids, attention_mask=mask, max_new_tokens=new, **settings)
    assert torch.equal(got, expected), (got, expected)
    assert (got[:, 0] == start).all()
    return got
