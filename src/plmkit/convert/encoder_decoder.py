"""The encoder-decoder composite (Hugging Face's `EncoderDecoderModel`): ``encoder.*`` keys are the
encoder family's own names under that prefix, ``decoder.*`` the decoder family's (a BERT decoder:
``decoder.bert.encoder.layer.{i}.crossattention.*``, ``decoder.cls.predictions.*``); ``enc_to_dec_proj``
(when the widths differ) keeps its name."""
from __future__ import annotations

SIDES = ("encoder", "decoder")


def split(state: dict) -> tuple[dict, dict, dict]:
    """(encoder's keys, decoder's keys, the rest), the first two without their prefix."""
    parts = {side: {} for side in SIDES}
    rest = {}
    for key, value in state.items():
        side = key.split(".", 1)[0]
        if side in parts and "." in key:
            parts[side][key.split(".", 1)[1]] = value
        else:
            rest[key] = value
    return parts["encoder"], parts["decoder"], rest


def join(encoder: dict, decoder: dict, rest: dict) -> dict:
    return {**{f"encoder.{k}": v for k, v in encoder.items()}, **{f"decoder.{k}": v for k, v in decoder.items()},
            **rest}


class CompositeConverter:
    """Each half through its family's key table (``encoder`` / ``decoder``: their model types)."""

    prefix = ""

    def __init__(self, encoder: str = "bert", decoder: str = "bert"):
        self.encoder, self.decoder = encoder, decoder

    def _halves(self):
        from plmkit.convert import converter
        return converter(self.encoder), converter(self.decoder)

    def to_hf(self, state: dict) -> dict:
        enc, dec = self._halves()
        encoder, decoder, rest = split(state)
        return join(enc.to_hf(encoder), dec.to_hf(decoder), rest)

    def from_hf(self, state: dict) -> dict:
        enc, dec = self._halves()
        encoder, decoder, rest = split(state)
        return join(enc.from_hf(encoder), dec.from_hf(decoder), rest)

    def hf_key(self, key: str) -> str:
        return next(iter(self.to_hf({key: None})))


CONVERTER = CompositeConverter()  # the registry's entry: BERT-to-BERT
