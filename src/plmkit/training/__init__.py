"""Shared training machinery: config, optimizer groups, LR schedule, checkpoints, the Trainer."""

from plmkit.training.config import TrainConfig, parse_duration
from plmkit.training.optim import build_optimizer, param_groups
from plmkit.training.schedule import LRSchedule, build_scheduler
from plmkit.training.trainer import Trainer, TrainResult

__all__ = [
    "LRSchedule",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "build_optimizer",
    "build_scheduler",
    "param_groups",
    "parse_duration",
]
