"""`BatchLoader`: deterministic, resumable batching in the main process.

The order of epoch `e` depends only on `(seed, e)`, and the loader remembers
where it is inside the epoch, so a run restored from `state_dict()` sees
exactly the batches it would have seen without the interruption.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Sequence

import torch

from plmkit.errors import CheckpointError, ConfigError

MEGA_BATCH = 50  # batches per mega-batch when grouping by length


class BatchLoader:
    """Iterate `collate_fn([dataset[i] ...])` batches, one epoch per `for` loop.

    `group_by_length` (a callable `example -> length` or a list of lengths) puts
    examples of similar length together: the shuffled order is cut into
    mega-batches of ~50 batches, each sorted by length and cut into batches,
    then the batch order is shuffled (the batch holding the longest example goes
    first so an out-of-memory error shows up at once).

    Iteration state (epoch, position) lives on the loader: a `for` loop that is
    left early resumes where it stopped. Use one iterator at a time.
    """

    def __init__(
        self,
        dataset: Sequence[Any],
        batch_size: int,
        collate_fn: Callable[[list[Any]], dict[str, torch.Tensor]],
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        group_by_length: Callable[[Any], int] | Sequence[int] | None = None,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.collate_fn = collate_fn
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.lengths = self._lengths(group_by_length)
        self.epoch = 0
        self.position = 0  # index of the next batch inside `self.epoch`
        if len(self) == 0:
            raise ConfigError(
                f"BatchLoader has no batches: {len(dataset)} examples, batch_size={batch_size}, drop_last={drop_last}"
            )

    def _lengths(self, group_by_length: Callable[[Any], int] | Sequence[int] | None) -> list[int] | None:
        if group_by_length is None:
            return None
        if callable(group_by_length):
            return [int(group_by_length(self.dataset[i])) for i in range(len(self.dataset))]
        lengths = [int(n) for n in group_by_length]
        if len(lengths) != len(self.dataset):
            raise ConfigError(f"group_by_length has {len(lengths)} lengths for {len(self.dataset)} examples")
        return lengths

    def __len__(self) -> int:
        """Batches per epoch."""
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """Example indices of every batch of `epoch`, in order."""
        n = len(self.dataset)
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % (2**63))
        order = torch.randperm(n, generator=generator).tolist() if self.shuffle else list(range(n))
        if self.lengths is not None:
            return self._grouped_batches(order, generator)
        batches = [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        return batches[: len(self)]

    def _grouped_batches(self, order: list[int], generator: torch.Generator) -> list[list[int]]:
        lengths = self.lengths
        mega = self.batch_size * MEGA_BATCH
        batches: list[list[int]] = []
        for start in range(0, len(order), mega):
            chunk = sorted(order[start : start + mega], key=lambda i: -lengths[i])
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        if self.drop_last and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
            longest = max(range(len(batches)), key=lambda b: lengths[batches[b][0]])
            batches[0], batches[longest] = batches[longest], batches[0]
        return batches

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        """The rest of the current epoch; afterwards the loader is at the next epoch."""
        if self.position >= len(self):
            self.epoch, self.position = self.epoch + 1, 0
        batches = self.epoch_batches(self.epoch)
        while self.position < len(batches):
            batch = self.collate_fn([self.dataset[i] for i in batches[self.position]])
            self.position += 1
            yield batch
        self.epoch, self.position = self.epoch + 1, 0

    def forever(self) -> Iterator[dict[str, torch.Tensor]]:
        """Batches across epochs without end, for step-based training."""
        while True:
            yield from self

    @property
    def epochs_done(self) -> float:
        """Fractional number of epochs consumed so far."""
        return self.epoch + self.position / len(self)

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "num_examples": len(self.dataset),
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: dict[str, int], strict: bool = True) -> None:
        """Continue where `state` was; ``strict=False`` (a run resumed with other data or another batch
        size) keeps the epoch and moves to the same fraction of it."""
        changed = []
        for key in ("num_examples", "batch_size"):
            mine = len(self.dataset) if key == "num_examples" else self.batch_size
            if key in state and state[key] != mine:
                changed.append(key)
                if strict:
                    raise CheckpointError(
                        f"loader state was saved with {key}={state[key]} but this loader has {key}={mine}; "
                        "resume with the same data and batch size"
                    )
        self.seed = int(state.get("seed", self.seed))
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        if changed:
            was = state.get("num_examples", len(self.dataset)) / state.get("batch_size", self.batch_size)
            self.position = min(len(self), round(self.position / max(was, 1) * len(self)))
