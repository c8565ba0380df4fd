"""GPT-2 (Radford et al., 2019, "Language Models are Unsupervised Multitask Learners"): a decoder-only
Transformer with learned absolute positions, pre-LN blocks, GELU (tanh) feed-forward and a final
LayerNorm; the LM head shares the token embedding matrix.

Matches Hugging Face's `GPT2Model` / `GPT2LMHeadModel` weight for weight; plmkit.convert.gpt2 maps
names and undoes GPT-2's fused, transposed ``Conv1D`` weights.

    model = GPT2LMHeadModel(GPT2Config.from_preset("gpt2-mini"))
    out = model(input_ids, attention_mask=mask, labels=input_ids)   # out.loss, out.logits
    ids = model.generate(input_ids, attention_mask=mask, max_new_tokens=20, pad_token_id=0)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from plmkit.convert.gpt2 import CONVERTER
from plmkit.models.config import ABOVE_ZERO, POSITIVE, PROBABILITY, PrunableConfig
from plmkit.models.registry import Family, config_from_preset, register
from plmkit.models.decoder import CausalLMHead, DecoderBody, DecoderPreTrainedModel
from plmkit.nn import FeedForward, MultiHeadAttention, TransformerBlock
from plmkit.nn.mlp import ACTIVATIONS


@dataclass
class GPT2Config(PrunableConfig):  # (pruned_heads, intermediate_sizes: plmkit prune's record)
    model_type = "gpt2"
    dropout_fields = ("resid_pdrop", "embd_pdrop", "attn_pdrop")
    field_names = {"num_layers": "n_layer", "d_model": "n_embd", "context_length": "n_positions", "num_heads": "n_head",
                   "ffn_size": "d_ff"}
    ranges = {**dict.fromkeys(("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner"), POSITIVE),
              **dict.fromkeys(("resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout"), PROBABILITY),
              "layer_norm_epsilon": ABOVE_ZERO, "initializer_range": {"at_least": 0}}
    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # feed-forward width; None = 4 * n_embd
    activation_function: str = "gelu_new"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    bos_token_id: int | None = 50256
    eos_token_id: int | list[int] | None = 50256
    pad_token_id: int | None = None
    tie_word_embeddings: bool = True
    # Hugging Face keys accepted for compatibility; only their default behaviour is implemented.
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    reorder_and_upcast_attn: bool = False  # fp16 numerics only; plmkit's attention is already SDPA
    n_ctx: int | None = None  # old name of n_positions
    # GPT2DoubleHeadsModel's multiple-choice head (not implemented; harmless on other models)
    summary_type: str | None = None
    summary_use_proj: bool | None = None
    summary_activation: str | None = None
    summary_proj_to_labels: bool | None = None
    summary_first_dropout: float | None = None

    def __post_init__(self):
        super().__post_init__()
        self._check(self.n_embd % self.n_head == 0, f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        self._check(self.n_ctx is None or self.n_ctx == self.n_positions,
                    f"n_ctx={self.n_ctx} (the old name of n_positions) disagrees with n_positions={self.n_positions}")
        self._check(self.activation_function in ACTIVATIONS,
                    f"activation_function={self.activation_function!r} is not one of {sorted(ACTIVATIONS)}")
        self._check(self.scale_attn_weights, "scale_attn_weights=false (unscaled attention) is not supported")
        self._check(not self.scale_attn_by_inverse_layer_idx,
                    "scale_attn_by_inverse_layer_idx=true (Mistral's GPT-2 variant) is not supported")
        self._check_pruning()

    @property
    def d_ff(self) -> int:
        return self.n_inner or 4 * self.n_embd

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "GPT2Config":
        """A preset of GPT2_PRESETS with ``overrides`` (plmkit.models.registry.config_from_preset)."""
        return config_from_preset(name, model_type=cls.model_type, **overrides)


def _size(layers: int, dim: int, heads: int | None = None) -> dict:
    return dict(n_layer=layers, n_embd=dim, n_head=heads or max(1, dim // 64))


GPT2_PRESETS = {
    "gpt2-tiny": _size(2, 128),
    "gpt2-mini": _size(4, 256),
    "gpt2-small": _size(6, 512, 8),
    "gpt2": _size(12, 768),  # GPT-2 "small", 124M parameters
    "gpt2-medium": _size(24, 1024, 16),
}


class GPT2PreTrainedModel(DecoderPreTrainedModel):
    config_class = GPT2Config
    base_prefix = "transformer"

    def init_weights(self) -> None:
        """N(0, 0.02) everywhere; residual output projections scaled by 1/sqrt(2 * n_layer) (GPT-2 paper)."""
        super().init_weights()
        std = self.config.initializer_range / math.sqrt(2 * self.config.n_layer)
        for name, p in self.named_parameters():
            if name.endswith(("attn.out.weight", "mlp.fc_out.weight")):
                nn.init.normal_(p, std=std)


class GPT2Model(DecoderBody, GPT2PreTrainedModel):
    """Token + position embeddings, N pre-LN blocks, final LayerNorm."""

    base_prefix = ""

    def __init__(self, config: GPT2Config):
        super().__init__(config)
        c = config
        self.embeddings = nn.ModuleDict({"word": nn.Embedding(c.vocab_size, c.n_embd),
                                         "position": nn.Embedding(c.n_positions, c.n_embd)})
        self.dropout = nn.Dropout(c.embd_pdrop)
        self.layers = nn.ModuleList(  # (a pruned layer: fewer heads of the same width, a narrower feed-forward)
            TransformerBlock(MultiHeadAttention(c.n_embd, c.heads_in_layer(i), dropout=c.attn_pdrop,
                                                d_head=c.n_embd // c.n_head),
                             FeedForward(c.n_embd, c.ffn_size_of(i), c.activation_function),
                             lambda: nn.LayerNorm(c.n_embd, eps=c.layer_norm_epsilon),
                             norm_first=True, dropout=c.resid_pdrop)
            for i in range(c.n_layer))
        self.final_norm = nn.LayerNorm(c.n_embd, eps=c.layer_norm_epsilon)
        self.init_weights()

    def embed(self, tokens: Tensor, position_ids: Tensor) -> Tensor:
        return self.dropout(tokens + self.embeddings["position"](position_ids))


class GPT2LMHeadModel(CausalLMHead, GPT2PreTrainedModel):
    """GPT2Model + a vocabulary projection (tied to the token embeddings unless tie_word_embeddings=false)."""

    body_class = GPT2Model


register(Family(GPT2Config, {"base": GPT2Model, "causal-lm": GPT2LMHeadModel}, CONVERTER, GPT2_PRESETS))
