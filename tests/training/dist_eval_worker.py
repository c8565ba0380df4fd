"""Evaluations of a fixed tiny BERT shared by the processes of a torchrun job (or run whole by one):
classification (summed confusion matrix and loss) and NER (windows merged per rank, sentences gathered
to rank 0 for seqeval). `python dist_eval_worker.py MODEL_DIR OUT.json`; rank 0 writes the metrics."""
from __future__ import annotations

import json
import random
import sys

import torch

from plmkit.models.bert import BertForSequenceClassification, BertForTokenClassification
from plmkit.tasks.classification import ClassificationExample, ClassificationTask
from plmkit.tasks.ner import NerTask, Sentence
from plmkit.tokenization import Tokenizer
from plmkit.training import distributed

WORDS = ["river", "mill", "children", "fields", "storm", "west", "farmers", "baker", "city", "oak", "fox", "streets"]
TAGS = ["O", "B-LOC", "I-LOC", "B-PER"]


def evaluations(model_dir: str, part=None) -> dict[str, float]:
    rng = random.Random(0)
    tok = Tokenizer.from_pretrained(model_dir)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(23)]
    examples = [ClassificationExample(t, None, rng.choice("abc"), n) for n, t in enumerate(texts)]
    task = ClassificationTask.of()
    torch.manual_seed(0)  # (the heads are new: the same in every process)
    model = BertForSequenceClassification.from_pretrained(model_dir, id2label=dict(enumerate("abc")))
    features = task.encode(tok, examples, model.config.label2id)
    metrics = {f"cls_{k}": v for k, v in task.evaluate(model, tok, examples, features, 4, part=part).items()}
    sentences = []
    for n in range(9):
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 30))]
        sentences.append(Sentence(words, [rng.choice(TAGS) for _ in words], n))
    task = NerTask.of(max_length=12, stride=4, scheme="BIO")
    torch.manual_seed(0)
    model = BertForTokenClassification.from_pretrained(model_dir, id2label=dict(enumerate(TAGS)))
    features = task.encode(tok, sentences, model.config.label2id)
    metrics.update({f"ner_{k}": v for k, v in task.evaluate(model, tok, sentences, features, 3, part=part).items()})
    return metrics


if __name__ == "__main__":
    with distributed.process_group("cpu"):
        result = evaluations(sys.argv[1], distributed.EvalShard())
        if distributed.is_main():
            with open(sys.argv[2], "w") as f:
                json.dump(result, f)
