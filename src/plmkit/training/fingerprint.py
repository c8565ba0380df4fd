"""What a run is made of, so that ``--resume`` continues the same run and not another one.

A fingerprint is the settings that shape training (every setting of the run but those declared
``setting(..., shapes_run=False)``: logging, checkpoint cadence, the device ...) and a digest of each
data file (its size and a SHA-256 of its bytes; of 16 spread blocks for files over 8 MiB). The
Trainer keeps the fingerprint of the run in every checkpoint (``fingerprint.json``); `check_resume`
compares it with the resumed run's own before any work and refuses a difference, naming it
(``train.lr 0.001 -> 0.0005``, ``--train: train.jsonl is not the file the run started with``),
unless the changes are accepted (``--resume-with-changes``).

    fp = fingerprint(config, {"--train": [config.data.train], "--eval": [config.data.eval]})
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from plmkit.errors import ConfigError

FILE = "fingerprint.json"
WHOLE_FILE_BYTES = 8 << 20  # files up to this size are hashed whole
BLOCKS, BLOCK_BYTES = 16, 64 << 10  # larger ones: this many blocks spread over the file


def settings_of(run) -> dict[str, Any]:
    """``"section.field" -> value`` (top-level fields bare) of every setting of `run` (a RunConfig) that
    shapes the training; the keys a section takes as extras (a model's family fields) count too."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(run):
        value = getattr(run, f.name)
        if hasattr(value, "to_dict") and dataclasses.is_dataclass(value):  # a section
            shaping = {g.name for g in dataclasses.fields(value) if g.metadata.get("shapes_run", True)}
            for key, item in value.to_dict().items():
                if key in shaping or key not in {g.name for g in dataclasses.fields(value)}:
                    out[f"{f.name}.{key}"] = item
        elif f.metadata.get("shapes_run", True):
            out[f.name] = value
    return json.loads(json.dumps(out))  # tuples as lists, as they read back from the file


def digest(path: str | os.PathLike) -> dict[str, Any]:
    """``{"size", "sha256"}`` of a file (sampled blocks past WHOLE_FILE_BYTES)."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= WHOLE_FILE_BYTES:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        else:
            for k in range(BLOCKS):
                f.seek((size - BLOCK_BYTES) * k // (BLOCKS - 1))
                h.update(f.read(BLOCK_BYTES))
    return {"size": size, "sha256": h.hexdigest()}


def data_digests(paths: Iterable[str | os.PathLike | None]) -> dict[str, dict[str, Any]]:
    """File name -> digest for the given files and the files under the given directories (names
    relative to the directory: a copy of the data elsewhere is the same data)."""
    out: dict[str, dict[str, Any]] = {}
    for given in paths:
        if given is None or str(given) == "-":
            continue
        root = Path(given)
        if root.is_dir():
            for file in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
                out[f"{root.name}/{file.relative_to(root).as_posix()}"] = digest(file)
        elif root.is_file():
            out[root.name] = digest(root)
    return out


def fingerprint(run, data: Mapping[str, Iterable[str | os.PathLike | None]]) -> dict[str, Any]:
    """The fingerprint of `run` (a RunConfig) reading `data`: ``{flag: [paths]}``."""
    return {"settings": settings_of(run), "data": {flag: data_digests(paths) for flag, paths in data.items()}}


def differences(before: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """What changed from fingerprint `before` to `now`, one phrase each. A setting that `before` does
    not have (one added to plmkit since) is not a change."""
    changes = []
    old_settings, new_settings = before.get("settings", {}), now.get("settings", {})
    for key, value in old_settings.items():
        if key in new_settings and _same(value, new_settings[key]) is False:
            changes.append(f"{key} {value!r} -> {new_settings[key]!r}")
    for flag, files in now.get("data", {}).items():
        old = before.get("data", {}).get(flag)
        if old is None or old == files:
            continue
        if sorted(d["sha256"] for d in old.values()) == sorted(d["sha256"] for d in files.values()):
            continue  # the same files, under other names
        if len(old) == 1 and len(files) == 1:
            (name, was), now_ = next(iter(old.items())), next(iter(files.values()))
            changes.append(f"{flag}: {next(iter(files))} is not the file the run started with ({name}: "
                           f"{_size(was['size'])} -> {_size(now_['size'])}, other content)")
            continue
        added, removed = sorted(set(files) - set(old)), sorted(set(old) - set(files))
        edited = sorted(n for n in set(files) & set(old) if files[n] != old[n])
        parts = [f"{what} {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                 for what, names in (("changed", edited), ("added", added), ("removed", removed)) if names]
        changes.append(f"{flag}: {'; '.join(parts)}")
    return changes


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _size(n: int) -> str:
    return f"{n:,} bytes"


def read(checkpoint: str | os.PathLike) -> dict[str, Any] | None:
    """The fingerprint a checkpoint was written with (None: written before plmkit kept one)."""
    path = Path(checkpoint) / FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: damaged ({err}); the checkpoint cannot be checked") from None


def check_resume(checkpoint: str | os.PathLike | None, now: Mapping[str, Any], accept_changes: bool) -> list[str]:
    """The differences between the run that wrote `checkpoint` and this one (`now`, its fingerprint):
    a ConfigError naming them unless `accept_changes`; [] when there is nothing to compare."""
    before = read(checkpoint) if checkpoint is not None else None
    if before is None:
        return []
    changes = differences(before, now)
    if changes and not accept_changes:
        raise ConfigError(f"a resumed run continues the run it resumes, but {Path(checkpoint)} was written with "
                          f"other settings or data; changed: {'; '.join(changes)}. Resume with what the run started "
                          "with, or add --resume-with-changes to continue with the changes (the learning-rate "
                          "schedule then goes on from where it was)")
    return changes


__all__ = ["FILE", "check_resume", "data_digests", "differences", "digest", "fingerprint", "read", "settings_of"]
