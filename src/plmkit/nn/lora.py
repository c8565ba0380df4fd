"""LoRA (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models").

``LoRALinear`` is an ``nn.Linear`` whose frozen weight W gets a trainable low-rank update:
y = x W^T + b + (alpha / rank) * dropout(x) A^T B^T, with A (rank, in) random and B (out, rank)
zero, so training starts from the pretrained function. It keeps W and b under their usual names
(``weight``, ``bias``), so ``merge_lora`` / ``plain_state_dict`` give an ordinary checkpoint that
Hugging Face loads.

``TrainableRowsEmbedding`` does the same for tokens a task adds (e.g. relation-extraction entity
markers): their embedding rows are new, so they train (as a small separate parameter, like PEFT's
``trainable_token_indices``) while the rest of the frozen matrix stays exactly as it was.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.errors import ConfigError


class LoRALinear(nn.Linear):
    adapters = ("lora_A", "lora_B")  # parameters that merged_weight() folds into `weight`

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
        return self.merge(self.weight, self.lora_A, self.lora_B)

    def merge(self, weight: Tensor, lora_A: Tensor, lora_B: Tensor) -> Tensor:
        """`weight` with the update of adapters `lora_A`, `lora_B` folded in (whole tensors: this layer's, or
        those of a state dict gathered from shards)."""
        return weight + ((lora_B @ lora_A) * self.scaling).to(weight.dtype)  # (out, in)

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

    to_plain = to_linear

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha:g}"


class TrainableRowsEmbedding(nn.Embedding):
    """An nn.Embedding whose `weight` is frozen except the rows of `token_ids`, which are read from the
    trainable (n, D) parameter `trainable_rows`; `merged_weight()` writes them back into the matrix."""

    adapters = ("trainable_rows",)

    @classmethod
    def wrap(cls, embedding: nn.Embedding, token_ids) -> "TrainableRowsEmbedding":
        """A TrainableRowsEmbedding sharing `embedding`'s weight tensor (frozen)."""
        weight = embedding.weight
        module = cls(embedding.num_embeddings, embedding.embedding_dim, embedding.padding_idx, device="meta")
        module.weight = weight
        weight.requires_grad_(False)
        ids = torch.tensor(sorted(set(int(t) for t in token_ids)), dtype=torch.long, device=weight.device)
        if not len(ids) or ids.min() < 0 or ids.max() >= weight.shape[0]:
            raise ConfigError(f"trainable embedding rows {ids.tolist()} must be non-empty and below {weight.shape[0]}")
        row_of = torch.full((weight.shape[0],), -1, dtype=torch.long, device=weight.device)
        row_of[ids] = torch.arange(len(ids), device=weight.device)
        module.register_buffer("token_ids", ids, persistent=False)
        module.register_buffer("row_of", row_of, persistent=False)  # vocabulary id -> trainable row, or -1
        module.trainable_rows = nn.Parameter(weight.detach()[ids].clone())
        return module

    def forward(self, input_ids: Tensor) -> Tensor:
        out = super().forward(input_ids)  # (..., D) from the frozen matrix
        row = self.row_of[input_ids]  # (...,) index into trainable_rows, -1 for other tokens
        own = F.embedding(row.clamp(min=0), self.trainable_rows)  # (..., D)
        return torch.where((row >= 0).unsqueeze(-1), own, out)

    def merged_weight(self) -> Tensor:
        return self.merge(self.weight, self.trainable_rows)

    def merge(self, weight: Tensor, trainable_rows: Tensor) -> Tensor:
        """`weight` with `trainable_rows` written into the rows of `token_ids` (whole tensors, as
        `LoRALinear.merge`)."""
        return weight.index_copy(0, self.token_ids.to(weight.device), trainable_rows.to(weight.device, weight.dtype))

    def to_plain(self) -> nn.Embedding:
        plain = nn.Embedding(self.num_embeddings, self.embedding_dim, self.padding_idx,
                             device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            plain.weight.copy_(self.merged_weight())
        return plain

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, trainable_rows={self.token_ids.tolist()}"


MERGEABLE = (LoRALinear, TrainableRowsEmbedding)


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` in place of `model`'s submodule called `name`."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


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
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and not isinstance(m, LoRALinear)]
    unmatched = [t for t in targets if not any(_matches(n, (t,)) for n, _ in linears)]
    if unmatched:  # every target names layers: a typo is not dropped silently
        names = sorted({n.rsplit(".", 1)[-1] for n, _ in linears})
        raise ConfigError(f"apply_lora: no Linear layer matches {unmatched}; this model's Linear names: {names}")
    chosen = [(n, m) for n, m in linears if _matches(n, targets)]
    _refuse_tied(model, chosen)
    wrapped = []
    for name, module in chosen:
        replace_module(model, name, LoRALinear.wrap(module, rank, alpha, dropout))
        wrapped.append(name)
    if freeze_base:
        for pname, p in model.named_parameters():
            p.requires_grad_(".lora_" in pname or pname.startswith("lora_"))
    return wrapped


def _refuse_tied(model: nn.Module, linears: list[tuple[str, nn.Linear]]) -> None:
    """A ConfigError naming the first of `linears` whose weight another module shares (an LM head tied to the
    token embeddings): the update would reach the head's output alone, no merge can keep both uses apart,
    and a checkpoint storing the tied weight once (under the embedding's name) would lose it."""
    holders: dict[int, list[tuple[nn.Module, str]]] = {}  # id(parameter) -> (module holding it, its name)
    for mname, m in model.named_modules():  # (a layer shared under several names counts once)
        for pname, p in m.named_parameters(recurse=False):
            holders.setdefault(id(p), []).append((m, f"{mname}.{pname}" if mname else pname))
    for name, module in linears:
        others = [where for m, where in holders.get(id(module.weight), []) if m is not module]
        if others:
            raise ConfigError(f"apply_lora: {name}.weight is tied to {others[0]} (one tensor, e.g. "
                              f"tie_word_embeddings): LoRA on {name} would update its output only, and a checkpoint "
                              f"keeping the tied weight once would lose the update; leave {name} out of the targets "
                              "or untie the weights first")


def train_embedding_rows(model: nn.Module, embedding: nn.Embedding, token_ids) -> TrainableRowsEmbedding:
    """Replace `embedding` (a module of `model`, e.g. its frozen input embeddings) by a
    TrainableRowsEmbedding in which only the rows of `token_ids` train."""
    name = next((n for n, m in model.named_modules() if m is embedding), None)
    if name is None:
        raise ConfigError("train_embedding_rows: the embedding is not a module of the model")
    if any(m is not embedding and getattr(m, "weight", None) is embedding.weight for m in model.modules()):
        raise ConfigError("train_embedding_rows: the embedding matrix is tied to another layer (e.g. an LM head), "
                          "which would keep reading the frozen rows; untie it or train the whole matrix")
    wrapped = TrainableRowsEmbedding.wrap(embedding, token_ids)
    replace_module(model, name, wrapped)
    return wrapped


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA update (and trainable embedding rows) into plain modules (in place); returns
    the model."""
    for name, module in list(model.named_modules()):
        if isinstance(module, MERGEABLE):
            merged = module.to_plain()
            merged.train(module.training)
            merged.weight.requires_grad_(True)
            replace_module(model, name, merged)
    return model.train(model.training)  # (the mode's layout for the new modules: eval mode's fast Linear path)


def plain_state_dict(model: nn.Module, state: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """`model.state_dict()` (or `state`, the model's whole state gathered from its shards) with LoRA updates
    (and trainable embedding rows) merged into the weights and the adapter tensors left out: what a saved
    checkpoint holds (the model itself is unchanged)."""
    state = dict(model.state_dict() if state is None else state)
    for name, module in model.named_modules():
        if isinstance(module, MERGEABLE):
            prefix = f"{name}." if name else ""
            adapters = [state.pop(prefix + adapter) for adapter in module.adapters]
            with torch.no_grad():
                state[prefix + "weight"] = module.merge(state[prefix + "weight"], *adapters).detach()
    return state
