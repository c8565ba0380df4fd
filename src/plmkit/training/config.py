"""`TrainConfig`: every knob of a training run, validated once, in one place."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from plmkit.errors import ConfigError
from plmkit.utils.constants import MAX_SEED
from plmkit.utils.device import PRECISIONS, is_device_name
from plmkit.utils.settings import Settings, check_field_types, setting

SCHEDULES = ("linear", "cosine", "constant")
# metric names ending in these are losses or errors: lower is better (Hugging Face's rule is "ends with loss")
LOWER_IS_BETTER = ("loss", "perplexity", "mse", "rmse", "mae")

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
    `grad_accum_steps` batches (accumulated across epochs; the last step of a run that `epochs` ends
    takes the batches left). `*_every` counts optimizer steps.
    """

    section = "train"
    alternatives = (("warmup_steps", "warmup_ratio"),)

    # optimizer
    lr: float = setting(5e-5, "peak learning rate", metavar="LR", above=0)
    weight_decay: float = setting(0.01, "AdamW weight decay", metavar="W", at_least=0)
    betas: tuple[float, float] = setting((0.9, 0.999), "AdamW betas, comma-separated", metavar="B1,B2",
                                         at_least=0, below=1)
    eps: float = setting(1e-8, "AdamW epsilon", metavar="EPS", above=0)
    layer_lr_decay: float | None = setting(None, "layer i gets lr * d**(L - i), the embeddings lr * d**(L + 1) "
                                                 "(an encoder-decoder's decoder layers count after its encoder's)",
                                           metavar="D", above=0, at_most=1)
    head_lr: float | None = setting(None, "learning rate of the task head", metavar="LR", above=0)
    # schedule
    warmup_steps: int = setting(0, "linear warmup steps (instead of --warmup-ratio)", metavar="N", at_least=0)
    warmup_ratio: float = setting(0.0, "linear warmup over this fraction of the run", metavar="F", at_least=0,
                                  below=1)
    schedule: str = setting("linear", "learning-rate decay after warmup", choices=SCHEDULES)
    min_lr_ratio: float = setting(0.0, "the schedule ends at lr * this", metavar="F", at_least=0, at_most=1)
    # length
    max_steps: int | None = setting(None, "stop after N optimizer steps", metavar="N", at_least=1)
    epochs: float | None = setting(None, "stop after this many passes over the training data", metavar="N", above=0)
    time_budget: float | str | None = setting(None, "stop after this long, e.g. 600, 10m, 1h30m", metavar="DUR")
    # step
    grad_clip: float | None = setting(1.0, "clip the gradient norm to NORM (0: off)", metavar="NORM", at_least=0)
    grad_accum_steps: int = setting(1, "batches whose gradients add up to one optimizer step",
                                    flags=("--grad-accum-steps", "--grad-accum"), metavar="N", at_least=1)
    precision: str = setting("auto", "auto: bf16 on GPUs that support it, else fp32", choices=PRECISIONS)
    device: str = setting("auto", "auto, cpu, cuda or cuda:N", metavar="DEV", shapes_run=False)
    seed: int = setting(0, "random seed", metavar="N", at_least=0, at_most=MAX_SEED)
    strategy: str = setting("ddp", "how the processes of a torchrun job share the training: ddp "
                                   "(DistributedDataParallel) or fsdp (FSDP2: parameters, gradients and optimizer "
                                   "state sharded across the processes)", choices=("ddp", "fsdp"),
                            shapes_run=False)
    fsdp_cpu_offload: bool = setting(False, "with --strategy fsdp on GPUs: keep the parameter, gradient and optimizer "
                                            "shards in (pinned) CPU memory, the optimizer stepping there (FSDP2's "
                                            "CPUOffloadPolicy)", shapes_run=False)
    compile: bool = setting(False, "torch.compile the model a training step calls (dynamic shapes: the first steps "
                                   "compile, later ones reuse the graphs; a C++ compiler on CPUs, Triton on GPUs)",
                            shapes_run=False)
    # bookkeeping
    log_every: int = setting(10, "log the loss to metrics.jsonl every N steps", metavar="N", at_least=1,
                             shapes_run=False)
    eval_every: int | None = setting(None, "evaluate every N steps", metavar="N", at_least=1, shapes_run=False)
    save_every: int | None = setting(None, "checkpoint every N steps (one is always written at the end)",
                                     metavar="N", at_least=1, shapes_run=False)
    keep_last: int = setting(2, "checkpoints kept on disk, the newest", metavar="N", at_least=1, shapes_run=False)
    early_stopping_patience: int | None = setting(None, "stop after N evaluations without improvement",
                                                  metavar="N", at_least=1, shapes_run=False)
    metric_for_best: str | None = setting(None, "metric choosing the best checkpoint",
                                          flags=("--metric-for-best", "--metric"), metavar="NAME", shapes_run=False)
    greater_is_better: bool | None = setting(None, "whether a larger metric_for_best is better (off: yes, except "
                                                   f"for names ending in {', '.join(LOWER_IS_BETTER)})",
                                             shapes_run=False)
    progress_bar: bool = setting(True, "progress bars", const_flags={"--no-progress": False}, shapes_run=False)

    def validate(self) -> None:
        if self.time_budget is not None:
            try:
                self.time_budget = parse_duration(self.time_budget)
            except ConfigError as err:
                self.need(False, f"{self._named('time_budget')}: {err}")
        if self.grad_clip == 0:
            self.grad_clip = None  # 0 means "no clipping", as in HF's max_grad_norm
        if self.greater_is_better is None and self.metric_for_best is not None:
            self.greater_is_better = not self.metric_for_best.endswith(LOWER_IS_BETTER)
        need = self.need
        need(not (self.warmup_steps and self.warmup_ratio), "set warmup_steps or warmup_ratio, not both")
        need(
            any(v is not None for v in (self.max_steps, self.epochs, self.time_budget)),
            "say how long to train: set max_steps, epochs or time_budget",
        )
        need(
            is_device_name(self.device),
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}",
        )
        need(
            self.early_stopping_patience is None or self.metric_for_best is not None,
            "early_stopping_patience needs metric_for_best (e.g. 'accuracy' or 'loss')",
        )

    def check_given(self, given: set[str]) -> None:
        self.need_with(given, ["keep_last"], self.save_every is not None,
                       "needs save_every (--save-every N): without checkpoints there is nothing to keep")
        self.need_with(given, ["min_lr_ratio"], self.schedule != "constant",
                       "is where a decaying schedule ends: --schedule constant never decays")
        self.need_with(given, ["fsdp_cpu_offload"], self.strategy == "fsdp",
                       "offloads FSDP's shards: give --strategy fsdp")

    @classmethod
    def with_defaults(cls, defaults: Mapping[str, Any], given: Mapping[str, Any]) -> "TrainConfig":
        """`given` over a run type's `defaults` (see `Settings.layered`)."""
        return cls.layered(defaults, given, defaults=1)


__all__ = ["LOWER_IS_BETTER", "PRECISIONS", "SCHEDULES", "TrainConfig", "check_field_types", "parse_duration"]
