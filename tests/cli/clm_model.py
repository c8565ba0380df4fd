"""A random tiny GPT-2 + BPE tokenizer saved as a model directory, for the CLI tests."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clm_helpers import tiny_tokenizer  # noqa: E402
from plmkit.models.gpt2 import GPT2Config, GPT2LMHeadModel  # noqa: E402


def save_tiny_model(directory: Path, n_positions: int = 64) -> Path:
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    config = GPT2Config.from_preset("gpt2-tiny", vocab_size=len(tok), n_positions=n_positions,
                                    bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                                    pad_token_id=tok.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory
