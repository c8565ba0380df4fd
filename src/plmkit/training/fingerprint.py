"""What a run is made of, so that ``--resume`` continues the same run and not another one.

A fingerprint is the settings that shape training (every setting of the run but those declared
``setting(..., shapes_run=False)``: logging, checkpoint cadence, the device ...), which of them can
never change on a resume (``fixed_on_resume=True``: the model's shape, adapters, the task: the
checkpoint's weights and optimizer state are of them), and a digest of each data file (its size and a
SHA-256 of its bytes; of 16 spread blocks for files over 8 MiB). The Trainer keeps the fingerprint of
the run in every checkpoint (``fingerprint.json``, and a copy in ``trainer_state.pt``); `check_resume`
compares it with the resumed run's own and refuses a difference, naming it (``train.lr 0.001 ->
0.0005``, ``--train: train.jsonl is not the file the run started with``), unless the changes are
accepted (``--resume-with-changes``), which the fixed settings never are.

A run type may describe its settings otherwise (`RunConfig.fingerprint_settings`: pretraining
resolves its model preset into every field of the architecture).

    fp = fingerprint(config, {"--train": [config.data.train], "--eval": [config.data.eval]})
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from plmkit.errors import CheckpointError, ConfigError

FILE = "fingerprint.json"
WHOLE_FILE_BYTES = 8 << 20  # files up to this size are hashed whole
BLOCKS, BLOCK_BYTES = 16, 64 << 10  # larger ones: this many blocks spread over the file


def settings_of(run) -> tuple[dict[str, Any], list[str]]:
    """(``"section.field" -> value`` of every setting of `run` (a RunConfig) that shapes the training,
    top-level fields bare, a section's extras (a model's family fields) too; the keys of those that
    are fixed on resume)."""
    out: dict[str, Any] = {}
    fixed: list[str] = []
    for f in dataclasses.fields(run):
        value = getattr(run, f.name)
        if hasattr(value, "to_dict") and dataclasses.is_dataclass(value):  # a section
            declared = {g.name: g for g in dataclasses.fields(value)}
            for key, item in value.to_dict().items():
                g = declared.get(key)
                if g is None or g.metadata.get("shapes_run", True):
                    out[f"{f.name}.{key}"] = item
                    if g is not None and g.metadata.get("fixed_on_resume"):
                        fixed.append(f"{f.name}.{key}")
        elif f.metadata.get("shapes_run", True):
            out[f.name] = value
            if f.metadata.get("fixed_on_resume"):
                fixed.append(f.name)
    return json.loads(json.dumps(out)), fixed  # tuples as lists, as they read back from the file


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
    settings, fixed = run.fingerprint_settings() if hasattr(run, "fingerprint_settings") else settings_of(run)
    return {"settings": settings, "fixed": fixed, "data": {flag: data_digests(paths) for flag, paths in data.items()}}


def with_tokenizer(trainer_options: dict[str, Any], directory: str | os.PathLike) -> dict[str, Any]:
    """A pipeline's Trainer options with the digests of the tokenizer it uses (trained in the run's
    first minutes, or given) in the fingerprint: a resume with another tokenizer is a change."""
    fp = trainer_options.get("fingerprint")
    if fp is None:
        return trainer_options
    return {**trainer_options, "fingerprint": {**fp, "data": {**fp["data"], "tokenizer": data_digests([directory])}}}


def differences(before: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """What changed from fingerprint `before` to `now`, one phrase each. A setting that `before` does
    not have (one added to plmkit since) is not a change; one that is fixed on resume says so."""
    changes = []
    old_settings, new_settings = before.get("settings", {}), now.get("settings", {})
    fixed = set(before.get("fixed", ())) | set(now.get("fixed", ()))
    for key, value in old_settings.items():
        if key in new_settings and _same(value, new_settings[key]) is False:
            changes.append(f"{key} {value!r} -> {new_settings[key]!r}" + (FIXED if key in fixed else ""))
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


FIXED = " (cannot change on a resume: the checkpoint's weights and optimizer state are of the other)"


def read(checkpoint: str | os.PathLike) -> dict[str, Any] | None:
    """The fingerprint a checkpoint was written with (None: no fingerprint.json)."""
    path = Path(checkpoint) / FILE
    if not path.is_file():
        return None
    try:
        return checked(json.loads(path.read_text(encoding="utf-8")), path)
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is damaged ({err}): the run it continues cannot be checked") from None


def checked(fp: Any, where) -> dict[str, Any]:
    """`fp` if it has a fingerprint's shape; a CheckpointError naming `where` otherwise."""
    ok = (isinstance(fp, dict) and isinstance(fp.get("settings"), dict) and isinstance(fp.get("data"), dict)
          and all(isinstance(files, dict) and all(isinstance(d, dict) and {"size", "sha256"} <= set(d)
                                                  for d in files.values()) for files in fp["data"].values())
          and isinstance(fp.get("fixed", []), list))
    if not ok:
        raise CheckpointError(f"{where} is damaged (not a fingerprint: settings, data): the run it continues cannot "
                              "be checked")
    return fp


def check_resume(checkpoint: str | os.PathLike | None, now: Mapping[str, Any], accept_changes: bool,
                 before: Mapping[str, Any] | None = None) -> list[str]:
    """The differences between the run that wrote `checkpoint` (its fingerprint: `before`, or its
    fingerprint.json) and this one (`now`): a ConfigError naming them unless `accept_changes`, and
    always for a setting fixed on resume; [] when there is nothing to compare."""
    if before is None and checkpoint is not None:
        from plmkit.training.checkpoint import resume_advice
        try:
            before = read(checkpoint)
        except CheckpointError as err:
            raise CheckpointError(f"{err}. {resume_advice(Path(checkpoint).parent, Path(checkpoint))}") from None
    if before is None:
        return []
    changes = differences(before, now)
    fixed = [c for c in changes if c.endswith(FIXED)]
    if fixed:
        raise ConfigError(f"{Path(checkpoint)} cannot be resumed as this run: {'; '.join(fixed)}. Start a new run "
                          "(another --out, or --overwrite)")
    if changes and not accept_changes:
        raise ConfigError(f"a resumed run continues the run it resumes, but {Path(checkpoint)} was written with "
                          f"other settings or data; changed: {'; '.join(changes)}. Resume with what the run started "
                          "with, or add --resume-with-changes to continue with the changes (the learning-rate "
                          "schedule then goes on from where it was)")
    return changes


__all__ = ["FILE", "check_resume", "checked", "data_digests", "differences", "digest", "fingerprint", "read",
           "settings_of", "with_tokenizer"]
