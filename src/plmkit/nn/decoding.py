"""Fast CPU paths for inference: decoding, where each step multiplies one row per sequence by every
weight matrix and is bound by streaming the weights from memory, and encoders on a few sentences.

Measured on one core (AMD EPYC, fp32, GB/s of weights streamed by one 1-row matmul):

    block weights, row-major (out, in)   oneDNN 27-29 for every shape tried (21 at 768 x 768)
                                         MKL (PyTorch's F.linear) 16-25
    block weights, column-major          oneDNN 22-31 at GPT-2 small's shapes, but 11 when the rows
                                         of the (in, out) storage lie a multiple of 4 KiB apart
                                         (1024-wide models: cache-set aliasing); MKL 24-27
    vocabulary projection (V, D)         oneDNN column-major 34 (11 when V*4 is a multiple of 4 KiB),
                                         row-major 26-30; MKL row-major 17-23

Hence ``decoding_layout``: every plain fp32 ``nn.Linear`` runs through oneDNN, block weights keep
their layout, q/k/v become one matmul, and the LM head is stored column-major unless its rows would
alias. A batch of 8 rows gains more than one row (oneDNN is ~2x MKL there). Same weights, fp32
throughout: results differ from ``F.linear`` by fp32 rounding only.

Re-measured with every weight read cold, as in a real step (Marian-base: 6 decoder layers + a 32,000 x
512 head, one core, ms per step):

    rows   block weights: row-major   oneDNN packed   head: oneDNN col.   MKL col.   oneDNN packed
    1                     5.9         6.4             5.2                 2.5        4.4
    4                     10.0        5.0             5.3                 7.6        -
    32                    20.3        15.6            12.2                17.1       11.1

so one row multiplies the column-major head through MKL (``F.linear``), and a long enough call with 2 or
more rows per step (beams, batches) first packs each weight into oneDNN's blocked layout
(``pack=True``): bit-identical to the unpacked oneDNN product from 2 rows on, and 20-50% faster. (Where
MKL's packing is there, `pack_weight` uses it instead: see below.)
Packing everything costs ~0.1 s for those 150 MB (about what 15 steps at 32 rows save) and holds a
copy of the decoder's weights until the call ends.

Encoders (eval mode, `inference_linears`): a forward pass multiplies each weight by the batch's
tokens, tens to hundreds of rows, where MKL packs the weight again at every call. A copy packed once
saves that. oneDNN's blocked layout was 1.29x MKL at 30 rows x 384 x 1536 (one core, AMD EPYC); MKL's
own packed layout (``cblas_sgemm_pack``, `mkl_packing`: on Intel CPUs) is faster still. Measured on an
Intel Xeon (one core, fp32, us per product, warm):

    rows x 384 -> 1536        8      26     64     256    850
    F.linear (MKL)            229    337    605    2020   6672
    oneDNN, packed copy       200    349    573    1918   6699
    MKL, packed copy          124    258    518    1944   6363

and in a whole MiniLM classifier (one review, ~26 tokens, one thread, two runs): 15.2 / 18.9 ms with
oneDNN's copies, 12.3 / 14.6 with MKL's (a 4 x 256 student 6.6 / 7.3 -> 4.6 / 6.0); one sentence through
all-MiniLM-L6-v2 (2 threads) 0.94x Hugging Face's speed -> 1.26x. Decoding with packed weights is about
the same (GPT-2 small, 8 rows a step: 0.97x; 4 beams: 1.10x). The copy is made the first time the weight
runs, kept while the weight is unchanged (an update through ``.data`` goes unseen: `refresh_weight_copies`),
and dropped by ``train()``; MKL's takes ~1.5x the weight's memory (and ~8 MB of address space more).

Small weights are the exception: oneDNN costs ~10-15 us more per call than MKL (and the rows' padding a
few more), which a small matrix does not earn back. One row of a weight of 1 MiB or less (256 x 1024,
512 x 512) runs through MKL: marian-small (d 256) decodes at 3.4 instead of 4.0 ms per step; Marian-base
and GPT-2 small (larger matrices) are unchanged. Any number of rows of a weight of 256 KiB or less
(256 x 256) does too: a 6-layer BERT classifier, one core, ms per sentence, eval mode:

    d_model, tokens          32, 30   64, 30   128, 8   128, 30   192, 30   256, 30   384, 30
    every weight packed      2.61     3.01     2.71     4.10      5.20      7.22      11.46
    256 KiB or less: MKL     1.19     1.50     1.91     3.15      4.92      7.05      11.46
"""
from __future__ import annotations

from contextlib import contextmanager
from functools import cache, partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.nn.tracing import is_traceable
from plmkit.utils.device import cpuinfo

HAS_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
CAN_PACK = HAS_ONEDNN_LINEAR and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
ONE_ROW_MKL_UP_TO = 2 ** 18  # weights of at most 1 MiB (fp32): one row runs faster through MKL (see above)
MKL_UP_TO = 2 ** 16  # weights of at most 256 KiB: any number of rows runs faster through MKL
_PACKED = "_packed_copy"  # the attribute of a weight Parameter that holds its packed copy, with its key and layout
_DEPTH = "_decoding_layouts"  # the attribute of a model that counts the decoding_layout contexts it is in
PACKED_ROWS_UP_TO = 256  # rows of a product on a packed copy (more: F.linear)
KEEP_PACKED_UP_TO = 2 ** 30  # bytes of fp32 Linear weights an eval-mode model keeps a packed copy of


def decode_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, pack: bool = False) -> Tensor:
    """``F.linear(x, weight, bias)``, through oneDNN or MKL for fp32 CPU tensors without autograd: one row as
    the table above says; 2 to ``PACKED_ROWS_UP_TO`` rows on the weight's packed copy if it has one
    (`pack_weight`), or one made now and kept with ``pack`` (`inference_linears`). A copy in MKL's layout
    takes any row count; oneDNN (its packed copy, or the weight itself) takes the rows padded to a multiple
    of 8: it builds a kernel for every shape it meets (~0.7 ms each, then cached), and an encoder's row
    count is its batch's token count, new at nearly every call: rounded, a weight meets at most 32 row
    counts. Plain ``F.linear`` above that (within ~5% there), for weights of at most ``MKL_UP_TO``
    elements (see above), while autograd records (neither op has a backward) and on the traceable path (a
    graph exporter knows neither op)."""
    if (not HAS_ONEDNN_LINEAR or weight.device.type != "cpu" or not weight.dtype == x.dtype == torch.float32
            or is_traceable() or (torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad))):
        return F.linear(x, weight, bias)
    rows = x.numel() // x.shape[-1]
    if rows > PACKED_ROWS_UP_TO or weight.numel() <= (ONE_ROW_MKL_UP_TO if rows == 1 else MKL_UP_TO):
        return F.linear(x, weight, bias)
    if rows == 1:
        if weight.t().is_contiguous():  # MKL's gemv
            return F.linear(x, weight, bias)
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    packed = _packed_copy(weight, pack)
    flat = x.reshape(rows, x.shape[-1])
    if packed is not None and packed[1]:  # MKL's layout: any row count
        y = torch.ops.mkl._mkl_linear(flat.contiguous(), packed[0], weight, bias, rows)
        return y.view(*x.shape[:-1], y.shape[-1])
    padded = -(-rows // 8) * 8
    if padded != rows:
        flat = F.pad(flat, (0, 0, 0, padded - rows))
    y = torch.ops.mkldnn._linear_pointwise(flat, weight if packed is None else packed[0], bias, "none", [], "")
    return y[:rows].view(*x.shape[:-1], y.shape[-1])


def _packed_copy(weight: Tensor, pack: bool) -> tuple[Tensor, bool] | None:
    """The weight's packed copy and whether it is in MKL's layout: the one it holds while the weight is
    unchanged (same storage, no in-place update since), else a new one with ``pack``, else None."""
    entry = vars(weight).get(_PACKED)
    if entry is not None and entry[0] == weight_key(weight):
        return entry[1:]
    if pack and pack_weight(weight) is not None:
        return vars(weight)[_PACKED][1:]
    return None


@cache
def mkl_packing() -> bool:
    """Whether fp32 weights pack into MKL's layout: on an Intel CPU (where it was measured, and where MKL runs
    its own fastest kernels; elsewhere oneDNN's layout, measured on an AMD EPYC), with MKL there, and its
    packing behaving as `decode_linear` relies on (checked once, on a small weight): the packed copy is the
    same whatever row count it is made for, and serves any row count (PyTorch's op is told the rows of each
    call), giving F.linear's product."""
    ops = torch.ops.mkl
    if not (cpuinfo("vendor_id") == "GenuineIntel" and torch.backends.mkl.is_available()
            and hasattr(ops, "_mkl_linear") and hasattr(ops, "_mkl_reorder_linear_weight")):
        return False
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(48, 40, generator=g), torch.randn(48, generator=g)
    try:
        with torch.no_grad():
            packed = ops._mkl_reorder_linear_weight(w, 1)
            if packed.shape != ops._mkl_reorder_linear_weight(w, 512).shape:
                return False
            for rows in (3, 37):
                x = torch.randn(rows, 40, generator=g)
                if not torch.allclose(ops._mkl_linear(x, packed, w, b, rows), F.linear(x, w, b), rtol=1e-4, atol=1e-4):
                    return False
    except RuntimeError:
        return False
    return True


def weight_key(weight: Tensor) -> tuple[int | None, int]:
    """What a packed copy is valid for: the weight's storage and in-place updates (an inference tensor has
    no version counter: one made inside ``torch.inference_mode`` is not updated in place outside it).

    Not seen: an in-place update through ``weight.data`` (``w.data.mul_(2)``, ``w.data[:] = ...``), which
    bumps the counter of the ``.data`` tensor, not the weight's; only a pass over the weight could tell,
    as costly as the product it guards. Such code calls `refresh_weight_copies` (or ``model.train()``)."""
    return None if weight.is_inference() else weight._version, weight.data_ptr()


def _decode_forward(module: nn.Linear, x: Tensor, pack: bool = False) -> Tensor:
    return decode_linear(x, module.weight, module.bias, pack)


def _our_forward(module: nn.Module) -> partial | None:
    forward = vars(module).get("forward")
    return forward if isinstance(forward, partial) and forward.func is _decode_forward else None


def pack_weight(weight: Tensor) -> Tensor | None:
    """Give ``weight`` (a Parameter or plain tensor, (out, in), fp32 on CPU) a packed copy, in MKL's layout
    (`mkl_packing`) or else oneDNN's blocked one, which `decode_linear` uses while the weight is unchanged,
    until `unpack_weight`; returns it."""
    if not (weight.device.type == "cpu" and weight.dtype == torch.float32):
        return None
    mkl = mkl_packing()
    if not (mkl or CAN_PACK):
        return None
    with torch.no_grad():
        w = weight.detach()
        packed = (torch.ops.mkl._mkl_reorder_linear_weight(w.contiguous(), 64) if mkl
                  else torch.ops.mkldnn._reorder_linear_weight(w, None))
    setattr(weight, _PACKED, (weight_key(weight), packed, mkl))
    return packed


def unpack_weight(weight: Tensor) -> None:
    vars(weight).pop(_PACKED, None)


def is_sharded(model: nn.Module) -> bool:
    """Whether FSDP2 manages ``model`` or a part of it (what fully_shard gives a module): its weights are
    views into buffers it refills in place, unseen by their version counters, so no copy may be kept."""
    return any(hasattr(m, "unshard") and hasattr(m, "reshard") for m in model.modules())


def _plain_linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if type(m) is nn.Linear]


def _keeps_packed(module: nn.Module) -> bool:
    forward = _our_forward(module)
    return forward is not None and forward.keywords.get("pack", False)


def inference_linears(model: nn.Module, on: bool) -> None:
    """Eval mode (``on``; `PreTrainedModel.train` calls this): every plain ``nn.Linear`` of ``model`` runs
    through `decode_linear` (F.linear again while autograd records), and, unless its fp32 CPU weights
    exceed ``KEEP_PACKED_UP_TO`` bytes, each weight packs itself the first time it multiplies several rows
    and keeps that copy while it is unchanged: 1.1-2x F.linear's speed at encoder shapes on one core (the
    more, the fewer the rows: a sentence alone gains most), for ~1.5x the weights' memory. ``on`` False
    (training) drops the forwards and the copies. Each self-attention then runs q, k and v as one
    matmul on a copy of their weights (packed in turn): 1.27x three packed ones at 30 rows x 384 x 1152,
    more for a pruned layer's narrow projections. A model sharded by FSDP2 is left as it is.

    The copies follow the weights through new tensors, ``load_state_dict`` and in-place updates of the
    weights themselves (an optimizer step, ``with torch.no_grad(): w.mul_(2)``), but not through
    ``w.data`` (``w.data.mul_(2)``: see `weight_key`): after such an update call `refresh_weight_copies`
    (or ``train()``), else the model keeps computing with the old weights."""
    linears = _plain_linears(model)
    sharded = is_sharded(model)
    keep = on and not sharded and sum(m.weight.numel() * 4 for m in linears if m.weight.device.type == "cpu"
                                      and m.weight.dtype == torch.float32) <= KEEP_PACKED_UP_TO
    for m in linears:
        if on and not sharded and ("forward" not in vars(m) or _our_forward(m)):
            m.forward = partial(_decode_forward, m, pack=keep)  # an instance attribute shadows nn.Linear.forward
        elif not on and _our_forward(m):
            del m.forward
        if not keep:
            unpack_weight(m.weight)
    for m in _self_attentions(model):
        m.fuse_qkv(keep, pack=True)  # one q/k/v matmul (a copy of their weights, packed in turn)


def refresh_weight_copies(model: nn.Module) -> None:
    """Drop the copies eval mode (`inference_linears`) and `decoding_layout` keep of ``model``'s weights:
    packed copies, each self-attention's fused q/k/v (made again now from the current weights) and its
    joined int8 q/k/v, int8 layers' kernels; the others are made again at their next use. Needed after an
    in-place update through ``.data``, which the copies cannot detect (`weight_key`); ``model.train()``
    drops the fp32 ones too."""
    for m in _plain_linears(model):
        unpack_weight(m.weight)
    for m in model.modules():
        if hasattr(m, "_current_kernel"):  # plmkit.nn.quantized.QuantizedLinear
            m._kernel = None
        if hasattr(m, "fuse_qkv"):
            if m.fused_qkv is not None:
                m.fuse_qkv(True, pack=m._fused_from[1])
            m._int8_joined = None


def _cross_attentions(model: nn.Module) -> list[nn.Module]:
    return [m.cross_attn for m in model.modules() if getattr(m, "cross_attn", None) is not None]


def _self_attentions(model: nn.Module) -> list[nn.Module]:
    """The attention modules of ``model`` that can run q, k and v as one matmul (cross-attention: q alone)."""
    cross = set(map(id, _cross_attentions(model)))
    return [m for m in model.modules() if hasattr(m, "fuse_qkv") and id(m) not in cross]


def column_major_lm_head(model: nn.Module) -> None:
    """Store ``model.lm_head.weight`` column-major, (in, out) in memory (see the table above); kept
    until ``row_major_lm_head``.

    Value, shape and Parameter object are unchanged (``weight`` becomes a transposed view; tied token
    embeddings share it). The conversion copies the matrix once, so it is kept across ``generate``
    calls; ``GenerationMixin.train()`` undoes it (training prefers rows, as do embedding lookups).
    A model sharded by FSDP2 keeps its layout: its weights are views into the buffers FSDP gathers them
    into, which new storage would cut them off from.
    """
    head = getattr(model, "lm_head", None)
    sharded = is_sharded(model)
    if (isinstance(head, nn.Linear) and not sharded and head.weight.device.type == "cpu"
            and head.weight.is_contiguous() and (head.out_features * head.weight.element_size()) % 4096):
        with torch.inference_mode(False), torch.no_grad():  # an ordinary tensor even inside inference mode
            head.weight.data = head.weight.data.t().contiguous().t()
        model._column_major_head = True


def row_major_lm_head(model: nn.Module) -> None:
    """Undo ``column_major_lm_head``."""
    if getattr(model, "_column_major_head", False):
        with torch.inference_mode(False), torch.no_grad():
            model.lm_head.weight.data = model.lm_head.weight.data.contiguous()
        model._column_major_head = False


@contextmanager
def decoding_layout(model: nn.Module, pack: bool = False):
    """The fast paths above for the duration of the context (one ``generate`` call): oneDNN for plain
    fp32 ``nn.Linear`` layers, one q/k/v matmul per decoder self-attention (its weights concatenated
    on entry, a copy dropped on exit), and the LM head column-major (kept). ``pack``: the weights that
    run at every step (not an encoder-decoder's encoder) packed (`pack_weight`), the copies dropped on exit.
    No-op while training, off CPU and for a model without parameters (one onnxruntime runs); subclasses
    (LoRA layers) keep their own forward.

    Re-entrant: inside another context on the same model (a server's worker holds one for its lifetime,
    and a task route's ``generate`` runs between its steps) only the packing is added, and undone on exit;
    the outer context's layout stays. Threads that share a model enter and leave under its lock.
    """
    first = next(model.parameters(), None)
    if model.training or first is None or first.device.type != "cpu":
        yield
        return
    outer = not getattr(model, _DEPTH, 0)
    if outer:
        column_major_lm_head(model)
    linears = _plain_linears(model)
    installed = [m for m in linears if "forward" not in vars(m)] if outer else []  # (eval mode's stay)
    # one q/k/v matmul where a step runs one token: not in cross-attention (q alone) nor in an
    # encoder-decoder's encoder (once per call, all tokens at once): the copies would only cost memory
    encoder = list(model.get_encoder().modules()) if getattr(model, "is_encoder_decoder", False) else []
    cross = _cross_attentions(model)
    in_encoder = set(map(id, encoder))
    attentions = [m for m in _self_attentions(model) if id(m) not in in_encoder]
    fused_here = [m for m in attentions if m.fused_qkv is None] if outer else []  # (eval mode's copies stay)
    if outer:
        for m in installed:
            m.forward = partial(_decode_forward, m)  # an instance attribute shadows nn.Linear.forward
        for m in fused_here:
            m.fuse_qkv(True)
    sharded = is_sharded(model)
    once = set(map(id, encoder + [p for m in cross for p in (m.k, m.v)]))  # (project the source once)
    once |= {id(p) for m in attentions if m.fused_qkv is not None for p in (m.q, m.k, m.v)}  # (the copy runs)
    packed = [] if not pack or sharded else [
        w for w in [m.weight for m in linears if id(m) not in once and not _keeps_packed(m)]
        + [m.fused_qkv[0] for m in attentions if m.fused_qkv is not None]
        if _PACKED not in vars(w) and w.numel() > MKL_UP_TO]  # (an outer context's packing stays)
    for w in packed:
        pack_weight(w)
    setattr(model, _DEPTH, getattr(model, _DEPTH, 0) + 1)
    try:
        yield
    finally:
        setattr(model, _DEPTH, getattr(model, _DEPTH) - 1)
        if outer:
            for m in installed:
                del m.forward
            for m in fused_here:
                m.fuse_qkv(False)
        for w in packed:
            unpack_weight(w)


__all__ = ["HAS_ONEDNN_LINEAR", "column_major_lm_head", "decode_linear", "decoding_layout", "inference_linears",
           "is_sharded", "pack_weight", "refresh_weight_copies", "row_major_lm_head", "unpack_weight"]
