"""int8 Linear layers (and embeddings) for CPU inference (`plmkit quantize`; a quantized directory loads through
`from_pretrained`, which builds these layers, of its config.json's ``quantization_config`` method, where the
weights hold int8 ones).

Weights are stored as int8, symmetric, one fp32 scale per output row: W ~ weight_scale[:, None] * weight,
under Hugging Face-style names (``weight`` int8 (out, in), ``weight_scale`` (out,), ``bias``), so a
checkpoint is plain safetensors. Token (and position) embeddings that no output layer shares are
int8 the same way, one scale per row, looked up and scaled back to fp32 (`QuantizedEmbedding`): in a
small encoder they are half the weights (all-MiniLM-L6-v2: 11.7M of 22.7M). Two methods for the
Linear layers:

* ``dynamic-int8``: activations are quantized at run time (per tensor, by their own range) and the
  matmul runs in int8 with int32 accumulation: ``quantized::linear_dynamic``, the kernel behind
  PyTorch's dynamic quantization, fed from our int8 + scales (packed once, on first use): fbgemm's,
  and oneDNN's for products of many rows on a CPU with AMX (below).
* ``weight-int8``: int8 only on disk and on load; the weight is dequantized once and the matmul runs
  in fp32 (outputs closest to fp32; no speed-up on a CPU: see below).

Why fbgemm: measured on this machine (AMD EPYC, avx512_vnni, torch 2.13, one thread), the four
Linear layers of an all-MiniLM-L6-v2 block (384 -> 1152 / 384 / 1536, 1536 -> 384), summed:

    rows (tokens)                          32         1024
    fp32 F.linear (MKL)                 1.28 ms     36.3 ms
    fbgemm quantized::linear_dynamic    0.36 ms     10.2 ms   <- 3.5x
    oneDNN qlinear_pointwise (u8 acts)  0.68 ms     27.8 ms   (activations quantized in Python ops)
    torch._int_mm + per-row scales      0.49 ms     18.3 ms
    torchao 0.18 Int8DynamicActivation  1.69 ms     27.9 ms   (eager; its CPU path is not a fused kernel)
    weight-only: torch._weight_int8pack_mm 47 ms (fp32 inputs; bf16: about fp32's time), dequantize +
    F.linear: fp32's time at 1024 rows, 3-10x slower at 32 (a fresh fp32 copy per call)

Why oneDNN for many rows where the CPU has AMX (Intel Xeon, amx_int8): fbgemm does not use AMX's int8
tiles, oneDNN does. Measured on such a machine (torch 2.13, one thread), per layer, in microseconds:

    rows                      32: fbgemm  oneDNN     1024: fbgemm  oneDNN
    384 -> 384                     48       72               802     483
    384 -> 1152 (q, k, v)          80       65              1922     821
    384 -> 1536                   110       97              2523     999
    1536 -> 384                   104       99              2584    1334

and in the whole MiniLM (a classifier, reviews at their own lengths, fastest of 5 interleaved rounds):
batch 1-8 the same or slower through oneDNN (a review alone: 9.4 against 5.9 ms when every product ran
there), batch 16 51.4 -> 40.3 ms, 32 80.5 -> 64.9 ms, 64 174 -> 140 ms. Hence oneDNN from
``AMX_ROWS_FROM`` rows, fbgemm below and on every other CPU. oneDNN makes a kernel for each shape
(~0.7 ms, then cached), so its row counts are rounded up to a multiple of ``AMX_ROW_MULTIPLE``.

`torch.ao.quantization.quantize_dynamic` runs the same fbgemm kernel but is deprecated in torch 2.13
(and pickles modules); plmkit only creates the per-channel quantized tensor the kernels' packing
takes (`_packed_weight`, for either engine), and stores plain int8 tensors. The kernels are x86 CPU
kernels, so these layers refuse another device, and they train nothing: a quantized model is for
inference.
"""
from __future__ import annotations

import threading
import warnings
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.errors import ConfigError, TrainingError
from plmkit.nn.decoding import weight_key
from plmkit.utils.device import cpuinfo

METHODS = ("dynamic-int8", "weight-int8")
AMX_ROWS_FROM = 256  # products of at least this many rows run through oneDNN where the CPU has AMX (see above)
AMX_ROW_MULTIPLE = 64  # ... on row counts rounded up to a multiple of this (oneDNN makes a kernel per shape)
_PACKING = threading.Lock()  # packing switches the process-wide quantized engine for a moment


def cpu_has_amx_int8() -> bool:
    """Whether this CPU has Intel AMX's int8 tiles (Linux's /proc/cpuinfo flag ``amx_int8``)."""
    return "amx_int8" in (cpuinfo("flags") or "").split()


HAS_AMX_INT8 = cpu_has_amx_int8()


class QuantizedLinear(nn.Module):
    """An inference-only ``nn.Linear`` with int8 weights (see the module docstring)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, method: str = "dynamic-int8"):
        super().__init__()
        if method not in METHODS:
            raise ConfigError(f"quantization method {method!r} is not one of {', '.join(METHODS)}")
        self.in_features, self.out_features, self.method = in_features, out_features, method
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None
        self._kernel: tuple[tuple, dict] | None = None  # (what they were made from, {kind: packed or fp32 weight})

    @classmethod
    def from_float(cls, linear: nn.Linear, method: str) -> "QuantizedLinear":
        """`linear`'s weight rounded to int8, each output row by its own scale (its largest |w| -> 127)."""
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, method)
        with torch.no_grad():
            q.weight, q.weight_scale = int8_rows(linear.weight)
            if linear.bias is not None:
                q.bias.copy_(linear.bias.detach().float())
        return q

    @classmethod
    def joined(cls, layers) -> "QuantizedLinear":
        """One layer giving ``layers``' outputs side by side (their weight rows, scales and biases stacked);
        they take the same input and have one method, and all or none has a bias."""
        first = layers[0]
        if any(m.in_features != first.in_features or m.method != first.method
               or (m.bias is None) != (first.bias is None) for m in layers):
            raise ConfigError("only int8 layers of one input width, method and bias use can be joined")
        q = cls(first.in_features, sum(m.out_features for m in layers), first.bias is not None, first.method)
        with torch.no_grad():
            q.weight = torch.cat([m.weight for m in layers])
            q.weight_scale = torch.cat([m.weight_scale for m in layers])
            if first.bias is not None:
                q.bias = nn.Parameter(torch.cat([m.bias for m in layers]), requires_grad=False)
        return q.eval()

    @classmethod
    def shaped_like(cls, linear: nn.Linear, method: str) -> "QuantizedLinear":
        """An empty layer of `linear`'s shape, for loading a quantized checkpoint into."""
        return cls(linear.in_features, linear.out_features, linear.bias is not None, method)

    def dequantized(self) -> Tensor:
        """The fp32 weight (out, in) the int8 one stands for."""
        return self.weight.float() * self.weight_scale.float()[:, None]

    def forward(self, x: Tensor) -> Tensor:
        """x: (..., in) -> (..., out), in x's dtype (computed in fp32 / int8)."""
        if self.method != "dynamic-int8":
            bias = None if self.bias is None else self.bias.float()
            return F.linear(x.float(), self._current_kernel("fp32"), bias).to(x.dtype)
        rows = x.numel() // x.shape[-1]
        if rows < AMX_ROWS_FROM or not HAS_AMX_INT8:
            return torch.ops.quantized.linear_dynamic(x.float(), self._current_kernel("fbgemm"), True).to(x.dtype)
        y = self._onednn_linear(x.reshape(rows, x.shape[-1]).float())  # (rows, out)
        return y.view(*x.shape[:-1], y.shape[-1]).to(x.dtype)

    def _onednn_linear(self, x: Tensor) -> Tensor:
        """x (rows, in) -> (rows, out) through oneDNN, on row counts rounded up to a multiple of
        AMX_ROW_MULTIPLE (oneDNN makes a kernel per shape, ~0.7 ms each): the padding rows are copied
        in on the narrower side, before the input or after the output."""
        kernel, rows, width = self._current_kernel("onednn"), x.shape[0], x.shape[1]
        whole = rows - rows % AMX_ROW_MULTIPLE
        if whole == rows:
            return torch.ops.quantized.linear_dynamic(x, kernel, True)
        zeros = x.new_zeros(whole + AMX_ROW_MULTIPLE - rows, width)
        if self.in_features <= self.out_features:
            padded = torch.cat([x, zeros])
            return torch.ops.quantized.linear_dynamic(padded, kernel, True)[:rows]
        tail = torch.cat([x[whole:], zeros])  # (multiple, in)
        return torch.cat([torch.ops.quantized.linear_dynamic(x[:whole], kernel, True),
                          torch.ops.quantized.linear_dynamic(tail, kernel, True)[:rows - whole]])

    def _current_kernel(self, kind: str):
        """The weight packed for an int8 kernel (`kind` "fbgemm" or "onednn"), or the dequantized fp32 one
        ("fp32"): each made on first use and again whenever the tensors changed (a loaded state dict, say)."""
        made_from = tuple(weight_key(t) for t in (self.weight, self.weight_scale, self.bias) if t is not None)
        if self._kernel is None or self._kernel[0] != made_from:
            self._kernel = (made_from, {})
        kernels = self._kernel[1]
        if kind not in kernels:
            with torch.no_grad():
                kernels[kind] = self.dequantized() if kind == "fp32" else self._packed_weight(kind)
        return kernels[kind]

    def _packed_weight(self, engine: str):
        zero_points = torch.zeros(self.out_features, dtype=torch.long)
        with warnings.catch_warnings():  # torch 2.13 warns on creating quantized tensors; the kernel takes one
            warnings.simplefilter("ignore")
            qweight = torch._make_per_channel_quantized_tensor(self.weight, self.weight_scale.double(),
                                                               zero_points, 0)
        bias = None if self.bias is None else self.bias.detach().float()
        with _PACKING:  # the engine is process-wide state: it picks the kernel the weight is packed for
            before, torch.backends.quantized.engine = torch.backends.quantized.engine, engine
            try:
                return torch.ops.quantized.linear_prepack(qweight, bias)
            finally:
                torch.backends.quantized.engine = before

    def train(self, mode: bool = True):
        return refuse_training(self, mode)

    def _apply(self, fn, recurse: bool = True):
        self._kernel = None
        return cpu_only(self, super()._apply(fn, recurse))

    def __getstate__(self):  # (copy.deepcopy, pickle): the packed kernel is made again on first use
        return {**super().__getstate__(), "_kernel": None}

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"method={self.method}")


class QuantizedEmbedding(nn.Module):
    """An inference-only ``nn.Embedding`` with int8 rows and one fp32 scale per row."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.register_buffer("weight", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(num_embeddings))

    @classmethod
    def from_float(cls, embedding: nn.Embedding, method: str | None = None) -> "QuantizedEmbedding":
        q = cls.shaped_like(embedding)
        with torch.no_grad():
            q.weight, q.weight_scale = int8_rows(embedding.weight)
        return q

    @classmethod
    def shaped_like(cls, embedding: nn.Embedding, method: str | None = None) -> "QuantizedEmbedding":
        return cls(embedding.num_embeddings, embedding.embedding_dim, embedding.padding_idx)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the vectors it returns (the model's compute dtype)."""
        return self.weight_scale.dtype

    def forward(self, ids: Tensor) -> Tensor:
        """ids (...) -> (..., D)"""
        return F.embedding(ids, self.weight).to(self.dtype) * F.embedding(ids, self.weight_scale[:, None])

    def train(self, mode: bool = True):
        return refuse_training(self, mode)

    def _apply(self, fn, recurse: bool = True):
        return cpu_only(self, super()._apply(fn, recurse))

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8"


def int8_rows(weight: Tensor) -> tuple[Tensor, Tensor]:
    """(int8 (R, C), fp32 scales (R,)): each row of `weight` rounded by its own scale, its largest |w| -> 127."""
    w = weight.detach().float().cpu()
    scale = (w.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny)  # (R,)
    return torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


def refuse_training(module: nn.Module, mode: bool) -> nn.Module:
    if mode:
        raise TrainingError("this model is quantized (int8 layers; config.json has a quantization_config): "
                            "it runs inference only and cannot be trained or fine-tuned; train the fp32 model "
                            "and quantize the result (plmkit quantize)")
    return nn.Module.train(module, False)


def cpu_only(module: nn.Module, moved: nn.Module) -> nn.Module:
    if module.weight.device.type != "cpu":
        raise ConfigError(f"int8 layers run on the CPU only (x86 fbgemm kernels), not on "
                          f"{module.weight.device.type}: use --device cpu (device='cpu')")
    return moved


INT8_OF = {nn.Linear: QuantizedLinear, nn.Embedding: QuantizedEmbedding}


def modules_to_quantize(model: nn.Module, keep: Iterable[Tensor] = ()) -> list[str]:
    """Names of `model`'s plain ``nn.Linear`` and ``nn.Embedding`` layers that quantization replaces:
    all but those whose weight another module shares (an embedding tied to an output layer) or is in
    `keep` (weights the model reads directly). LoRA layers are refused by name: merge them first."""
    from plmkit.nn.lora import MERGEABLE
    lora = [name for name, m in model.named_modules() if isinstance(m, MERGEABLE)]
    if lora:
        raise ConfigError(f"the model has unmerged LoRA layers ({', '.join(lora[:4])}{' ...' if len(lora) > 4 else ''}): "
                          "merge them first (plmkit.nn.lora.merge_lora, or save_pretrained and load the directory), "
                          "then quantize")
    owners: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        owners[id(p)] = owners.get(id(p), 0) + 1
    kept = {id(t) for t in keep}
    return [name for name, m in model.named_modules()
            if type(m) in INT8_OF and owners[id(m.weight)] == 1 and id(m.weight) not in kept]


def to_int8(model: nn.Module, names: list[str], method: str, from_weights: bool = True) -> None:
    """Put int8 layers in place of the named ones: their weights rounded (`from_weights`), or empty for
    a quantized checkpoint to load into."""
    from plmkit.nn.lora import replace_module
    for name in names:
        module = model.get_submodule(name)
        int8 = INT8_OF[type(module)]
        replace_module(model, name, (int8.from_float if from_weights else int8.shaped_like)(module, method))


def compute_dtype(embedding: nn.Module) -> torch.dtype:
    """The dtype of the vectors an embedding (int8 or not) returns: the model's compute dtype."""
    return embedding.dtype if isinstance(embedding, QuantizedEmbedding) else embedding.weight.dtype


def quantized_weight_count(model: nn.Module) -> int:
    """Weights held as int8 buffers (parameters no longer): what `num_parameters` adds back."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (QuantizedLinear, QuantizedEmbedding)))


QUANT_METHOD = "plmkit-int8"  # config.json's quantization_config[METHOD_KEY] of these layers
# not transformers' "quant_method": transformers refuses a quantization_config without one, while one it does not
# know (this) only makes transformers 5.x warn and read the int8 weights as fp32 ones
METHOD_KEY = "plmkit_quant_method"


def method_of(block, source) -> str:
    """The method of a config.json ``quantization_config`` block that plmkit runs, or a ConfigError. A
    block written with ``quant_method`` (plmkit before METHOD_KEY) has it moved to METHOD_KEY, in place:
    saved again, transformers refuses it too."""
    if isinstance(block, dict) and block.get("quant_method") == QUANT_METHOD:
        block[METHOD_KEY] = block.pop("quant_method")
    if not isinstance(block, dict) or block.get(METHOD_KEY) != QUANT_METHOD:
        found = block.get(METHOD_KEY, block.get("quant_method")) if isinstance(block, dict) else block
        raise ConfigError(f"{source}: quantization_config.quant_method {found!r} is not one plmkit runs (only "
                          f"{METHOD_KEY} {QUANT_METHOD!r}, which plmkit quantize writes); load the unquantized "
                          "model instead")
    if block.get("method") not in METHODS:
        raise ConfigError(f"{source}: quantization_config.method must be one of {', '.join(METHODS)}, "
                          f"got {block.get('method')!r}")
    return block["method"]
