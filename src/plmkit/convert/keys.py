"""Key tables: our module names <-> Hugging Face's, as pairs of templates where ``{i}`` is a layer index,
and `Converter`, one family's two-way table for whole state dicts."""
from __future__ import annotations

import re


class KeyTable:
    """Renames parameter keys ``<module path>.<param>`` between two naming schemes.

    >>> t = KeyTable([("layers.{i}.attn.q", "encoder.layer.{i}.attention.self.query")])
    >>> t.to_hf("layers.3.attn.q.weight")
    'encoder.layer.3.attention.self.query.weight'
    """

    def __init__(self, pairs: list[tuple[str, str]]):
        self.pairs = pairs
        self._ours = [(_pattern(a), b) for a, b in pairs]
        self._theirs = [(_pattern(b), a) for a, b in pairs]

    @staticmethod
    def _rename(key: str, rules) -> str | None:
        for pattern, target in rules:
            m = pattern.match(key)
            if m:
                return target.replace("{i}", m.group("i") or "") + m.group("param")
        return None

    def to_hf(self, key: str) -> str | None:
        return self._rename(key, self._ours)

    def from_hf(self, key: str) -> str | None:
        return self._rename(key, self._theirs)


def _pattern(template: str) -> re.Pattern:
    body = re.escape(template).replace(re.escape("{i}"), r"(?P<i>\d+)")
    if "(?P<i>" not in body:
        body += r"(?P<i>)"
    return re.compile(rf"^{body}(?P<param>\.[^.]+)$")


def rename(state: dict, body: KeyTable, heads: KeyTable, prefix: str, to_hf: bool) -> dict:
    """Rename every key: under ``prefix.`` (or bare) through ``body``, else through ``heads``.

    Keys no table knows are kept as they are, so the loader can report them by name.
    """
    out = {}
    for key, value in state.items():
        inner, pre = (key[len(prefix) + 1:], prefix + ".") if key.startswith(prefix + ".") else (key, "")
        new = (body.to_hf(inner) if to_hf else body.from_hf(inner))
        if new is not None:
            out[pre + new] = value
            continue
        new = heads.to_hf(key) if to_hf else heads.from_hf(key)
        out[new if new is not None else key] = value
    return out


def hf_key(key: str, body: KeyTable, heads: KeyTable, prefix: str) -> str:
    """The Hugging Face name of one of our keys (the key itself when no table knows it)."""
    return next(iter(rename({key: None}, body, heads, prefix, to_hf=True)))


class Converter:
    """One family's checkpoint names: the body's table (keys under ``prefix.`` in task checkpoints, or
    bare in base ones), the heads' table, and the buffers old Hugging Face checkpoints carry that
    plmkit recomputes (``dropped``, a regex searched in each Hugging Face key). A family with more
    than renaming (fused or transposed tensors) subclasses it."""

    def __init__(self, body: KeyTable, heads: KeyTable, prefix: str, dropped: str | None = None):
        self.body, self.heads, self.prefix = body, heads, prefix
        self.dropped = re.compile(dropped) if dropped else None

    def to_hf(self, state: dict) -> dict:
        """Our parameter names -> Hugging Face's."""
        return rename(state, self.body, self.heads, self.prefix, to_hf=True)

    def from_hf(self, state: dict) -> dict:
        """Hugging Face's parameter names -> ours."""
        if self.dropped is not None:
            state = {k: v for k, v in state.items() if not self.dropped.search(k)}
        return rename(state, self.body, self.heads, self.prefix, to_hf=False)

    def hf_key(self, key: str) -> str:
        """The Hugging Face name of one of our keys (the key itself when no table knows it)."""
        return hf_key(key, self.body, self.heads, self.prefix)

    def knows(self, key: str) -> bool:
        """Whether one of our keys (as `from_hf` returns them) names a weight of this family's tables."""
        inner = key[len(self.prefix) + 1:] if key.startswith(self.prefix + ".") else key
        return self.body.to_hf(inner) is not None or self.heads.to_hf(key) is not None

    def body_roots(self) -> set[str]:
        """The first names of the body's keys on both sides (``layers``, ``encoder``, ``h`` ...): a key
        under one of them that no table knows is an unknown body weight."""
        return {side.split(".")[0] for pair in self.body.pairs for side in pair}
