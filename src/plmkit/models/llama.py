"""Llama (Touvron et al., 2023): a decoder-only Transformer with rotary position embeddings (RoPE),
RMSNorm pre-normalisation, a SwiGLU feed-forward and grouped-query attention (GQA: fewer key/value
heads than query heads, ``num_key_value_heads``). Also covers Llama-architecture models such as
TinyLlama, SmolLM and Mistral-style configs without sliding windows.

Matches Hugging Face's `LlamaModel` / `LlamaForCausalLM` weight for weight (plmkit.convert.llama).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from plmkit.convert.llama import CONVERTER
from plmkit.errors import ConfigError
from plmkit.models.config import ABOVE_ZERO, POSITIVE, PROBABILITY, PrunableConfig
from plmkit.models.registry import Family, config_from_preset, register
from plmkit.models.decoder import CausalLMHead, DecoderBody, DecoderPreTrainedModel
from plmkit.nn import FeedForward, MultiHeadAttention, RMSNorm, RotaryEmbedding, TransformerBlock
from plmkit.nn.mlp import ACTIVATIONS


@dataclass
class LlamaConfig(PrunableConfig):  # (pruned_heads, intermediate_sizes: plmkit prune's record; whole GQA groups)
    model_type = "llama"
    dropout_fields = ("attention_dropout",)
    field_names = {"num_layers": "num_hidden_layers", "d_model": "hidden_size", "context_length": "max_position_embeddings",
                   "num_heads": "num_attention_heads", "num_kv_heads": "num_key_value_heads",
                   "ffn_size": "intermediate_size"}
    learned_positions = False
    ranges = {**dict.fromkeys(("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings",
                               "pretraining_tp"), POSITIVE),
              "attention_dropout": PROBABILITY, "rms_norm_eps": ABOVE_ZERO, "rope_theta": ABOVE_ZERO,
              "initializer_range": {"at_least": 0}}
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None  # None = num_attention_heads (no GQA)
    head_dim: int | None = None  # None = hidden_size // num_attention_heads
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None  # only None / {"rope_type": "default"} (5.x: rope_parameters)
    attention_bias: bool = False
    attention_dropout: float = 0.0
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    pad_token_id: int | None = None
    pretraining_tp: int = 1  # HF's tensor-parallel slicing: the same maths, ignored

    def __post_init__(self):
        super().__post_init__()
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        self._check(self.head_dim >= 1, f"hidden_size={self.hidden_size} is smaller than "
                                         f"num_attention_heads={self.num_attention_heads}: give head_dim")
        self._check(self.num_attention_heads % self.num_key_value_heads == 0,
                    f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                    f"num_key_value_heads={self.num_key_value_heads}")
        self._check(self.head_dim % 2 == 0, f"head_dim={self.head_dim} must be even for rotary embeddings")
        self._check(self.hidden_act in ACTIVATIONS, f"hidden_act={self.hidden_act!r} is not one of {sorted(ACTIVATIONS)}")
        scaling = dict(self.rope_scaling or {})
        rope_type = scaling.pop("rope_type", scaling.pop("type", "default"))
        self._check(rope_type == "default", f"rope_scaling / rope_parameters {self.rope_scaling!r}: rope_type "
                                            f"{rope_type!r} is not supported, only unscaled RoPE ('default'; "
                                            "linear/dynamic/yarn/llama3 scaling is not implemented)")
        self._check(not scaling, f"rope_scaling / rope_parameters {self.rope_scaling!r}: "
                                 f"{', '.join(map(repr, scaling))} not supported (only unscaled, full-width RoPE)")
        self.rope_scaling = None  # {"rope_type": "default"} says the same
        self._check_pruning()

    @classmethod
    def from_hf_fields(cls, d: dict[str, Any], source: str) -> dict[str, Any]:
        """transformers 5.x writes ``rope_parameters`` ({"rope_theta", "rope_type", scaling fields}) where 4.x
        wrote ``rope_theta`` and ``rope_scaling``: read either (5.x reads rope_parameters first, as here)."""
        params = d.pop("rope_parameters", None)
        if params is None:
            return d
        if not isinstance(params, dict):
            raise ConfigError(f"{source}: rope_parameters must be a JSON object, got {params!r}")
        if any(isinstance(v, dict) for v in params.values()):
            raise ConfigError(f"{source}: rope_parameters per layer type ({', '.join(params)}) are not supported")
        params = dict(params)
        theta = params.pop("rope_theta", None)
        if theta is not None and d.setdefault("rope_theta", theta) != theta:  # 4.x would read one, 5.x the other
            raise ConfigError(f"{source}: rope_theta={d['rope_theta']} and rope_parameters.rope_theta={theta} "
                              "disagree; keep one")
        if d.get("rope_scaling") is None:
            d["rope_scaling"] = params
        return d

    def hf_fields(self) -> dict[str, Any]:
        return {"rope_parameters": {"rope_theta": self.rope_theta, "rope_type": "default"}}

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "LlamaConfig":
        """A preset of LLAMA_PRESETS with ``overrides`` (plmkit.models.registry.config_from_preset)."""
        return config_from_preset(name, model_type=cls.model_type, **overrides)


def _size(layers: int, dim: int, heads: int, kv_heads: int, ff: int) -> dict:
    return dict(num_hidden_layers=layers, hidden_size=dim, num_attention_heads=heads, num_key_value_heads=kv_heads,
                intermediate_size=ff)


LLAMA_PRESETS = {
    "llama-tiny": _size(2, 128, 4, 2, 352),
    "llama-mini": _size(4, 256, 4, 2, 704),
    "llama-small": _size(8, 512, 8, 4, 1408),
    "llama-medium": _size(16, 1024, 16, 4, 2816),
    "tinyllama-1.1b": dict(_size(22, 2048, 32, 4, 5632), max_position_embeddings=2048, rms_norm_eps=1e-5),
}


class LlamaPreTrainedModel(DecoderPreTrainedModel):
    config_class = LlamaConfig
    base_prefix = "model"

    def init_weights(self) -> None:
        super().init_weights()
        for m in self.modules():
            if isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)


class LlamaModel(DecoderBody, LlamaPreTrainedModel):
    """Token embeddings, N pre-RMSNorm blocks (RoPE attention with GQA, SwiGLU), final RMSNorm."""

    base_prefix = ""

    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        c = config
        self.embeddings = nn.ModuleDict({"word": nn.Embedding(c.vocab_size, c.hidden_size)})
        self.layers = nn.ModuleList(  # (a pruned layer: fewer key/value groups, a narrower feed-forward)
            TransformerBlock(MultiHeadAttention(c.hidden_size, c.heads_in_layer(i), c.kv_heads_in_layer(i),
                                                bias=c.attention_bias, dropout=c.attention_dropout, d_head=c.head_dim),
                             FeedForward(c.hidden_size, c.ffn_size_of(i), c.hidden_act, gated=True, bias=c.mlp_bias),
                             lambda: RMSNorm(c.hidden_size, eps=c.rms_norm_eps), norm_first=True)
            for i in range(c.num_hidden_layers))
        self.final_norm = RMSNorm(c.hidden_size, eps=c.rms_norm_eps)
        self.rope = RotaryEmbedding(c.head_dim, c.max_position_embeddings, c.rope_theta)
        self.init_weights()

    def embed(self, tokens: Tensor, position_ids: Tensor) -> Tensor:
        return tokens

    def rotary(self, position_ids: Tensor, dtype: torch.dtype):
        return self.rope(position_ids, dtype)


class LlamaForCausalLM(CausalLMHead, LlamaPreTrainedModel):
    """LlamaModel + a vocabulary projection (tied to the embeddings when tie_word_embeddings=true)."""

    body_class = LlamaModel


register(Family(LlamaConfig, {"base": LlamaModel, "causal-lm": LlamaForCausalLM}, CONVERTER, LLAMA_PRESETS))
