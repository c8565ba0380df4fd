"""Hugging Face checkpoint conversion: the only place that knows Hugging Face's key names.

Each family module (plmkit.convert.<family>) defines ``CONVERTER``, a `keys.Converter`; the family's
registry entry (plmkit.models.registry) names it, and the functions here dispatch on ``model_type``.
"""
from __future__ import annotations

from plmkit.errors import CheckpointError, ConfigError


def converter(model_type: str):
    """The key table of ``model_type``'s family."""
    from plmkit.models.registry import family  # the registry imports the model families: on first use
    try:
        return family(model_type).converter
    except ConfigError as err:
        raise CheckpointError(f"no Hugging Face key table: {err}") from None


def to_hf(model_type: str, state: dict) -> dict:
    """Our parameter names -> Hugging Face's."""
    return converter(model_type).to_hf(state)


def from_hf(model_type: str, state: dict) -> dict:
    """Hugging Face's parameter names -> ours."""
    return converter(model_type).from_hf(state)


def unknown_body_keys(model_type: str, keys) -> list[str]:
    """The keys (ours, after `from_hf`) under the body that no key table of the family knows: weights
    of another architecture or of a variant plmkit does not implement."""
    table = converter(model_type)
    roots = table.body_roots()
    return [k for k in keys if not table.knows(k)
            and (k.startswith(table.prefix + ".") or k.split(".")[0] in roots)]


def hf_key(model_type: str, key: str) -> str:
    """The Hugging Face name of one of our parameter keys, for messages."""
    return converter(model_type).hf_key(key)
