"""A run directory (``--out``): claimed by one run at a time, never replaced by accident.

    with claimed(out, "finetune", resume=False, overwrite=False) as out:
        ...  # prepare; then Trainer(..., on_start=...) writes run.yaml and starts

* One owner: the lock of `plmkit.utils.lock` for as long as the run lasts.
* An earlier run is kept: a fresh run (no ``--resume``) into a directory holding one (its run file,
  metrics, model, best model or checkpoints) stops before writing anything, unless ``--overwrite``
  says to replace it (`clear`, when the new run starts training).
* A failed start leaves nothing: a run that created the directory and fails before writing more
  than its lock removes it again. A pretraining start may leave the tokenizer it trained, alone: not
  an earlier run, but what the next start reuses or replaces (plmkit.recipes.pretrain).
* Under torchrun, rank 0 claims and checks the directory; the other ranks wait for it to have done so.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from plmkit.errors import ConfigError
from plmkit.utils.files import output_dir, retire_dir
from plmkit.utils.lock import LOCK_FILE, run_lock

# what a run writes into its directory (pretraining also its tokenizer/)
RUN_FILES = ("run.yaml", "train_config.json", "metrics.jsonl", "training_curves.png", "model", "best", "abandoned-best",
             "checkpoints", "tokenizer")
# what a failed start may leave: found alone, no earlier run
LEFT_BY_A_FAILED_START = ("tokenizer",)


def earlier_run(out: Path) -> list[str]:
    """The files of an earlier run in `out` (none when all there is was left by a failed start)."""
    found = [name for name in RUN_FILES if (out / name).exists()]
    return found if set(found) - set(LEFT_BY_A_FAILED_START) else []


@contextlib.contextmanager
def claimed(path: str | os.PathLike, command: str, resume: bool, overwrite: bool) -> Iterator[Path]:
    """`path` created if needed and locked for this run (see the module docstring)."""
    from plmkit.training import distributed  # (brings torch)
    distributed.barrier()  # every rank has checked its inputs (refuse_overwriting_inputs) before the lock exists
    if not distributed.is_main():
        distributed.barrier()  # rank 0 has made, claimed and checked it (should it fail, the job ends)
        yield output_dir(path, "--out")
        return
    created = not Path(path).exists()
    out = output_dir(path, "--out")

    def nothing_written() -> bool:  # a failed start: its lock file and the directory go, while still locked
        return created and set(os.listdir(out)) <= {LOCK_FILE}

    with run_lock(out, command, remove_if_failed=nothing_written):
        found = earlier_run(out)
        if resume and overwrite:
            raise ConfigError("--overwrite replaces the run in --out and --resume continues it: give one of them")
        if found and not (resume or overwrite):
            raise ConfigError(f"{out} already holds a run ({', '.join(found)}): --resume it, give another --out, "
                              "or add --overwrite to replace it")
        if resume and not found:
            raise ConfigError(f"--resume: {out} holds no run to resume; check --out, or leave --resume out to "
                              "start one")
        distributed.barrier()
        yield out


def clear(out: Path, also: tuple[str, ...] = ()) -> None:
    """Remove the earlier run's files (and `also`), each whole or not at all (`retire_dir`)."""
    for name in RUN_FILES + also:
        target = out / name
        if target.is_dir():
            retire_dir(target)
        elif target.exists():
            target.unlink()


__all__ = ["LEFT_BY_A_FAILED_START", "RUN_FILES", "claimed", "clear", "earlier_run"]
