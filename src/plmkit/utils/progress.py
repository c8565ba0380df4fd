"""Progress bars: tqdm, switched off where plmkit says so (a quiet command, a torchrun rank other than 0).

tqdm reads its own switch, the TQDM_DISABLE variable, once, when it is imported; plmkit decides later,
so every bar of plmkit goes through `progress_bar`, which also obeys `bars_off`.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm

_off = 0  # how many `bars_off` blocks are open


@contextmanager
def bars_off(off: bool = True) -> Iterator[None]:
    """No plmkit progress bar inside the block (when ``off``)."""
    global _off
    _off += off
    try:
        yield
    finally:
        _off -= off


def bars_enabled() -> bool:
    return _off == 0


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)``, disabled inside `bars_off`."""
    kwargs["disable"] = kwargs.get("disable", False) or not bars_enabled()
    return tqdm(iterable, **kwargs)


__all__ = ["bars_enabled", "bars_off", "progress_bar"]
