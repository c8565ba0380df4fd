"""One owner per run directory: an advisory lock that a second process cannot take.

``with run_lock(out, "finetune"):`` takes an exclusive ``flock`` on ``out/.plmkit.lock`` and
writes the owner (command, pid, host, start time) into it. A second process on the same
directory (another run, or a ``--resume`` while the first still runs) gets a ConfigError naming the
owner, before it writes anything. The kernel releases the lock when its process ends, however it
ends (``kill -9`` included), so a lock is never stale; the file stays, holding the last owner.
`refuse_inside_running_run` keeps other commands' outputs out of a running run's directory.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from plmkit.errors import ConfigError

LOCK_FILE = ".plmkit.lock"


@contextlib.contextmanager
def run_lock(directory: str | os.PathLike, command: str) -> Iterator[Path]:
    """Hold the lock of run directory `directory` (which must exist) while the block runs."""
    from plmkit.utils.files import write_error
    path = Path(directory) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:  # a read-only place, say
        raise write_error(path, err) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{path.parent} is in use by another run ({_owner(fd)}); wait for it to end, "
                              "or give another output directory") from None
        me = {"command": command, "pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def refuse_inside_running_run(path: str | os.PathLike, flag: str) -> None:
    """A ConfigError when `path` is, or lies inside, the directory of a run that is running now (its lock
    is held): a command writing there would replace what the run writes, or the run what it wrote."""
    target = Path(os.path.abspath(path))
    for directory in (target, *target.parents):
        lock = directory / LOCK_FILE
        if not lock.is_file():
            continue
        try:
            fd = os.open(lock, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            where = "" if directory == target else f"{flag} {path} is inside {directory}: "
            raise ConfigError(f"{where}{directory} is in use by another run ({_owner(fd)}); wait for it to end, "
                              f"or give another {flag}") from None
        finally:
            os.close(fd)


def _owner(fd: int) -> str:
    """The lock holder as its file says: "plmkit finetune, pid 123 on host, since ..."."""
    try:
        owner = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return (f"plmkit {owner['command']}, pid {owner['pid']} on {owner['host']}, "
                f"since {owner['started']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that is starting"  # it holds the lock but has not written its name yet


__all__ = ["LOCK_FILE", "refuse_inside_running_run", "run_lock"]
