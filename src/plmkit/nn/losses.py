"""Cross-entropy over a large vocabulary without materialising the logits.

``linear_cross_entropy(h, weight, targets)`` equals ``F.cross_entropy(h @ weight.T, targets,
ignore_index=-100)`` (mean over the non-ignored targets) but works chunk by chunk over the tokens:
each chunk's logits live in one reused (chunk, V) buffer, and the forward pass already computes the
gradients w.r.t. ``h`` and ``weight`` (softmax - one-hot), so neither the (N, V) logits nor their
gradient ever exist. With a 50k vocabulary the logits of a training batch are hundreds of MB, and
allocating them and the passes of log-softmax and its backward over them cost a large fraction of
the LM head's matmuls; here each chunk sees the matmuls, one max, one in-place exp and one sum.

Rows whose target is ignored are dropped before any matmul (prompt tokens in SFT cost nothing).
If every target is ignored the loss is nan (0 / 0, as ``F.cross_entropy``) and the gradients are zero.
"""
from __future__ import annotations

import torch
from torch import Tensor

from plmkit.utils.constants import IGNORE_INDEX

CHUNK_BYTES = 32 * 2**20  # fp32 logits of one chunk of tokens (128 rows of a 50k vocabulary)


def _chunked(h: Tensor, weight: Tensor, targets: Tensor, n: int, bias: Tensor | None = None, smoothing: float = 0.0,
             need: tuple[bool, bool, bool] = (False, False, False)):
    """Sum of the losses of rows h (M, D) with valid targets (M,) and, for the inputs ``need`` names
    (h, weight, bias), the gradients of their mean over ``n`` tokens: grad_h (M, D), grad_w (V, D)
    and grad_b (V,) fp32.

    With label smoothing e (as ``F.cross_entropy(label_smoothing=e)``) a row's loss is
    lse - (1 - e) z_target - e mean(z), whose gradient w.r.t. the logits z is softmax - (1 - e) onehot - e / V.
    """
    need_h, need_w, need_b = need
    m, v = h.shape[0], weight.shape[0]
    rows = CHUNK_BYTES // (4 * v)
    chunk = max(1, min(m, rows - rows % 64 if rows >= 64 else rows))  # multiples of 64 suit BLAS
    buf = torch.empty(chunk, v, dtype=weight.dtype, device=h.device)
    total = torch.zeros((), dtype=torch.float32, device=h.device)
    on, off = 1.0 - smoothing, smoothing / v  # weights of the target's logit and of every logit
    grad_h = torch.empty_like(h) if need_h else None
    grad_w = (torch.empty if m else torch.zeros)(weight.shape, dtype=torch.float32, device=h.device) if need_w else None
    grad_b = torch.zeros(v, dtype=torch.float32, device=h.device) if need_b else None
    column_sum = weight.sum(0) if smoothing and need_h else None  # (D,)
    for start in range(0, m, chunk):
        hc, tc = h[start:start + chunk], targets[start:start + chunk]  # (C, D), (C,)
        logits = torch.mm(hc, weight.t(), out=buf[:hc.shape[0]])  # (C, V)
        if bias is not None:
            logits.add_(bias)
        logits = logits.float()
        target_logit = logits.gather(1, tc[:, None]).squeeze(1)  # (C,)
        mean_logit = logits.mean(1) if smoothing else 0.0
        top = logits.amax(1, keepdim=True)  # (C, 1)
        e = logits.sub_(top).exp_()  # (C, V): unnormalised softmax, in place
        s = e.sum(1)  # (C,)
        total += (top.squeeze(1) + s.log() - on * target_logit - smoothing * mean_logit).sum()
        if not any(need):
            continue
        # d loss / d logits = (e / s - on onehot - off) / n; 1/s and 1/n scale the small (C, D) operands instead
        e = e.to(weight.dtype)
        scale = 1.0 / (s * n)  # (C,)
        if need_h:
            gh = torch.mm(e, weight, out=grad_h[start:start + chunk])  # (C, D)
            gh.mul_(scale[:, None].to(gh.dtype)).sub_(weight[tc], alpha=on / n)
            if smoothing:
                gh.sub_(column_sum, alpha=off / n)
        if need_w:
            hs = (hc * scale[:, None]).to(weight.dtype)  # (C, D)
            if weight.dtype == torch.float32:
                grad_w.addmm_(e.t(), hs, beta=float(start > 0))  # beta=0: the empty buffer is not read
            else:  # accumulate low-precision products in fp32
                part = torch.mm(e.t(), hs)
                grad_w.copy_(part) if start == 0 else grad_w.add_(part)
            grad_w.index_add_(0, tc, hc.float(), alpha=-on / n)
            if smoothing:
                grad_w.sub_(hc.float().sum(0), alpha=off / n)  # the same (D,) row for every word
        if need_b:
            grad_b += (e.float() * scale[:, None]).sum(0)
            grad_b.index_add_(0, tc, torch.full(tc.shape, -on / n, device=h.device))
            grad_b -= off * hc.shape[0] / n
    return total, grad_h, grad_w, grad_b


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, smoothing: float) -> Tensor:
        keep = (targets != IGNORE_INDEX).nonzero().squeeze(1)  # (M,) rows that count
        n = keep.numel()
        need = tuple(ctx.needs_input_grad[:3])
        total, grad_h, grad_w, grad_b = _chunked(h.index_select(0, keep), weight, targets[keep], max(n, 1), bias,
                                                 smoothing, need)
        if need[0]:
            grad_h = torch.zeros_like(h).index_copy_(0, keep, grad_h)  # ignored rows: zero
        ctx.grads = (grad_h, None if grad_w is None else grad_w.to(weight.dtype),
                     None if grad_b is None else grad_b.to(bias.dtype))
        return total / n if n else total.new_tensor(float("nan"))

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        if ctx.grads is None:
            raise RuntimeError("linear_cross_entropy computes its gradients in the forward pass and can "
                               "only be backpropagated once (retain_graph is not supported)")
        grads, ctx.grads = ctx.grads, None
        return *(None if g is None else g.mul_(grad_loss.to(g.dtype)) for g in grads), None, None


def linear_cross_entropy(h: Tensor, weight: Tensor, targets: Tensor, bias: Tensor | None = None,
                         label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy of ``h @ weight.T + bias`` (N, V) against ``targets`` (N,), -100 = ignored,
    with ``F.cross_entropy``'s ``label_smoothing``.

    h: (N, D), or (B, T, D) (any leading dimensions) with targets (B, T); weight: (V, D), e.g. an LM
    head's (possibly tied) weight; bias: (V,) or None. Under autocast the matmuls run in the autocast
    dtype, as ``F.linear`` would; the softmax is always fp32.
    """
    if targets.shape != h.shape[:-1]:
        raise ValueError(f"linear_cross_entropy: targets have shape {tuple(targets.shape)}, expected "
                         f"{tuple(h.shape[:-1])} (the leading dimensions of h, {tuple(h.shape)})")
    h, targets = h.reshape(-1, h.shape[-1]), targets.reshape(-1)  # (..., D) -> (N, D), (...) -> (N,)
    if torch.is_autocast_enabled(h.device.type):
        dtype = torch.get_autocast_dtype(h.device.type)
        h, weight = h.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    with torch.autocast(h.device.type, enabled=False):
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (h, weight, bias)):
            return _LinearCrossEntropy.apply(h, weight, bias, targets, label_smoothing)
        keep = targets != IGNORE_INDEX
        n = int(keep.sum())
        total = _chunked(h[keep], weight, targets[keep], n, bias, label_smoothing)[0]
        return total / n if n else total.new_tensor(float("nan"))


__all__ = ["IGNORE_INDEX", "linear_cross_entropy"]
