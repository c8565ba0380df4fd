"""GPT-2: plmkit names <-> Hugging Face `GPT2Model` / `GPT2LMHeadModel` names.

Hugging Face GPT-2 keeps OpenAI's layout: linear layers are ``Conv1D`` modules whose weight is
stored (in, out), the transpose of ``nn.Linear``; and q, k, v are one fused ``c_attn`` projection.
``to_hf`` fuses and transposes, ``from_hf`` splits and transposes back. The causal-mask buffers
``attn.bias`` / ``attn.masked_bias`` that old checkpoints carry are dropped.
"""
from __future__ import annotations

import re

import torch

from plmkit.convert.keys import Converter, KeyTable

BODY = KeyTable([
    ("embeddings.word", "wte"),
    ("embeddings.position", "wpe"),
    ("layers.{i}.attn_norm", "h.{i}.ln_1"),
    ("layers.{i}.attn.out", "h.{i}.attn.c_proj"),
    ("layers.{i}.mlp_norm", "h.{i}.ln_2"),
    ("layers.{i}.mlp.fc_in", "h.{i}.mlp.c_fc"),
    ("layers.{i}.mlp.fc_out", "h.{i}.mlp.c_proj"),
    ("final_norm", "ln_f"),
])
HEADS = KeyTable([("lm_head", "lm_head")])
CONV1D = re.compile(r"(^|\.)h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$")
OURS_QKV = re.compile(r"^(?P<pre>(?:transformer\.)?)layers\.(?P<i>\d+)\.attn\.(?P<w>[qkv])\.(?P<p>weight|weight_scale|bias)$")
HF_QKV = re.compile(r"^(?P<pre>(?:transformer\.)?)h\.(?P<i>\d+)\.attn\.c_attn\.(?P<p>weight|weight_scale|bias)$")


class GPT2Converter(Converter):
    """Renaming, plus fusing q/k/v into ``c_attn`` and transposing the ``Conv1D`` weights."""

    def to_hf(self, state: dict) -> dict:
        fused, rest = {}, {}
        for key, t in state.items():
            m = OURS_QKV.match(key)
            if m:
                fused.setdefault(f"{m['pre']}h.{m['i']}.attn.c_attn.{m['p']}", {})[m["w"]] = t
            else:
                rest[key] = t
        out = super().to_hf(rest)
        for key, parts in fused.items():
            out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
        return {k: (t.t().contiguous() if CONV1D.search(k) else t) for k, t in out.items()}

    def from_hf(self, state: dict) -> dict:
        split, rest = {}, {}
        for key, t in state.items():  # (the dropped buffers are neither Conv1D weights nor c_attn)
            t = t.t().contiguous() if CONV1D.search(key) else t
            m = HF_QKV.match(key)
            if m:
                for name, part in zip("qkv", t.chunk(3, dim=0)):
                    split[f"{m['pre']}layers.{m['i']}.attn.{name}.{m['p']}"] = part.contiguous()
            else:
                rest[key] = t
        return {**super().from_hf(rest), **split}

    def hf_key(self, key: str) -> str:
        """q, k and v are slices of one ``c_attn``."""
        m = OURS_QKV.match(key)
        return f"{m['pre']}h.{m['i']}.attn.c_attn.{m['p']}" if m else super().hf_key(key)


CONVERTER = GPT2Converter(BODY, HEADS, prefix="transformer", dropped=r"(^|\.)h\.\d+\.attn\.(bias|masked_bias)$")
