"""Atomic writes, the one check that a path is a directory to load from, and one to write into.

A reader never sees a half-written file or directory, and a crash keeps the old one:

* `atomic_write(path, write)`: `write(temp)` fills a temporary file beside `path`, which is then
  flushed to disk (fsync) and renamed over `path` (`atomic_write_text`, `atomic_write_bytes` and
  `write_safetensors` go through it); `atomic_open(path)` is the same for a file written as a stream.
* `atomic_write_dir(final, write)`: `write(temp_dir)` fills a temporary directory beside `final`,
  whose files are then flushed and which is renamed into place (checkpoints, token caches, fetched
  datasets; a symbolic link to a directory stays, the directory it names is replaced);
  `refuse_foreign_dir` keeps it from replacing a directory of someone else's files; `retire_dir`
  removes one the same way (renamed aside first, then deleted).
* `append_line(path, line)`: a whole line appended to a log, or nothing.
* `staged_writes()`: the atomic writes of a block as one change (a model's or a tokenizer's files):
  all written first, renamed together at the end, none if one fails.

A write that fails (a full disk, a read-only place, no permission) is a one-line `WriteError` naming
the path and what to do, whatever library wrote the bytes (safetensors and torch.save included), and
what was there before is kept.

Temporaries are named ``.<name>.<pid>-<random>.tmp``. One whose writer was killed (its process
is gone, or the name carries no pid) is removed by the next write of the same name, or by
`remove_stale_temps`; one of a writer still running is left alone.
"""
from __future__ import annotations

import contextlib
import contextvars
import errno
import glob
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Mapping

from plmkit.errors import CheckpointError, ConfigError, WriteError

PathLike = str | os.PathLike
_OURS = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.tmp")
_HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")


_WHAT_TO_DO = {errno.ENOSPC: "the disk is full: free some space", errno.EDQUOT: "the disk quota is used up",
               errno.EROFS: "the file system is read-only: write somewhere else",
               errno.EACCES: "permission denied: write somewhere you may", errno.EPERM: "not permitted",
               errno.EISDIR: "a directory is in the way: give a file path", errno.ENOTDIR: "a file is in the way",
               errno.EEXIST: "a file is in the way of a directory", errno.ENOENT: "no such place, and none can be made",
               errno.EFBIG: "the file is too large for this file system or the limits of this process"}


def write_error(path: PathLike, err: OSError) -> WriteError:
    """One line for a failed write: the path, why, and what to do; what was there before is kept."""
    why = err.strerror or str(err)
    what = _WHAT_TO_DO.get(err.errno)
    error = WriteError(f"cannot write {path}: {f'{what} ({why})' if what else why}; what was written before is intact")
    error.errno = err.errno
    return error


def as_os_error(err: BaseException) -> OSError | None:
    """The OSError behind a failed write: `err` itself, or the one a Rust library reported in its own
    exception type (safetensors, tokenizers: "... (os error 28)"); None if it was no I/O error."""
    if isinstance(err, OSError):
        return err
    found = re.search(r"\(os error (\d+)\)", str(err)) if isinstance(err, Exception) else None
    if found:
        code = int(found.group(1))
        return OSError(code, os.strerror(code))
    return None


@contextlib.contextmanager
def _failing_writes_named(path: PathLike) -> Iterator[None]:
    """Turn an I/O error raised inside the block into the WriteError naming `path`."""
    try:
        yield
    except WriteError:
        raise
    except BaseException as err:
        os_error = as_os_error(err)
        if os_error is None:
            raise
        raise write_error(path, os_error) from None


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write; when the block ends, the file there is flushed
    to disk (fsync) and renamed over `path`. Either the old or the new file is there afterwards
    (the temporary is removed on error); an I/O error (full disk, read-only place) is a WriteError.

    A symbolic link is followed (the file it names is replaced, the link stays); a device, a FIFO or a
    socket (``/dev/null``, ``>(gzip > f)``) is written in place: it cannot be replaced, and is not."""
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):  # (links followed)
        # decided before resolving links: /dev/stdout or /dev/fd/63 on a pipe resolves to no path
        with _failing_writes_named(path):
            yield Path(path)
        return
    path = Path(os.path.realpath(path)) if os.path.islink(path) else Path(path)
    with _failing_writes_named(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, path.name)
    temp, stage = _temp_path(path), _STAGE.get()
    try:
        with _failing_writes_named(path):
            yield temp
            _fsync(temp)
            if stage is not None:  # renamed with the others when the stage ends
                stage.append((temp, path))
                temp = None
            else:
                os.replace(temp, path)
    finally:
        if temp is not None:
            _remove(temp)


_STAGE: contextvars.ContextVar[list | None] = contextvars.ContextVar("plmkit_stage", default=None)


@contextlib.contextmanager
def staged_writes() -> Iterator[None]:
    """Make the atomic writes of the block one change: each file is written and flushed to its
    temporary, and only when the block ends without error are they all renamed into place, in the
    order written. A failure (the disk fills at the third file) leaves every old file as it was; a
    kill during the renames (microseconds) could leave some new and some old. Nested stages are
    the outer one's."""
    if _STAGE.get() is not None:
        yield
        return
    stage: list[tuple[Path, Path]] = []
    token = _STAGE.set(stage)
    try:
        yield
        for temp, final in stage:
            with _failing_writes_named(final):
                os.replace(temp, final)
    finally:
        _STAGE.reset(token)
        for temp, _ in stage:
            _remove(temp)


def atomic_write(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(temp)` to write a file, then fsync it and rename it over `path` (`atomic_path`)."""
    with atomic_path(path) as temp:
        write(temp)
    return Path(path)


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """``with atomic_open(path) as f: f.write(...)``: a file object on a temporary beside `path`,
    renamed over it once the block ends without error (`atomic_path`); a block that fails, or a
    process killed meanwhile, leaves `path` as it was."""
    with atomic_path(path) as temp, open(temp, mode, encoding=None if "b" in mode else encoding) as f:
        yield f


def write_torch(path: PathLike, obj: Any) -> None:
    """`torch.save(obj, path)`, with the OSError of a failed write (a full disk) raised as such:
    torch.save reports it as a RuntimeError that says nothing ("unexpected pos ...")."""
    import torch

    class _Kept:
        """The file, keeping the first error of a write."""
        def __init__(self, f):
            self.f, self.error = f, None

        def write(self, data):
            try:
                return self.f.write(data)
            except OSError as err:
                self.error = self.error or err
                raise

        def flush(self):
            return self.f.flush()

    with open(path, "wb") as f:
        kept = _Kept(f)
        try:
            torch.save(obj, kept)
        except RuntimeError:
            if kept.error is not None:
                raise kept.error from None
            raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_line(path: PathLike, line: str) -> None:
    """Append one line (newline added) to a log file, all or nothing: a torn last line left by a
    killed or failed writer is cut first, and a failed append (full disk) leaves no partial line."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as err:
        raise write_error(path, err) from None
    try:
        size = _cut_torn_tail(fd)
        try:
            data = (line + "\n").encode("utf-8")
            while data:
                data = data[os.write(fd, data):]
        except OSError as err:
            os.ftruncate(fd, size)
            raise write_error(path, err) from None
    finally:
        os.close(fd)


def _cut_torn_tail(fd: int) -> int:
    """Truncate the file after its last newline (a torn last line is dropped); the new size."""
    size = os.fstat(fd).st_size
    end = size
    while end and os.pread(fd, 1, end - 1) != b"\n":
        start = max(0, end - 65536)
        chunk = os.pread(fd, end - start, start)
        cut = chunk.rfind(b"\n")
        end = start + cut + 1 if cut >= 0 else start
    if end != size:
        os.ftruncate(fd, end)
    return end


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write(path, lambda temp: temp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda temp: temp.write_bytes(data))


def write_safetensors(path: PathLike, tensors: Mapping, metadata: dict[str, str] | None = None) -> Path:
    """Write `tensors` (name -> torch.Tensor) as a safetensors file, atomically.

    A tensor shared under several names (tied weights) is stored once, under its first name;
    a view into another tensor's storage is stored as a copy of its own. `metadata` defaults to
    ``{"format": "pt"}``, which Hugging Face's loaders expect.
    """
    from safetensors.torch import save_file

    seen, storages, unique = set(), set(), {}
    for name, t in tensors.items():
        if t.numel():  # empty tensors have no storage to share
            key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())
            if key in seen:
                continue
            seen.add(key)
        t = t.detach().contiguous()
        if t.numel() and t.untyped_storage().data_ptr() in storages:
            t = t.clone()
        storages.add(t.untyped_storage().data_ptr())
        unique[name] = t.cpu()
    return atomic_write(path, lambda temp: save_file(unique, temp, metadata=metadata or {"format": "pt"}))


def atomic_write_dir(final: PathLike, write: Callable[[Path], None], *, replace: bool = True) -> Path:
    """Call `write(temp_dir)` on a new directory beside `final`, then rename it to `final`.

    An existing `final` is replaced (`replace_dir`); with ``replace=False`` it is kept and the new
    copy dropped (another process finished the same entry first). The files are flushed to disk
    before the rename; an I/O error is a WriteError naming `final`.
    """
    given = final = Path(final)
    if final.is_symlink():  # the directory it names is replaced; the link stays
        final = Path(os.path.realpath(final))
    with _failing_writes_named(final.parent):
        final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(final.parent, final.name)
    temp = _temp_path(final)
    try:
        with _failing_writes_named(final):
            temp.mkdir()
            write(temp)
            for file in sorted(p for p in temp.rglob("*") if p.is_file() and not p.is_symlink()):
                _fsync(file)
            if replace:
                replace_dir(temp, final)
            else:
                try:
                    os.rename(temp, final)
                except OSError:
                    if not final.exists():
                        raise
    finally:
        _remove(temp)
    return given


def refuse_foreign_dir(path: PathLike, what: str, ours: Callable[[Path], bool], remedy: str,
                       writer: str = "plmkit") -> None:
    """A ConfigError, before any work, when directory `path`, which `atomic_write_dir` would replace
    whole, holds files its writer did not write: it is a file, or neither empty nor `ours` (an earlier
    output of the same writer). `what`: how the user gave it ("--out runs/q"); `remedy`: what to do;
    `writer`: who is named as not having written them."""
    p = Path(path)
    if (p.exists() and not p.is_dir()) or (p.is_dir() and any(p.iterdir()) and not ours(p)):
        raise ConfigError(f"{what} holds files that {writer} did not write there; {remedy}")


def retire_dir(path: PathLike) -> None:
    """Delete a directory so that a kill at any moment leaves it whole or gone: it is renamed to a
    temporary name first (which `remove_stale_temps` clears if the deletion is cut short)."""
    path = Path(path)
    if not path.exists():
        return
    aside = _temp_path(path)
    os.rename(path, aside)
    _remove(aside)


def replace_dir(temp: PathLike, final: PathLike) -> None:
    """Move the fully written directory `temp` to `final`, replacing what is there.

    The old `final` is renamed aside first and put back if the second rename fails; a process
    killed in between leaves nothing at `final` (and the old copy as a stale temporary), never
    a mix of the two."""
    temp, final = Path(temp), Path(final)
    old = None
    if final.exists():
        old = _temp_path(final)
        os.rename(final, old)
    try:
        os.rename(temp, final)
    except BaseException:
        if old is not None:
            os.rename(old, final)
        raise
    if old is not None:
        _remove(old)


def remove_stale_temps(directory: PathLike, name: str | None = None) -> None:
    """Delete the temporaries in `directory` left by killed writers: of `name`, or (None) of every
    name written through this module."""
    directory = Path(directory)
    if name is None:
        candidates = [p for p in directory.glob(".*.tmp") if _OURS.fullmatch(p.name)]
    else:
        candidates = list(directory.glob(f".{glob.escape(name)}.*.tmp"))
    for path in candidates:
        if not _writer_alive(path):
            _remove(path)


def local_dir(path: PathLike, kind: str, holds: str, hub_hint: str) -> Path:
    """`path` if it is a directory, else a CheckpointError saying so.

    kind: what is loaded ("model", "tokenizer"); holds: the files such a directory has;
    hub_hint: added when the missing name looks like a Hugging Face Hub id (plmkit never
    downloads), with ``{name}`` replaced by it.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        return p
    if p.exists():
        raise CheckpointError(f"{p} is a file; a {kind} is loaded from a directory holding {holds}")
    hub_like = _HUB_ID.fullmatch(str(path)) is not None and not str(path).startswith(".")
    hint = " " + hub_hint.format(name=str(path)) if hub_like else ""
    raise CheckpointError(f"{kind} directory {str(path)!r} does not exist.{hint}")


def output_dir(path: PathLike, what: str) -> Path:
    """`path` as a directory to write into, created with its parents; a ConfigError naming `what`
    (how the user gave it: "--out", "--cache-dir or $PLMKIT_CACHE") when it cannot be (an empty
    path too: it would be the current directory)."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ConfigError(f"{what}: give a directory path, got {path!r}")
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        reason = "it is a file" if p.is_file() else err.strerror or str(err)
        raise ConfigError(f"cannot write into directory {p} ({reason}); give another with {what}") from None
    return p


def check_creatable(path: PathLike, what: str) -> None:
    """A ConfigError naming `what` now, rather than after an hour's work, when directory `path` cannot
    be made (a file in the way, a read-only place); the directories made to find out are removed."""
    made, p = [], Path(os.path.abspath(path))
    while not p.exists():
        made.append(p)
        p = p.parent
    if not p.is_dir():
        raise ConfigError(f"{what} {path}: {p} is a file, not a directory")
    try:
        for directory in reversed(made):
            directory.mkdir()
    except OSError as err:
        raise ConfigError(f"{what} {path}: cannot make {directory} ({err.strerror or err})") from None
    finally:
        for directory in made:
            with contextlib.suppress(OSError):
                directory.rmdir()


def refuse_overwriting_inputs(output: PathLike, output_flag: str,
                              inputs: Iterable[tuple[str, PathLike | None]]) -> None:
    """ConfigError when the output path is one of the inputs, lies inside an input directory, or
    holds an input (inputs are read-only: ``--out D --model D`` would replace the model), or lies in
    the directory of a run that is running now (`plmkit.utils.lock`). `inputs`: (flag, path) pairs;
    None and '-' (stdin) are skipped."""
    from plmkit.utils.lock import refuse_inside_running_run
    refuse_inside_running_run(output, output_flag)
    out = Path(output).resolve()
    for flag, given in inputs:
        if given is None or str(given) == "-":
            continue
        path = Path(given).resolve()
        if out == path:
            how = "is"
        elif out.is_relative_to(path):
            how = "is inside"
        elif path.is_relative_to(out):
            how = "holds"
        else:
            continue
        raise ConfigError(f"{output_flag} {output} {how} the input {flag} {given}; inputs are never written over: "
                          f"choose another {output_flag}")


def _temp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def _writer_alive(temp: Path) -> bool:
    """Whether the process named in `temp` still runs; a name without a pid counts as dead."""
    match = _OURS.fullmatch(temp.name)
    if match is None or os.name != "posix":
        return False
    pid = int(match.group("pid"))
    if pid == os.getpid():
        return True  # another thread of this process, writing now
    try:
        os.kill(pid, 0)  # signal 0: checks that the process exists, sends nothing
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _remove(path: Path) -> None:
    """Delete a temporary if it is there (quietly: on a read-only place there is none to delete, and
    the error that matters is the one that brought us here)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass
