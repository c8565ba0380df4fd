"""`TrainConfig`: every knob of a training run, validated once, in one place."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from plmkit.errors import ConfigError
from plmkit.utils.device import PRECISIONS, is_device_name
from plmkit.utils.settings import Settings, check_field_types, is_int, setting

SCHEDULES = ("linear", "cosine", "constant")

_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smhd])", re.IGNORECASE)


def parse_duration(value: str | int | float) -> float:
    """Seconds in a duration: 90, "90", "90s", "10m", "1.5h", "1h30m", "2d"."""
    if isinstance(value, bool):
        raise ConfigError(f"invalid duration {value!r}; use seconds or a string like '90s', '10m', '1h'")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not parts or "".join(n + u for n, u in parts).lower() != text.lower():
                raise ConfigError(
                    f"invalid duration {value!r}; use seconds or a string like '90s', '10m', '1h', '1h30m'"
                ) from None
            seconds = sum(float(n) * _DURATION_UNITS[u.lower()] for n, u in parts)
    else:
        raise ConfigError(f"invalid duration {value!r}; use seconds or a string like '90s', '10m', '1h'")
    if not seconds > 0:
        raise ConfigError(f"duration must be positive, got {value!r}")
    return seconds


@dataclass
class TrainConfig(Settings):
    """Hyper-parameters and bookkeeping of a training run (the ``train`` section of a run).

    Length: any of `max_steps`, `epochs`, `time_budget` (seconds or "10m"); the run
    stops at whichever comes first. A step is one optimizer update, i.e.
    `grad_accum_steps` batches. `*_every` counts optimizer steps.
    """

    section = "train"
    alternatives = (("warmup_steps", "warmup_ratio"),)

    # optimizer
    lr: float = setting(5e-5, "peak learning rate", metavar="LR")
    weight_decay: float = setting(0.01, "AdamW weight decay", metavar="W")
    betas: tuple[float, float] = setting((0.9, 0.999), "AdamW betas, comma-separated", metavar="B1,B2")
    eps: float = setting(1e-8, "AdamW epsilon", metavar="EPS")
    layer_lr_decay: float | None = setting(None, "layer i gets lr * d**(L - i)", metavar="D")
    head_lr: float | None = setting(None, "learning rate of the task head", metavar="LR")
    # schedule
    warmup_steps: int = setting(0, "linear warmup steps (instead of --warmup-ratio)", metavar="N")
    warmup_ratio: float = setting(0.0, "linear warmup over this fraction of the run", metavar="F")
    schedule: str = setting("linear", "learning-rate decay after warmup", choices=SCHEDULES)
    min_lr_ratio: float = setting(0.0, "the schedule ends at lr * this", metavar="F")
    # length
    max_steps: int | None = setting(None, "stop after N optimizer steps", metavar="N")
    epochs: float | None = setting(None, "stop after this many passes over the training data", metavar="N")
    time_budget: float | str | None = setting(None, "stop after this long, e.g. 600, 10m, 1h30m", metavar="DUR")
    # step
    grad_clip: float | None = setting(1.0, "clip the gradient norm to NORM (0: off)", metavar="NORM")
    grad_accum_steps: int = setting(1, "batches whose gradients add up to one optimizer step",
                                    flags=("--grad-accum-steps", "--grad-accum"), metavar="N")
    precision: str = setting("auto", "auto: bf16 on GPUs that support it, else fp32", choices=PRECISIONS)
    device: str = setting("auto", "auto, cpu, cuda or cuda:N", metavar="DEV")
    seed: int = setting(0, "random seed", metavar="N")
    # bookkeeping
    log_every: int = setting(10, "log the loss to metrics.jsonl every N steps", metavar="N")
    eval_every: int | None = setting(None, "evaluate every N steps", metavar="N")
    save_every: int | None = setting(None, "checkpoint every N steps (one is always written at the end)", metavar="N")
    keep_last: int = setting(2, "checkpoints kept on disk, the newest", metavar="N")
    early_stopping_patience: int | None = setting(None, "stop after N evaluations without improvement", metavar="N")
    metric_for_best: str | None = setting(None, "metric choosing the best checkpoint",
                                          flags=("--metric-for-best", "--metric"), metavar="NAME")
    greater_is_better: bool | None = setting(None, "whether a larger metric_for_best is better "
                                                   "(off: yes, except for *loss and *perplexity)")
    progress_bar: bool = setting(True, "progress bars", const_flags={"--no-progress": False})

    def validate(self) -> None:
        if self.time_budget is not None:
            self.time_budget = parse_duration(self.time_budget)
        self.betas = tuple(float(b) for b in self.betas)
        if self.grad_clip is not None and self.grad_clip <= 0:
            self.grad_clip = None  # 0 means "no clipping", as in HF's max_grad_norm
        if self.greater_is_better is None and self.metric_for_best is not None:
            self.greater_is_better = not self.metric_for_best.endswith(("loss", "perplexity"))
        need = self.need

        def positive_int_or_none(name: str) -> None:
            value = getattr(self, name)
            need(value is None or (is_int(value) and value >= 1), f"{name} must be a positive integer or None, got {value!r}")

        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"betas must be two numbers in [0, 1), got {self.betas}")
        need(self.eps > 0, f"eps must be > 0, got {self.eps}")
        need(self.layer_lr_decay is None or 0 < self.layer_lr_decay <= 1, f"layer_lr_decay must be in (0, 1] or None, got {self.layer_lr_decay}")
        need(self.head_lr is None or self.head_lr > 0, f"head_lr must be > 0 or None, got {self.head_lr}")
        need(is_int(self.warmup_steps) and self.warmup_steps >= 0, f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        need(0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        need(not (self.warmup_steps and self.warmup_ratio), "set warmup_steps or warmup_ratio, not both")
        need(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        need(0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        positive_int_or_none("max_steps")
        need(self.epochs is None or self.epochs > 0, f"epochs must be > 0 or None, got {self.epochs}")
        need(
            any(v is not None for v in (self.max_steps, self.epochs, self.time_budget)),
            "say how long to train: set max_steps, epochs or time_budget",
        )
        need(is_int(self.grad_accum_steps) and self.grad_accum_steps >= 1, f"grad_accum_steps must be an integer >= 1, got {self.grad_accum_steps!r}")
        need(self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        need(
            is_device_name(self.device),
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}",
        )
        need(is_int(self.seed), f"seed must be an integer, got {self.seed!r}")
        need(is_int(self.log_every) and self.log_every >= 1, f"log_every must be an integer >= 1, got {self.log_every!r}")
        positive_int_or_none("eval_every")
        positive_int_or_none("save_every")
        need(is_int(self.keep_last) and self.keep_last >= 1, f"keep_last must be an integer >= 1, got {self.keep_last!r}")
        positive_int_or_none("early_stopping_patience")
        need(
            self.early_stopping_patience is None or self.metric_for_best is not None,
            "early_stopping_patience needs metric_for_best (e.g. 'accuracy' or 'loss')",
        )

    @classmethod
    def with_defaults(cls, defaults: Mapping[str, Any], given: Mapping[str, Any]) -> "TrainConfig":
        """`given` over a run type's `defaults` (see `Settings.layered`)."""
        return cls.layered(defaults, given)


__all__ = ["PRECISIONS", "SCHEDULES", "TrainConfig", "check_field_types", "parse_duration"]
