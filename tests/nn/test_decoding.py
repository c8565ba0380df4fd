import pytest
import torch
import torch.nn.functional as F
from torch import nn

from plmkit.models.gpt2 import GPT2Config, GPT2LMHeadModel
from plmkit.nn import MultiHeadAttention
from plmkit.nn.decoding import (column_major_lm_head, decode_linear, decoding_layout, pack_weight, row_major_lm_head,
                                unpack_weight)
from plmkit.nn.lora import apply_lora

TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rows", [(1, 1), (8, 1), (2, 5)])
def test_decode_linear_equals_f_linear(bias, rows):
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(*rows, 24, generator=g), torch.randn(40, 24, generator=g)
    b = torch.randn(40, generator=g) if bias else None
    torch.testing.assert_close(decode_linear(x, w, b), F.linear(x, w, b), **TOL)
    torch.testing.assert_close(decode_linear(x, w.t().contiguous().t(), b), F.linear(x, w, b), **TOL)
    torch.testing.assert_close(decode_linear(x.double(), w.double()), F.linear(x.double(), w.double()))  # fallback


@pytest.mark.parametrize("column_major", [False, True])
@pytest.mark.parametrize("rows", [(1, 1), (2, 1), (8, 1), (3, 5)])
def test_packed_weight_gives_the_unpacked_product(rows, column_major):
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(*rows, 24, generator=g), torch.randn(40, 24, generator=g), torch.randn(40, generator=g)
    w = w.t().contiguous().t() if column_major else w
    plain = decode_linear(x, w, b)
    pack_weight(w)
    if x.numel() > x.shape[-1]:  # from 2 rows on the packed copy runs, bit for bit the same
        assert "_onednn_packed" in vars(w)
        assert torch.equal(decode_linear(x, w, b), plain)
    torch.testing.assert_close(decode_linear(x, w, b), F.linear(x, w, b), **TOL)
    unpack_weight(w)
    assert "_onednn_packed" not in vars(w)


@pytest.mark.parametrize("n_kv_heads", [4, 2])
def test_fused_qkv_projection_equals_separate_ones(n_kv_heads):
    mha = MultiHeadAttention(32, 4, n_kv_heads=n_kv_heads).eval()
    x = torch.randn(2, 3, 32)
    with torch.no_grad():
        separate = mha.project_qkv(x)
        mha.fuse_qkv(True)
        fused = mha.project_qkv(x)
    for a, b in zip(fused, separate):
        torch.testing.assert_close(a, b, **TOL)
    mha.fuse_qkv(False)
    assert mha.fused_qkv is None


def _gpt2(vocab=97):
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config.from_preset("gpt2-tiny", vocab_size=vocab, n_positions=32)).eval()


def test_decoding_layout_is_undone_on_exit_except_the_lm_head():
    model = _gpt2()
    ids = torch.randint(0, 97, (2, 7))
    with torch.no_grad():
        ref = model(ids).logits
        with decoding_layout(model):
            assert all("forward" in vars(m) for m in model.modules() if type(m) is nn.Linear)
            assert all(m.fused_qkv is not None for m in model.modules() if isinstance(m, MultiHeadAttention))
            torch.testing.assert_close(model(ids).logits, ref, **TOL)
    assert not any("forward" in vars(m) for m in model.modules())
    assert all(m.fused_qkv is None for m in model.modules() if isinstance(m, MultiHeadAttention))
    assert not model.lm_head.weight.is_contiguous()  # kept column-major until train()
    model.train()
    assert model.lm_head.weight.is_contiguous()


def test_packing_covers_the_per_step_weights_and_is_dropped_on_exit():
    model = _gpt2()
    ids = torch.randint(0, 97, (3, 7))
    with torch.no_grad():
        ref = model(ids).logits
        with decoding_layout(model, pack=True):
            packed = [n for n, p in model.named_parameters() if "_onednn_packed" in vars(p)]
            fused = [m.fused_qkv[0] for m in model.modules() if isinstance(m, MultiHeadAttention)]
            assert fused and all("_onednn_packed" in vars(w) for w in fused)
            assert "lm_head.weight" in packed or "transformer.embeddings.word.weight" in packed
            assert not any(n.endswith((".q.weight", ".k.weight", ".v.weight")) for n in packed)  # the copy runs
            torch.testing.assert_close(model(ids).logits, ref, **TOL)
    assert not any("_onednn_packed" in vars(p) for p in model.parameters())


def test_a_nested_layout_adds_only_its_packing_and_leaves_the_outer_one():
    """A server's worker holds the layout for its lifetime; a task route's generate enters it again between
    two steps: the inner context packs (and unpacks) the weights, the outer forwards and fused q/k/v stay."""
    model = _gpt2()
    ids = torch.randint(0, 97, (3, 7))
    fused = lambda: [m.fused_qkv for m in model.modules() if isinstance(m, MultiHeadAttention)]  # noqa: E731
    same = lambda a, b: len(a) == len(b) and all(x is y for x, y in zip(a, b))  # noqa: E731
    with torch.no_grad():
        ref = model(ids).logits
        with decoding_layout(model):
            outer = fused()
            with decoding_layout(model, pack=True):
                assert same(fused(), outer) and all("_onednn_packed" in vars(w) for w, *_ in outer)
                torch.testing.assert_close(model(ids).logits, ref, **TOL)
            assert not any("_onednn_packed" in vars(p) for p in model.parameters())
            assert all("forward" in vars(m) for m in model.modules() if type(m) is nn.Linear) and same(fused(), outer)
            torch.testing.assert_close(model(ids).logits, ref, **TOL)
    assert not any("forward" in vars(m) for m in model.modules()) and all(f is None for f in fused())


def test_lm_head_stays_row_major_when_its_rows_would_alias():
    model = _gpt2(vocab=1024)  # 1024 floats = 4 KiB
    column_major_lm_head(model)
    assert model.lm_head.weight.is_contiguous()
    model = _gpt2()
    column_major_lm_head(model)
    assert not model.lm_head.weight.is_contiguous() and model.transformer.embeddings["word"].weight is model.lm_head.weight
    row_major_lm_head(model)
    assert model.lm_head.weight.is_contiguous()


def test_lora_layers_keep_their_forward():
    model = _gpt2()
    apply_lora(model, targets=("q", "v"), rank=2)
    for m in model.modules():
        if hasattr(m, "lora_B"):
            nn.init.normal_(m.lora_B)
    ids = torch.randint(0, 97, (1, 5))
    with torch.no_grad():
        ref = model(ids).logits
        with decoding_layout(model):
            assert all(m.fused_qkv is None for m in model.modules() if isinstance(m, MultiHeadAttention))
            torch.testing.assert_close(model(ids).logits, ref, **TOL)
