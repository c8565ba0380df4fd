"""Llama: plmkit names <-> Hugging Face `LlamaModel` / `LlamaForCausalLM` names.

The rotary ``inv_freq`` buffers that old checkpoints carry are dropped (plmkit recomputes them).
"""
from __future__ import annotations

from plmkit.convert.keys import Converter, KeyTable

BODY = KeyTable([
    ("embeddings.word", "embed_tokens"),
    ("layers.{i}.attn_norm", "layers.{i}.input_layernorm"),
    ("layers.{i}.attn.q", "layers.{i}.self_attn.q_proj"),
    ("layers.{i}.attn.k", "layers.{i}.self_attn.k_proj"),
    ("layers.{i}.attn.v", "layers.{i}.self_attn.v_proj"),
    ("layers.{i}.attn.out", "layers.{i}.self_attn.o_proj"),
    ("layers.{i}.mlp_norm", "layers.{i}.post_attention_layernorm"),
    ("layers.{i}.mlp.gate", "layers.{i}.mlp.gate_proj"),
    ("layers.{i}.mlp.fc_in", "layers.{i}.mlp.up_proj"),
    ("layers.{i}.mlp.fc_out", "layers.{i}.mlp.down_proj"),
    ("final_norm", "norm"),
])
HEADS = KeyTable([("lm_head", "lm_head")])

CONVERTER = Converter(BODY, HEADS, prefix="model", dropped=r"rotary_emb\.inv_freq$")
