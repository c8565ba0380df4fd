"""Tiny model directories for the tests of what loading checks: a BERT classifier with its WordPiece
tokenizer and plmkit_task.json, and a GPT-2 with its byte-level BPE tokenizer (built in well under a
second each)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from plmkit.tokenization import Tokenizer

TEXTS = ["a good film", "a bad film", "the plot was good", "the acting was bad", "good good bad"] * 4


def wordpiece() -> Tokenizer:
    return Tokenizer.train_wordpiece(TEXTS, vocab_size=60, min_frequency=1)


def classifier_dir(directory: Path, labels=("negative", "positive"), task=None) -> Path:
    """A BERT sequence classifier of `labels` saved with its tokenizer and plmkit_task.json."""
    from plmkit.models.bert import BertConfig, BertForSequenceClassification
    from plmkit.tasks.classification import ClassificationTask
    tok = wordpiece()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64).with_labels(list(labels))
    BertForSequenceClassification(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    (task or ClassificationTask.of(max_length=32, problem_type="single_label_classification")).save(directory)
    return directory


def gpt2_dir(directory: Path) -> Path:
    """A random GPT-2 (64 positions) with a byte-level BPE tokenizer whose eos is also its pad."""
    from plmkit.models.gpt2 import GPT2Config, GPT2LMHeadModel
    tok = Tokenizer.train_bpe(TEXTS, 300)
    torch.manual_seed(0)
    config = GPT2Config.from_preset("gpt2-tiny", vocab_size=len(tok), n_positions=64,
                                    bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def edit_json(path: Path, **changes) -> None:
    """Set (or, for a value of None, remove) keys of a JSON file."""
    values = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    values.update(changes)
    path.write_text(json.dumps({k: v for k, v in values.items() if v is not None}), encoding="utf-8")
