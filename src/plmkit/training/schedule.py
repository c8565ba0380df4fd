"""Learning-rate schedule driven by training progress (steps and/or elapsed time).

Progress is the fraction of the run done: `step / total_steps`, or with a time
budget `elapsed / time_budget` (cramming-style: the LR reaches its floor when
time runs out); with both, whichever is further. The trainer calls
`schedule.update(step, elapsed)` before every optimizer step.
"""

from __future__ import annotations

import math

import torch

from plmkit.training.config import TrainConfig


class LRSchedule:
    """Warmup, then linear / cosine decay to `min_lr_ratio` (or constant).

    Every group's LR is `base_lr * factor`, where base_lr is the group's LR when
    the schedule was built (layer-wise decay and head LR are kept).
    Warmup: `warmup_steps` ramps by steps ((step + 1) / warmup_steps);
    `warmup_ratio` is a fraction of the run's planned steps, or of a time budget when no step count is
    planned. With both, warmup counts steps: warming up over a fraction of the time instead left a
    post-LN Marian about 25 steps of warmup on this CPU and it stalled (fr-en, 20 minutes: BLEU 0.07 after
    809 steps against 1.7 after 510 with step warmup); a budget that ends the run before its warmup steps
    then never reaches the peak LR, so give --warmup-steps for such runs.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int | None) -> None:
        self.optimizer = optimizer
        self.kind = cfg.schedule
        self.min_lr_ratio = cfg.min_lr_ratio
        self.total_steps = total_steps
        self.time_budget = cfg.time_budget
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.warmup_steps = cfg.warmup_steps
        self.warmup_fraction = 0.0  # warmup by progress (time-based warmup_ratio)
        if cfg.warmup_ratio and total_steps:  # (by steps even with a time budget: see the class docstring)
            self.warmup_steps = max(1, round(cfg.warmup_ratio * total_steps))
        elif cfg.warmup_ratio:
            self.warmup_fraction = cfg.warmup_ratio
        self.last_factor: float | None = None  # of the latest update
        self.join: tuple[float, float] | None = None  # (factor, this schedule's own factor) there: continue_from

    def progress(self, step: int, elapsed: float = 0.0) -> float:
        """Fraction of the run done before update `step` (0-based), in [0, 1]."""
        done = 0.0
        if self.total_steps:
            done = step / self.total_steps
        if self.time_budget:
            done = max(done, elapsed / self.time_budget)
        return min(max(done, 0.0), 1.0)

    def factor(self, step: int, elapsed: float = 0.0) -> float:
        """LR multiplier for update `step` (0-based) after `elapsed` seconds of training."""
        p = self.progress(step, elapsed)
        if self.warmup_steps:
            warm = min(1.0, (step + 1) / self.warmup_steps)
            warm_end = self.warmup_steps / self.total_steps if self.total_steps else 0.0
        elif self.warmup_fraction:
            warm = min(1.0, p / self.warmup_fraction)
            warm_end = self.warmup_fraction
        else:
            warm, warm_end = 1.0, 0.0
        t = 0.0 if warm_end >= 1 else min(max((p - warm_end) / (1 - warm_end), 0.0), 1.0)
        factor = warm * self._decay(t)
        if self.join is not None:  # a resumed run with changes: this schedule's shape, scaled to go on from there
            start, own = self.join
            floor = self.min_lr_ratio
            if own - floor > 1e-12:
                factor = min(1.0, floor + (start - floor) * (factor - floor) / (own - floor))
        return factor

    def continue_from(self, step: int, elapsed: float, factor: float) -> None:
        """Go on from `factor`, that of the last update that ran (update `step - 1`; a run resumed at
        `step` with a changed length, schedule or lr): the rest of this schedule, rescaled so that its
        own factor at update `step - 1` becomes `factor` and it still ends at its floor, so the LR
        multiplier moves on from where it was instead of jumping to where a schedule rebuilt for the
        new run would be. A schedule that did not change goes on exactly as it was."""
        self.join = None
        self.join = (factor, self.factor(step - 1, elapsed))

    def _decay(self, t: float) -> float:
        floor = self.min_lr_ratio
        if self.kind == "linear":
            return 1.0 - (1.0 - floor) * t
        if self.kind == "cosine":
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
        return 1.0

    def update(self, step: int, elapsed: float = 0.0) -> float:
        """Set every group's LR for update `step`; returns the factor."""
        factor = self.factor(step, elapsed)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor
        self.last_factor = factor
        return factor

    def state_dict(self) -> dict:
        return {"base_lrs": list(self.base_lrs), "last_factor": self.last_factor,
                "join": list(self.join) if self.join is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.base_lrs = list(state["base_lrs"])
        self.last_factor = state.get("last_factor")
        self.join = tuple(state["join"]) if state.get("join") is not None else None


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int | None) -> LRSchedule:
    """The LR schedule of `cfg` over `total_steps` updates (None: time budget only)."""
    return LRSchedule(optimizer, cfg, total_steps)
