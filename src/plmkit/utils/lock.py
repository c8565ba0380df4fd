"""One owner per run directory: an advisory lock that a second process cannot take.

``with run_lock(out, "finetune"):`` takes an exclusive ``flock`` on ``out/.plmkit.lock`` and
writes the owner (command, pid, host, start time) into it. A second process on the same
directory (another run, or a ``--resume`` while the first still runs) gets a ConfigError naming the
owner, before it writes anything. The kernel releases the lock when its process ends, however it
ends (``kill -9`` included), so a lock is never stale; the file stays, holding the last owner.
A run whose start failed may remove the lock file (and its empty directory): only while it still holds
the lock (``remove_if_failed``), and a process that locked the file just removed sees that it is no longer
the one at the path and locks the new one, so two runs never hold "the" lock.
`refuse_inside_running_run` keeps other commands' outputs out of a running run's directory.
`waiting_lock` is the lock of a shared place that a second process waits for (``plmkit data fetch``'s cache).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Callable, Iterator

from plmkit.errors import ConfigError

LOCK_FILE = ".plmkit.lock"
RELOCK_TRIES = 100  # a lock file removed under us this often in a row: give up

log = logging.getLogger(__name__)


@contextlib.contextmanager
def run_lock(directory: str | os.PathLike, command: str,
             remove_if_failed: Callable[[], bool] | None = None) -> Iterator[Path]:
    """Hold the lock of run directory `directory` (which must exist) while the block runs. When the block
    raises and ``remove_if_failed()`` says so, the lock file and then `directory`, if empty, are removed
    before the lock is released (a failed start that leaves nothing)."""
    path = Path(directory) / LOCK_FILE
    fd = _locked_fd(path)
    try:
        me = {"command": command, "pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        try:
            yield path
        except BaseException:
            if remove_if_failed is not None and remove_if_failed():
                _remove_lock_and_directory(path)
            raise
    finally:
        os.close(fd)  # releases the lock


def _locked_fd(path: Path) -> int:
    """An fd of lock file `path` (made if missing) under an exclusive flock, or the ConfigError naming its
    owner. Locked again when the file locked is no longer the one at `path`: a failed start removed it
    (`run_lock`'s ``remove_if_failed``) after we opened it, maybe with its directory, made again then."""
    from plmkit.utils.files import write_error
    for attempt in range(RELOCK_TRIES):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError as err:
            if not attempt:
                raise write_error(path, err) from None
            _make_directory(path.parent)  # (gone with a failed start's lock file since we looked: made again)
            continue
        except OSError as err:  # a read-only place, say
            raise write_error(path, err) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _owner(fd)
            os.close(fd)
            raise ConfigError(f"{path.parent} is in use by another run ({owner}); wait for it to end, "
                              "or give another output directory") from None
        if _names(path, fd):
            return fd
        os.close(fd)
    raise ConfigError(f"cannot lock {path}: it was removed {RELOCK_TRIES} times in a row as it was locked; "
                      "check what else deletes files there")


def _names(path: Path, fd: int) -> bool:
    """Whether `path` is (still) the file open as `fd`."""
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)


def _make_directory(directory: Path) -> None:
    from plmkit.utils.files import write_error
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(directory, err) from None


def _remove_lock_and_directory(path: Path) -> None:
    """Remove lock file `path` (held by the caller), then its directory if nothing else is there."""
    with contextlib.suppress(OSError):
        path.unlink()
        path.parent.rmdir()


@contextlib.contextmanager
def waiting_lock(path: str | os.PathLike, waiting: str) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on file `path` (made if missing, never removed) while the block runs, first
    waiting while another process holds it (`waiting`, logged at INFO, says for what)."""
    from plmkit.utils.files import write_error
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise write_error(path, err) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info(waiting)
            fcntl.flock(fd, fcntl.LOCK_EX)
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


__all__ = ["LOCK_FILE", "refuse_inside_running_run", "run_lock", "waiting_lock"]
