"""How a command decodes: the sampling settings of `plmkit generate` and `plmkit chat`, declared once.

Both commands get their flags from these fields (`plmkit.cli.flags.add_settings_flags`), each with
its own defaults where they differ (chat: longer, cooler replies). `generate_kwargs()` turns them
into the keyword arguments of `model.generate` / `model.stream`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from plmkit.utils.constants import MAX_SEED
from plmkit.utils.settings import Settings, setting


@dataclass
class SamplingSettings(Settings):
    """Sampling is the default; ``greedy`` (or temperature 0) picks the most likely token, and
    ``num_beams`` > 1 runs beam search."""

    section = "sampling"

    max_new_tokens: int = setting(64, "tokens to generate at most", metavar="N", at_least=1)
    temperature: float = setting(0.8, "sampling temperature (0: greedy)", metavar="T", at_least=0)
    top_k: int | None = setting(None, "sample among the K most likely tokens", metavar="K", at_least=1)
    top_p: float | None = setting(0.95, "nucleus sampling: the smallest set of tokens with probability >= P",
                                  metavar="P", above=0, at_most=1)
    repetition_penalty: float = setting(1.0, "> 1 discourages repeating tokens (1.0: off)", metavar="R", above=0)
    greedy: bool = setting(False, "always pick the most likely token (no sampling)")
    num_beams: int = setting(1, "beam search with N beams (1: off)", metavar="N", at_least=1)
    seed: int | None = setting(None, "random seed for reproducible sampling", metavar="N", at_least=0,
                               at_most=MAX_SEED)

    def check_given(self, given: set[str]) -> None:
        self.need_with(given, ("top_k", "top_p", "seed") + (() if self.temperature == 0 else ("temperature",)),
                       self.sample, "applies to sampling only: drop --greedy / --num-beams (or --temperature 0)")

    @property
    def sample(self) -> bool:
        return not self.greedy and self.num_beams == 1 and self.temperature != 0  # temperature 0: greedy

    def generate_kwargs(self) -> dict[str, Any]:
        """`model.generate()` / `model.stream()` keyword arguments (the seed is the caller's: it varies it)."""
        kwargs: dict[str, Any] = dict(max_new_tokens=self.max_new_tokens, do_sample=self.sample,
                                      repetition_penalty=self.repetition_penalty)
        if self.num_beams > 1:
            kwargs["num_beams"] = self.num_beams
        if self.sample:
            kwargs.update(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)
        return kwargs


__all__ = ["SamplingSettings"]
