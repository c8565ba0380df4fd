"""plmkit.nn.quantized's int8 kernels: fbgemm's for few rows, oneDNN's for many where the CPU has AMX.

The oneDNN path runs on any x86 CPU (without AMX on its other int8 instructions), so it is tested here
whatever the machine; which path a layer takes is tested with the AMX flag set by hand. Tolerance:
within 3% of the largest |output| of the fp32 product of the dequantized weight (measured ~1%)."""
import pytest
import torch
from torch import nn

import plmkit.nn.quantized as quantized
from plmkit.errors import ConfigError
from plmkit.nn.quantized import AMX_ROW_MULTIPLE, AMX_ROWS_FROM, QuantizedLinear


def int8_layer(d_in: int, d_out: int) -> QuantizedLinear:
    torch.manual_seed(0)
    return QuantizedLinear.from_float(nn.Linear(d_in, d_out), "dynamic-int8").eval()


def close_to_fp32(layer: QuantizedLinear, x: torch.Tensor, y: torch.Tensor) -> bool:
    exact = x @ layer.dequantized().T + layer.bias
    return y.shape == exact.shape and bool((y - exact).abs().max() <= 0.03 * exact.abs().max())


needs_onednn = pytest.mark.skipif("onednn" not in torch.backends.quantized.supported_engines,
                                  reason="this PyTorch build has no oneDNN quantized engine")


# (in, out): the padding rows go before the input when it is the narrower side, after the output else
@needs_onednn
@pytest.mark.parametrize("shape", [(48, 160), (160, 48)])
@pytest.mark.parametrize("rows", [AMX_ROWS_FROM, AMX_ROWS_FROM + 5, AMX_ROWS_FROM + AMX_ROW_MULTIPLE - 1])
def test_the_onednn_kernel_gives_the_fp32_product_at_any_row_count(shape, rows):
    layer = int8_layer(*shape)
    x = torch.randn(rows, shape[0], generator=torch.Generator().manual_seed(rows))
    with torch.no_grad():
        y = layer._onednn_linear(x)
        assert close_to_fp32(layer, x, y)
        assert close_to_fp32(layer, x, torch.ops.quantized.linear_dynamic(x, layer._current_kernel("fbgemm"), True))


@needs_onednn
@pytest.mark.parametrize("amx", [True, False])
def test_many_rows_take_onednn_only_where_the_cpu_has_amx(monkeypatch, amx):
    monkeypatch.setattr(quantized, "HAS_AMX_INT8", amx)
    layer = int8_layer(32, 64)
    engine = torch.backends.quantized.engine
    with torch.no_grad():
        few = torch.randn(2, 7, 32)
        assert close_to_fp32(layer, few, layer(few)) and set(layer._kernel[1]) == {"fbgemm"}
        many = torch.randn(3, AMX_ROWS_FROM // 3 + 1, 32)  # (B, T, in): flattened, then shaped back
        assert close_to_fp32(layer, many, layer(many))
    assert set(layer._kernel[1]) == ({"fbgemm", "onednn"} if amx else {"fbgemm"})
    assert torch.backends.quantized.engine == engine  # packing for oneDNN switched it back


@needs_onednn
def test_kernels_are_packed_again_when_the_weights_change():
    layer = int8_layer(32, 64)
    x = torch.randn(5, 32)
    with torch.no_grad():
        before = layer(x)
        layer._onednn_linear(torch.randn(AMX_ROW_MULTIPLE, 32))
        layer.weight.neg_()
        assert set(layer._kernel[1]) == {"fbgemm", "onednn"}
        after = layer(x)
    assert set(layer._kernel[1]) == {"fbgemm"}  # made again from the new weights, the stale oneDNN one dropped
    assert close_to_fp32(layer, x, after) and not torch.allclose(before, after)


def test_the_cpu_flag_is_read_from_proc_cpuinfo(proc_cpuinfo):
    cpuinfo = proc_cpuinfo
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512_vnni amx_bf16 amx_tile amx_int8\n")
    assert quantized.cpu_has_amx_int8()
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512_vnni amx_bf16 amx_tile\n")
    assert not quantized.cpu_has_amx_int8()
    cpuinfo.unlink()
    assert not quantized.cpu_has_amx_int8()


def quantized_bert():
    from plmkit.compression.quantize import quantize_model
    from plmkit.models.bert import BertConfig, BertForSequenceClassification
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig.from_preset("bert-tiny", vocab_size=300, num_labels=3))
    model.init_weights(0.05)
    return quantize_model(model.eval(), "dynamic-int8")


def test_int8_q_k_v_run_as_one_layer_with_the_same_results(monkeypatch):
    model = quantized_bert()
    attention = next(m for m in model.modules() if hasattr(m, "_int8_qkv"))
    ids = torch.randint(5, 300, (3, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 7:] = mask[2, 4:] = 0  # rows of their own lengths: the packed path; one row alone: the padded one
    with torch.no_grad():
        joined = [model(input_ids=ids, attention_mask=mask).logits, model(input_ids=ids[:1]).logits]
        assert attention._int8_joined is not None
        assert attention._int8_joined[1].out_features == 3 * attention.q.out_features
        monkeypatch.setattr(type(attention), "_int8_qkv", lambda self: None)  # three matmuls, as before
        apart = [model(input_ids=ids, attention_mask=mask).logits, model(input_ids=ids[:1]).logits]
    assert all(torch.equal(a, b) for a, b in zip(joined, apart))


def test_the_joined_copy_follows_the_projections():
    model = quantized_bert()
    attention = next(m for m in model.modules() if hasattr(m, "_int8_qkv"))
    x = torch.randn(1, 5, attention.q.in_features)
    with torch.no_grad():
        first = attention._int8_qkv()
        assert attention._int8_qkv() is first  # kept while q, k and v are unchanged
        attention.v.weight.neg_()
        q, k, v = attention.project_qkv(x)
        assert attention._int8_qkv() is not first
        assert torch.equal(v, attention.v(x)) and torch.equal(q, attention.q(x))


def test_only_matching_int8_layers_are_joined():
    a, b = int8_layer(32, 16), int8_layer(48, 16)
    with pytest.raises(ConfigError, match="one input width"):
        QuantizedLinear.joined([a, b])
    joined = QuantizedLinear.joined([a, a])
    x = torch.randn(4, 32)
    with torch.no_grad():
        assert torch.equal(joined(x), torch.cat([a(x), a(x)], -1))


def test_a_layer_made_in_inference_mode_runs():  # (its tensors have no version counter: generate joins q, k, v there)
    a = int8_layer(32, 16)
    x = torch.randn(4, 32)
    with torch.inference_mode():
        joined = QuantizedLinear.joined([a, a])
        assert torch.equal(joined(x), torch.cat([a(x), a(x)], -1))
