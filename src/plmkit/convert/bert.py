"""BERT: plmkit names <-> Hugging Face `BertModel` / `BertFor*` / `BertLMHeadModel` names."""
from __future__ import annotations

import torch

from plmkit.convert.keys import Converter, KeyTable

BODY = KeyTable([
    ("embeddings.word", "embeddings.word_embeddings"),
    ("embeddings.position", "embeddings.position_embeddings"),
    ("embeddings.token_type", "embeddings.token_type_embeddings"),
    ("embeddings.norm", "embeddings.LayerNorm"),
    ("layers.{i}.attn.q", "encoder.layer.{i}.attention.self.query"),
    ("layers.{i}.attn.k", "encoder.layer.{i}.attention.self.key"),
    ("layers.{i}.attn.v", "encoder.layer.{i}.attention.self.value"),
    ("layers.{i}.attn.out", "encoder.layer.{i}.attention.output.dense"),
    ("layers.{i}.attn_norm", "encoder.layer.{i}.attention.output.LayerNorm"),
    ("layers.{i}.mlp.fc_in", "encoder.layer.{i}.intermediate.dense"),
    ("layers.{i}.mlp.fc_out", "encoder.layer.{i}.output.dense"),
    ("layers.{i}.mlp_norm", "encoder.layer.{i}.output.LayerNorm"),
    ("layers.{i}.cross_attn.q", "encoder.layer.{i}.crossattention.self.query"),  # a decoder's (add_cross_attention)
    ("layers.{i}.cross_attn.k", "encoder.layer.{i}.crossattention.self.key"),
    ("layers.{i}.cross_attn.v", "encoder.layer.{i}.crossattention.self.value"),
    ("layers.{i}.cross_attn.out", "encoder.layer.{i}.crossattention.output.dense"),
    ("layers.{i}.cross_norm", "encoder.layer.{i}.crossattention.output.LayerNorm"),
    ("pooler.dense", "pooler.dense"),
])

HEADS = KeyTable([
    ("mlm.transform.dense", "cls.predictions.transform.dense"),
    ("mlm.transform.norm", "cls.predictions.transform.LayerNorm"),
    ("mlm.decoder", "cls.predictions.decoder"),
    ("nsp", "cls.seq_relationship"),
    ("classifier", "classifier"),
    ("qa_outputs", "qa_outputs"),
])

# the MLM output bias: transformers 4.x keeps one tensor under both names, 5.x too when the decoder is tied
# to the embeddings; an untied 5.x decoder adds its own decoder.bias (cls.predictions.bias unused)
MLM_BIAS = ("cls.predictions.decoder.bias", "cls.predictions.bias")


class BertConverter(Converter):
    """Renaming, plus the MLM bias's two names and TF-era LayerNorm names (gamma/beta)."""

    def to_hf(self, state: dict) -> dict:
        out = super().to_hf(state)
        if MLM_BIAS[0] in out:  # both names, a copy under the second, so that the file stores both
            bias = out[MLM_BIAS[0]]
            out[MLM_BIAS[1]] = bias.clone() if isinstance(bias, torch.Tensor) else bias  # (None: `hf_key`'s probe)
        return out

    def from_hf(self, state: dict) -> dict:
        state = {_modern_norm_names(k): v for k, v in state.items()}
        if MLM_BIAS[1] in state:  # decoder.bias where the file has it (the one an untied 5.x decoder adds)
            bias = state.pop(MLM_BIAS[1])
            state.setdefault(MLM_BIAS[0], bias)
        return super().from_hf(state)


def _modern_norm_names(key: str) -> str:
    """TF-era checkpoints call LayerNorm parameters gamma/beta."""
    if key.endswith("LayerNorm.gamma"):
        return key[: -len("gamma")] + "weight"
    if key.endswith("LayerNorm.beta"):
        return key[: -len("beta")] + "bias"
    return key


# the non-parameter buffers old HF checkpoints carry are dropped
CONVERTER = BertConverter(BODY, HEADS, prefix="bert", dropped=r"(^|\.)(position_ids|token_type_ids)$")
