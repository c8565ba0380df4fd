"""Atomic training checkpoints.

Layout under `out_dir/checkpoints/`::

    step-000100/
        model/                      save_pretrained export (+ tokenizer via save_extra)
        model_state.safetensors     model.state_dict() for exact resume
        trainer_state.pt            optimizer, schedule, step, loader, RNG states
        fingerprint.json            the settings and data the run was made of (training/fingerprint.py)
    latest                          text file naming the newest complete checkpoint

A run whose model is sharded (FSDP2 under torchrun) writes its model and optimizer state with
torch.distributed.checkpoint (DCP) instead, each rank its own shards, in place of
model_state.safetensors::

        sharded/                    .metadata (which tensors, their shapes and chunks, and which file
                                    and byte range holds each chunk) + __R_0.distcp (rank R's chunks)
        trainer_state.pt            as above, with the optimizer's parameter groups only

DCP reshards on load, so such a checkpoint resumes at any world size, sharded or not (one process,
DDP), and an ordinary checkpoint resumes under FSDP: the state is the same, only its layout differs.

A checkpoint is written into a hidden temp directory and renamed into place,
then `latest` is replaced atomically (both with `plmkit.utils.files`): a crash at
any point leaves the previous checkpoint as `latest`, never a partial one. Old
checkpoints are pruned the same way (renamed aside, then deleted). A checkpoint
damaged afterwards (a truncated copy, a bad disk) is reported with the newest
intact one to resume from instead (`find_intact`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model
from torch import nn

from plmkit.errors import CheckpointError
from plmkit.training import distributed
from plmkit.training.fingerprint import FILE as FINGERPRINT
from plmkit.utils.files import (atomic_write_dir, atomic_write_text, remove_stale_temps, retire_dir,
                                write_safetensors, write_torch)

MODEL_DIR = "model"
MODEL_STATE = "model_state.safetensors"
TRAINER_STATE = "trainer_state.pt"
SHARDED_STATE = "sharded"
DCP_METADATA = ".metadata"
LATEST = "latest"
_STEP_DIR = re.compile(r"step-(\d+)")

SaveExtra = Callable[[Path], None]


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def export_model(model: nn.Module, directory: Path, save_extra: SaveExtra | None = None,
                 state: dict[str, torch.Tensor] | None = None) -> None:
    """`model.save_pretrained(directory)` (plain safetensors if it has none), then `save_extra(directory)`;
    `state` is written instead of the model's own state dict (the whole state of a sharded model)."""
    directory.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(directory, **({"state_dict": state} if state is not None else {}))
    else:
        write_safetensors(directory / "model.safetensors", model.state_dict() if state is None else state)
    if save_extra is not None:
        save_extra(directory)


def save_checkpoint(
    root: Path,
    step: int,
    model: nn.Module,
    trainer_state: dict[str, Any],
    save_extra: SaveExtra | None = None,
    fingerprint: dict[str, Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> Path | None:
    """Write `root/step-NNNNNN/` atomically and point `root/latest` at it (rank 0 alone). With
    `optimizer` (a sharded model: every rank calls it), the model and optimizer state go to `sharded/`
    with DCP, each rank writing its shards into rank 0's temporary directory, which rank 0 renames
    into place once every rank's files are written (DCP's save ends when all have); rank 0 returns
    the path, the others None."""
    root = Path(root)
    if optimizer is not None:
        import torch.distributed.checkpoint as dcp
        tensors, groups = sharded_state(model, optimizer)
        trainer_state = {**trainer_state, "optimizer": {"param_groups": groups}}
        whole = distributed.full_state_dict(model)  # (for model/: every rank gathers, rank 0 writes)
        if not distributed.is_main():
            dcp.save(tensors, checkpoint_id=distributed.broadcast(None))
            return None

    def write(tmp: Path) -> None:
        if optimizer is not None:
            with _single_process_quiet():
                dcp.save(tensors, checkpoint_id=distributed.broadcast(str(tmp / SHARDED_STATE)))
            export_model(model, tmp / MODEL_DIR, save_extra, whole)
        else:
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


def is_sharded_checkpoint(checkpoint: Path) -> bool:
    return (Path(checkpoint) / SHARDED_STATE).is_dir()


def sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], list[dict]]:
    """({"model": ..., "optimizer": per-parameter state}, the optimizer's parameter groups): the first
    holds tensors only (DTensors for a sharded model), keyed by parameter name, for DCP; the groups
    (learning rates, names: no tensors) go to trainer_state.pt."""
    from torch.distributed.checkpoint.state_dict import get_state_dict
    model_state, optim_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optimizer": optim_state["state"]}, optim_state["param_groups"]


def load_sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer, checkpoint: Path,
                       param_groups: list[dict]) -> None:
    """Model and optimizer state from `checkpoint/sharded/` (every rank calls it), resharded to this
    run's layout: sharded at any world size, or whole (one process, DDP)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict
    tensors, _ = sharded_state(model, optimizer)  # (every parameter with a state: torch makes one for each)
    where = Path(checkpoint) / SHARDED_STATE
    saved = set(_read_dcp_metadata(where / DCP_METADATA).state_dict_metadata)
    stateless = {name for name, state in tensors["optimizer"].items()
                 if not any(f"optimizer.{name}.{key}" in saved for key in state)}
    for name in stateless:  # (no state saved, none asked for)
        del tensors["optimizer"][name]
    try:
        with _single_process_quiet():
            dcp.load(tensors, storage_reader=_tensors_only_reader(where))
    except (dcp.api.CheckpointException, RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{where} does not fit this model: {exc}") from exc
    set_model_state_dict(model, tensors["model"])
    _set_optimizer_state(model, optimizer, {"state": tensors["optimizer"], "param_groups": param_groups}, stateless)


def _set_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict, stateless: set[str],
                         full: bool = False) -> None:
    """`state` (each parameter's by name; `full`: whole tensors, else this rank's shards) into `optimizer`.
    The parameters named in `stateless` had no state when it was saved (no gradient yet: a bert2bert
    encoder's pooler never gets one) and get none now either, not the placeholder torch's loader makes."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
    params = dict(model.named_parameters())
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=full,
                                                                               strict=not stateless))
    for name in stateless:
        optimizer.state.pop(params[name], None)


@contextlib.contextmanager
def _single_process_quiet():
    """DCP without a process group (one process) warns that it assumes one process: it is meant."""
    with warnings.catch_warnings():
        if not distributed.active():
            warnings.filterwarnings("ignore", message="torch.distributed is (disabled, )?unavailable or uninitialized")
        yield


def load_full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """An ordinary checkpoint's optimizer state (`optimizer.state_dict()`: parameters by number) into
    the optimizer of a sharded model, through parameter names (the groups' ``names``)."""
    names = [name for group in state["param_groups"] for name in group["names"]]
    number = [i for group in state["param_groups"] for i in group["params"]]
    by_name = dict(zip(number, names))
    full = {"state": {by_name[i]: v for i, v in state["state"].items()},
            "param_groups": [{**g, "params": [by_name[i] for i in g["params"]]} for g in state["param_groups"]]}
    _set_optimizer_state(model, optimizer, full, {by_name[i] for i in number if i not in state["state"]}, full=True)


def regrouped(state: dict, optimizer: torch.optim.Optimizer) -> dict:
    """A checkpoint's optimizer state (its groups name their parameters: ``names``) in `optimizer`'s
    parameter groups, with their settings: each parameter's state goes with its name. A resume whose
    changes group the parameters otherwise (weight decay, head_lr, layer_lr_decay) loads this. A
    ValueError names the parameters that one of them trains and the other not."""
    key = {name: k for group in state["param_groups"] for name, k in zip(group["names"], group["params"])}
    mine = {name for group in optimizer.param_groups for name in group["names"]}
    if mine != key.keys():
        differ = [f"{', '.join(sorted(names)[:4])}{' ...' if len(names) > 4 else ''} trained {when} only"
                  for names, when in ((mine - key.keys(), "now"), (key.keys() - mine, "then")) if names]
        raise ValueError("; ".join(differ))
    return {**state, "param_groups": [{**{k: v for k, v in group.items() if k != "params"},
                                       "params": [key[name] for name in group["names"]]}
                                      for group in optimizer.param_groups]}


class _MetadataUnpickler(pickle.Unpickler):
    """DCP's `.metadata` file is a pickle of its `Metadata`: for each tensor its shape, dtype and chunks,
    and which file and byte range holds each chunk. It is read allowing DCP's own record classes
    (dataclasses and enums, whose construction runs no code of the file's choosing), torch.Size,
    dtypes and layouts, nothing else: a checkpoint's files are data, never code (as torch.load(weights_only=True)
    reads the tensors themselves)."""

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("torch.distributed.checkpoint."):
            found = super().find_class(module, name)
            if isinstance(found, type) and (dataclasses.is_dataclass(found) or issubclass(found, enum.Enum)):
                return found
        elif module == "torch":
            found = getattr(torch, name, None)
            if found is torch.Size or isinstance(found, (torch.dtype, torch.layout, torch.memory_format)):
                return found
        elif (module, name) in (("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"),
                                ("torch.serialization", "_get_layout"),  # (a layout by its name)
                                ("pathlib", "PosixPath"), ("pathlib", "WindowsPath")):  # (where it was written)
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a checkpoint's metadata")


def _read_dcp_metadata(path: Path):
    with open(path, "rb") as f:
        return _MetadataUnpickler(f).load()


def _tensors_only_reader(path: Path):
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class TensorsOnlyReader(FileSystemReader):
        """DCP's file reader with the metadata read by `_MetadataUnpickler`; the tensors it reads with
        torch.load(weights_only=True), and a state of tensors only asks for no pickled objects."""

        def read_metadata(self, *args: Any, **kwargs: Any):
            metadata = _read_dcp_metadata(Path(self.path) / (f"__{kwargs['rank']}{DCP_METADATA}"
                                                             if kwargs.get("rank") is not None else DCP_METADATA))
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return TensorsOnlyReader(path)


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
    if not checkpoint.is_dir():  # a path mistyped (not a checkpoint lost): the run's own are named, none blamed
        intact = find_intact(root)
        advice = (f"the newest intact checkpoint of this run is {intact} (--resume takes it)" if intact is not None
                  else f"{root} holds no intact checkpoint")
        raise CheckpointError(f"--resume-from {checkpoint}: no such checkpoint directory; {advice}")
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
    if is_sharded_checkpoint(checkpoint):
        return _sharded_damage(checkpoint)
    for name in (MODEL_STATE, TRAINER_STATE):
        if not (checkpoint / name).is_file():
            return f"has no {name}"
    try:
        with safe_open(checkpoint / MODEL_STATE, framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError) as err:
        return f"has a damaged {MODEL_STATE} ({err})"
    return _trainer_state_damage(checkpoint)


def _trainer_state_damage(checkpoint: Path) -> str | None:
    try:
        with zipfile.ZipFile(checkpoint / TRAINER_STATE) as z:
            z.infolist()
    except FileNotFoundError:
        return f"has no {TRAINER_STATE}"
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return f"has a damaged {TRAINER_STATE} ({err or 'empty or truncated'})"
    return None


def _sharded_damage(checkpoint: Path) -> str | None:
    """A DCP checkpoint's damage: its metadata unreadable, or a file it names missing or shorter than
    the byte ranges it holds."""
    where = checkpoint / SHARDED_STATE
    try:
        metadata = _read_dcp_metadata(where / DCP_METADATA)
        ends: dict[str, int] = {}
        for info in (metadata.storage_data or {}).values():
            ends[info.relative_path] = max(ends.get(info.relative_path, 0), info.offset + info.length)
    except FileNotFoundError:
        return f"has no {SHARDED_STATE}/{DCP_METADATA}"
    except Exception as err:  # unpickling errors come in many types
        return f"has a damaged {SHARDED_STATE}/{DCP_METADATA} ({err or type(err).__name__})"
    for name, end in sorted(ends.items()):
        size = (where / name).stat().st_size if (where / name).is_file() else None
        if size is None or size < end:
            return f"has {'no' if size is None else 'a truncated'} {SHARDED_STATE}/{name}"
    return _trainer_state_damage(checkpoint)


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
