"""A toy language model and data with plmkit's naming, for the training tests."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_model
from torch import nn

from plmkit.data.loader import BatchLoader

VOCAB = 32
MASK_ID = 1


class ToyLM(nn.Module):
    """embeddings.* / layers.{i}.* / norm / head, like the real models; dropout on."""

    def __init__(self, hidden: int = 16, n_layers: int = 2, dropout: float = 0.1, nan_at_call: int | None = None,
                 nan_grad_at_call: int | None = None):
        super().__init__()
        self.config = SimpleNamespace(hidden=hidden, n_layers=n_layers, dropout=dropout)
        self.embeddings = nn.ModuleDict({"word_embeddings": nn.Embedding(VOCAB, hidden), "norm": nn.LayerNorm(hidden)})
        self.layers = nn.ModuleList(
            nn.ModuleDict({"norm": nn.LayerNorm(hidden), "dense": nn.Linear(hidden, hidden)}) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, VOCAB)
        self.dropout = nn.Dropout(dropout)
        self.nan_at_call = nan_at_call
        self.nan_grad_at_call = nan_grad_at_call  # that call's loss finite, its gradient NaN
        self.calls = 0

    def forward(self, input_ids, attention_mask=None, labels=None):
        self.calls += 1
        h = self.embeddings["norm"](self.embeddings["word_embeddings"](input_ids))
        for layer in self.layers:
            h = h + self.dropout(torch.tanh(layer["dense"](layer["norm"](h))))
        logits = self.head(self.norm(h))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
            if self.nan_at_call is not None and self.calls >= self.nan_at_call:
                loss = loss * float("nan")
            if self.calls == self.nan_grad_at_call:
                loss = NaNGradient.apply(loss)
        return SimpleNamespace(loss=loss, logits=logits)

    def save_pretrained(self, directory):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(vars(self.config)))
        save_model(self, str(directory / "model.safetensors"))


class NaNGradient(torch.autograd.Function):
    """The identity, whose gradient is NaN."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def make_dataset(n: int = 24, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"input_ids": [rng.randrange(2, VOCAB) for _ in range(rng.randint(3, 12))]} for _ in range(n)]


def masking_collate(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Pad, and mask 25% of tokens with the *global* torch RNG (like dynamic MLM masking)."""
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.zeros(len(examples), width, dtype=torch.long)
    mask = torch.zeros(len(examples), width, dtype=torch.long)
    for row, example in enumerate(examples):
        ids[row, : len(example["input_ids"])] = torch.tensor(example["input_ids"])
        mask[row, : len(example["input_ids"])] = 1
    labels = ids.masked_fill(mask == 0, -100)
    masked = (torch.rand(ids.shape) < 0.25) & (mask == 1)
    return {"input_ids": ids.masked_fill(masked, MASK_ID), "attention_mask": mask, "labels": labels}


def make_loader(batch_size: int = 4, n: int = 24, **kwargs) -> BatchLoader:
    return BatchLoader(make_dataset(n), batch_size, masking_collate, **kwargs)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


@pytest.fixture
def toy():
    return SimpleNamespace(
        ToyLM=ToyLM,
        make_dataset=make_dataset,
        masking_collate=masking_collate,
        make_loader=make_loader,
        read_jsonl=read_jsonl,
    )


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny tensors: one thread is faster, and immune to OpenMP spinning on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
