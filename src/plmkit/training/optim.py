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


def count_layers(model: nn.Module) -> int:
    """Number of transformer layers, from the `layers.{i}.` in parameter names."""
    indices = [int(m.group(1)) for name, _ in model.named_parameters() if (m := _LAYER.search(name))]
    return max(indices) + 1 if indices else 0


def lr_for(name: str, cfg: TrainConfig, n_layers: int) -> float:
    """Learning rate of one parameter.

    With `layer_lr_decay = d`: layer i gets lr * d**(n_layers - i), embeddings
    lr * d**(n_layers + 1). Everything else (heads, pooler, final norm) gets
    `head_lr` if set, else lr.
    """
    decay = cfg.layer_lr_decay if cfg.layer_lr_decay is not None else 1.0
    if match := _LAYER.search(name):
        return cfg.lr * decay ** (n_layers - int(match.group(1)))
    if _EMBEDDINGS.search(name):
        return cfg.lr * decay ** (n_layers + 1)
    return cfg.head_lr if cfg.head_lr is not None else cfg.lr


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: one per (lr, weight decay) pair, frozen parameters left out.

    Each group has `params`, `lr`, `weight_decay` and `names` (for inspection);
    groups come in the order their first parameter appears in the model.
    """
    n_layers = count_layers(model)
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr = lr_for(name, cfg, n_layers)
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
