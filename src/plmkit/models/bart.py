"""BART (Lewis et al., 2020, "BART: Denoising Sequence-to-Sequence Pre-training for Natural Language
Generation, Translation, and Comprehension"): an encoder-decoder Transformer with learned positions
(read at position + 2), a LayerNorm on the embeddings, post-LN blocks, exact GELU, one token
embedding matrix shared by the encoder, the decoder and the LM head, and a ``final_logits_bias``.

Matches Hugging Face's `BartModel` / `BartForConditionalGeneration` weight for weight
(plmkit.convert.bart). Marian (plmkit.models.marian) is this model with other switches.

    model = BartForConditionalGeneration(BartConfig.from_preset("bart-tiny"))
    out = model(input_ids, attention_mask=mask, labels=labels)      # out.loss, out.logits
    ids = model.generate(input_ids, attention_mask=mask, num_beams=4, max_new_tokens=40)
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from plmkit.convert.bart import CONVERTER
from plmkit.errors import ConfigError, PlmkitError
from plmkit.models.config import FED_IDS, POSITIVE, PROBABILITY, ModelConfig
from plmkit.models.inputs import attention_mask_2d
from plmkit.models.outputs import Seq2SeqModelOutput, takes_return_dict
from plmkit.models.registry import Family, config_from_preset, register
from plmkit.models.seq2seq import (Seq2SeqLM, Seq2SeqPreTrainedModel, Seq2SeqStack, check_token_id,
                                   shared_parameter_names, shift_tokens_right)
from plmkit.nn import FeedForward, MultiHeadAttention, TransformerBlock
from plmkit.nn.cache import growing_cache
from plmkit.nn.embeddings import ScaledEmbeddings
from plmkit.nn.mlp import ACTIVATIONS

# fairseq-era keys of older BART / Marian config.json files that Hugging Face's models ignore too
FAIRSEQ_KEYS = ("add_bias_logits", "add_final_layer_norm", "normalize_before", "normalize_embedding",
                "static_position_embeddings", "classif_dropout", "extra_pos_embeddings", "output_past",
                "force_bos_token_to_be_generated")


@dataclass
class BartConfig(ModelConfig):
    model_type = "bart"
    dropout_fields = ("dropout", "attention_dropout", "activation_dropout")
    field_names = {"num_layers": "encoder_layers", "d_model": "d_model", "context_length": "max_position_embeddings"}
    default_only_keys = {**ModelConfig.default_only_keys, "is_encoder_decoder": True, "is_decoder": False}
    ranges = {**dict.fromkeys(("vocab_size", "max_position_embeddings", "d_model", "encoder_layers", "encoder_ffn_dim",
                               "encoder_attention_heads", "decoder_layers", "decoder_ffn_dim", "decoder_attention_heads"),
                            POSITIVE),
              **dict.fromkeys(("dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop",
                               "decoder_layerdrop", "classifier_dropout"), PROBABILITY),
              "init_std": {"at_least": 0}}
    # the family switches (Marian sets its own)
    sinusoidal_positions: ClassVar[bool] = False  # else learned, read at position + position_offset
    decoder_starts_with: ClassVar[str] = "eos_token_id"  # BART's decoder starts with </s> (then <s>)
    position_offset: ClassVar[int] = 2
    embedding_norm: ClassVar[bool] = True  # a LayerNorm on the embeddings (HF: layernorm_embedding)
    scales_decoder_inputs_embeds: ClassVar[bool] = False  # given decoder embeddings times the scale (HF's Marian)
    vocab_size: int = 50265
    max_position_embeddings: int = 1024
    encoder_layers: int = 12
    encoder_ffn_dim: int = 4096
    encoder_attention_heads: int = 16
    decoder_layers: int = 12
    decoder_ffn_dim: int = 4096
    decoder_attention_heads: int = 16
    encoder_layerdrop: float = 0.0
    decoder_layerdrop: float = 0.0
    activation_function: str = "gelu"
    d_model: int = 1024
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    init_std: float = 0.02
    classifier_dropout: float = 0.0
    scale_embedding: bool = False  # token embeddings times sqrt(d_model)
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 2
    decoder_start_token_id: int | None = 2  # BART's decoder starts with </s> (then <s>, forced by training)
    forced_eos_token_id: int | list[int] | None = 2
    tie_word_embeddings: bool = True

    def __post_init__(self):
        super().__post_init__()
        for side in ("encoder", "decoder"):
            heads = getattr(self, f"{side}_attention_heads")
            self._check(self.d_model % heads == 0, f"d_model={self.d_model} is not divisible by {side}_attention_heads={heads}")
        self._check(self.activation_function in ACTIVATIONS,
                    f"activation_function={self.activation_function!r} is not one of {sorted(ACTIVATIONS)}")
        for name in FED_IDS:  # (an eos or bos beyond the vocabulary is no token the model can produce: kept)
            check_token_id(self, name, self.target_vocab_size)
        self._check(self.tie_word_embeddings or not self.shares_embeddings,
                    "tie_word_embeddings=false with shared encoder/decoder embeddings is not supported (Hugging Face "
                    "4.x unties only the LM head, 5.x every embedding)")

    @property
    def shares_embeddings(self) -> bool:
        """One token embedding matrix for the encoder and the decoder."""
        return True

    @property
    def target_vocab_size(self) -> int:
        return self.vocab_size

    @classmethod
    def from_hf_fields(cls, d: dict[str, Any], source: str) -> dict[str, Any]:
        """transformers 4.x writes ``num_hidden_layers`` (an alias of encoder_layers); older checkpoints
        carry fairseq-era keys that Hugging Face ignores."""
        layers = d.pop("num_hidden_layers", None)
        if layers is not None and layers != d.get("encoder_layers", layers):
            raise ConfigError(f"{source}: num_hidden_layers={layers} and encoder_layers={d['encoder_layers']} disagree")
        for key in FAIRSEQ_KEYS:
            d.pop(key, None)
        return d

    def hf_fields(self) -> dict[str, Any]:
        return {"is_encoder_decoder": True}

    def with_layers(self, kept: list[int], decoder_kept: list[int] | None = None) -> "BartConfig":
        """The encoder's blocks `kept` and the decoder's `decoder_kept` (both given)."""
        decoder_kept = self._decoder_blocks(decoder_kept)
        return dataclasses.replace(self, encoder_layers=len(kept), decoder_layers=len(decoder_kept))

    @classmethod
    def tokenizer_fields(cls, tokenizer) -> dict[str, Any]:
        """The decoder starts with `decoder_starts_with` and ends with the eos token."""
        fields = super().tokenizer_fields(tokenizer)
        return {**fields, "decoder_start_token_id": fields[cls.decoder_starts_with],
                "forced_eos_token_id": fields["eos_token_id"]}

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "BartConfig":
        """A preset of this family's presets with ``overrides`` (plmkit.models.registry.config_from_preset)."""
        return config_from_preset(name, model_type=cls.model_type, **overrides)


def size(layers: int, d_model: int, heads: int) -> dict:
    """Preset fields: ``layers`` encoder and decoder blocks of width d_model, feed-forward 4 * d_model."""
    return dict(encoder_layers=layers, decoder_layers=layers, d_model=d_model, encoder_attention_heads=heads,
                decoder_attention_heads=heads, encoder_ffn_dim=4 * d_model, decoder_ffn_dim=4 * d_model)


BART_PRESETS = {
    "bart-tiny": size(2, 128, 2),
    "bart-small": size(4, 512, 8),
    "bart-base": size(6, 768, 12),  # facebook/bart-base, 139M parameters
}


class BartPreTrainedModel(Seq2SeqPreTrainedModel):
    config_class = BartConfig
    base_prefix = "model"

    def init_weights(self, std: float | None = None) -> None:
        super().init_weights(self.config.init_std if std is None else std)


def block(c: BartConfig, heads: int, d_ff: int, cross: bool) -> TransformerBlock:
    """A post-LN block: self-attention (+ cross-attention), feed-forward, each with residual dropout."""
    def attention():
        return MultiHeadAttention(c.d_model, heads, dropout=c.attention_dropout)
    return TransformerBlock(attention(), FeedForward(c.d_model, d_ff, c.activation_function, dropout=c.activation_dropout),
                            lambda: nn.LayerNorm(c.d_model), dropout=c.dropout, cross_attn=attention() if cross else None)


def embeddings(c: BartConfig, word: nn.Embedding, decoder: bool = False) -> ScaledEmbeddings:
    return ScaledEmbeddings(word, c.max_position_embeddings, scale=math.sqrt(c.d_model) if c.scale_embedding else 1.0,
                            offset=0 if c.sinusoidal_positions else c.position_offset,
                            sinusoidal=c.sinusoidal_positions,
                            norm=nn.LayerNorm(c.d_model) if c.embedding_norm else None, dropout=c.dropout,
                            scale_inputs_embeds=decoder and c.scales_decoder_inputs_embeds)


class BartModel(BartPreTrainedModel):
    """The encoder and the decoder, over one shared token embedding (``shared``) or, for a Marian
    model with its own target vocabulary, one per side."""

    base_prefix = ""

    def __init__(self, config: BartConfig):
        super().__init__(config)
        c = config
        vocab = (c.vocab_size, c.target_vocab_size)
        self.shared = nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_token_id) if c.shares_embeddings else None
        source, target = (self.shared, self.shared) if self.shared is not None else (
            nn.Embedding(n, c.d_model, padding_idx=c.pad_token_id) for n in vocab)
        self.encoder = Seq2SeqStack(embeddings(c, source),
                                    [block(c, c.encoder_attention_heads, c.encoder_ffn_dim, False)
                                     for _ in range(c.encoder_layers)], layerdrop=c.encoder_layerdrop)
        self.decoder = Seq2SeqStack(embeddings(c, target, decoder=True),
                                    [block(c, c.decoder_attention_heads, c.decoder_ffn_dim, True)
                                     for _ in range(c.decoder_layers)], causal=True, layerdrop=c.decoder_layerdrop)
        self.init_weights()
        self.tied_keys = shared_parameter_names(self)

    def get_encoder(self) -> Seq2SeqStack:
        return self.encoder

    def decoder_layers(self) -> nn.ModuleList:
        return self.decoder.layers

    @takes_return_dict
    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                decoder_input_ids: Tensor | None = None, decoder_attention_mask: Tensor | None = None,
                encoder_outputs=None, past_key_values=None, output_attentions: bool = False,
                output_hidden_states: bool = False, inputs_embeds: Tensor | None = None,
                decoder_inputs_embeds: Tensor | None = None, use_cache: bool | None = None) -> Seq2SeqModelOutput:
        """Without decoder inputs, the decoder reads the source shifted right (BART's denoising setup);
        inputs_embeds, decoder_inputs_embeds and use_cache as `Seq2SeqLM.forward`'s."""
        attention_mask = attention_mask_2d(attention_mask)
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            if input_ids is None:
                raise PlmkitError("give decoder_input_ids or decoder_inputs_embeds (the source shifted right needs "
                                  "input_ids)")
            decoder_input_ids = shift_tokens_right(input_ids, self.config.pad_token_id, self.config.decoder_start_token_id)
        enc = self.encoder_output(input_ids, attention_mask, encoder_outputs, past_key_values, output_hidden_states,
                                  output_attentions, inputs_embeds)
        if use_cache and past_key_values is None:
            past_key_values = growing_cache(self.decoder.layers, enc.last_hidden_state, attention_mask)
        dec = self.decoder(decoder_input_ids, decoder_attention_mask, context=None if enc is None else enc.last_hidden_state,
                           context_mask=attention_mask, cache=past_key_values, inputs_embeds=decoder_inputs_embeds,
                           output_hidden_states=output_hidden_states, output_attentions=output_attentions)
        return Seq2SeqModelOutput(dec.last_hidden_state, past_key_values, dec.hidden_states, dec.attentions,
                                  dec.cross_attentions, *((None,) * 3 if enc is None else
                                                          (enc.last_hidden_state, enc.hidden_states, enc.attentions)))


class BartForConditionalGeneration(Seq2SeqLM, BartPreTrainedModel):
    """BartModel + the LM head (tied to the token embeddings) + ``final_logits_bias``; ``generate``."""

    body_class = BartModel

    def __init__(self, config: BartConfig):
        super().__init__(config)
        self.model = self.body_class(config)
        word = self.model.decoder.embeddings.word
        self.lm_head = nn.Linear(config.d_model, word.num_embeddings, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = word.weight
        else:
            nn.init.normal_(self.lm_head.weight, std=config.init_std)
        self.register_buffer("final_logits_bias", torch.zeros(1, word.num_embeddings))  # (1, V), not trained
        self.tied_keys = shared_parameter_names(self)

    def get_encoder(self) -> Seq2SeqStack:
        return self.model.encoder

    def decoder_layers(self) -> nn.ModuleList:
        return self.model.decoder.layers

    def decode(self, decoder_input_ids, decoder_attention_mask, encoder_states, encoder_mask, cache, unpad,
               output_hidden_states, output_attentions, position_ids=None, inputs_embeds=None):
        return self.model.decoder(decoder_input_ids, decoder_attention_mask, context=encoder_states,
                                  context_mask=encoder_mask, cache=cache, unpad=unpad,
                                  output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                                  position_ids=position_ids, inputs_embeds=inputs_embeds)

    def output_projection(self):
        return None, self.lm_head.weight, self.final_logits_bias[0]

    def untied_input_vocabulary_head(self) -> nn.Linear | None:
        """With a target vocabulary of its own (Marian's unshared embeddings) the LM head scores that one, not
        the source's that `resize_token_embeddings` resizes (as in Hugging Face's Marian)."""
        return super().untied_input_vocabulary_head() if self.config.shares_embeddings else None

    def resize_token_embeddings(self, n: int) -> nn.Embedding:
        """The source vocabulary: with shared embeddings also the target's (the LM head and its bias);
        Marian's own target vocabulary (``share_encoder_decoder_embeddings=false``) stays as it is."""
        emb = super().resize_token_embeddings(n)
        if self.lm_head.out_features != self.final_logits_bias.shape[1]:  # the bias follows the LM head
            bias = self.final_logits_bias.new_zeros(1, self.lm_head.out_features)
            keep = min(bias.shape[1], self.final_logits_bias.shape[1])
            bias[:, :keep] = self.final_logits_bias[:, :keep]
            self.final_logits_bias = bias
        return emb


register(Family(BartConfig, {"base": BartModel, "seq2seq-lm": BartForConditionalGeneration}, CONVERTER, BART_PRESETS))
