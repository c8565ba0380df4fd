"""Where plmkit keeps what it builds once and reuses: fetched datasets, tokenized corpora."""
from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$PLMKIT_CACHE`` if set, else ``~/.cache/plmkit``."""
    return Path(os.environ.get("PLMKIT_CACHE") or Path.home() / ".cache" / "plmkit")
