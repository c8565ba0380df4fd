"""Structured pruning: whole attention heads and feed-forward neurons, ranked by how much the loss
depends on them, and physically removed (Michel et al., 2019, "Are Sixteen Heads Really Better than One?").

Importance (`importance`): a mask of ones scales each head's output (its slice of the input of the
attention's output projection) and each feed-forward neuron's activation (the input of ``fc_out``).
A unit's score is the |gradient of the loss with respect to its mask|, summed over the batches of a
labelled data set (the absolute value taken per batch, as in the paper's code and Hugging Face's
bertology script), then normalised per layer (divided by the L2 norm of the layer's scores), so
that layers compare.

Pruning (`prune`): the lowest-scored heads and neurons across all layers go, at least one of each kept
per layer. They are removed from the weights, not masked: the q/k/v rows and output-projection
columns of a head, the fc_in (and gate) rows and fc_out column of a neuron; the smaller dense matrices
make every matmul cheaper on a CPU. A head's outputs add up through the output projection and a
neuron's through fc_out, so the pruned model computes exactly what the unpruned one computes with
those units masked to zero (`masked`). With grouped-query attention (Llama) the unit is a key/value
group: its query heads' scores add up, and it goes whole (their q rows, its k/v rows, their output
columns), so every layer keeps groups of the same size. The config records the result
(`models.config.PrunableConfig`, shared by BERT, GPT-2 and Llama: Hugging Face 4.x's ``pruned_heads``
and plmkit's per-layer ``intermediate_sizes``), so that `from_pretrained` rebuilds the smaller
blocks. Encoder-decoders (cross-attention) are refused.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
from torch import Tensor, nn

from plmkit.errors import ConfigError
from plmkit.nn.attention import MultiHeadAttention
from plmkit.nn.block import TransformerBlock
from plmkit.nn.quantized import QuantizedLinear
from plmkit.utils.progress import progress_bar


def blocks(model: nn.Module) -> list[TransformerBlock]:
    """The model's Transformer blocks, in order."""
    return [m for m in model.modules() if isinstance(m, TransformerBlock)]


def check_prunable(model: nn.Module) -> list[TransformerBlock]:
    """The blocks, or a ConfigError naming what stands in the way: no blocks, int8 layers, cross-attention,
    LoRA adapters (merge them first: a saved model directory has them merged)."""
    if any(isinstance(m, QuantizedLinear) for m in model.modules()):
        raise ConfigError(f"{type(model).__name__} is quantized (int8 layers; config.json has a quantization_config): "
                          "prune the fp32 model it was quantized from, then quantize the result")
    found = blocks(model)
    if not found:
        raise ConfigError(f"{type(model).__name__} has no Transformer blocks to prune")
    for i, block in enumerate(found):
        attn = block.attn
        if block.cross_attn is not None:
            raise ConfigError(f"layer {i} has cross-attention: plmkit prunes encoders and decoders, not encoder-decoders")
        linears = [attn.q, attn.k, attn.v, attn.out, block.mlp.fc_in, block.mlp.fc_out] + (
            [block.mlp.gate] if block.mlp.gate is not None else [])
        if any(type(layer) is not nn.Linear for layer in linears):
            raise ConfigError(f"layer {i} has LoRA adapters (or other wrapped linear layers): prune a saved model "
                              "directory, whose adapters are merged")
    return found


@contextlib.contextmanager
def masked(model: nn.Module, head_masks: list[Tensor] | None = None,
           ffn_masks: list[Tensor] | None = None) -> Iterator[None]:
    """Within the block: each layer's head outputs scaled by `head_masks[i]` (H_i,) and its feed-forward
    activations by `ffn_masks[i]` (F_i,) (None: that kind unmasked)."""
    handles = []
    for i, block in enumerate(blocks(model)):
        if head_masks is not None:
            d_head = block.attn.d_head
            handles.append(block.attn.out.register_forward_pre_hook(
                lambda _, args, m=head_masks[i], d=d_head: (args[0] * m.repeat_interleave(d).to(args[0].dtype),)))
        if ffn_masks is not None:
            handles.append(block.mlp.fc_out.register_forward_pre_hook(
                lambda _, args, m=ffn_masks[i]: (args[0] * m.to(args[0].dtype),)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class Importance:
    heads: list[Tensor]  # per layer (H_i,), normalised
    neurons: list[Tensor]  # per layer (F_i,), normalised
    batches: int


def importance(model: nn.Module, batches: Iterable[dict], forward_kwargs: dict | None = None,
               progress: bool = False) -> Importance:
    """Per-layer normalised scores of every head and feed-forward neuron (see the module docstring), from
    the model's loss on `batches` (dicts the model takes, labels included), in eval mode (no dropout)."""
    found = check_prunable(model)
    device = next(model.parameters()).device
    heads = [torch.ones(b.attn.n_heads, device=device, requires_grad=True) for b in found]
    neurons = [torch.ones(b.mlp.fc_in.out_features, device=device, requires_grad=True) for b in found]
    head_sum = [torch.zeros_like(h) for h in heads]
    neuron_sum = [torch.zeros_like(n) for n in neurons]
    was_training, grads = model.training, [p.requires_grad for p in model.parameters()]
    model.eval()
    model.requires_grad_(False)  # only the masks' gradients are wanted
    n = 0
    try:
        with masked(model, heads, neurons):
            for batch in progress_bar(batches, desc="importance", unit="batch", leave=False, disable=not progress):
                batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
                out = model(**batch, **(forward_kwargs or {}))
                if out.loss is None:
                    raise ConfigError("the model returned no loss: the importance data needs labels")
                grads_ = torch.autograd.grad(out.loss, heads + neurons)
                for total, g in zip(head_sum + neuron_sum, grads_):
                    total += g.abs()
                n += 1
    finally:
        model.train(was_training)
        for p, g in zip(model.parameters(), grads):
            p.requires_grad_(g)
    if n == 0:
        raise ConfigError("no batches to score the heads and neurons on: give labelled data")
    return Importance([_normalised(s) for s in head_sum], [_normalised(s) for s in neuron_sum], n)


def _normalised(scores: Tensor) -> Tensor:
    return scores / (scores.norm() + 1e-20)


def group_size(attn: MultiHeadAttention) -> int:
    """Query heads per key/value head: the heads that go together (1 without grouped-query attention)."""
    return attn.n_heads // attn.n_kv_heads


def heads_to_remove(found: list[TransformerBlock], scores: list[Tensor], fraction: float) -> list[list[int]]:
    """Per layer, the query heads to remove: the `fraction` of all key/value groups with the lowest summed
    scores of their query heads (`lowest`), each group as its heads."""
    sizes = [group_size(b.attn) for b in found]
    groups = lowest([s.view(-1, g).sum(-1) for s, g in zip(scores, sizes)], fraction)  # (H_kv,) per layer
    return [[k * g + j for k in cut for j in range(g)] for cut, g in zip(groups, sizes)]


def lowest(scores: list[Tensor], fraction: float, multiple: int = 1) -> list[list[int]]:
    """Per layer, the units to remove: the round(fraction * all) lowest scores across layers, every
    layer keeping its best unit; with `multiple`, each layer then keeps a multiple of that many units
    (the nearest, at least one multiple; layers smaller than it or not a multiple of it as chosen):
    matmul kernels run odd widths slower (a 384 x 1381 feed-forward took longer than 384 x 1536 here)."""
    if not 0 <= fraction < 1:
        raise ConfigError(f"a pruning fraction must be in [0, 1), got {fraction}")
    total = sum(len(s) for s in scores)
    wanted = round(fraction * total)
    candidates = sorted(((float(v), layer, j) for layer, s in enumerate(scores) for j, v in enumerate(s.tolist())
                         if j != int(s.argmax())), key=lambda c: (c[0], c[1], c[2]))  # the best of each layer stays
    chosen: list[list[int]] = [[] for _ in scores]
    for _, layer, j in candidates[:wanted]:
        chosen[layer].append(j)
    for layer, s in enumerate(scores):
        n = len(s)
        if multiple > 1 and n % multiple == 0:
            kept = max(multiple, round((n - len(chosen[layer])) / multiple) * multiple)
            chosen[layer] = s.argsort(stable=True)[:n - kept].tolist()  # this layer's lowest
    return [sorted(c) for c in chosen]


def _rows(linear: nn.Linear, keep: Tensor) -> nn.Linear:
    """`linear` with only the output features `keep`."""
    out = nn.Linear(linear.in_features, len(keep), bias=linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        out.weight.copy_(linear.weight[keep])
        if linear.bias is not None:
            out.bias.copy_(linear.bias[keep])
    out.weight.requires_grad_(linear.weight.requires_grad)
    return out


def _columns(linear: nn.Linear, keep: Tensor) -> nn.Linear:
    """`linear` reading only the input features `keep` (its bias unchanged)."""
    out = nn.Linear(len(keep), linear.out_features, bias=linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        out.weight.copy_(linear.weight[:, keep])
        if linear.bias is not None:
            out.bias.copy_(linear.bias)
    return out


def remove_heads(attn: MultiHeadAttention, heads: list[int]) -> None:
    """Drop query `heads` (this layer's current numbering) from `attn`, and with grouped-query attention
    the key/value heads of their groups, which must go whole."""
    g, gone = group_size(attn), set(heads)
    keep_heads = [h for h in range(attn.n_heads) if h not in gone]
    keep_groups = sorted({h // g for h in keep_heads})
    if not keep_heads:
        raise ConfigError("a layer must keep at least one attention head")
    if len(keep_heads) != g * len(keep_groups):
        raise ConfigError(f"heads {sorted(gone)}: with grouped-query attention whole groups of {g} query heads go "
                          "(those sharing a key/value head)")
    d, device = attn.d_head, attn.q.weight.device

    def features(units: list[int]) -> Tensor:  # the d features of each head
        return torch.tensor([u * d + i for u in units for i in range(d)], device=device, dtype=torch.long)

    attn.q, attn.out = _rows(attn.q, features(keep_heads)), _columns(attn.out, features(keep_heads))
    attn.k, attn.v = _rows(attn.k, features(keep_groups)), _rows(attn.v, features(keep_groups))
    attn.n_heads, attn.n_kv_heads = len(keep_heads), len(keep_groups)
    attn.fused_qkv = None


def remove_neurons(block: TransformerBlock, neurons: list[int]) -> None:
    """Drop feed-forward `neurons` (this layer's current numbering)."""
    mlp = block.mlp
    keep = torch.tensor([j for j in range(mlp.fc_in.out_features) if j not in set(neurons)],
                        device=mlp.fc_in.weight.device, dtype=torch.long)
    if len(keep) == 0:
        raise ConfigError("a layer must keep at least one feed-forward neuron")
    mlp.fc_in = _rows(mlp.fc_in, keep)
    if mlp.gate is not None:
        mlp.gate = _rows(mlp.gate, keep)
    mlp.fc_out = _columns(mlp.fc_out, keep)


@dataclass
class Pruned:
    removed_heads: dict[int, list[int]]  # layer -> original head numbers removed (all so far)
    heads: list[int]  # heads left per layer
    ffn_sizes: list[int]  # neurons left per layer
    heads_removed_now: int
    neurons_removed_now: int


def prune(model: nn.Module, scores: Importance, heads: float = 0.0, ffn: float = 0.0, ffn_multiple: int = 1) -> Pruned:
    """Remove the `heads` fraction of the attention heads and the `ffn` fraction of the feed-forward
    neurons with the lowest `scores` (each layer's width a multiple of `ffn_multiple`: `lowest`), in
    place; the model's config then describes the smaller blocks."""
    found = check_prunable(model)
    before = model.config.removed_heads()
    head_cut, neuron_cut = heads_to_remove(found, scores.heads, heads), lowest(scores.neurons, ffn, ffn_multiple)
    removed: dict[int, list[int]] = {}
    for i, block in enumerate(found):
        original = block.attn.n_heads + len(before.get(i, ()))
        left = [h for h in range(original) if h not in set(before.get(i, ()))]  # current number -> original
        removed[i] = sorted(set(before.get(i, ())) | {left[h] for h in head_cut[i]})
        if head_cut[i]:
            remove_heads(block.attn, head_cut[i])
        if neuron_cut[i]:
            remove_neurons(block, neuron_cut[i])
    sizes = [b.mlp.fc_in.out_features for b in found]
    model.config = model.config.pruned(removed, sizes)
    model.train(model.training)  # (the mode's layout for the new Linear layers: eval mode's fast path)
    return Pruned({k: v for k, v in removed.items() if v}, [b.attn.n_heads for b in found], sizes,
                  sum(map(len, head_cut)), sum(map(len, neuron_cut)))


def masks_of(model: nn.Module, scores: Importance, heads: float, ffn: float,
             ffn_multiple: int = 1) -> tuple[list[Tensor], list[Tensor]]:
    """The 0/1 masks (per layer (H_i,), (F_i,)) that zero what `prune` with these settings removes, each on its
    layer's device (`masked` scales the layer's activations by it)."""
    found = blocks(model)
    head_cut, neuron_cut = heads_to_remove(found, scores.heads, heads), lowest(scores.neurons, ffn, ffn_multiple)
    head_masks = [torch.ones(b.attn.n_heads, device=b.attn.out.weight.device) for b in found]
    ffn_masks = [torch.ones(b.mlp.fc_in.out_features, device=b.mlp.fc_out.weight.device) for b in found]
    for i in range(len(found)):
        head_masks[i][head_cut[i]] = 0.0
        ffn_masks[i][neuron_cut[i]] = 0.0
    return head_masks, ffn_masks


__all__ = ["Importance", "Pruned", "blocks", "check_prunable", "group_size", "heads_to_remove", "importance", "lowest",
           "masked", "masks_of", "prune", "remove_heads", "remove_neurons"]
