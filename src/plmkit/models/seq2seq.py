"""What encoder-decoder (sequence-to-sequence) Transformers share (Vaswani et al., 2017, "Attention Is
All You Need"): an encoder reads the source, a decoder writes the target one token at a time, reading
the encoder's output through cross-attention. A family (BART, Marian, the BERT-to-BERT composite)
builds the modules and names its Hugging Face fields; the rest is here:

- `Seq2SeqStack`: one side, embeddings + blocks. The encoder drops padding tokens (every linear layer
  runs on real tokens only, self-attention on the sequences grouped by length); the decoder has causal
  self-attention, cross-attention and a KV cache, and skips padded target positions in training too.
- `Seq2SeqPreTrainedModel`: the hooks `generate` uses (`encode`, `make_cache`: the cross-attention keys
  and values are computed once per source and read in place by every beam of it), a server's
  (`make_slot_cache`: rows of their own sources and target lengths, which join and leave between steps,
  stepped with ``decoder_attention_mask`` and ``decoder_position_ids``), and the forward of an LM:
  ``labels`` -> decoder inputs (`shift_tokens_right`) and the loss, with label smoothing.

Padding: ``attention_mask`` (B, S) marks the source's real tokens; ``decoder_attention_mask`` (B, T) the
target's (Hugging Face's meaning: padding keys are hidden). Positions count from 0 in every row, as
in Hugging Face, so sources are padded on the right.

Fast by default, as the causal LMs: given ``labels`` in training mode, the loss comes from the chunked
LM head + cross-entropy (`plmkit.nn.losses`), which never builds the (B, T, V) logits, and ``.logits``
is None; ``return_logits=True`` (or eval mode) gives them with the same loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.errors import ConfigError, PlmkitError
from plmkit.generation import GenerationMixin
from plmkit.models.base import PreTrainedModel
from plmkit.models.config import ModelConfig
from plmkit.models.inputs import attention_mask_2d, check_inputs
from plmkit.models.outputs import BaseModelOutput, Seq2SeqLMOutput, takes_return_dict
from plmkit.nn.block import run_blocks
from plmkit.nn.cache import Seq2SeqCache, Seq2SeqSlotCache, cross_attention_inputs, growing_cache
from plmkit.nn.decoding import decode_linear
from plmkit.nn.losses import linear_cross_entropy
from plmkit.nn.masks import padding_bias, self_attention_masks
from plmkit.nn.quantized import compute_dtype
from plmkit.utils.constants import IGNORE_INDEX


def shift_tokens_right(labels: Tensor, pad_token_id: int | None, decoder_start_token_id: int | None) -> Tensor:
    """(B, T) labels -> decoder inputs: the start token, then the labels but the last; -100 -> pad."""
    if decoder_start_token_id is None:
        raise ConfigError("labels need a decoder start token to shift them into decoder inputs, but "
                          "config.decoder_start_token_id is not set: set it (BART: eos, Marian: pad, BERT-to-BERT: [CLS])")
    if pad_token_id is None:
        raise ConfigError("labels are shifted into decoder inputs with -100 replaced by the pad token, but "
                          "config.pad_token_id is not set: set it")
    shifted = labels.new_full(labels.shape, decoder_start_token_id)
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill_(shifted == IGNORE_INDEX, pad_token_id)


def labelled_prefix(labels: Tensor) -> Tensor:
    """(B, T) 1 up to each row's last labelled position, 0 after it: the decoder positions a loss needs
    (later ones are seen by no labelled position, causal attention looking only back)."""
    labelled = (labels != IGNORE_INDEX).long()
    return (labelled.flip(1).cummax(1).values.flip(1)).to(labels.dtype)


def check_length(limit: int | None, n: int, what: str) -> None:
    if limit is not None and n > limit:
        raise PlmkitError(f"the {what} has {n} positions but this model takes at most {limit}: "
                          f"truncate it (e.g. tokenizer(..., truncation=True, max_length={limit}))")


class Seq2SeqStack(nn.Module):
    """One side of an encoder-decoder: ``embeddings`` (a `plmkit.nn.embeddings.ScaledEmbeddings`, or
    anything taking (ids, positions)), ``layers`` (TransformerBlocks, with cross-attention in a
    decoder) and an optional ``final_norm``. ``causal``: a decoder."""

    def __init__(self, embeddings: nn.Module, layers: list[nn.Module], final_norm: nn.Module | None = None, *,
                 causal: bool = False, layerdrop: float = 0.0):
        super().__init__()
        self.embeddings, self.layers, self.final_norm = embeddings, nn.ModuleList(layers), final_norm
        self.causal, self.layerdrop = causal, layerdrop

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, *, context: Tensor | None = None,
                context_mask: Tensor | None = None, cache: Seq2SeqCache | None = None, unpad: bool = True,
                output_hidden_states: bool = False, output_attentions: bool = False,
                position_ids: Tensor | None = None, inputs_embeds: Tensor | None = None) -> BaseModelOutput:
        """input_ids (B, T), or inputs_embeds (B, T, D) (scaled or not as Hugging Face's family: see
        `ScaledEmbeddings`); attention_mask (B, T) (int, bool or float 0/1), or (B, past + T) with a cache.

        A decoder reads ``context`` (B, S, D), the encoder's output, with ``context_mask`` (B, S), or the
        keys and values ``cache`` holds (generation). position_ids (B, T): each token's position, when the
        rows of a cache hold different lengths (a server's `Seq2SeqSlotCache`); by default past .. past + T - 1.
        """
        past = cache.length if cache is not None else 0
        word = self.embeddings.word
        attention_mask = check_inputs(input_ids, word.num_embeddings, attention_mask, past, inputs_embeds=inputs_embeds,
                                      d_model=word.embedding_dim)
        given = input_ids if input_ids is not None else inputs_embeds
        b, t = given.shape[:2]
        check_length(self.embeddings.max_positions, past + t, "target" if self.causal else "source")
        dtype = compute_dtype(word)
        positions = (torch.arange(past, past + t, device=given.device) if position_ids is None
                     else position_ids).expand(b, t)
        layout, bias, causal = self_attention_masks(attention_mask, t, past, self.causal, unpad and cache is None,
                                                    dtype, given.device)
        context, context_bias = cross_attention_inputs(cache, context, context_mask, dtype, real_tokens=self.causal)
        unpadded = layout.unpad if layout is not None else (lambda x: x)
        full = layout.repad if layout is not None else (lambda x: x)

        x = self.embeddings(None if input_ids is None else unpadded(input_ids), unpadded(positions),
                            None if inputs_embeds is None else unpadded(inputs_embeds))  # (B, T, D) or (N, D)
        x, hidden, attentions, cross = run_blocks(self.layers, x, bias, causal=causal, layout=layout, cache=cache,
                                                  context=context, context_bias=context_bias,
                                                  layerdrop=self.layerdrop, output_hidden_states=output_hidden_states,
                                                  output_attentions=output_attentions)
        if self.final_norm is not None:
            x = self.final_norm(x)
        x = full(x)  # (B, T, D), zeros at padding
        return BaseModelOutput(x, None, tuple(map(full, hidden)) + (x,) if output_hidden_states else None, cache,
                               tuple(attentions) if output_attentions else None, tuple(cross) if cross else None)


def shared_parameter_names(model: nn.Module) -> tuple[str, ...]:
    """Parameters that are the same tensor as one named before them (tied embeddings): a checkpoint
    stores them once, under the first name."""
    seen, tied = set(), []
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            tied.append(name)
        seen.add(id(p))
    return tuple(tied)


class Seq2SeqPreTrainedModel(GenerationMixin, PreTrainedModel):
    """The base of an encoder-decoder family's models. ``generate`` runs the encoder once (`encode`),
    then the decoder step by step on a `make_cache` cache; a family's LM provides the hooks below."""

    is_encoder_decoder = True
    body_roots = ("shared", "encoder", "decoder")
    optional_keys = ("final_logits_bias",)  # Hugging Face's default (zeros) when a checkpoint lacks it

    def get_encoder(self) -> nn.Module:
        """The encoder: (input_ids, attention_mask, output_hidden_states=, output_attentions=) -> BaseModelOutput."""
        raise NotImplementedError

    def decoder_layers(self) -> nn.ModuleList:
        """The decoder's blocks (each with ``attn`` and ``cross_attn``)."""
        raise NotImplementedError

    def get_input_embeddings(self) -> nn.Embedding:
        return self.get_encoder().embeddings.word

    def bridge(self, states: Tensor) -> Tensor:
        """The encoder's (B, S, D) states as the decoder's cross-attention reads them."""
        return states

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None, **encoder_inputs) -> Tensor:
        """(B, S) source -> (B, S, D) the states the decoder's cross-attention reads; ``encoder_inputs``: the
        encoder's other inputs (a BERT encoder's token_type_ids)."""
        return self.get_encoder()(input_ids, attention_mask, **encoder_inputs).last_hidden_state

    def make_cache(self, rows: int, max_len: int, encoder_states: Tensor, encoder_mask: Tensor | None = None,
                   dtype: torch.dtype | None = None) -> Seq2SeqCache:
        """A decoder cache for ``rows`` target sequences of up to ``max_len`` positions, over the
        (B_s, S, D) ``encoder_states`` of B_s sources (rows = B_s * beams); the cross-attention keys and
        values are computed here, once."""
        layers = self.decoder_layers()
        attn, dtype = layers[0].attn, dtype or encoder_states.dtype
        padded = encoder_mask is not None and not bool(encoder_mask.all())
        return Seq2SeqCache(len(layers), rows, attn.n_kv_heads, max_len, attn.d_head,
                            self.cross_keys_values(encoder_states),
                            padding_bias(encoder_mask, dtype) if padded else None, dtype, encoder_states.device)

    def cross_keys_values(self, encoder_states: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Each decoder layer's cross-attention keys and values of (B_s, S, D) ``encoder_states``, (B_s, H, S, d)
        each."""
        return [layer.cross_attn.project_kv(encoder_states) for layer in self.decoder_layers()]

    def make_slot_cache(self, slots: int, max_len: int) -> Seq2SeqSlotCache:
        """An empty cache for continuous batching (a server): ``slots`` rows of up to ``max_len`` target
        positions, each with its own source (`Seq2SeqSlotCache.join_source`, with `cross_keys_values`);
        the forward then takes ``decoder_attention_mask=cache.step_mask()`` and
        ``decoder_position_ids=cache.positions()``."""
        layers, word = self.decoder_layers(), self.get_input_embeddings()
        return Seq2SeqSlotCache(len(layers), slots, [layer.attn.n_kv_heads for layer in layers], max_len,
                                layers[0].attn.d_head, compute_dtype(word), word.weight.device)

    def encoder_output(self, input_ids, attention_mask, encoder_outputs, cache, output_hidden_states: bool,
                       output_attentions: bool, inputs_embeds: Tensor | None = None) -> BaseModelOutput | None:
        """The encoder's output: given (``encoder_outputs``: an output, a tuple whose first item is the (B, S, D)
        states, or those states), held by the cache (None: the decoder reads the cache), or computed now (from
        input_ids or inputs_embeds)."""
        if encoder_outputs is not None:
            if isinstance(encoder_outputs, BaseModelOutput):
                return encoder_outputs
            return BaseModelOutput(encoder_outputs if isinstance(encoder_outputs, Tensor) else encoder_outputs[0])
        if cache is not None:
            return None
        if input_ids is None and inputs_embeds is None:
            raise PlmkitError("give the source (input_ids or inputs_embeds), or encoder_outputs, or a cache made by "
                              "make_cache")
        return self.get_encoder()(input_ids, attention_mask, output_hidden_states=output_hidden_states,
                                  output_attentions=output_attentions, inputs_embeds=inputs_embeds)


class Seq2SeqLM:
    """What every encoder-decoder LM shares (mixed into a Seq2SeqPreTrainedModel): the forward with
    the shifted labels and the loss. A family provides `decode` (the decoder's hidden states) and
    `output_projection` (how hidden states become logits); `decoder_mask_for_labels` says which
    decoder positions are padding when labels are given without a decoder mask."""

    loss_items = {"loss": "tokens"}

    def direct_weights(self) -> tuple[Tensor, ...]:
        return (self.output_projection()[1],)  # read as a tensor by the forward below and by generation

    def decode(self, decoder_input_ids: Tensor, decoder_attention_mask: Tensor | None, encoder_states: Tensor | None,
               encoder_mask: Tensor | None, cache: Seq2SeqCache | None, unpad: bool,
               output_hidden_states: bool, output_attentions: bool, position_ids: Tensor | None = None,
               inputs_embeds: Tensor | None = None) -> BaseModelOutput:
        """The decoder's output (with ``cross_attentions`` when asked for attentions); ``position_ids`` (B, T):
        the decoder tokens' positions (None: counted from the cache's length); ``inputs_embeds`` (B, T, D): given
        in place of ``decoder_input_ids``' embeddings."""
        raise NotImplementedError

    def output_projection(self) -> tuple[callable | None, Tensor, Tensor | None]:
        """(transform or None, weight (V, D), bias (V,) or None): logits = transform(h) @ weight.T + bias."""
        raise NotImplementedError

    def decoder_mask_for_labels(self, decoder_input_ids: Tensor, labels: Tensor) -> Tensor:
        """Hugging Face's BART and Marian mask no decoder position; the positions after each row's last
        label are seen by no labelled one, so skipping them changes nothing that counts."""
        return labelled_prefix(labels)

    @takes_return_dict
    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                decoder_input_ids: Tensor | None = None, decoder_attention_mask: Tensor | None = None,
                encoder_outputs=None, past_key_values: Seq2SeqCache | None = None, labels: Tensor | None = None,
                logits_to_keep: int = 0, output_attentions: bool = False, output_hidden_states: bool = False,
                return_logits: bool | None = None, label_smoothing: float = 0.0,
                decoder_position_ids: Tensor | None = None, inputs_embeds: Tensor | None = None,
                decoder_inputs_embeds: Tensor | None = None, use_cache: bool | None = None) -> Seq2SeqLMOutput:
        """input_ids / attention_mask (B, S): the source (or inputs_embeds (B, S, D)); labels (B, T): the
        target, -100 = ignored; decoder inputs are the labels shifted right after ``decoder_start_token_id``
        unless given (decoder_input_ids, or decoder_inputs_embeds (B, T, D)).

        decoder_position_ids (B, T): the decoder tokens' positions, counted from 0 in each target (default:
        after the cache's length); rows of their own lengths need them (`make_slot_cache`).

        use_cache=True: without ``past_key_values``, a new cache (growing with each call, holding the
        cross-attention keys and values of this source) comes back in ``past_key_values``; the next call
        passes it with the next decoder_input_ids (Hugging Face's incremental decoding; the source need not
        be given again: the cache holds what the decoder reads of it).
        logits_to_keep: logits of the last k positions only (0 = all), as in generation.
        return_logits: None = logits unless training with labels (see the module docstring).
        label_smoothing: as ``torch.nn.CrossEntropyLoss(label_smoothing=...)``.
        """
        attention_mask = attention_mask_2d(attention_mask)
        decoder_attention_mask = attention_mask_2d(decoder_attention_mask, name="decoder_attention_mask")
        unpad = True
        if labels is not None:
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_input_ids = shift_tokens_right(labels, self.config.pad_token_id,
                                                       self.config.decoder_start_token_id)
                if decoder_attention_mask is None:
                    decoder_attention_mask = self.decoder_mask_for_labels(decoder_input_ids, labels)
            if decoder_attention_mask is not None:  # a labelled position behind padding is computed too
                unpad = not bool(((labels != IGNORE_INDEX) & (decoder_attention_mask == 0)).any())
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            raise PlmkitError("give labels or decoder_input_ids: the decoder needs its inputs")
        enc = self.encoder_output(input_ids, attention_mask, encoder_outputs, past_key_values, output_hidden_states,
                                  output_attentions, inputs_embeds)
        if use_cache and past_key_values is None:
            past_key_values = growing_cache(self.decoder_layers(), self.bridge(enc.last_hidden_state), attention_mask)
        dec = self.decode(decoder_input_ids, decoder_attention_mask, None if enc is None else enc.last_hidden_state,
                          attention_mask, past_key_values, unpad, output_hidden_states, output_attentions,
                          decoder_position_ids, decoder_inputs_embeds)
        h = dec.last_hidden_state  # (B, T, D)
        transform, weight, bias = self.output_projection()
        if return_logits is None:
            return_logits = not (self.training and labels is not None) or bool(logits_to_keep)
        loss = logits = None
        if not return_logits:
            h = h.reshape(-1, h.shape[-1])
            loss = None if labels is None else linear_cross_entropy(
                h if transform is None else transform(h), weight, labels.reshape(-1), bias, label_smoothing)
        else:
            h = h[:, -logits_to_keep:] if logits_to_keep else h
            project = F.linear if torch.is_grad_enabled() else decode_linear  # oneDNN while generating
            logits = project(h if transform is None else transform(h), weight, bias)  # (B, T, V)
            if labels is not None:
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                                       ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing)
        return Seq2SeqLMOutput(loss, logits, past_key_values, dec.hidden_states, dec.attentions, dec.cross_attentions,
                               None if enc is None else enc.last_hidden_state,
                               None if enc is None else enc.hidden_states, None if enc is None else enc.attentions)


def check_token_id(config: ModelConfig, name: str, vocab_size: int) -> None:
    value = getattr(config, name)
    config._check(value is None or (isinstance(value, int) and 0 <= value < vocab_size),
                  f"{name}={value!r} is not a token of the {vocab_size}-word vocabulary: set it to the "
                  "tokenizer's id")


__all__ = ["Seq2SeqLM", "Seq2SeqPreTrainedModel", "Seq2SeqStack", "check_length", "labelled_prefix",
           "shared_parameter_names", "shift_tokens_right"]
