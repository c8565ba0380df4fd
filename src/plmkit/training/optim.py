"""AdamW parameter groups (weight decay, layer-wise LR decay, head LR) and the optimizer."""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from plmkit.errors import TrainingError
from plmkit.training.config import TrainConfig
from plmkit.training.schedule import LRSchedule, build_scheduler  # noqa: F401  (re-exported)

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_EMBEDDINGS = re.compile(r"(?:^|\.)embeddings\.")


def uses_weight_decay(name: str, param: torch.Tensor) -> bool:
    """Decay matrices only: not biases, norm weights (LayerNorm/RMSNorm) or other 1-d tensors."""
    return not (name.endswith("bias") or "norm" in name.lower() or param.ndim < 2)


def depths(model: nn.Module) -> tuple[dict[str, int], int]:
    """(the depth of each parameter below the head, by name; the number of layers L), for layer-wise
    LR decay, from the bottom up: the embeddings are depth 0 (every parameter under an `embeddings.`
    and the model's input embedding, `get_input_embeddings()`: an encoder-decoder keeps its shared
    token embedding outside its stacks), layer i (`layers.{i}.`) depth i + 1. In an encoder-decoder
    (`decoder_layers()`), the decoder sits above the whole encoder, as Hugging Face-style LLRD for
    encoder-decoders counts it: with E encoder layers, decoder layer i is depth E + i + 1, and
    L = E + the decoder's layers. Heads, the pooler and final norms have no depth."""
    get_embeddings = getattr(model, "get_input_embeddings", None)
    embedding = id(get_embeddings().weight) if callable(get_embeddings) else None
    get_decoder_layers = getattr(model, "decoder_layers", None)
    upper = {id(p) for p in get_decoder_layers().parameters()} if callable(get_decoder_layers) else set()
    numbered = [(name, int(m.group(1)), id(p) in upper) for name, p in model.named_parameters()
                if (m := _LAYER.search(name))]
    below = max((i + 1 for _, i, up in numbered if not up), default=0)  # E (or the one stack's layers)
    found = {name: (below if up else 0) + i + 1 for name, i, up in numbered}
    found.update({name: 0 for name, p in model.named_parameters()
                  if name not in found and (_EMBEDDINGS.search(name) or id(p) == embedding)})
    return found, max(found.values(), default=0)


def lr_for(depth: int | None, cfg: TrainConfig, n_layers: int) -> float:
    """Learning rate of a parameter at `depth` (`depths`) of a model with `n_layers` layers.

    With `layer_lr_decay = d`: layer i gets lr * d**(n_layers - i), embeddings
    lr * d**(n_layers + 1). Everything else (heads, pooler, final norm: no depth)
    gets `head_lr` if set, else lr.
    """
    if depth is None:
        return cfg.head_lr if cfg.head_lr is not None else cfg.lr
    decay = cfg.layer_lr_decay if cfg.layer_lr_decay is not None else 1.0
    return cfg.lr * decay ** (n_layers + 1 - depth)


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: one per (lr, weight decay) pair, frozen parameters left out.

    Each group has `params`, `lr`, `weight_decay` and `names` (for inspection);
    groups come in the order their first parameter appears in the model.
    """
    depth, n_layers = depths(model)
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr = lr_for(depth.get(name), cfg, n_layers)
        weight_decay = cfg.weight_decay if uses_weight_decay(name, param) else 0.0
        group = groups.setdefault((lr, weight_decay), {"params": [], "names": [], "lr": lr, "weight_decay": weight_decay})
        group["params"].append(param)
        group["names"].append(name)
    if not groups:
        raise TrainingError("the model has no trainable parameters (all have requires_grad=False)")
    return list(groups.values())


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """torch AdamW over `param_groups`, fused (one kernel for all tensors) on CPUs and CUDA GPUs.

    On a CPU the fused step is 6-8x faster than PyTorch's default per-tensor loop (MiniLM, one
    thread: ~20 ms against ~150 ms a step) and agrees with it to float rounding.
    """
    groups = param_groups(model, cfg)
    fusable = all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=True if fusable else None)
