"""Tiny fine-tuned model directories (a random BERT with a WordPiece vocabulary, its task file) and
their ONNX exports, made once per test session."""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

_CACHE: dict[str, Path] = {}
TEXTS = ["a wonderful film with a great cast", "dull and far too long", "Paris is in France", "John lives in Berlin",
         "the plot makes no sense at all", "an honest and moving story", "Mary met Peter in London last May"]


def task_dir(task: str) -> Path:
    """A classification (labels neg / pos) or NER (BIO tags of PER and LOC) model directory."""
    if task in _CACHE:
        return _CACHE[task]
    from plmkit.models.bert import BertConfig, BertForSequenceClassification, BertForTokenClassification
    from plmkit.tasks.classification import ClassificationTask
    from plmkit.tasks.ner import NerTask
    from plmkit.tokenization import Tokenizer
    root = Path(tempfile.mkdtemp(prefix=f"plmkit-onnx-{task}-"))
    tokenizer = Tokenizer.train_wordpiece(TEXTS * 3, vocab_size=120, min_frequency=1)
    labels = ["neg", "pos"] if task == "classification" else ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, id2label=dict(enumerate(labels)))
    model = (BertForSequenceClassification if task == "classification" else BertForTokenClassification)(config)
    for p in model.parameters():  # random biases too: a graph must not lose one (zeros hide it)
        torch.nn.init.normal_(p, std=0.3)
    model.save_pretrained(root)
    tokenizer.save_pretrained(root)
    settings = {"problem_type": "single_label_classification", "sentence_pairs": False} \
        if task == "classification" else {"scheme": "BIO"}
    (ClassificationTask if task == "classification" else NerTask).of(max_length=32, **settings).save(root)
    _CACHE[task] = root
    return root


def exported(task: str) -> Path:
    """`task_dir(task)` exported by `plmkit export` with onnxruntime int8."""
    key = f"{task}.onnx"
    if key not in _CACHE:
        from plmkit.cli import main
        out = Path(tempfile.mkdtemp(prefix=f"plmkit-onnx-out-")) / task
        assert main(["export", "--model", str(task_dir(task)), "--out", str(out), "--int8", "--quiet"]) == 0
        _CACHE[key] = out
    return _CACHE[key]
