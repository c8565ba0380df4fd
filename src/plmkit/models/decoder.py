"""What every decoder-only (causal) language model shares: the body (`DecoderBody`: positions and
masks from the ``attention_mask``, the layer loop with an optional KV cache) and the LM head
(`CausalLMHead`: the vocabulary projection and the shifted next-token loss). A family (GPT-2,
Llama) builds the modules and says only how tokens enter the first block.

Padding: ``attention_mask`` (B, T) may pad on the left (batched generation) or on the right
(training). Position ids default to ``cumsum(attention_mask) - 1`` so that every row's first real
token sits at position 0, as Hugging Face's ``generate`` does for left padding.

With a cache, ``attention_mask`` covers the cached positions too: (B, cache.length + T). Without one
(training, scoring), a padded batch runs on its real tokens only (`plmkit.nn.masks.Unpadded`): padding is
removed before the first block and put back, as zeros, after the last; attention runs on the sequences
grouped by length (rotary positions are those of the packed tokens). With ``output_attentions`` the batch
stays padded (the probabilities are (B, H, T, T)). A GPT-2 4 x 256 training step on 8 rows of 32-256
tokens (59% real), one core: 665 -> 432-442 ms; Llama of that size 640 -> 419-449 ms.

Packed documents (causal-LM pretraining, see plmkit.data.clm): ``document_ids`` (B, T), one integer
per document, makes attention block-diagonal causal (no token sees another document) and restarts
position ids at every document start, so a packed row computes exactly what each document would
compute on its own. Chosen over a user-supplied 4D mask because it is one small integer tensor that
collates like ``input_ids`` and cannot be built wrong; the (B, 1, T, T) bias is made here. Training and
scoring only (no KV cache). Rows holding a single document keep SDPA's fast causal path.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.errors import PlmkitError
from plmkit.generation import GenerationMixin
from plmkit.models.base import PreTrainedModel
from plmkit.models.inputs import check_inputs
from plmkit.models.outputs import BaseModelOutputWithPast, CausalLMOutput, takes_return_dict
from plmkit.nn.block import run_blocks
from plmkit.nn.cache import KVCache, PastKeyValues
from plmkit.nn.losses import linear_cross_entropy
from plmkit.nn.quantized import compute_dtype
from plmkit.nn.tracing import is_traceable
from plmkit.utils.constants import IGNORE_INDEX
from plmkit.nn.masks import (Unpadded, attention_bias, causal_bias, document_bias, positions_from_documents,
                             positions_from_mask)


def decoder_inputs(shape: tuple[int, int], attention_mask: Tensor | None, position_ids: Tensor | None,
                   past: int, dtype: torch.dtype, document_ids: Tensor | None = None,
                   device=None) -> tuple[Tensor, Tensor | None, bool]:
    """Position ids (B, T), the additive attention bias and whether to ask SDPA for a causal mask, for the
    (B, T) ``shape`` of the new tokens.

    ``past`` is the number of cached positions before these T tokens. ``document_ids`` (B, T): packed
    documents (see the module docstring).
    """
    b, t = shape
    if document_ids is not None and document_ids.shape != (b, t):
        raise PlmkitError(f"document_ids has shape {tuple(document_ids.shape)}; expected (B, T) = {(b, t)}")
    if document_ids is not None and bool((document_ids != document_ids[:, :1]).any()):
        if past:
            raise PlmkitError("document_ids (packed documents) cannot be combined with a KV cache")
        if attention_mask is not None and attention_mask.shape != (b, t):
            raise PlmkitError(f"attention_mask has shape {tuple(attention_mask.shape)}; expected (B, T) = {(b, t)}")
        if position_ids is None:
            position_ids = positions_from_documents(document_ids)
        return position_ids, document_bias(document_ids, dtype, attention_mask), False
    traced = is_traceable()  # the whole mask, always (plmkit.nn.tracing)
    padded = attention_mask is not None and (traced or not bool(attention_mask.all()))
    if attention_mask is not None and attention_mask.shape != (b, past + t):
        raise PlmkitError(f"attention_mask has shape {tuple(attention_mask.shape)} but the model sees {past} cached "
                          f"+ {t} new positions: pass the mask of the whole sequence, (B, {past + t})")
    if position_ids is None:
        if padded:
            position_ids = positions_from_mask(attention_mask)[:, -t:]
        else:
            position_ids = torch.arange(past, past + t, device=device).expand(b, t)
    if padded:
        return position_ids, attention_bias(attention_mask, t, causal=traced or t > 1, dtype=dtype), False
    if t == 1:
        return position_ids, None, False  # one new token sees every key: nothing to mask
    if past == 0:
        return position_ids, None, True  # SDPA's built-in causal mask (fast path)
    return position_ids, causal_bias(t, past + t, dtype, device), False


def next_token_targets(labels: Tensor) -> Tensor:
    """(B, T) -> (N,) = B*T: the label of token t+1 for position t; the last position predicts nothing."""
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX).reshape(-1)


def causal_lm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of predicting token t+1 from position t; labels -100 are ignored.

    ``labels`` are aligned with ``input_ids`` (usually ``labels = input_ids`` with padding set to -100):
    the shift happens here, as in Hugging Face.
    """
    v = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, v).float(), next_token_targets(labels), ignore_index=IGNORE_INDEX)


def check_length(max_positions: int | None, needed: int) -> None:
    if max_positions is not None and needed > max_positions:
        raise PlmkitError(f"the sequence would have {needed} positions but this model takes at most {max_positions}: "
                          "shorten the prompt or max_new_tokens")


class DecoderPreTrainedModel(GenerationMixin, PreTrainedModel):
    """The base of a decoder family's models (``generate``, ``stream``): the family sets
    ``config_class`` and ``base_prefix``, the attribute that holds the body in its LM."""

    body_roots = ("embeddings", "layers", "final_norm")


class DecoderBody:
    """The body of a decoder-only LM (mixed into a PreTrainedModel): the family's ``__init__`` sets
    ``embeddings`` (a ModuleDict with ``word``), ``layers`` (pre-norm TransformerBlocks) and
    ``final_norm``, and overrides `embed` (and `rotary` for rotary positions); the KV cache and the
    forward are shared."""

    def embed(self, tokens: Tensor, position_ids: Tensor) -> Tensor:
        """(B, T, D) token embeddings (looked up, or the caller's ``inputs_embeds``) and (B, T) positions ->
        (B, T, D), the input of the first block; (N, D) and (N,) unpadded."""
        raise NotImplementedError

    def rotary(self, position_ids: Tensor, dtype: torch.dtype):
        """The rotary position function the attention applies to q and k (None: no rotary positions)."""
        return None

    def make_cache(self, batch: int, max_len: int, dtype: torch.dtype | None = None, device=None,
                   kind: type[KVCache] = KVCache) -> KVCache:
        """An empty KV cache for ``batch`` sequences of up to ``max_len`` positions (``kind``: e.g. a
        `SlotKVCache` for continuous batching, ``batch`` being its rows)."""
        word = self.embeddings["word"]
        return kind(len(self.layers), batch, [layer.attn.n_kv_heads for layer in self.layers], max_len,
                    self.layers[0].attn.d_head, dtype or compute_dtype(word), device or word.weight.device)

    @takes_return_dict
    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                position_ids: Tensor | None = None, past_key_values: KVCache | None = None,
                output_attentions: bool = False, output_hidden_states: bool = False,
                document_ids: Tensor | None = None, inputs_embeds: Tensor | None = None,
                use_cache: bool | None = None) -> BaseModelOutputWithPast:
        """input_ids (B, T), or inputs_embeds (B, T, D); attention_mask (B, T) 1 = token, 0 = padding (int, bool
        or float), or (B, past + T) with a cache.

        use_cache=True: without ``past_key_values``, a new cache (growing with each call) comes back in
        ``past_key_values``, for the next call to take (Hugging Face's incremental decoding; the mask the
        caller passes then covers the cached positions too). document_ids (B, T): packed documents;
        attention stays inside each one (see the module docstring).
        """
        if use_cache and past_key_values is None:
            past_key_values = PastKeyValues()
        past = past_key_values.length if past_key_values is not None else 0
        c = self.config
        attention_mask = check_inputs(input_ids, c.vocab_size, attention_mask, past, position_ids=position_ids,
                                      max_positions=c.max_positions, inputs_embeds=inputs_embeds, d_model=c.d_model)
        given = input_ids if input_ids is not None else inputs_embeds
        shape = tuple(given.shape[:2])
        check_length(c.max_positions, past + shape[1])
        dtype = compute_dtype(self.embeddings["word"])
        position_ids, bias, causal = decoder_inputs(shape, attention_mask, position_ids, past, dtype, document_ids,
                                                    given.device)
        layout = None
        if (bias is not None and past_key_values is None and document_ids is None and not output_attentions
                and not is_traceable()):
            layout, bias, causal = Unpadded.from_mask(attention_mask, dtype), None, True  # padding removed
        unpadded = layout.unpad if layout is not None else (lambda t: t)
        full = layout.repad if layout is not None else (lambda t: t)
        tokens = self.embeddings["word"](unpadded(input_ids)) if inputs_embeds is None else unpadded(inputs_embeds)
        x = self.embed(tokens, unpadded(position_ids))  # (B, T, D) or (N, D): real tokens
        x, hidden, attentions, _ = run_blocks(self.layers, x, bias, causal=causal, layout=layout,
                                              rotary=self.rotary(unpadded(position_ids), dtype),
                                              cache=past_key_values, output_hidden_states=output_hidden_states,
                                              output_attentions=output_attentions)
        x = full(self.final_norm(x))  # (B, T, D), zeros at padding
        return BaseModelOutputWithPast(x, past_key_values,
                                       tuple(map(full, hidden)) + (x,) if output_hidden_states else None,
                                       tuple(attentions) if output_attentions else None)


class CausalLMHead:
    """What every ``*ForCausalLM`` shares (mixed into a PreTrainedModel whose ``base_prefix`` names
    the decoder body, an instance of ``body_class``): the vocabulary projection, tied to the token
    embeddings when the config says so, the KV cache, and a forward that returns logits and the
    shifted loss.

    Fast by default, unlike Hugging Face: given ``labels`` in training mode, the loss comes from the
    chunked LM head + cross-entropy (plmkit.nn.losses.linear_cross_entropy), which never materialises
    the (B, T, V) logits or their gradient, and ``.logits`` is None (Hugging Face always returns them).
    The loss and gradients are the same. ``return_logits=True`` (or eval mode) gives the logits and
    the same loss; ``return_logits=False`` never gives logits, in either mode.
    """

    body_class: type  # the family's DecoderBody model, built under ``base_prefix``
    loss_items = {"loss": "next_tokens"}

    def __init__(self, config):
        super().__init__(config)
        setattr(self, self.base_prefix, self.body_class(config))
        c = config
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_word_embeddings:
            self.lm_head.weight = self.body.embeddings["word"].weight
            self.tied_keys = ("lm_head.weight",)
        else:
            self.tied_keys = ()
            nn.init.normal_(self.lm_head.weight, std=c.initializer_range)

    @property
    def body(self) -> nn.Module:
        return getattr(self, self.base_prefix)

    def make_cache(self, batch: int, max_len: int, dtype: torch.dtype | None = None, device=None,
                   kind: type[KVCache] = KVCache):
        return self.body.make_cache(batch, max_len, dtype, device, kind)

    @takes_return_dict
    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                position_ids: Tensor | None = None, labels: Tensor | None = None, past_key_values=None,
                logits_to_keep: int = 0, output_attentions: bool = False, output_hidden_states: bool = False,
                document_ids: Tensor | None = None, return_logits: bool | None = None,
                inputs_embeds: Tensor | None = None, use_cache: bool | None = None) -> CausalLMOutput:
        """labels (B, T): usually input_ids with padding set to -100; shifted inside (predict token t+1).

        logits_to_keep: compute logits for the last k positions only (0 = all), as in generation.
        return_logits: None = logits unless training with labels (see the class docstring).
        inputs_embeds (B, T, D), use_cache: as the body's (`DecoderBody.forward`); the cache, given or new,
        comes back in ``past_key_values``.
        """
        out = self.body(input_ids, attention_mask, position_ids, past_key_values, output_attentions,
                        output_hidden_states, document_ids=document_ids, inputs_embeds=inputs_embeds,
                        use_cache=use_cache)
        h = out.last_hidden_state
        if return_logits is None:
            return_logits = not (self.training and labels is not None) or bool(logits_to_keep)
        if not return_logits and type(self.lm_head) is nn.Linear and self.lm_head.bias is None:
            loss = None if labels is None else linear_cross_entropy(
                h.reshape(-1, h.shape[-1]), self.lm_head.weight, next_token_targets(labels))
            return CausalLMOutput(loss, None, out.past_key_values, out.hidden_states, out.attentions)
        logits = self.lm_head(h[:, -logits_to_keep:] if logits_to_keep else h)  # (B, T, V)
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return CausalLMOutput(loss, logits, out.past_key_values, out.hidden_states, out.attentions)
