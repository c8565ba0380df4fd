"""Streamed metrics: each accumulator takes one batch at a time (`update`) and reports a dict
(`compute`). Classification keeps a confusion matrix, not predictions.

* ClassificationMetrics: accuracy, macro-F1, micro-F1 (= accuracy for single-label), weighted F1.
* MultiLabelMetrics: micro/macro F1 over labels, subset accuracy; macro F1 is the mean over every label,
  a label never gold nor predicted scoring 0 (sklearn's f1_score(average="macro", zero_division=0)).
* RegressionMetrics: Pearson, Spearman (average ranks for ties), MSE; the correlations are NaN
  (undefined, and a warning says why) when the labels or the predictions are constant.
* EntityMetrics: entity-level precision/recall/F1 with seqeval (conlleval rules for BIO,
  strict IOBES for BIOES).
* SquadMetrics: the official SQuAD v1.1/v2.0 exact match and token F1 (with its normalisation).
* SquadThresholdSweep: SQuAD v2's best no-answer threshold (best_exact / best_f1 and their thresholds).
* RelationMetrics: micro P/R/F1 over the relation classes, the no-relation class excluded.

`reduce(part)` makes an accumulator hold every process's updates, for an evaluation shared by
several (`part`: an EvalShard of plmkit.training.distributed): counts are summed on every process,
and what needs every prediction (ranks, seqeval's spans) is gathered to rank 0.
"""
from __future__ import annotations

import collections
import logging
import re
import string

import numpy as np
import torch

log = logging.getLogger("plmkit")


def _f1(p: np.ndarray | float, r: np.ndarray | float):
    p, r = np.asarray(p, dtype=float), np.asarray(r, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1), 0.0)


def _safe_div(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.where(b > 0, a / np.where(b > 0, b, 1), 0.0)


class ClassificationMetrics:
    def __init__(self, num_labels: int):
        self.confusion = torch.zeros(num_labels, num_labels, dtype=torch.long)  # [gold, predicted]

    def update(self, predictions, labels) -> None:
        p, g = torch.as_tensor(predictions).view(-1).cpu(), torch.as_tensor(labels).view(-1).cpu()
        n = self.confusion.shape[0]
        self.confusion += torch.bincount(g * n + p, minlength=n * n).view(n, n)

    def reduce(self, part) -> None:
        self.confusion = torch.tensor(part.sums(self.confusion.view(-1).tolist())).round().long().view_as(self.confusion)

    def compute(self) -> dict[str, float]:
        c = self.confusion.double().numpy()
        tp, gold, pred = np.diag(c), c.sum(1), c.sum(0)
        total = c.sum()
        precision, recall = _safe_div(tp, pred), _safe_div(tp, gold)
        f1 = _f1(precision, recall)
        present = (gold + pred) > 0
        micro = float(tp.sum() / total) if total else 0.0
        return {"accuracy": micro, "f1": float(f1[present].mean()) if present.any() else 0.0,
                "macro_f1": float(f1[present].mean()) if present.any() else 0.0, "micro_f1": micro,
                "weighted_f1": float((f1 * gold).sum() / gold.sum()) if gold.sum() else 0.0, "n": int(total)}


class MultiLabelMetrics:
    def __init__(self, num_labels: int):
        self.tp = np.zeros(num_labels)
        self.fp = np.zeros(num_labels)
        self.fn = np.zeros(num_labels)
        self.exact = 0
        self.n = 0

    def update(self, predictions, labels) -> None:
        p, g = torch.as_tensor(predictions).bool().cpu().numpy(), torch.as_tensor(labels).bool().cpu().numpy()
        self.tp += (p & g).sum(0)
        self.fp += (p & ~g).sum(0)
        self.fn += (~p & g).sum(0)
        self.exact += int((p == g).all(1).sum())
        self.n += p.shape[0]

    def reduce(self, part) -> None:
        k = len(self.tp)
        total = np.array(part.sums([*self.tp, *self.fp, *self.fn, self.exact, self.n]))
        self.tp, self.fp, self.fn = total[:k], total[k:2 * k], total[2 * k:3 * k]
        self.exact, self.n = int(round(total[-2])), int(round(total[-1]))

    def compute(self) -> dict[str, float]:
        micro = float(_f1(_safe_div(self.tp.sum(), self.tp.sum() + self.fp.sum()),
                          _safe_div(self.tp.sum(), self.tp.sum() + self.fn.sum())))
        per = _f1(_safe_div(self.tp, self.tp + self.fp), _safe_div(self.tp, self.tp + self.fn))
        macro = float(per.mean()) if len(per) else 0.0  # every label, one never gold nor predicted scoring 0
        return {"subset_accuracy": self.exact / self.n if self.n else 0.0, "f1": micro, "micro_f1": micro,
                "macro_f1": macro, "n": self.n}


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties get their average rank."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse]


def pearson(x, y) -> float:
    """The correlation coefficient; NaN (undefined) when x or y is constant, or empty."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) == 0:
        return float("nan")
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else float("nan")


def spearman(x, y) -> float:
    return pearson(_ranks(np.asarray(x, dtype=float)), _ranks(np.asarray(y, dtype=float)))


class RegressionMetrics:
    """Keeps one float per example (ranks need them all), never logits of a larger shape."""

    def __init__(self):
        self.pred: list[float] = []
        self.gold: list[float] = []

    def update(self, predictions, labels) -> None:
        self.pred += torch.as_tensor(predictions).view(-1).float().tolist()
        self.gold += torch.as_tensor(labels).view(-1).float().tolist()

    def reduce(self, part) -> None:  # (rank 0: every pair, in rank order; the correlations ignore order)
        pairs = part.gather(list(zip(self.pred, self.gold))) or []
        self.pred, self.gold = [p for p, _ in pairs], [g for _, g in pairs]

    def compute(self) -> dict[str, float]:
        p, g = np.array(self.pred), np.array(self.gold)
        constant = [name for name, x in (("gold labels", g), ("predictions", p)) if len(x) and np.ptp(x) == 0]
        if constant or not len(p):
            why = f"the {' and the '.join(constant)} are constant" if constant else "there are no examples"
            log.warning("plmkit: pearson and spearman are undefined (reported as NaN): %s", why)
        return {"pearson": pearson(p, g), "spearman": spearman(p, g),
                "mse": float(((p - g) ** 2).mean()) if len(p) else 0.0, "n": len(p)}


_BILOU_AS_BIOES = {"L-": "E-", "U-": "S-"}  # scheme_of calls BILOU data BIOES; seqeval's IOBES wants E-/S-


class EntityMetrics:
    """Entity-level scores with seqeval; `update` takes lists of tag sequences (one per sentence)."""

    def __init__(self, scheme: str = "BIO"):
        self.scheme = scheme
        self.gold: list[list[str]] = []
        self.pred: list[list[str]] = []
        self.tokens = 0
        self.correct_tokens = 0

    def update(self, predictions: list[list[str]], labels: list[list[str]]) -> None:
        for p, g in zip(predictions, labels):
            self.pred.append(list(p))
            self.gold.append(list(g))
            self.tokens += len(g)
            self.correct_tokens += sum(a == b for a, b in zip(p, g))

    def reduce(self, part) -> None:  # (seqeval needs every sentence: gathered to rank 0)
        rows = part.gather(list(zip(self.pred, self.gold))) or []
        self.pred, self.gold = [p for p, _ in rows], [g for _, g in rows]
        self.tokens, self.correct_tokens = (int(round(x)) for x in part.sums([self.tokens, self.correct_tokens]))

    def compute(self) -> dict[str, float]:
        from seqeval.metrics import f1_score, precision_score, recall_score
        kwargs = {}
        args = (self.gold, self.pred)
        if self.scheme == "BIOES":
            from seqeval.scheme import IOBES
            kwargs = {"mode": "strict", "scheme": IOBES}
            args = tuple([[_BILOU_AS_BIOES.get(t[:2], t[:2]) + t[2:] for t in s] for s in seqs] for seqs in args)
        return {"precision": float(precision_score(*args, zero_division=0, **kwargs)),
                "recall": float(recall_score(*args, zero_division=0, **kwargs)),
                "f1": float(f1_score(*args, zero_division=0, **kwargs)),
                "token_accuracy": self.correct_tokens / self.tokens if self.tokens else 0.0,
                "n": len(self.gold)}


# --- SQuAD ------------------------------------------------------------------------------------
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower case, drop punctuation, drop the articles a/an/the, squeeze whitespace (the official rule)."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def squad_exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def squad_f1(prediction: str, gold: str) -> float:
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not p or not g:  # no-answer: right only when both are empty
        return float(p == g)
    common = collections.Counter(p) & collections.Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def squad_scores(prediction: str, gold_answers: list[str]) -> tuple[float, float, bool]:
    """(exact match, F1, whether the question has an answer): the max over the gold answers, and
    the single gold answer "" for an unanswerable question."""
    golds = [a for a in gold_answers if normalize_answer(a)] or [""]
    return (max(squad_exact_match(prediction, g) for g in golds), max(squad_f1(prediction, g) for g in golds),
            golds != [""])


class SquadMetrics:
    """exact_match and f1 in percent, the max over each question's gold answers
    (unanswerable questions have the single gold answer "")."""

    def __init__(self):
        self.em = self.f1 = 0.0
        self.n = 0
        self.has_ans = [0.0, 0.0, 0]
        self.no_ans = [0.0, 0.0, 0]

    def update(self, prediction: str, gold_answers: list[str]) -> None:
        em, f1, has_answer = squad_scores(prediction, gold_answers)
        self.em += em
        self.f1 += f1
        self.n += 1
        bucket = self.has_ans if has_answer else self.no_ans
        bucket[0] += em
        bucket[1] += f1
        bucket[2] += 1

    def reduce(self, part) -> None:  # (means of per-question scores: sums and counts)
        total = part.sums([self.em, self.f1, self.n, *self.has_ans, *self.no_ans])
        self.em, self.f1, self.n = total[0], total[1], int(round(total[2]))
        self.has_ans = [*total[3:5], int(round(total[5]))]
        self.no_ans = [*total[6:8], int(round(total[8]))]

    def compute(self) -> dict[str, float]:
        out = {"exact_match": 100 * self.em / self.n if self.n else 0.0,
               "f1": 100 * self.f1 / self.n if self.n else 0.0, "n": self.n}
        if self.no_ans[2]:
            for name, b in (("has_ans", self.has_ans), ("no_ans", self.no_ans)):
                if b[2]:
                    out[f"{name}_exact_match"], out[f"{name}_f1"] = 100 * b[0] / b[2], 100 * b[1] / b[2]
        return out


class SquadThresholdSweep:
    """SQuAD v2: the no-answer threshold that maximises exact match / F1 on the data, and those best
    scores (what the official v2 script reports as best_exact / best_f1 and their thresholds).

    `update` takes a question's best non-empty answer, its null score difference (null score - best
    span score; the question is answered when the difference is at most the threshold, inf when it has
    no span) and its gold answers. Keeps four numbers per question, no logits."""

    def __init__(self):
        self.rows: list[tuple[float, float, float, float, float]] = []  # diff, span em, span f1, null em, null f1

    def update(self, span_answer: str, null_score_diff: float, gold_answers: list[str]) -> None:
        span_em, span_f1, _ = squad_scores(span_answer, gold_answers)
        null_em, null_f1, _ = squad_scores("", gold_answers)
        self.rows.append((null_score_diff, span_em, span_f1, null_em, null_f1))

    def reduce(self, part) -> None:  # (the sweep runs over every question in order: gathered to rank 0)
        self.rows = part.gather(self.rows) or []

    def compute(self) -> dict[str, float]:
        # Start with every question unanswered (the lowest threshold), then raise the threshold past
        # each score difference in turn: that question trades its no-answer score for its span's.
        n = len(self.rows)
        rows = sorted(r for r in self.rows if r[0] != float("inf"))  # no span: never answered
        out = {}
        for name, col in (("exact", 1), ("f1", 2)):
            score = best = sum(r[col + 2] for r in self.rows)
            thresh = rows[0][0] - 1.0 if rows else 0.0
            for k, r in enumerate(rows):
                score += r[col] - r[col + 2]
                tie_next = k + 1 < len(rows) and rows[k + 1][0] == r[0]  # equal differences switch together
                if not tie_next and score > best:
                    best, thresh = score, r[0]
            out[f"best_{name}"] = 100 * best / n if n else 0.0
            out[f"best_{name}_thresh"] = thresh
        return out


class RelationMetrics:
    """Micro P/R/F1 with the no-relation class excluded (as in TACRED scoring), plus accuracy."""

    def __init__(self, num_labels: int, no_relation_id: int | None):
        self.inner = ClassificationMetrics(num_labels)
        self.no_relation_id = no_relation_id

    def update(self, predictions, labels) -> None:
        self.inner.update(predictions, labels)

    def reduce(self, part) -> None:
        self.inner.reduce(part)

    def compute(self) -> dict[str, float]:
        c = self.inner.confusion.double().numpy()
        keep = np.ones(c.shape[0], dtype=bool)
        if self.no_relation_id is not None:
            keep[self.no_relation_id] = False
        tp = np.diag(c)[keep].sum()
        precision = float(_safe_div(tp, c[:, keep].sum()))
        recall = float(_safe_div(tp, c[keep, :].sum()))
        total = c.sum()
        return {"precision": precision, "recall": recall, "f1": float(_f1(precision, recall)),
                "accuracy": float(np.diag(c).sum() / total) if total else 0.0, "n": int(total)}
