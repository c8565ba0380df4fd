"""BART and Marian: plmkit names <-> Hugging Face `BartModel` / `BartForConditionalGeneration` /
`MarianMTModel` names (the two families name their weights alike).

The token embeddings are one tensor, stored once as ``model.shared.weight`` (the encoder's and
decoder's ``embed_tokens`` and the tied ``lm_head`` are the same tensor; older checkpoints store
them too, with the same values). ``final_logits_bias`` (1, V) is a buffer of the same name.
"""
from __future__ import annotations

from plmkit.convert.keys import Converter, KeyTable


def stack(side: str, cross: bool) -> list[tuple[str, str]]:
    """The key pairs of one side (``encoder`` / ``decoder``) of a BART-style model."""
    pairs = [(f"{side}.embeddings.word", f"{side}.embed_tokens"),
             (f"{side}.embeddings.position", f"{side}.embed_positions"),
             (f"{side}.embeddings.norm", f"{side}.layernorm_embedding"),
             (f"{side}.final_norm", f"{side}.layer_norm")]
    sublayers = [("attn", "self_attn")] + ([("cross_attn", "encoder_attn")] if cross else [])
    for ours, theirs in sublayers:
        pairs += [(f"{side}.layers.{{i}}.{ours}.{p}", f"{side}.layers.{{i}}.{theirs}.{q}")
                  for p, q in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("out", "out_proj"))]
    pairs += [(f"{side}.layers.{{i}}.attn_norm", f"{side}.layers.{{i}}.self_attn_layer_norm"),
              (f"{side}.layers.{{i}}.mlp.fc_in", f"{side}.layers.{{i}}.fc1"),
              (f"{side}.layers.{{i}}.mlp.fc_out", f"{side}.layers.{{i}}.fc2"),
              (f"{side}.layers.{{i}}.mlp_norm", f"{side}.layers.{{i}}.final_layer_norm")]
    if cross:
        pairs.append((f"{side}.layers.{{i}}.cross_norm", f"{side}.layers.{{i}}.encoder_attn_layer_norm"))
    return pairs


BODY = KeyTable([("shared", "shared"), *stack("encoder", cross=False), *stack("decoder", cross=True)])
HEADS = KeyTable([("lm_head", "lm_head")])  # final_logits_bias keeps its name

CONVERTER = Converter(BODY, HEADS, prefix="model", dropped=r"(^|\.)(encoder|decoder)\.version$")
