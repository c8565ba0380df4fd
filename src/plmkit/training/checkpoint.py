"""Atomic training checkpoints.

Layout under `out_dir/checkpoints/`::

    step-000100/
        model/                      save_pretrained export (+ tokenizer via save_extra)
        model_state.safetensors     model.state_dict() for exact resume
        trainer_state.pt            optimizer, schedule, step, loader, RNG states
    latest                          text file naming the newest complete checkpoint

A checkpoint is written into a hidden temp directory and renamed into place,
then `latest` is replaced atomically (both with `plmkit.utils.files`): a crash at
any point leaves the previous checkpoint as `latest`, never a partial one.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_model
from torch import nn

from plmkit.errors import CheckpointError
from plmkit.utils.files import atomic_write_dir, atomic_write_text, remove_stale_temps, write_safetensors

MODEL_DIR = "model"
MODEL_STATE = "model_state.safetensors"
TRAINER_STATE = "trainer_state.pt"
LATEST = "latest"
_STEP_DIR = re.compile(r"step-(\d+)")

SaveExtra = Callable[[Path], None]


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def export_model(model: nn.Module, directory: Path, save_extra: SaveExtra | None = None) -> None:
    """`model.save_pretrained(directory)` (plain safetensors if it has none), then `save_extra(directory)`."""
    directory.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(directory)
    else:
        write_safetensors(directory / "model.safetensors", model.state_dict())
    if save_extra is not None:
        save_extra(directory)


def write_trainer_state(path: Path, state: dict[str, Any]) -> None:
    torch.save(state, path)


def save_checkpoint(
    root: Path,
    step: int,
    model: nn.Module,
    trainer_state: dict[str, Any],
    save_extra: SaveExtra | None = None,
) -> Path:
    """Write `root/step-NNNNNN/` atomically and point `root/latest` at it."""
    root = Path(root)

    def write(tmp: Path) -> None:
        export_model(model, tmp / MODEL_DIR, save_extra)
        write_safetensors(tmp / MODEL_STATE, model.state_dict())
        write_trainer_state(tmp / TRAINER_STATE, trainer_state)

    if root.is_dir():
        remove_stale_temps(root)  # of any step, from a run that crashed while saving
    path = atomic_write_dir(root / checkpoint_name(step), write)
    atomic_write_text(root / LATEST, path.name + "\n")
    return path


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoint directories, oldest step first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint `root/latest` names, or None when there is none yet."""
    pointer = Path(root) / LATEST
    if not pointer.is_file():
        return None
    path = Path(root) / pointer.read_text().strip()
    if not (path / TRAINER_STATE).is_file() or not (path / MODEL_STATE).is_file():
        raise CheckpointError(f"{pointer} names {path}, which is not a complete checkpoint; delete {pointer} to start over")
    return path


def prune_checkpoints(root: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` checkpoints (never the one `latest` names)."""
    latest = latest_checkpoint(root)
    checkpoints = list_checkpoints(root)
    for path in checkpoints[: max(len(checkpoints) - keep_last, 0)]:
        if latest is None or path.resolve() != latest.resolve():
            shutil.rmtree(path, ignore_errors=True)


def load_weights(model: nn.Module, checkpoint: Path) -> None:
    """Load `checkpoint/model_state.safetensors` into `model` (strict; tied weights handled)."""
    path = Path(checkpoint) / MODEL_STATE
    if not path.is_file():
        raise CheckpointError(f"{path} not found; is {checkpoint} a training checkpoint?")
    try:
        load_model(model, str(path), strict=True, device=str(next(model.parameters()).device))
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit this model: {exc}") from exc


def load_trainer_state(checkpoint: Path) -> dict[str, Any]:
    path = Path(checkpoint) / TRAINER_STATE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found; is {checkpoint} a training checkpoint?") from None
    except Exception as exc:  # unpickling errors come in many types
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
