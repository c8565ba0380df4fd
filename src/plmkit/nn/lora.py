"""LoRA (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models").

``LoRALinear`` is an ``nn.Linear`` whose frozen weight W gets a trainable low-rank update:
y = x W^T + b + (alpha / rank) * dropout(x) A^T B^T, with A (rank, in) random and B (out, rank)
zero, so training starts from the pretrained function. It keeps W and b under their usual names
(``weight``, ``bias``), so ``merge_lora`` / ``plain_state_dict`` give an ordinary checkpoint that
Hugging Face loads.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.errors import ConfigError


class LoRALinear(nn.Linear):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, rank: int = 8, alpha: float = 16.0,
                 dropout: float = 0.0, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        if not (isinstance(rank, int) and rank > 0):
            raise ConfigError(f"LoRA rank must be a positive integer, got {rank!r}")
        self.rank, self.alpha = rank, float(alpha)
        self.scaling = self.alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, device=device, dtype=dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)

    @classmethod
    def wrap(cls, linear: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> "LoRALinear":
        """A LoRALinear sharing `linear`'s weight and bias tensors."""
        lora = cls(linear.in_features, linear.out_features, linear.bias is not None, rank, alpha, dropout,
                   device=linear.weight.device, dtype=linear.weight.dtype)
        lora.weight = linear.weight
        lora.bias = linear.bias
        lora.weight.requires_grad_(False)
        if lora.bias is not None:
            lora.bias.requires_grad_(False)
        return lora

    def delta_weight(self) -> Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling  # (out, in)

    def merged_weight(self) -> Tensor:
        return self.weight + self.delta_weight().to(self.weight.dtype)

    def forward(self, x: Tensor) -> Tensor:
        out = F.linear(x, self.weight, self.bias)
        return out + F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B) * self.scaling

    def to_linear(self) -> nn.Linear:
        """A plain nn.Linear with the update folded into its weight."""
        linear = nn.Linear(self.in_features, self.out_features, self.bias is not None,
                           device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(self.merged_weight())
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha:g}"


def _matches(name: str, targets) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def apply_lora(model: nn.Module, targets=("q", "v"), rank: int = 8, alpha: float = 16.0, dropout: float = 0.0,
               freeze_base: bool = True) -> list[str]:
    """Replace every nn.Linear whose name ends with one of `targets` (e.g. "q" matches
    `bert.layers.0.attn.q`) by a LoRALinear; with `freeze_base`, every other parameter is frozen
    (unfreeze the task head afterwards). Returns the wrapped module names."""
    targets = tuple(targets)
    if not targets:
        raise ConfigError("apply_lora: give at least one target module name (e.g. 'q', 'v')")
    wrapped = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and not isinstance(module, LoRALinear) and _matches(name, targets):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, LoRALinear.wrap(module, rank, alpha, dropout))
            wrapped.append(name)
    if not wrapped:
        linears = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ConfigError(f"apply_lora: no Linear layer matches {list(targets)}; this model's Linear names: {linears}")
    if freeze_base:
        for pname, p in model.named_parameters():
            p.requires_grad_(".lora_" in pname or pname.startswith("lora_"))
    return wrapped


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into a plain nn.Linear (in place); returns the model."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            merged = module.to_linear()
            merged.train(module.training)
            merged.weight.requires_grad_(True)
            setattr(parent, child, merged)
    return model


def plain_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """`model.state_dict()` with LoRA updates merged into the weights and the lora_* tensors left
    out: what a saved checkpoint holds (the model itself is unchanged)."""
    state = model.state_dict()
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            prefix = f"{name}." if name else ""
            with torch.no_grad():
                state[prefix + "weight"] = module.merged_weight().detach()
            state.pop(prefix + "lora_A", None)
            state.pop(prefix + "lora_B", None)
    return state
