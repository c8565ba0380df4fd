"""Atomic training checkpoints.

Layout under `out_dir/checkpoints/`::

    step-000100/
        model/                      save_pretrained export (+ tokenizer via save_extra)
        model_state.safetensors     model.state_dict() for exact resume
        trainer_state.pt            optimizer, schedule, step, loader, RNG states
        fingerprint.json            the settings and data the run was made of (training/fingerprint.py)
    latest                          text file naming the newest complete checkpoint

A checkpoint is written into a hidden temp directory and renamed into place,
then `latest` is replaced atomically (both with `plmkit.utils.files`): a crash at
any point leaves the previous checkpoint as `latest`, never a partial one. Old
checkpoints are pruned the same way (renamed aside, then deleted). A checkpoint
damaged afterwards (a truncated copy, a bad disk) is reported with the newest
intact one to resume from instead (`find_intact`).
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model
from torch import nn

from plmkit.errors import CheckpointError
from plmkit.training.fingerprint import FILE as FINGERPRINT
from plmkit.utils.files import (atomic_write_dir, atomic_write_text, remove_stale_temps, retire_dir,
                                write_safetensors, write_torch)

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


def save_checkpoint(
    root: Path,
    step: int,
    model: nn.Module,
    trainer_state: dict[str, Any],
    save_extra: SaveExtra | None = None,
    fingerprint: dict[str, Any] | None = None,
) -> Path:
    """Write `root/step-NNNNNN/` atomically and point `root/latest` at it."""
    root = Path(root)

    def write(tmp: Path) -> None:
        export_model(model, tmp / MODEL_DIR, save_extra)
        write_safetensors(tmp / MODEL_STATE, model.state_dict())
        write_torch(tmp / TRAINER_STATE, trainer_state)
        if fingerprint is not None:
            (tmp / FINGERPRINT).write_text(json.dumps(fingerprint, indent=1) + "\n", encoding="utf-8")

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
    """The checkpoint `root/latest` names, or None when there is none yet; a `latest` naming a missing
    or incomplete one is an error pointing at the newest intact checkpoint. Without `latest` (a run
    stopped between writing its first checkpoint and the pointer), the newest intact checkpoint."""
    pointer = Path(root) / LATEST
    if not pointer.is_file():
        return find_intact(root)
    name = pointer.read_bytes().decode("utf-8", errors="replace").strip()
    if not _STEP_DIR.fullmatch(name):  # a pointer edited or damaged: it names no checkpoint of this run
        raise CheckpointError(f"{pointer} is damaged (it holds {name[:40]!r}, not a step-NNNNNN name). "
                              f"{resume_advice(root, None)}")
    path = Path(root) / name
    problem = damage(path)
    if problem:
        raise CheckpointError(f"{pointer} names {path}, which {problem}. {resume_advice(root, path)}")
    return path


def resume_checkpoint(root: Path, resume: bool | str | Path) -> Path | None:
    """The checkpoint a run resumes from: `resume` a directory (checked whole), True the latest under
    `root` (None when there is none yet), False none; a damaged one is an error naming an intact one."""
    if resume is False or resume is None:
        return None
    if resume is True:
        return latest_checkpoint(root)
    checkpoint = Path(resume)
    problem = damage(checkpoint)
    if problem:
        raise CheckpointError(f"{checkpoint} {problem}. {resume_advice(checkpoint.parent, checkpoint)}")
    return checkpoint


def damage(checkpoint: Path) -> str | None:
    """What is wrong with a checkpoint directory ("is missing", "has a truncated model_state.safetensors"
    ...), or None when its files look whole: checked from their own structure (the safetensors header
    against the file size, the zip directory at the end of trainer_state.pt), without reading them all."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        return "is missing"
    for name in (MODEL_STATE, TRAINER_STATE):
        if not (checkpoint / name).is_file():
            return f"has no {name}"
    try:
        with safe_open(checkpoint / MODEL_STATE, framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError) as err:
        return f"has a damaged {MODEL_STATE} ({err})"
    try:
        with zipfile.ZipFile(checkpoint / TRAINER_STATE) as z:
            z.infolist()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return f"has a damaged {TRAINER_STATE} ({err or 'empty or truncated'})"
    return None


def find_intact(root: Path, before: Path | None = None) -> Path | None:
    """The newest checkpoint under `root` whose files are whole (older than `before` when given)."""
    for path in reversed(list_checkpoints(root)):
        if before is not None and _step(path) >= _step(before):
            continue
        if damage(path) is None:
            return path
    return None


def resume_advice(root: Path, damaged: Path | None) -> str:
    """What to do about a damaged checkpoint (or pointer: None): resume from the newest intact one, if any."""
    intact = find_intact(root, damaged)
    if intact is None:
        return ("No intact checkpoint is left: start over with an empty output directory "
                "(or delete the checkpoints directory)")
    return (f"The newest intact checkpoint is {intact}: resume from it with --resume-from {intact} "
            f"(Python: train(resume={str(intact)!r}))")


def _step(path: Path) -> int:
    m = _STEP_DIR.fullmatch(Path(path).name)
    return int(m.group(1)) if m else -1


def prune_checkpoints(root: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` checkpoints (never the one `latest` names), each in one
    step for a kill: whole or gone (`retire_dir`)."""
    pointer = Path(root) / LATEST
    latest = Path(root) / pointer.read_text().strip() if pointer.is_file() else None
    checkpoints = list_checkpoints(root)
    for path in checkpoints[: max(len(checkpoints) - keep_last, 0)]:
        if latest is None or path.resolve() != latest.resolve():
            retire_dir(path)


def load_weights(model: nn.Module, checkpoint: Path) -> None:
    """Load `checkpoint/model_state.safetensors` into `model` (strict; tied weights handled)."""
    path = Path(checkpoint) / MODEL_STATE
    if not path.is_file():
        raise CheckpointError(f"{path} not found; is {checkpoint} a training checkpoint?")
    try:
        load_model(model, str(path), strict=True, device=str(next(model.parameters()).device))
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit this model: {exc}") from exc
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is damaged ({exc})") from exc


def load_trainer_state(checkpoint: Path) -> dict[str, Any]:
    path = Path(checkpoint) / TRAINER_STATE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found; is {checkpoint} a training checkpoint?") from None
    except Exception as exc:  # unpickling errors come in many types
        raise CheckpointError(f"cannot read {path}: {exc or type(exc).__name__}") from exc
