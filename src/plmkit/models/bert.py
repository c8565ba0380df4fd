"""BERT (Devlin et al., 2019, "BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding") with its pretraining and task heads. Matches Hugging Face's `BertModel` and
`BertFor*` classes weight for weight (names are mapped in plmkit.convert.bert).

Padding costs nothing: when a batch has padding, the encoder drops padding tokens after the
embedding lookup, runs every linear layer on real tokens only, (N, D), attention on the sequences
grouped by length (plmkit.nn.attention.attend_packed), and re-pads the output at the end (padding
positions of the outputs are zeros).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.convert.bert import CONVERTER
from plmkit.errors import ConfigError, PlmkitError
from plmkit.generation import GenerationMixin
from plmkit.models.base import PreTrainedModel
from plmkit.models.config import ABOVE_ZERO, POSITIVE, PROBABILITY, PrunableConfig
from plmkit.models.inputs import check_inputs
from plmkit.models.registry import Family, config_from_preset, register
from plmkit.models.decoder import causal_lm_loss
from plmkit.models.outputs import (BaseModelOutput, CausalLMOutput, ClassifierOutput, MaskedLMOutput,
                                   PreTrainingOutput, QuestionAnsweringOutput, takes_return_dict)
from plmkit.nn import FeedForward, MultiHeadAttention, TextEmbeddings, TransformerBlock, run_blocks
from plmkit.nn.cache import KVCache, cross_attention_inputs, growing_cache
from plmkit.nn.masks import self_attention_masks
from plmkit.nn.mlp import ACTIVATIONS
from plmkit.nn.quantized import compute_dtype
from plmkit.utils.constants import IGNORE_INDEX

log = logging.getLogger("plmkit")


@dataclass
class BertConfig(PrunableConfig):  # (pruned_heads, intermediate_sizes: plmkit prune's record)
    model_type = "bert"
    dropout_fields = ("hidden_dropout_prob", "attention_probs_dropout_prob")
    field_names = {"num_layers": "num_hidden_layers", "d_model": "hidden_size", "context_length": "max_position_embeddings",
                   "num_heads": "num_attention_heads", "ffn_size": "intermediate_size"}
    ranges = {**dict.fromkeys(("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                               "intermediate_size", "max_position_embeddings", "type_vocab_size"), POSITIVE),
              **dict.fromkeys(("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"), PROBABILITY),
              "layer_norm_eps": ABOVE_ZERO, "initializer_range": {"at_least": 0}, "pad_token_id": {"at_least": 0}}
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0  # null (transformers 5.x allows it): no padding row
    bos_token_id: int | None = None  # transformers 5.x writes both, null for BERT
    eos_token_id: int | None = None
    position_embedding_type: str = "absolute"
    classifier_dropout: float | None = None
    tie_word_embeddings: bool = True
    is_decoder: bool = False  # causal self-attention (the decoder of an encoder-decoder, BertLMHeadModel)
    add_cross_attention: bool = False  # a cross-attention sublayer in every block (needs is_decoder)
    norm_first: bool = False  # plmkit extension: pre-LN blocks (not loadable as a Hugging Face BertModel)

    def __post_init__(self):
        super().__post_init__()
        self._check(self.hidden_size % self.num_attention_heads == 0,
                    f"hidden_size={self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}")
        self._check(self.hidden_act in ACTIVATIONS, f"hidden_act={self.hidden_act!r} is not one of {sorted(ACTIVATIONS)}")
        self._check(self.position_embedding_type == "absolute",
                    f"position_embedding_type={self.position_embedding_type!r}: only 'absolute' is supported")
        self._check(self.pad_token_id is None or self.pad_token_id < self.vocab_size,
                    f"pad_token_id={self.pad_token_id} is not below vocab_size={self.vocab_size}")
        self._check(self.is_decoder or not self.add_cross_attention,
                    "add_cross_attention=true needs is_decoder=true (cross-attention is a decoder's)")
        self._check_pruning()

    def narrowed(self, d_model: int, heads: int, ffn_size: int) -> "BertConfig":
        """`d_model` is a whole number of heads of this model's head size; a layer with fewer `heads` than
        fit has the rest recorded as pruned (Hugging Face 4.x's pruned_heads, the last of each layer)."""
        d_head = self.hidden_size // self.num_attention_heads
        self._check(d_model % d_head == 0 and 1 <= heads <= d_model // d_head,
                    f"a width of {d_model} with {heads} heads of {d_head}: give a multiple of {d_head} and at most "
                    f"width / {d_head} heads")
        fit = d_model // d_head
        return dataclasses.replace(
            self, hidden_size=d_model, num_attention_heads=fit, intermediate_size=ffn_size, intermediate_sizes=None,
            pruned_heads={i: list(range(heads, fit)) for i in range(self.num_hidden_layers)} if heads < fit else None)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "BertConfig":
        """A preset of BERT_PRESETS with ``overrides`` (plmkit.models.registry.config_from_preset)."""
        return config_from_preset(name, model_type=cls.model_type, **overrides)


def _size(layers: int, hidden: int) -> dict:
    return dict(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=hidden // 64,
                intermediate_size=4 * hidden)


# Turc et al., 2019 ("Well-Read Students Learn Better") sizes, plus BERT-base.
BERT_PRESETS = {
    "bert-tiny": _size(2, 128),
    "bert-mini": _size(4, 256),
    "bert-small": _size(4, 512),
    "bert-medium": _size(8, 512),
    "bert-base": _size(12, 768),
}


class BertPreTrainedModel(PreTrainedModel):
    config_class = BertConfig
    base_prefix = "bert"
    body_roots = ("embeddings", "layers", "final_norm")

    def _is_body(self, key: str) -> bool:
        """Cross-attention is new when a decoder starts from an encoder's checkpoint (Rothe et al.,
        2020): initialised, and said so, as a head would be."""
        return super()._is_body(key) and ".cross_" not in key

    def get_output_embeddings(self) -> nn.Linear | None:
        """The masked-LM head's vocabulary projection (``mlm.decoder``) of the classes with one, so that
        `resize_token_embeddings` grows an untied one (tie_word_embeddings=false) with the embeddings."""
        head = getattr(self, "mlm", None)
        return head.decoder if isinstance(head, MaskedLMHead) else None

    def save_pretrained(self, directory, **options) -> None:
        super().save_pretrained(directory, **options)
        if self.config.norm_first and not getattr(self, "_said_pre_ln", False):
            self._said_pre_ln = True  # once per model, not at every checkpoint
            log.warning("plmkit: %s is a pre-LN BERT (norm_first=true), a plmkit extension: plmkit loads it, but "
                        "Hugging Face's BertModel would run these weights as post-LN and compute something else",
                        directory)


class BertModel(BertPreTrainedModel):
    """The encoder: embeddings, N post-LN Transformer blocks, and the [CLS] pooler. With ``is_decoder``
    the self-attention is causal (with a KV cache), and with ``add_cross_attention`` every block reads
    ``encoder_hidden_states`` too: the decoder half of an encoder-decoder."""

    base_prefix = ""

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        c = config

        def attention(heads: int = c.num_attention_heads):  # (a pruned layer has fewer heads of the same width)
            return MultiHeadAttention(c.hidden_size, heads, dropout=c.attention_probs_dropout_prob,
                                      d_head=c.hidden_size // c.num_attention_heads)
        self.embeddings = TextEmbeddings(c.vocab_size, c.hidden_size, c.max_position_embeddings, c.type_vocab_size,
                                         c.layer_norm_eps, c.hidden_dropout_prob, c.pad_token_id)
        self.layers = nn.ModuleList(
            TransformerBlock(attention(c.heads_in_layer(i)), FeedForward(c.hidden_size, c.ffn_size_of(i),
                                                                         c.hidden_act),
                             lambda: nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps), norm_first=c.norm_first,
                             dropout=c.hidden_dropout_prob, cross_attn=attention() if c.add_cross_attention else None)
            for i in range(c.num_hidden_layers))
        self.final_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps) if c.norm_first else None
        self.pooler = Pooler(c.hidden_size) if add_pooling_layer else None
        self.init_weights()

    @takes_return_dict
    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, position_ids: Tensor | None = None,
                output_attentions: bool = False, output_hidden_states: bool = False, *,
                encoder_hidden_states: Tensor | None = None, encoder_attention_mask: Tensor | None = None,
                past_key_values=None, unpad: bool = True, inputs_embeds: Tensor | None = None,
                use_cache: bool | None = None) -> BaseModelOutput:
        """input_ids: (B, T), or inputs_embeds (B, T, D) (positions and token types are added to them);
        attention_mask: (B, T) 1 = token, 0 = padding ((B, past + T) with a cache), or Hugging Face's
        prepared 4-D mask (B, 1, T, past + T) (float: additive; bool: True = attend), used as it is.

        A decoder (``is_decoder``) also takes encoder_hidden_states (B, S, D) with their
        encoder_attention_mask (B, S), or a `Seq2SeqCache` holding their keys and values; ``unpad=False``
        computes padding positions too (an encoder-decoder's labels may sit behind decoder padding).
        ``use_cache=True`` (a decoder): without ``past_key_values``, a new growing cache is returned in
        ``past_key_values``, which the next call takes back (Hugging Face's incremental decoding).
        """
        c = self.config
        if use_cache and c.is_decoder and past_key_values is None:
            past_key_values = growing_cache(self.layers, encoder_hidden_states if c.add_cross_attention else None,
                                            encoder_attention_mask)
        past = past_key_values.length if past_key_values is not None else 0
        attention_mask = check_inputs(input_ids, c.vocab_size, attention_mask, past, token_type_ids, c.type_vocab_size,
                                      position_ids, c.max_position_embeddings, inputs_embeds, c.hidden_size,
                                      four_d_mask=True)
        b, t = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
        device = (input_ids if input_ids is not None else inputs_embeds).device
        if past + t > self.config.max_position_embeddings:
            raise PlmkitError(f"input has {past + t} tokens but this model takes at most "
                              f"{self.config.max_position_embeddings}: truncate it (e.g. tokenizer(..., truncation=True))")
        if position_ids is None:
            position_ids = torch.arange(past, past + t, device=device)
        position_ids = position_ids.expand(b, t)  # (T,) or (1, T) broadcast, as in HF; unpadding needs (B, T)
        if token_type_ids is not None:
            token_type_ids = token_type_ids.expand(b, t)
        dtype = compute_dtype(self.embeddings.word)
        layout, bias, causal = self_attention_masks(attention_mask, t, past, self.config.is_decoder,
                                                    unpad and past_key_values is None, dtype, device)
        context, context_bias = (cross_attention_inputs(past_key_values, encoder_hidden_states, encoder_attention_mask,
                                                        dtype, real_tokens=True)
                                 if c.add_cross_attention else (None, None))
        unpadded = layout.unpad if layout is not None else (lambda x: x)
        full = layout.repad if layout is not None else (lambda x: x)

        x = self.embeddings(None if input_ids is None else unpadded(input_ids), unpadded(position_ids),
                            None if token_type_ids is None else unpadded(token_type_ids),
                            None if inputs_embeds is None else unpadded(inputs_embeds))  # (B, T, D) or (N, D)
        x, hidden, attentions, cross = run_blocks(self.layers, x, bias, causal=causal, layout=layout,
                                                  cache=past_key_values, context=context, context_bias=context_bias,
                                                  output_hidden_states=output_hidden_states,
                                                  output_attentions=output_attentions)
        if output_hidden_states:
            hidden.append(x)
        if self.final_norm is not None:
            x = self.final_norm(x)
        sequence = full(x)  # (B, T, D)
        pooled = self.pooler(sequence) if self.pooler is not None else None
        return BaseModelOutput(sequence, pooled, tuple(map(full, hidden)) if output_hidden_states else None,
                               past_key_values, tuple(attentions) if attentions else None,
                               tuple(cross) if output_attentions else None)  # (() without cross-attention, as HF)


class Pooler(nn.Module):
    """tanh(dense(h_[CLS])): the sentence representation NSP and classification heads read."""

    def __init__(self, dim: int):
        super().__init__()
        self.dense = nn.Linear(dim, dim)

    def forward(self, sequence: Tensor) -> Tensor:  # (B, T, D) -> (B, D)
        return torch.tanh(self.dense(sequence[:, 0]))


class MaskedLMHead(nn.Module):
    """transform (dense, activation, LayerNorm), then the vocabulary projection tied to the embeddings."""

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        c = config
        self.transform = nn.ModuleDict({"dense": nn.Linear(c.hidden_size, c.hidden_size),
                                        "norm": nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)})
        self.act = ACTIVATIONS[c.hidden_act]
        self.decoder = nn.Linear(c.hidden_size, c.vocab_size)
        if c.tie_word_embeddings:
            self.decoder.weight = word_embeddings.weight

    def transformed(self, h: Tensor) -> Tensor:  # (..., D) -> (..., D): what the vocabulary projection reads
        return self.transform["norm"](self.act(self.transform["dense"](h)))

    def forward(self, h: Tensor) -> Tensor:  # (..., D) -> (..., V)
        return self.decoder(self.transformed(h))


def mlm_logits_and_loss(head: MaskedLMHead, sequence: Tensor, labels: Tensor | None, sparse_prediction: bool,
                        return_logits: bool | None, training: bool) -> tuple[Tensor | None, Tensor | None]:
    """The masked-LM logits and loss (see `BertForPreTraining` for which logits come back).

    The vocabulary projection is the largest matmul of a small BERT and the loss only needs its rows
    at the M labelled positions, so unless the full (B, T, V) logits are wanted, only those M rows are
    computed: the loss and its gradients are the same.
    """
    if labels is None:
        return head(sequence), None
    dense = return_logits if return_logits is not None else not training
    if dense and not sparse_prediction:
        logits = head(sequence)  # (B, T, V)
        return logits, F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                                       ignore_index=IGNORE_INDEX)
    flat = labels.reshape(-1)
    picked = (flat != IGNORE_INDEX).nonzero().squeeze(1)  # (M,)
    logits = head(sequence.reshape(-1, sequence.shape[-1])[picked])  # (M, V)
    loss = F.cross_entropy(logits.float(), flat[picked])
    return (logits if sparse_prediction and return_logits is not False else None), loss


class BertForMaskedLM(BertPreTrainedModel):
    """The encoder and the masked-LM head; ``.logits`` and ``.loss`` as `BertForPreTraining`'s
    ``.prediction_logits`` and ``.mlm_loss`` (in training, no logits unless asked for)."""

    tied_keys = ("mlm.decoder.weight",)
    loss_items = {"loss": "tokens"}

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.mlm = MaskedLMHead(config, self.bert.embeddings.word)
        if not config.tie_word_embeddings:  # an own decoder: loaded (or reported missing) like any head
            self.tied_keys = ()
        self.init_weights()

    @takes_return_dict
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, labels=None,
                sparse_prediction: bool = False, output_attentions=False, output_hidden_states=False,
                return_logits: bool | None = None, inputs_embeds=None) -> MaskedLMOutput:
        """labels: (B, T) token ids at masked positions, -100 elsewhere."""
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, output_attentions,
                        output_hidden_states, inputs_embeds=inputs_embeds)
        logits, loss = mlm_logits_and_loss(self.mlm, out.last_hidden_state, labels, sparse_prediction, return_logits,
                                           self.training)
        return MaskedLMOutput(loss, logits, out.hidden_states, out.attentions)


class BertForPreTraining(BertPreTrainedModel):
    """Masked LM + next-sentence prediction, BERT's two pretraining objectives.

    Fast by default, unlike Hugging Face: given ``labels`` in training mode, the vocabulary projection
    runs at the labelled (masked) positions only, the loss comes from those rows, and
    ``prediction_logits`` is None (Hugging Face always returns the (B, T, V) logits). The loss and the
    gradients are the same; a small BERT's step is 2-3x faster. The logits come back when asked for:

    - ``return_logits=True``, or eval mode (``model.eval()``): the (B, T, V) logits and the same loss,
      as Hugging Face;
    - ``sparse_prediction=True``: the (M, V) logits of the M labelled positions (in row-major order:
      ``prediction_logits[i]`` belongs to ``labels[labels != -100][i]``);
    - ``return_logits=False``: never logits, in either mode.

    Without labels, the logits are always (B, T, V).
    """

    tied_keys = ("mlm.decoder.weight",)
    loss_items = {"mlm_loss": "tokens", "nsp_loss": "examples"}  # (loss = mlm_loss + nsp_loss)

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        self.mlm = MaskedLMHead(config, self.bert.embeddings.word)
        if not config.tie_word_embeddings:  # an own decoder: loaded (or reported missing) like any head
            self.tied_keys = ()
        self.nsp = nn.Linear(config.hidden_size, 2)
        self.init_weights()

    @takes_return_dict
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, labels=None,
                next_sentence_label=None, sparse_prediction: bool = False, output_attentions=False,
                output_hidden_states=False, return_logits: bool | None = None,
                inputs_embeds=None) -> PreTrainingOutput:
        """labels: (B, T) masked-token targets (-100 elsewhere); next_sentence_label: (B,) 0 = B follows A, 1 = random."""
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, output_attentions,
                        output_hidden_states, inputs_embeds=inputs_embeds)
        logits, mlm_loss = mlm_logits_and_loss(self.mlm, out.last_hidden_state, labels, sparse_prediction,
                                               return_logits, self.training)
        nsp_logits = self.nsp(out.pooler_output)  # (B, 2)
        nsp_loss = None if next_sentence_label is None else F.cross_entropy(nsp_logits.float(), next_sentence_label.view(-1))
        losses = [l for l in (mlm_loss, nsp_loss) if l is not None]
        return PreTrainingOutput(sum(losses) if losses else None, logits, nsp_logits, mlm_loss, nsp_loss,
                                 out.hidden_states, out.attentions)


class BertLMHeadModel(GenerationMixin, BertPreTrainedModel):
    """A causal BERT with the masked-LM head as its next-token head (``is_decoder``), and with
    ``add_cross_attention`` the decoder of a BERT-to-BERT encoder-decoder (plmkit.models.encoder_decoder;
    Rothe et al., 2020). Matches Hugging Face's `BertLMHeadModel`; standalone it generates like any
    causal LM (``labels`` are shifted inside: position t predicts token t + 1)."""

    tied_keys = ("mlm.decoder.weight",)
    loss_items = {"loss": "next_tokens"}

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.mlm = MaskedLMHead(config, self.bert.embeddings.word)
        if not config.tie_word_embeddings:
            self.tied_keys = ()
        self.init_weights()

    def make_cache(self, batch: int, max_len: int, dtype: torch.dtype | None = None, device=None) -> KVCache:
        layers, word = self.bert.layers, self.bert.embeddings.word
        return KVCache(len(layers), batch, [layer.attn.n_kv_heads for layer in layers], max_len, layers[0].attn.d_head,
                       dtype or compute_dtype(word), device or word.weight.device)

    @takes_return_dict
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, labels=None,
                past_key_values=None, logits_to_keep: int = 0, output_attentions=False, output_hidden_states=False,
                encoder_hidden_states=None, encoder_attention_mask=None, inputs_embeds=None,
                use_cache: bool | None = None) -> CausalLMOutput:
        """``use_cache=True``: the cache to pass back comes in ``past_key_values`` (see `BertModel`)."""
        if not self.config.is_decoder:
            raise ConfigError("BertLMHeadModel predicts the next token: it needs is_decoder=true in its config")
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, output_attentions,
                        output_hidden_states, encoder_hidden_states=encoder_hidden_states,
                        encoder_attention_mask=encoder_attention_mask,
                        past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache)
        h = out.last_hidden_state
        logits = self.mlm(h[:, -logits_to_keep:] if logits_to_keep else h)  # (B, T, V)
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return CausalLMOutput(loss, logits, out.past_key_values, out.hidden_states, out.attentions,
                              out.cross_attentions)


class BertForNextSentencePrediction(BertPreTrainedModel):
    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        self.nsp = nn.Linear(config.hidden_size, 2)
        self.init_weights()

    @takes_return_dict
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, labels=None,
                output_attentions=False, output_hidden_states=False, inputs_embeds=None) -> ClassifierOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, output_attentions,
                        output_hidden_states, inputs_embeds=inputs_embeds)
        logits = self.nsp(out.pooler_output)  # (B, 2)
        loss = None if labels is None else F.cross_entropy(logits.float(), labels.view(-1))
        return ClassifierOutput(loss, logits, out.hidden_states, out.attentions)


def _dropout(config: BertConfig) -> nn.Dropout:
    p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
    return nn.Dropout(p)


def classification_loss(logits: Tensor, labels: Tensor, problem_type: str | None) -> Tensor:
    """Hugging Face's `problem_type` rules: regression (MSE), single-label (CE) or multi-label (BCE)."""
    n = logits.shape[-1]
    if problem_type is None:
        problem_type = ("regression" if n == 1 else "single_label_classification"
                        if labels.dtype in (torch.long, torch.int) else "multi_label_classification")
    if problem_type == "regression":
        return F.mse_loss((logits.squeeze(-1) if n == 1 else logits).float(), labels.float())
    if problem_type == "single_label_classification":
        return F.cross_entropy(logits.reshape(-1, n).float(), labels.reshape(-1))
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


class _BertClassifier(BertPreTrainedModel):
    """The encoder, dropout and a linear classifier over ``in_features`` (what the task heads read)."""

    pooled = True

    def __init__(self, config: BertConfig, in_features: int | None = None):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=self.pooled)
        self.dropout = _dropout(config)
        self.classifier = nn.Linear(in_features or config.hidden_size, config.num_labels)
        self.init_weights()


class BertForSequenceClassification(_BertClassifier):
    """[CLS] pooled output -> dropout -> linear; single-label, multi-label or regression."""

    @takes_return_dict
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, labels=None,
                output_attentions=False, output_hidden_states=False, inputs_embeds=None) -> ClassifierOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, output_attentions,
                        output_hidden_states, inputs_embeds=inputs_embeds)
        logits = self.classifier(self.dropout(out.pooler_output))  # (B, C)
        loss = None if labels is None else classification_loss(logits, labels, self.config.problem_type)
        return ClassifierOutput(loss, logits, out.hidden_states, out.attentions)


class BertForTokenClassification(_BertClassifier):
    """Per-token labels (NER): sequence output -> dropout -> linear; label -100 is ignored."""

    pooled = False
    loss_items = {"loss": "tokens"}

    @takes_return_dict
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, labels=None,
                output_attentions=False, output_hidden_states=False, inputs_embeds=None) -> ClassifierOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, output_attentions,
                        output_hidden_states, inputs_embeds=inputs_embeds)
        logits = self.classifier(self.dropout(out.last_hidden_state))  # (B, T, C)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                                   ignore_index=IGNORE_INDEX)
        return ClassifierOutput(loss, logits, out.hidden_states, out.attentions)


class BertForQuestionAnswering(BertPreTrainedModel):
    """Extractive QA: start/end logits per token, as Hugging Face's: padding positions are not masked, and
    with ``start_positions`` / ``end_positions`` (the loss) the encoder computes them too (no unpadding), so
    that they enter the loss's softmax with HF's values. Span decoding (plmkit.tasks.qa) reads context tokens
    only; without positions, logits at padding are those of zero states, as every head's."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.init_weights()

    @takes_return_dict
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                start_positions=None, end_positions=None, output_attentions=False,
                output_hidden_states=False, inputs_embeds=None) -> QuestionAnsweringOutput:
        loss_wanted = start_positions is not None and end_positions is not None
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, output_attentions,
                        output_hidden_states, inputs_embeds=inputs_embeds, unpad=not loss_wanted)
        logits = self.qa_outputs(out.last_hidden_state)  # (B, T, 2)
        start, end = logits.unbind(-1)  # (B, T) each
        loss = None
        if loss_wanted:
            t = start.shape[1]  # positions outside the input are ignored, as in HF
            loss = (F.cross_entropy(start.float(), start_positions.view(-1).clamp(0, t), ignore_index=t)
                    + F.cross_entropy(end.float(), end_positions.view(-1).clamp(0, t), ignore_index=t)) / 2
        return QuestionAnsweringOutput(loss, start, end, out.hidden_states, out.attentions)


class BertForRelationClassification(_BertClassifier):
    """Relation between two marked entities (Baldini Soares et al., 2019, "Matching the Blanks",
    ENTITY MARKERS - ENTITY START): the encoder states at the [E1] and [E2] start markers,
    concatenated -> dropout -> linear (2 * hidden -> labels).

    ``entity_positions`` (B, 2) holds the positions of the two start markers. Saved directories
    load in Hugging Face as a plain ``BertModel`` (``AutoModel.from_pretrained(dir)``: the encoder;
    it reports ``classifier.*`` as unused and the pooler as newly initialised); the relation head
    itself is plmkit's.
    """

    pooled = False

    def __init__(self, config: BertConfig):
        super().__init__(config, in_features=2 * config.hidden_size)

    @takes_return_dict
    def forward(self, input_ids, entity_positions, attention_mask=None, token_type_ids=None, position_ids=None,
                labels=None, output_attentions=False, output_hidden_states=False) -> ClassifierOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, output_attentions, output_hidden_states)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None]  # (B, 1)
        pair = out.last_hidden_state[rows, entity_positions]  # (B, 2, D)
        logits = self.classifier(self.dropout(pair.flatten(1)))  # (B, C)
        loss = None if labels is None else F.cross_entropy(logits.float(), labels.view(-1))
        return ClassifierOutput(loss, logits, out.hidden_states, out.attentions)


register(Family(BertConfig, {
    "base": BertModel, "pretraining": BertForPreTraining, "masked-lm": BertForMaskedLM, "decoder-lm": BertLMHeadModel,
    "next-sentence": BertForNextSentencePrediction, "sequence-classification": BertForSequenceClassification,
    "token-classification": BertForTokenClassification, "question-answering": BertForQuestionAnswering,
    "relation-classification": BertForRelationClassification,
}, CONVERTER, BERT_PRESETS))
