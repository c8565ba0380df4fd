import pytest
import torch
import torch.nn.functional as F
from torch import nn

from plmkit.models.gpt2 import GPT2Config, GPT2LMHeadModel
from plmkit.nn import MultiHeadAttention
from plmkit.nn import decoding
from plmkit.nn.decoding import (column_major_lm_head, decode_linear, decoding_layout, pack_weight,
                                refresh_weight_copies, row_major_lm_head, unpack_weight)
from plmkit.nn.lora import apply_lora

TOL = dict(atol=1e-5, rtol=1e-5)
MKL_UP_TO = decoding.MKL_UP_TO


@pytest.fixture(autouse=True)
def packed_small_weights(monkeypatch):
    """These tiny weights take the packed path as large ones do (by default they run through MKL)."""
    monkeypatch.setattr(decoding, "MKL_UP_TO", 0)


def test_small_weights_run_through_mkl_and_are_never_packed(monkeypatch):
    monkeypatch.setattr(decoding, "MKL_UP_TO", MKL_UP_TO)  # the default
    small, large = nn.Linear(256, 256), nn.Linear(256, 257)  # 256 KiB: at the limit; one column more
    model = nn.Sequential(small, large)
    decoding.inference_linears(model, True)
    x = torch.randn(3, 30, 256)
    with torch.no_grad():
        assert torch.equal(small(x), F.linear(x, small.weight, small.bias))
        torch.testing.assert_close(model(x), F.linear(F.linear(x, small.weight, small.bias), large.weight,
                                                      large.bias), **TOL)
        with decoding_layout(model, pack=True):
            model(x)
            assert decoding._PACKED not in vars(small.weight)
        assert decoding._PACKED in vars(large.weight)  # (eval mode's own copy, kept)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rows", [(1, 1), (8, 1), (2, 5)])
def test_decode_linear_equals_f_linear(bias, rows):
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(*rows, 24, generator=g), torch.randn(40, 24, generator=g)
    b = torch.randn(40, generator=g) if bias else None
    torch.testing.assert_close(decode_linear(x, w, b), F.linear(x, w, b), **TOL)
    torch.testing.assert_close(decode_linear(x, w.t().contiguous().t(), b), F.linear(x, w, b), **TOL)
    torch.testing.assert_close(decode_linear(x.double(), w.double()), F.linear(x.double(), w.double()))  # fallback


@pytest.fixture(params=["mkl", "onednn"])
def layout(request, monkeypatch):
    """Packed copies in MKL's layout (where this torch build has it) or in oneDNN's (the fallback)."""
    if request.param == "mkl" and not decoding.mkl_packing():
        pytest.skip("this torch build has no MKL packing")
    monkeypatch.setattr(decoding, "mkl_packing", lambda: request.param == "mkl")
    return request.param


@pytest.mark.parametrize("column_major", [False, True])
@pytest.mark.parametrize("rows", [(1, 1), (2, 1), (8, 1), (3, 5), (2, 37)])
def test_packed_weight_gives_the_unpacked_product(rows, column_major, layout):
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(*rows, 24, generator=g), torch.randn(40, 24, generator=g), torch.randn(40, generator=g)
    w = w.t().contiguous().t() if column_major else w
    plain = decode_linear(x, w, b)
    pack_weight(w)
    if x.numel() > x.shape[-1]:  # from 2 rows on the packed copy runs
        assert vars(w)[decoding._PACKED][2] == (layout == "mkl")
        if layout == "onednn":  # bit for bit the unpacked oneDNN product
            assert torch.equal(decode_linear(x, w, b), plain)
    torch.testing.assert_close(decode_linear(x, w, b), F.linear(x, w, b), **TOL)
    unpack_weight(w)
    assert decoding._PACKED not in vars(w)


def test_a_packed_copy_takes_rows_that_are_not_contiguous(layout):
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(2, 9, 48, generator=g)[..., ::2], torch.randn(40, 24, generator=g)  # (2, 9, 24), strided
    pack_weight(w)
    torch.testing.assert_close(decode_linear(x, w), F.linear(x, w), **TOL)


@pytest.mark.parametrize("fault", ["wrong product", "size depends on the rows", "not an Intel CPU"])
def test_mkl_packing_is_refused_where_it_does_not_behave_as_relied_on(monkeypatch, fault):
    if not decoding.mkl_packing():
        pytest.skip("this torch build has no MKL packing")
    ops = torch.ops.mkl
    if fault == "not an Intel CPU":
        monkeypatch.setattr(decoding, "cpuinfo", lambda key: "AuthenticAMD" if key == "vendor_id" else None)
    elif fault == "wrong product":
        monkeypatch.setattr(ops, "_mkl_linear", lambda x, packed, w, b, rows: torch.zeros(rows, w.shape[0]))
    else:
        reorder = ops._mkl_reorder_linear_weight
        monkeypatch.setattr(ops, "_mkl_reorder_linear_weight",  # another size for another row count
                            lambda w, rows: reorder(w, rows) if rows == 1 else torch.empty(5))
    decoding.mkl_packing.cache_clear()
    try:
        assert not decoding.mkl_packing()
    finally:
        decoding.mkl_packing.cache_clear()


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


def test_decoding_layout_is_undone_on_exit_except_the_lm_head(monkeypatch):
    monkeypatch.setattr(decoding, "KEEP_PACKED_UP_TO", 0)  # a model too large for eval mode's own copies
    model = _gpt2()
    ids = torch.randint(0, 97, (2, 7))
    with torch.no_grad():
        ref = model(ids).logits
        with decoding_layout(model):
            assert all(m.fused_qkv is not None for m in model.modules() if isinstance(m, MultiHeadAttention))
            torch.testing.assert_close(model(ids).logits, ref, **TOL)
    assert all(m.fused_qkv is None for m in model.modules() if isinstance(m, MultiHeadAttention))
    assert all("forward" in vars(m) for m in model.modules() if type(m) is nn.Linear)  # eval mode's own
    assert not model.lm_head.weight.is_contiguous()  # kept column-major until train()
    model.train()
    assert model.lm_head.weight.is_contiguous()
    assert not any("forward" in vars(m) for m in model.modules())


def test_packing_covers_the_per_step_weights_and_is_dropped_on_exit(monkeypatch):
    monkeypatch.setattr(decoding, "KEEP_PACKED_UP_TO", 0)  # a model too large to keep packed copies
    model = _gpt2()
    ids = torch.randint(0, 97, (3, 7))
    with torch.no_grad():
        ref = model(ids).logits
        assert not any(decoding._PACKED in vars(p) for p in model.parameters())
        with decoding_layout(model, pack=True):
            packed = [n for n, p in model.named_parameters() if decoding._PACKED in vars(p)]
            fused = [m.fused_qkv[0] for m in model.modules() if isinstance(m, MultiHeadAttention)]
            assert fused and all(decoding._PACKED in vars(w) for w in fused)
            assert "lm_head.weight" in packed or "transformer.embeddings.word.weight" in packed
            assert not any(n.endswith((".q.weight", ".k.weight", ".v.weight")) for n in packed)  # the copy runs
            torch.testing.assert_close(model(ids).logits, ref, **TOL)
    assert not any(decoding._PACKED in vars(p) for p in model.parameters())


def test_an_eval_mode_model_keeps_packed_weights_until_train():
    model = _gpt2()
    ids = torch.randint(0, 97, (3, 7))
    ref = model(ids).logits.detach()  # autograd recording: F.linear
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref, **TOL)
    kept = [n for n, p in model.named_parameters() if decoding._PACKED in vars(p)]
    assert any(n.endswith(".fc_in.weight") for n in kept)
    attentions = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    assert all(decoding._PACKED in vars(m.fused_qkv[0]) for m in attentions)  # one packed q/k/v matmul
    model.train()
    assert not any(decoding._PACKED in vars(p) for p in model.parameters())
    assert not any("forward" in vars(m) for m in model.modules()) and all(m.fused_qkv is None for m in attentions)


def test_eval_modes_fused_qkv_follows_its_projections():
    model = _gpt2()
    ids = torch.randint(0, 97, (2, 7))
    attn = next(m for m in model.modules() if isinstance(m, MultiHeadAttention))
    with torch.no_grad():
        model(ids)
        attn.k.weight.mul_(2)  # in place
        torch.testing.assert_close(model(ids).logits, model(ids, output_attentions=True).logits, **TOL)
        apply_lora(model, targets=("q", "v"), rank=2)  # new modules over the same weights
        for m in model.modules():
            if hasattr(m, "lora_B"):
                nn.init.normal_(m.lora_B)
        fast = model(ids).logits
        assert attn.fused_qkv is None
    torch.testing.assert_close(fast, model(ids).logits, **TOL)  # (autograd recording: no copies at all)


def test_a_packed_copy_follows_the_weight_it_was_made_from():
    lin = nn.Linear(24, 40)
    decoding.inference_linears(lin, True)
    x = torch.randn(5, 24)
    with torch.no_grad():
        lin(x)
        assert decoding._PACKED in vars(lin.weight)
        lin.weight.mul_(2)  # in place: the copy is stale
        torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias), **TOL)
        lin.load_state_dict({"weight": torch.randn(40, 24), "bias": torch.zeros(40)})
        torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias), **TOL)


def test_an_update_through_data_is_unseen_until_the_copies_are_refreshed():
    """``w.data.mul_`` leaves the weight's version counter alone: the packed and fused copies cannot see it
    (documented); `refresh_weight_copies`, or train() and eval() again, make them from the new weights."""
    model = _gpt2()
    ids = torch.randint(0, 97, (3, 7))
    attn = next(m for m in model.modules() if isinstance(m, MultiHeadAttention))
    for refresh in (refresh_weight_copies, lambda m: m.train().eval()):
        with torch.no_grad():
            before = model(ids).logits  # packs the weights, fuses q/k/v
            model.transformer.layers[0].mlp.fc_in.weight.data.mul_(2)
            attn.k.weight.data.mul_(2)
            assert torch.equal(model(ids).logits, before)  # the stale copies (the documented limitation)
            refresh(model)
            fresh = model(ids).logits
            assert not torch.allclose(fresh, before)
        torch.testing.assert_close(fresh, model(ids).logits, **TOL)  # (autograd recording: the weights themselves)


@pytest.mark.parametrize("rows", [2, 3, 9, 64, 300])
def test_inference_linears_equal_f_linear_and_keep_autograd(rows):
    torch.manual_seed(0)
    lin = nn.Linear(24, 40)
    decoding.inference_linears(lin, True)
    x = torch.randn(rows, 24, requires_grad=True)
    with torch.no_grad():
        torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias), **TOL)
    lin(x).sum().backward()  # autograd recording: F.linear, which has a backward
    assert lin.weight.grad is not None and x.grad is not None


def test_a_nested_layout_adds_only_its_packing_and_leaves_the_outer_one(monkeypatch):
    """A server's worker holds the layout for its lifetime; a task route's generate enters it again between
    two steps: the inner context packs (and unpacks) the weights, the outer forwards and fused q/k/v stay."""
    monkeypatch.setattr(decoding, "KEEP_PACKED_UP_TO", 0)  # (no copies kept by eval mode itself)
    model = _gpt2()
    ids = torch.randint(0, 97, (3, 7))
    fused = lambda: [m.fused_qkv for m in model.modules() if isinstance(m, MultiHeadAttention)]  # noqa: E731
    same = lambda a, b: len(a) == len(b) and all(x is y for x, y in zip(a, b))  # noqa: E731
    with torch.no_grad():
        ref = model(ids).logits
        with decoding_layout(model):
            outer = fused()
            with decoding_layout(model, pack=True):
                assert same(fused(), outer) and all(decoding._PACKED in vars(w) for w, *_ in outer)
                torch.testing.assert_close(model(ids).logits, ref, **TOL)
            assert not any(decoding._PACKED in vars(p) for p in model.parameters())
            assert all("forward" in vars(m) for m in model.modules() if type(m) is nn.Linear) and same(fused(), outer)
            torch.testing.assert_close(model(ids).logits, ref, **TOL)
    assert all(f is None for f in fused())


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
