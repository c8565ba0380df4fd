"""`TrainConfig`: every knob of a training run, validated once, in one place."""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Mapping

from plmkit.errors import ConfigError

SCHEDULES = ("linear", "cosine", "constant")
PRECISIONS = ("fp32", "bf16", "auto")

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
class TrainConfig:
    """Hyper-parameters and bookkeeping of a training run.

    Length: any of `max_steps`, `epochs`, `time_budget` (seconds or "10m"); the run
    stops at whichever comes first. A step is one optimizer update, i.e.
    `grad_accum_steps` batches. `*_every` counts optimizer steps.
    """

    # optimizer
    lr: float = 5e-5
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    layer_lr_decay: float | None = None
    head_lr: float | None = None
    # schedule
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    schedule: str = "linear"
    min_lr_ratio: float = 0.0
    # length
    max_steps: int | None = None
    epochs: float | None = None
    time_budget: float | str | None = None
    # step
    grad_clip: float | None = 1.0
    grad_accum_steps: int = 1
    precision: str = "auto"
    device: str = "auto"
    seed: int = 0
    # bookkeeping
    log_every: int = 10
    eval_every: int | None = None
    save_every: int | None = None
    keep_last: int = 2
    early_stopping_patience: int | None = None
    metric_for_best: str | None = None
    greater_is_better: bool | None = None
    progress_bar: bool = True

    def __post_init__(self) -> None:
        check_field_types(self, "TrainConfig")
        if self.time_budget is not None:
            self.time_budget = parse_duration(self.time_budget)
        self.betas = tuple(float(b) for b in self.betas)  # lists from yaml/json
        if self.grad_clip is not None and self.grad_clip <= 0:
            self.grad_clip = None  # 0 means "no clipping", as in HF's max_grad_norm
        if self.greater_is_better is None and self.metric_for_best is not None:
            self.greater_is_better = not self.metric_for_best.endswith(("loss", "perplexity"))
        self._validate()

    def _validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(f"TrainConfig: {message}")

        def positive_int_or_none(name: str) -> None:
            value = getattr(self, name)
            need(value is None or (_is_int(value) and value >= 1), f"{name} must be a positive integer or None, got {value!r}")

        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"betas must be two numbers in [0, 1), got {self.betas}")
        need(self.eps > 0, f"eps must be > 0, got {self.eps}")
        need(self.layer_lr_decay is None or 0 < self.layer_lr_decay <= 1, f"layer_lr_decay must be in (0, 1] or None, got {self.layer_lr_decay}")
        need(self.head_lr is None or self.head_lr > 0, f"head_lr must be > 0 or None, got {self.head_lr}")
        need(_is_int(self.warmup_steps) and self.warmup_steps >= 0, f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
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
        need(_is_int(self.grad_accum_steps) and self.grad_accum_steps >= 1, f"grad_accum_steps must be an integer >= 1, got {self.grad_accum_steps!r}")
        need(self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        need(
            self.device in ("auto", "cpu") or re.fullmatch(r"cuda(:\d+)?", str(self.device)) is not None,
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}",
        )
        need(_is_int(self.seed), f"seed must be an integer, got {self.seed!r}")
        need(_is_int(self.log_every) and self.log_every >= 1, f"log_every must be an integer >= 1, got {self.log_every!r}")
        positive_int_or_none("eval_every")
        positive_int_or_none("save_every")
        need(_is_int(self.keep_last) and self.keep_last >= 1, f"keep_last must be an integer >= 1, got {self.keep_last!r}")
        positive_int_or_none("early_stopping_patience")
        need(
            self.early_stopping_patience is None or self.metric_for_best is not None,
            "early_stopping_patience needs metric_for_best (e.g. 'accuracy' or 'loss')",
        )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Build from a plain dict (yaml/json); unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in values if k not in known]
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigError(f"unknown TrainConfig key(s): {', '.join(hints)}")
        return cls(**dict(values))

    @classmethod
    def with_defaults(cls, defaults: Mapping[str, Any], given: Mapping[str, Any]) -> "TrainConfig":
        """`from_dict` of `given` over a run type's `defaults`; a warmup given one way (steps or
        ratio) replaces the default warmup of the other way."""
        merged = {**defaults, **given}
        for key, other in (("warmup_steps", "warmup_ratio"), ("warmup_ratio", "warmup_steps")):
            if given.get(key) and other not in given:
                merged.pop(other, None)
        return cls.from_dict(merged)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict that `from_dict` accepts back (json/yaml friendly)."""
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out


_SCALARS = (bool, int, float, str)


def check_field_types(config: Any, where: str) -> None:
    """Refuse a scalar field whose value has the wrong type (a quoted number in a run file, say),
    naming the field. An int passes for a float; containers and other types are left to the caller."""
    for name, hint in typing.get_type_hints(type(config)).items():
        if name not in {f.name for f in dataclasses.fields(config)}:
            continue
        allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
        if not all(t in _SCALARS or t is type(None) for t in allowed):
            continue
        value = getattr(config, name)
        ok = any(t is type(value) or (t is float and _is_int(value)) for t in allowed)
        if not ok:
            wanted = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
            raise ConfigError(f"{where}: {name} must be {wanted}, got {value!r} ({type(value).__name__})")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
