"""Evaluations of fixed tiny random models shared by the processes of a torchrun job (or run whole by one):
classification (summed confusion matrix and loss), NER (windows merged per rank, sentences gathered to
rank 0 for seqeval), QA (each question's spans routed to the rank that scores it, EM/F1 summed, the v2
threshold sweep gathered), relations (summed confusion matrix), translation (each rank generates its rows;
BLEU, chrF and ROUGE from summed statistics) and SFT perplexity (summed losses and tokens).
`python dist_eval_worker.py ROOT OUT.json` (ROOT: the test's files); rank 0 writes the metrics."""
from __future__ import annotations

import json
import os
import random
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/: the shared helpers

from clm_helpers import PAIRS  # noqa: E402
from finetune_helpers import RELATIONS, SQUAD  # noqa: E402
from plmkit.models.bart import BartConfig, BartForConditionalGeneration  # noqa: E402
from plmkit.models.bert import (BertForQuestionAnswering, BertForRelationClassification,  # noqa: E402
                                BertForSequenceClassification, BertForTokenClassification)
from plmkit.models.gpt2 import GPT2LMHeadModel  # noqa: E402
from plmkit.tasks.classification import ClassificationExample, ClassificationTask  # noqa: E402
from plmkit.tasks.ner import NerTask, Sentence  # noqa: E402
from plmkit.tasks.qa import QATask  # noqa: E402
from plmkit.tasks.relation import RelationTask  # noqa: E402
from plmkit.tasks.sft import SFTTask  # noqa: E402
from plmkit.tasks.translation import TranslationTask  # noqa: E402
from plmkit.tokenization import Tokenizer  # noqa: E402
from plmkit.training import distributed  # noqa: E402

WORDS = ["river", "mill", "children", "fields", "storm", "west", "farmers", "baker", "city", "oak", "fox", "streets"]
TAGS = ["O", "B-LOC", "I-LOC", "B-PER"]


def evaluations(root: str, part=None) -> dict[str, float]:
    rng = random.Random(0)
    bert = os.path.join(root, "tiny-bert")
    tok = Tokenizer.from_pretrained(bert)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(23)]
    examples = [ClassificationExample(t, None, rng.choice("abc"), n) for n, t in enumerate(texts)]
    task = ClassificationTask.of()
    torch.manual_seed(0)  # (the heads are new: the same in every process)
    model = BertForSequenceClassification.from_pretrained(bert, id2label=dict(enumerate("abc")))
    features = task.encode(tok, examples, model.config.label2id)
    metrics = {f"cls_{k}": v for k, v in task.evaluate(model, tok, examples, features, 4, part=part).items()}
    sentences = []
    for n in range(9):
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 30))]
        sentences.append(Sentence(words, [rng.choice(TAGS) for _ in words], n))
    task = NerTask.of(max_length=12, stride=4, scheme="BIO")
    torch.manual_seed(0)
    model = BertForTokenClassification.from_pretrained(bert, id2label=dict(enumerate(TAGS)))
    features = task.encode(tok, sentences, model.config.label2id)
    metrics.update({f"ner_{k}": v for k, v in task.evaluate(model, tok, sentences, features, 3, part=part).items()})
    for name, run in (("qa", qa), ("rel", relations), ("mt", translation), ("sft", sft)):
        metrics.update({f"{name}_{k}": v for k, v in run(root, part).items()})
    return metrics


def qa(root: str, part) -> dict[str, float]:
    """SQuAD v2 questions in windows of 24 tokens (several per context, spread over batches and ranks)."""
    path = os.path.join(root, "squad.json")
    task = QATask.of(max_length=24, doc_stride=6)
    examples = task.read(path)
    task.discover(examples, path)
    torch.manual_seed(1)
    model = BertForQuestionAnswering.from_pretrained(os.path.join(root, "tiny-bert"))
    tok = Tokenizer.from_pretrained(os.path.join(root, "tiny-bert"))
    features = task.encode(tok, examples, None)
    assert len(features) > 3 * len(examples)  # (many windows per question)
    return task.evaluate(model, tok, examples, features, 5, part=part)


def relations(root: str, part) -> dict[str, float]:
    path = os.path.join(root, "relations.jsonl")
    task = RelationTask.of()
    examples = task.read(path) * 2
    labels = task.discover(examples, path)
    tok = Tokenizer.from_pretrained(os.path.join(root, "tiny-bert"))
    torch.manual_seed(2)
    model = BertForRelationClassification.from_pretrained(os.path.join(root, "tiny-bert"),
                                                          id2label=dict(enumerate(labels)))
    task.adapt(model, tok)
    features = task.encode(tok, examples, model.config.label2id)
    return task.evaluate(model, tok, examples, features, 5, part=part)


def translation(root: str, part) -> dict[str, float]:
    """A random BART's translations, scored against references made from them (half kept, half cut), so
    that BLEU, chrF and ROUGE are far from 0 and 100."""
    tok = Tokenizer.from_pretrained(os.path.join(root, "bart-tok"))
    torch.manual_seed(3)
    model = BartForConditionalGeneration(BartConfig.from_preset("bart-tiny", dropout=0.0,
                                                                **BartConfig.tokenizer_fields(tok))).eval()
    task = TranslationTask.of(max_length=32, max_target_length=10, num_beams=2, no_repeat_ngram_size=1,
                              eval_samples=None)  # (no repeats: a random model's outputs differ from each other)
    task.check_model(model, "the random BART")
    examples = task.read(os.path.join(root, "mt.jsonl"))[:11]
    outputs = task.generate(model, tok, task.encode(tok, examples, None), 4)  # (whole, on every rank)
    for k, (example, text) in enumerate(zip(examples, outputs)):
        example.target = text if k % 2 else " ".join(text.split()[: max(1, len(text.split()) // 2)] + ["mill"])
    features = task.encode(tok, examples, None)
    return task.evaluate(model, tok, examples, features, 4, part=part)


def sft(root: str, part) -> dict[str, float]:
    tok = Tokenizer.from_pretrained(os.path.join(root, "tiny-gpt"))
    model = GPT2LMHeadModel.from_pretrained(os.path.join(root, "tiny-gpt")).eval()
    task = SFTTask.of()
    task.check_model(model, "tiny-gpt")
    records = [{"prompt": p, "response": r} for p, r in PAIRS] * 2
    return task.evaluate(model, tok, records, task.encode(tok, records, None), 3, part=part)


if __name__ == "__main__":
    with distributed.process_group("cpu"):
        result = evaluations(sys.argv[1], distributed.EvalShard())
        if distributed.is_main():
            with open(sys.argv[2], "w") as f:
                json.dump(result, f)
