"""Marian (Junczys-Dowmunt et al., 2018, "Marian: Fast Neural Machine Translation in C++"), the
architecture of the Opus-MT translation models (Tiedemann & Thottingal, 2020): BART's encoder-decoder
with fixed sinusoidal positions laid out [sin | cos] (not saved: rebuilt on load), no LayerNorm on
the embeddings, token embeddings scaled by sqrt(d_model) (``scale_embedding``), swish feed-forwards,
the pad token as the decoder's first token, and optionally a target vocabulary of its own
(``share_encoder_decoder_embeddings=false``, ``decoder_vocab_size``).

Matches Hugging Face's `MarianModel` / `MarianMTModel` weight for weight (plmkit.convert.marian).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from plmkit.convert.marian import CONVERTER
from plmkit.models.bart import BartConfig, BartForConditionalGeneration, BartModel, size
from plmkit.models.config import POSITIVE
from plmkit.models.registry import Family, register


@dataclass
class MarianConfig(BartConfig):
    """Hugging Face's MarianConfig defaults; the presets are Opus-MT's (swish, scaled embeddings)."""

    model_type = "marian"
    ranges = {**BartConfig.ranges, "decoder_vocab_size": POSITIVE}
    sinusoidal_positions: ClassVar[bool] = True
    decoder_starts_with: ClassVar[str] = "pad_token_id"
    embedding_norm: ClassVar[bool] = False
    scales_decoder_inputs_embeds: ClassVar[bool] = True  # (HF: the decoder scales given embeddings, the encoder not)
    vocab_size: int = 58101
    decoder_vocab_size: int | None = None  # None: vocab_size
    share_encoder_decoder_embeddings: bool = True
    pad_token_id: int | None = 58100
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = 0
    decoder_start_token_id: int | None = 58100  # the pad token
    forced_eos_token_id: int | list[int] | None = 0

    def __post_init__(self):
        if self.decoder_vocab_size is None:
            self.decoder_vocab_size = self.vocab_size
        super().__post_init__()
        self._check(not self.share_encoder_decoder_embeddings or self.decoder_vocab_size == self.vocab_size,
                    f"share_encoder_decoder_embeddings=true needs decoder_vocab_size={self.decoder_vocab_size} "
                    f"= vocab_size={self.vocab_size}")
        self._check(self.d_model % 2 == 0, f"d_model={self.d_model} must be even for the [sin | cos] positions")

    @property
    def shares_embeddings(self) -> bool:
        return self.share_encoder_decoder_embeddings

    @property
    def target_vocab_size(self) -> int:
        return self.decoder_vocab_size


OPUS_MT = dict(activation_function="swish", scale_embedding=True, max_position_embeddings=512)
MARIAN_PRESETS = {
    "marian-tiny": {**size(2, 128, 2), **OPUS_MT},
    "marian-small": {**size(4, 256, 4), **OPUS_MT},
    "marian-base": {**size(6, 512, 8), **OPUS_MT},  # Helsinki-NLP/opus-mt-*: 6 + 6 layers, d 512, 8 heads
}


class MarianModel(BartModel):
    config_class = MarianConfig


class MarianMTModel(BartForConditionalGeneration):
    """MarianModel + the LM head over the target vocabulary + ``final_logits_bias``; ``generate``."""

    config_class = MarianConfig
    body_class = MarianModel


register(Family(MarianConfig, {"base": MarianModel, "seq2seq-lm": MarianMTModel}, CONVERTER, MARIAN_PRESETS))
