"""plmkit.evaluation.perplexity: token-weighted held-out cross-entropy of a causal LM."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clm_helpers import packed_blocks  # noqa: E402
from plmkit.data.clm import collate_blocks
from plmkit.evaluation.perplexity import evaluate_perplexity
from plmkit.models.gpt2 import GPT2Config, GPT2LMHeadModel
from plmkit.models.llama import LlamaConfig, LlamaForCausalLM
from plmkit.utils.constants import IGNORE_INDEX


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    model = GPT2LMHeadModel(GPT2Config.from_preset("gpt2-tiny", vocab_size=50, n_positions=32)).eval()
    torch.nn.init.zeros_(model.lm_head.weight)  # tied: every logit is 0
    blocks = packed_blocks([6, 9, 4], seq_len=8, keep_partial=True)
    metrics = evaluate_perplexity(model, blocks, batch_size=2)
    assert metrics["perplexity"] == pytest.approx(50.0)
    # every token but block starts and document starts is a target: 19 - 3 blocks - 2 document starts inside
    labels = collate_blocks([blocks[i] for i in range(len(blocks))])["labels"]
    assert metrics["tokens"] == int((labels[:, 1:] != IGNORE_INDEX).sum())


def test_perplexity_matches_the_cross_entropy_of_the_full_logits():
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig.from_preset("llama-tiny", vocab_size=64, max_position_embeddings=32)).eval()
    blocks = packed_blocks([6, 9, 4, 7], seq_len=8, keep_partial=True)
    batch = collate_blocks([blocks[i] for i in range(len(blocks))])
    labels = batch.pop("labels")
    with torch.no_grad():
        logits = model(**batch).logits  # (B, T, V), the reference materialises them
        expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 64), labels[:, 1:].reshape(-1))
        metrics = evaluate_perplexity(model, blocks, batch_size=3)  # uneven batches: token-weighted mean
    assert metrics["loss"] == pytest.approx(float(expected), rel=1e-5)
