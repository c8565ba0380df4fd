"""Building blocks shared by every model: attention, feed-forward, embeddings, blocks, masks."""
from plmkit.nn.attention import MultiHeadAttention, attend
from plmkit.nn.block import TransformerBlock, run_blocks
from plmkit.nn.cache import KVCache, LayerKVCache, PastKeyValues, Seq2SeqCache
from plmkit.nn.embeddings import ScaledEmbeddings, TextEmbeddings, sinusoidal_table
from plmkit.nn.masks import Unpadded, attention_bias, causal_bias, padding_bias
from plmkit.nn.mlp import FeedForward, activation
from plmkit.nn.norms import RMSNorm
from plmkit.nn.rotary import RotaryEmbedding

__all__ = ["MultiHeadAttention", "attend", "TransformerBlock", "run_blocks", "TextEmbeddings", "ScaledEmbeddings",
           "sinusoidal_table",
           "Unpadded", "attention_bias", "causal_bias", "padding_bias", "FeedForward", "activation",
           "KVCache", "LayerKVCache", "PastKeyValues", "Seq2SeqCache", "RMSNorm", "RotaryEmbedding"]
