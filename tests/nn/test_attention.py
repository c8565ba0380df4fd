"""MultiHeadAttention against an explicit per-head computation, masks, and the fast/explicit paths."""
import math

import pytest
import torch

from plmkit.nn import MultiHeadAttention, Unpadded, attention_bias
from plmkit.nn import attention as attention_module
from plmkit.nn.attention import attend
from plmkit.nn.cache import KVCache


def reference_attention(mha: MultiHeadAttention, x, key_mask=None, causal=False):
    """softmax(Q_h K_hᵀ / √d_head) V_h for each head h separately, concatenated, then the out projection."""
    b, t, _ = x.shape
    d = mha.d_head
    q, k, v = mha.q(x), mha.k(x), mha.v(x)
    heads = []
    for h in range(mha.n_heads):
        qh, kh, vh = (z[..., h * d:(h + 1) * d] for z in (q, k, v))  # (B, T, d)
        scores = qh @ kh.transpose(1, 2) / math.sqrt(d)  # (B, T, T)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask.bool()[:, None, :], float("-inf"))
        if causal:
            scores = scores.masked_fill(torch.ones(t, t).triu(1).bool(), float("-inf"))
        heads.append(scores.softmax(-1) @ vh)
    return mha.out(torch.cat(heads, dim=-1))


@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_matches_per_head_reference(need_weights, causal):
    mha = MultiHeadAttention(48, 6).eval()
    x = torch.randn(2, 7, 48)
    y, probs = mha(x, causal=causal, need_weights=need_weights)
    torch.testing.assert_close(y, reference_attention(mha, x, causal=causal), atol=1e-5, rtol=1e-5)
    assert (probs is not None) == need_weights
    if need_weights:
        assert probs.shape == (2, 6, 7, 7)
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, 6, 7))


def test_scale_is_per_head_dimension():
    """The article's snippet divides by √n_heads; the right scale is √d_head."""
    mha = MultiHeadAttention(64, 4).eval()  # d_head = 16 ≠ n_heads
    x = torch.randn(1, 5, 64)
    _, probs = mha(x, need_weights=True)
    q = mha.q(x).view(1, 5, 4, 16).transpose(1, 2)
    k = mha.k(x).view(1, 5, 4, 16).transpose(1, 2)
    expected = (q @ k.transpose(-1, -2) / 4.0).softmax(-1)
    torch.testing.assert_close(probs, expected)


def test_key_padding_mask_and_unpadded_layout_agree_with_reference():
    mha = MultiHeadAttention(32, 4).eval()
    x = torch.randn(3, 6, 32)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4])
    ref = reference_attention(mha, x, key_mask=mask)
    keep = mask.bool()
    padded, _ = mha(x, attention_bias(mask, 6, False, x.dtype))
    torch.testing.assert_close(padded[keep], ref[keep], atol=1e-5, rtol=1e-5)
    layout = Unpadded.from_mask(mask, x.dtype)
    tokens, probs = mha(layout.unpad(x), layout=layout, need_weights=True)  # (N, D)
    assert tokens.shape == (int(mask.sum()), 32)
    torch.testing.assert_close(layout.repad(tokens)[keep], ref[keep], atol=1e-5, rtol=1e-5)
    assert probs[2, :, :2, 2:].abs().max() == 0  # padding keys get no attention


@pytest.mark.parametrize("causal", [False, True])
def test_packed_attention_runs_groups_of_equal_length_and_equals_masked_attention(causal):
    """Rows of lengths 3, 5, 3, 0, 5, 1 (right, left and holed padding): packed shortest first, in three groups,
    each sequence's tokens in order; the result equals the padded attention under the padding mask."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4, n_kv_heads=2).eval()
    x = torch.randn(6, 5, 32)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1] * 5, [0, 0, 1, 1, 1], [0] * 5, [1] * 5, [0, 1, 0, 0, 0]])
    layout = Unpadded.from_mask(mask, x.dtype)
    assert layout.groups == [(1, 1), (2, 3), (2, 5)]
    assert layout.indices.tolist() == [26, 0, 1, 2, 12, 13, 14, 5, 6, 7, 8, 9, 20, 21, 22, 23, 24]
    packed, _ = mha(layout.unpad(x), layout=layout, causal=causal)
    padded, _ = mha(x, attention_bias(mask, 5, causal, x.dtype))
    keep = mask.bool()
    torch.testing.assert_close(layout.repad(packed)[keep], padded[keep], atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the explicit path (probabilities) re-pads, and agrees
        explicit, _ = mha(layout.unpad(x), layout=layout, causal=causal, need_weights=True)
    torch.testing.assert_close(explicit, packed, atol=1e-5, rtol=1e-5)
    rotary = lambda q, k: (q, k)  # noqa: E731 (packed tokens' rotations: no probabilities for them)
    with pytest.raises(ValueError, match="rotary positions"):
        mha(layout.unpad(x), layout=layout, rotary=rotary, need_weights=True)


def test_fast_and_explicit_paths_agree_with_masks():
    mha = MultiHeadAttention(32, 4, n_kv_heads=2).eval()
    x = torch.randn(2, 5, 32)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])  # left padding
    bias = attention_bias(mask, 5, causal=True, dtype=x.dtype)
    fast, _ = mha(x, bias)
    slow, probs = mha(x, bias, need_weights=True)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(fast).all()  # fully masked padding rows stay finite
    assert probs[:, :, 3, 4].abs().max() == 0  # no attention to the future


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("t_q", [1, 3])
def test_causal_with_cached_prefix_aligns_bottom_right_on_both_paths(t_q, with_bias):
    """T_q < T_k (a KV cache): query i sees keys up to i + T_k - T_q on the fast path as on the explicit one."""
    q, k, v = torch.randn(2, 4, t_q, 8), torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 8)  # grouped-query
    bias = attention_bias(torch.tensor([[0, 1, 1, 1, 1, 1], [1] * 6]), t_q, False, q.dtype) if with_bias else None
    fast, _ = attend(q, k, v, bias, causal=True)
    slow, probs = attend(q, k, v, bias, causal=True, need_weights=True)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    seen = (probs > 0).sum(-1)  # (B, H, T_q): keys each query sees
    first_key = 1 if with_bias else 0
    expected = torch.arange(6 - t_q + 1, 7)  # the last query sees all 6 keys
    assert seen[1].eq(expected).all() and seen[0].eq(expected - first_key).all()


def test_incremental_causal_attention_with_kv_cache_equals_full():
    mha = MultiHeadAttention(16, 2).eval()
    x = torch.randn(1, 5, 16)
    with torch.no_grad():
        full, _ = mha(x, causal=True)
        cache = KVCache(1, 1, 2, 8, 8)[0]
        parts = [mha(x[:, :2], causal=True, cache=cache)[0], mha(x[:, 2:4], causal=True, cache=cache)[0],
                 mha(x[:, 4:], causal=True, cache=cache)[0]]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


def test_causal_without_cache_keeps_sdpa_fast_path(monkeypatch):
    """T_q == T_k without a bias: SDPA's own causal mask, no bias tensor built."""
    calls = []
    sdpa = attention_module.F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append((kwargs.get("attn_mask"), kwargs.get("is_causal")))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", spy)
    q = torch.randn(1, 2, 4, 8)
    attend(q, q, q, causal=True)
    attend(q[:, :, -1:], q, q, causal=True)  # one decoding step: sees every key, nothing to mask
    assert calls == [(None, True), (None, False)]


def test_cross_attention_uses_context_keys():
    mha = MultiHeadAttention(16, 2).eval()
    x, ctx = torch.randn(1, 3, 16), torch.randn(1, 5, 16)
    y, probs = mha(x, context=ctx, need_weights=True)
    assert y.shape == (1, 3, 16) and probs.shape == (1, 2, 3, 5)


def test_heads_must_divide_model_width():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(30, 4)
