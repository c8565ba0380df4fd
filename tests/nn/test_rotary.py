import pytest
import torch

from plmkit.nn import RMSNorm, RotaryEmbedding
from plmkit.nn.rotary import rotate_half

llama = pytest.importorskip("transformers.models.llama.modeling_llama")


def test_matches_hf_llama_rotary_with_per_row_positions():
    cfg = pytest.importorskip("transformers").LlamaConfig(hidden_size=64, num_attention_heads=4, rope_theta=500.0)
    hf = llama.LlamaRotaryEmbedding(cfg)
    ours = RotaryEmbedding(16, max_positions=8, theta=500.0)  # grows on demand beyond 8
    pos = torch.tensor([[0, 1, 2, 3, 4], [1, 1, 0, 1, 2], [20, 21, 22, 23, 24]])  # left padding, cache offset
    q, k = torch.randn(3, 4, 5, 16), torch.randn(3, 2, 5, 16)
    cos, sin = hf(q, pos)
    hq, hk = llama.apply_rotary_pos_emb(q, k, cos, sin)
    oq, ok = ours(pos)(q, k)
    torch.testing.assert_close(oq, hq, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ok, hk, atol=1e-6, rtol=1e-6)


def test_relative_property_and_rotate_half():
    rope = RotaryEmbedding(8, 64)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    dots = []
    for shift in (0, 5, 17):
        qr, _ = rope(torch.tensor([[3 + shift]]))(q, q)
        _, kr = rope(torch.tensor([[1 + shift]]))(k, k)
        dots.append((qr * kr).sum())
    torch.testing.assert_close(dots[0], dots[1])
    torch.testing.assert_close(dots[0], dots[2])
    assert torch.equal(rotate_half(torch.tensor([1.0, 2, 3, 4])), torch.tensor([-3.0, -4, 1, 2]))


def test_rmsnorm_matches_hf():
    hf = llama.LlamaRMSNorm(16, eps=1e-5)
    ours = RMSNorm(16, eps=1e-5)
    with torch.no_grad():
        hf.weight.normal_()
        ours.weight.copy_(hf.weight)
    x = torch.randn(2, 3, 16) * 5
    torch.testing.assert_close(ours(x), hf(x))
    torch.testing.assert_close(ours(x.bfloat16()).float(), hf(x.bfloat16()).float(), atol=2e-2, rtol=1e-2)


def test_tables_of_a_module_cast_to_bf16_are_computed_in_fp32():
    """``.to(bf16)`` rounds the inv_freq buffer; growing the tables from it put position 1000 off by 0.4."""
    reference = RotaryEmbedding(64, max_positions=16)
    cast = RotaryEmbedding(64, max_positions=16).to(torch.bfloat16)
    pos = torch.tensor([[3, 10, 1000, 4000]])  # inside the first tables, then past them (grown)
    for dtype in (torch.float32, torch.bfloat16):
        for ours, theirs in zip(cast.tables(pos, dtype), reference.tables(pos, dtype)):
            assert ours.dtype == dtype and torch.equal(ours, theirs)
    assert cast.inv_freq.dtype == torch.float32 and torch.equal(cast.inv_freq, reference.inv_freq)


def test_the_traceable_path_computes_any_position_as_the_tables_do():
    """A traced graph gathered from the tables as built (max_positions rows): an exported Llama failed
    (onnxruntime's GatherND) past max_position_embeddings, where the eager model grows its tables."""
    from plmkit.nn.tracing import traceable
    rope = RotaryEmbedding(16, max_positions=8, theta=500.0)
    pos = torch.tensor([[0, 1, 7, 8, 30], [100, 5, 2, 0, 63]])
    with traceable():
        traced = rope.tables(pos, torch.float32)
    assert rope.cos.shape[0] == 8  # the tables were not grown ...
    assert all(torch.equal(t, e) for t, e in zip(traced, rope.tables(pos, torch.float32)))  # ... and agree
