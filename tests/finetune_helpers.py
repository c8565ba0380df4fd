"""Small real data and a tiny BERT (+ WordPiece tokenizer) for the fine-tuning tests."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

_CACHE: dict[str, Path] = {}


def data_dir(name: str) -> Path:
    from plmkit.datasets import fetch
    return fetch(name)


def head_lines(src: Path, dst: Path, n: int, skip: int = 0) -> Path:
    lines = src.read_text(encoding="utf-8").splitlines()[skip:skip + n]
    dst.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dst


def head_conll(src: Path, dst: Path, n_sentences: int, max_chars: int = 60) -> Path:
    blocks = [b for b in src.read_text(encoding="utf-8").split("\n\n") if b.strip()]
    blocks = [b for b in blocks if len(b.splitlines()) <= max_chars][:n_sentences]
    dst.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return dst


def en_sentiment_files(tmp: Path) -> tuple[Path, Path]:
    """300 training and 100 test rows of the English movie reviews."""
    d = data_dir("en-sentiment")
    return (head_lines(d / "movie_reviews.train.jsonl", tmp / "train.jsonl", 300),
            head_lines(d / "movie_reviews.test.jsonl", tmp / "test.jsonl", 100))


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def quick(**settings) -> dict:
    """Fine-tuning settings of a quick CPU run, with `settings` on top."""
    return {**dict(epochs=1, batch_size=16, lr=1e-3, progress_bar=False, device="cpu", precision="fp32"), **settings}


def tiny_model_dir() -> Path:
    """A 2-layer, 32-wide BERT with a 3000-piece WordPiece vocabulary trained on en + zh text."""
    if "tiny" in _CACHE:
        return _CACHE["tiny"]
    from plmkit.models.bert import BertConfig, BertModel
    from plmkit.tokenization import Tokenizer
    root = Path(tempfile.mkdtemp(prefix="plmkit-tiny-bert-"))
    texts = []
    for line in (data_dir("en-sentiment") / "movie_reviews.train.jsonl").read_text().splitlines()[:3000]:
        texts.append(json.loads(line)["text"])
    for line in (data_dir("zh-sentiment") / "train.jsonl").read_text().splitlines()[:1000]:
        texts.append(json.loads(line)["text"])
    chars = [line.split("\t")[0] for line in (data_dir("zh-ner") / "train.conll").read_text().splitlines()[:20000]
             if line.strip()]
    texts += ["".join(chars[i:i + 50]) for i in range(0, len(chars), 50)]
    tokenizer = Tokenizer.train_wordpiece(texts, vocab_size=3000, min_frequency=1)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=256, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    BertModel(config).save_pretrained(root)
    tokenizer.save_pretrained(root)
    _CACHE["tiny"] = root
    return root


SQUAD = {
    "version": "v2.0",
    "data": [{"title": "t", "paragraphs": [
        {"context": "The Eiffel Tower is in Paris. It was finished in 1889 and is 330 metres tall. "
                    "Gustave Eiffel's company designed and built it for the World's Fair.",
         "qas": [{"id": "q1", "question": "Where is the Eiffel Tower?",
                  "answers": [{"text": "Paris", "answer_start": 23}]},
                 {"id": "q2", "question": "When was it finished?",
                  "answers": [{"text": "1889", "answer_start": 49}]},
                 {"id": "q3", "question": "Whose company built it?",
                  "answers": [{"text": "Gustave Eiffel's company", "answer_start": 78}]},
                 {"id": "q4", "question": "What colour is the moon?", "answers": [], "is_impossible": True}]},
        {"context": "Mount Fuji is the highest mountain in Japan, at 3776 metres. It last erupted in 1707.",
         "qas": [{"id": "q5", "question": "How high is Mount Fuji?",
                  "answers": [{"text": "3776 metres", "answer_start": 48}]},
                 {"id": "q6", "question": "When did it last erupt?",
                  "answers": [{"text": "1707", "answer_start": 81}]}]},
    ]}],
}


def squad_file(path: Path) -> Path:
    for para in SQUAD["data"][0]["paragraphs"]:  # answer_start from the text, so the offsets are right
        for qa in para["qas"]:
            for a in qa["answers"]:
                a["answer_start"] = para["context"].index(a["text"])
    path.write_text(json.dumps(SQUAD), encoding="utf-8")
    return path


RELATIONS = [
    {"text": "Steve Jobs founded Apple in 1976.", "head": {"start": 0, "end": 10}, "tail": {"start": 19, "end": 24},
     "relation": "founded"},
    {"text": "Bill Gates founded Microsoft with Paul Allen.", "head": {"start": 0, "end": 10},
     "tail": {"start": 19, "end": 28}, "relation": "founded"},
    {"text": "Paris is the capital of France.", "head": {"start": 0, "end": 5}, "tail": {"start": 24, "end": 30},
     "relation": "capital_of"},
    {"text": "Berlin is the capital of Germany.", "head": {"start": 0, "end": 6}, "tail": {"start": 25, "end": 32},
     "relation": "capital_of"},
    {"text": "Anna met Tom in Rome.", "head": {"start": 0, "end": 4}, "tail": {"start": 16, "end": 20},
     "relation": "no_relation"},
    {"text": "The film about Rome bored Anna.", "head": {"start": 15, "end": 19}, "tail": {"start": 26, "end": 30},
     "relation": "no_relation"},
]


def relation_file(path: Path, rows=None) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in (rows or RELATIONS)), encoding="utf-8")
    return path


class PerTokenModel(nn.Module):
    """Logits that depend on each token alone (a lookup table), so windowing cannot change them."""

    def __init__(self, table: torch.Tensor, labels=None, qa: bool = False):
        super().__init__()
        self.table = nn.Embedding.from_pretrained(table)
        self.qa = qa
        self.config = SimpleNamespace(id2label=dict(enumerate(labels or [])), num_labels=len(labels or []),
                                      label2id={name: i for i, name in enumerate(labels or [])})

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        out = self.table(input_ids)  # (B, T, C)
        if self.qa:
            return SimpleNamespace(start_logits=out[..., 0], end_logits=out[..., 0], loss=None)
        return SimpleNamespace(logits=out, loss=None)
