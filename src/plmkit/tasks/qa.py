"""Extractive question answering: SQuAD v1.1 / v2.0 JSON, answers as character spans of the context.

Long contexts are cut into windows of `max_length` tokens ([CLS] question [SEP] context-window
[SEP]); consecutive windows overlap by `doc_stride` tokens (Hugging Face's meaning of doc_stride).
Each window keeps the character offsets of its context tokens, so a predicted token span maps
straight back to a character span of the original context. SQuAD v2 unanswerable questions (and
windows that do not hold the answer) point at [CLS].
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from plmkit.errors import DataError
from plmkit.evaluation import SquadMetrics, SquadThresholdSweep
from plmkit.tasks.base import Task, TaskSettings
from plmkit.tasks.common import forward_batches, record_object, window_starts
from plmkit.utils.settings import setting
from plmkit.utils.text import read_text


@dataclass
class QAExample:
    id: str
    question: str
    context: str
    answers: list[dict] = field(default_factory=list)  # {"text", "answer_start"}
    is_impossible: bool = False


def read_squad(path: str | Path, require_answers: bool = True) -> list[QAExample]:
    path = Path(path)
    text = read_text(path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise DataError(f"{path}: a SQuAD file is an object with a 'data' list of articles")
    examples = []
    for a, article in enumerate(doc["data"]):
        _need_object(article, f"{path}: data[{a}]")
        for p, para in enumerate(article.get("paragraphs", [])):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            _need_object(para, where)
            context = para.get("context")
            if not isinstance(context, str) or not context:
                raise DataError(f"{where}: needs a non-empty 'context'")
            for q, qa in enumerate(para.get("qas", [])):
                _need_object(qa, f"{where}.qas[{q}]")
                qwhere = f"{where}.qas[{q}] (id {qa.get('id')!r})"
                question = qa.get("question")
                if not isinstance(question, str) or not question.strip():
                    raise DataError(f"{qwhere}: needs a non-empty 'question'")
                impossible = bool(qa.get("is_impossible", False))
                answers = qa.get("answers") or []
                for n, ans in enumerate(answers):
                    _need_object(ans, f"{qwhere}: answers[{n}]")
                    start, ans_text = ans.get("answer_start"), ans.get("text")
                    if not isinstance(start, int) or not isinstance(ans_text, str) \
                            or context[start:start + len(ans_text)] != ans_text:
                        raise DataError(f"{qwhere}: answer {ans_text!r} is not at answer_start={start} of the context")
                if require_answers and not answers and not impossible:
                    raise DataError(f"{qwhere}: no answers and not is_impossible")
                examples.append(QAExample(str(qa.get("id", f"{a}-{p}-{q}")), question, context, answers, impossible))
    if not examples:
        raise DataError(f"{path}: no questions")
    return examples


def _need_object(value, where: str) -> None:
    if not isinstance(value, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(value).__name__} {value!r:.40}")


def windows(tokenizer, examples: list[QAExample], max_length: int = 384, doc_stride: int = 128,
            max_query_length: int = 64, training: bool = False) -> list[dict]:
    """One feature per window. `_example` indexes `examples`; `_offsets` holds (start, end) character
    offsets into the context for context tokens and None elsewhere, `_words` the same for the whole
    word each token belongs to. With `training`, the first answer gives `start_positions` /
    `end_positions` (0 = [CLS] when the window lacks it)."""
    backend = tokenizer.backend_tokenizer
    questions = backend.encode_batch([e.question for e in examples], add_special_tokens=False)
    contexts = backend.encode_batch([e.context for e in examples], add_special_tokens=False)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    features = []
    for i, (e, q, c) in enumerate(zip(examples, questions, contexts)):
        q_ids = q.ids[:max_query_length]
        room = max_length - len(q_ids) - 3
        if room < 1:
            raise DataError(f"max_length={max_length} leaves no room for the context after a "
                            f"{len(q_ids)}-token question")
        starts = window_starts(len(c.ids), room, doc_stride)
        words = _word_spans(c)
        answer = None
        if training and e.answers and not e.is_impossible:
            a = e.answers[0]
            answer = (a["answer_start"], a["answer_start"] + len(a["text"]))
        for s in starts:
            ctx_ids = c.ids[s:s + room]
            ctx_offsets = c.offsets[s:s + room]
            head = 2 + len(q_ids)  # position of the first context token
            ids = [cls] + q_ids + [sep] + ctx_ids + [sep]
            f = {"input_ids": ids, "token_type_ids": [0] * head + [1] * (len(ctx_ids) + 1), "_example": i,
                 "_offsets": [None] * head + [tuple(o) for o in ctx_offsets] + [None],
                 "_words": [None] * head + words[s:s + room] + [None]}
            if training:
                start_pos = end_pos = 0
                if answer is not None:
                    tok = [k for k, (a0, a1) in enumerate(ctx_offsets) if a1 > answer[0] and a0 < answer[1]]
                    if tok and ctx_offsets[0][0] <= answer[0] and ctx_offsets[-1][1] >= answer[1]:
                        start_pos, end_pos = head + tok[0], head + tok[-1]
                f["start_positions"], f["end_positions"] = start_pos, end_pos
            features.append(f)
    return features


def _word_spans(encoding) -> list[tuple[int, int]]:
    """Per token, the character span of the whole word it is a piece of."""
    spans: dict[int, tuple[int, int]] = {}
    for word, (a, b) in zip(encoding.word_ids, encoding.offsets):
        lo, hi = spans.get(word, (a, b))
        spans[word] = (min(lo, a), max(hi, b))
    return [spans[word] for word in encoding.word_ids]


@dataclass
class Candidate:
    score: float  # start logit + end logit
    prob: float  # p(start) * p(end) within its window
    start: int  # character offsets into the context (end exclusive); -1 for no answer
    end: int


def best_spans(start_logits: list[float], end_logits: list[float], offsets: list, max_answer_length: int = 30,
               n_best: int = 20, words: list | None = None) -> tuple[Candidate | None, float]:
    """Best context span of one window (or None) and the window's null score (start+end at [CLS]).
    With `words` (a window's `_words`) the span widens to whole words, as HF's pipeline does."""
    bounds = words or offsets
    ctx = [k for k, o in enumerate(offsets) if o is not None]
    log_z_s = _logsumexp([start_logits[0]] + [start_logits[k] for k in ctx])
    log_z_e = _logsumexp([end_logits[0]] + [end_logits[k] for k in ctx])
    top_s = sorted(ctx, key=lambda k: -start_logits[k])[:n_best]
    top_e = sorted(ctx, key=lambda k: -end_logits[k])[:n_best]
    best = None
    for s in top_s:
        for e in top_e:
            if e < s or e - s + 1 > max_answer_length:
                continue
            score = start_logits[s] + end_logits[e]
            if best is None or score > best.score:
                prob = math.exp(score - log_z_s - log_z_e)
                best = Candidate(score, prob, bounds[s][0], bounds[e][1])
    null = start_logits[0] + end_logits[0]
    return best, null


def _logsumexp(values: list[float]) -> float:
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


class SpanAggregator:
    """Keeps, per example, the best span over its windows and the lowest null score (streamed).

    With `allow_no_answer` (SQuAD v2), an example gets the empty answer when its null score minus
    its best span score exceeds `null_score_diff_threshold` (Hugging Face's rule and name)."""

    def __init__(self, max_answer_length: int = 30, allow_no_answer: bool = False,
                 null_score_diff_threshold: float = 0.0, align_to_words: bool = False):
        self.max_answer_length = max_answer_length
        self.align_to_words = align_to_words  # answers of whole words (HF pipeline); else token spans
        self.allow_no_answer = allow_no_answer
        self.null_score_diff_threshold = null_score_diff_threshold
        self.best: dict[int, Candidate] = {}
        self.null: dict[int, tuple[float, float]] = {}  # example -> (null score, null prob)

    def add(self, example: int, start_logits: list[float], end_logits: list[float], offsets: list,
            words: list | None = None) -> None:
        cand, null = best_spans(start_logits, end_logits, offsets, self.max_answer_length,
                                words=words if self.align_to_words else None)
        if cand is not None and (example not in self.best or cand.score > self.best[example].score):
            self.best[example] = cand
        z = _logsumexp([start_logits[0]] + [start_logits[k] for k, o in enumerate(offsets) if o is not None]) \
            + _logsumexp([end_logits[0]] + [end_logits[k] for k, o in enumerate(offsets) if o is not None])
        if example not in self.null or null < self.null[example][0]:
            self.null[example] = (null, math.exp(null - z))

    def null_score_diff(self, example: int) -> float:
        """Null score minus best span score; inf when no window of the example has a valid span."""
        best = self.best.get(example)
        return float("inf") if best is None else self.null[example][0] - best.score

    def span_text(self, example: int, context: str) -> str:
        """The best non-empty answer, whatever the null score says ("" when there is none)."""
        best = self.best.get(example)
        return "" if best is None else context[best.start:best.end]

    def answer(self, example: int, context: str) -> dict:
        """{"answer", "score", "start", "end"}; the empty answer (start = end = 0) means no answer."""
        best = self.best.get(example)
        if best is None or (self.allow_no_answer and self.null_score_diff(example) > self.null_score_diff_threshold):
            return {"answer": "", "score": self.null.get(example, (0.0, 0.0))[1], "start": 0, "end": 0}
        return {"answer": context[best.start:best.end], "score": best.prob, "start": best.start, "end": best.end}


@dataclass
class QASettings(TaskSettings):
    section = "qa"
    doc_stride: int = setting(128, "token overlap of consecutive context windows", metavar="N", at_least=1)
    max_query_length: int = setting(64, "question tokens kept", metavar="N", at_least=1)
    max_answer_length: int = setting(30, "longest answer, in tokens", metavar="N", at_least=1)
    version_2: bool = setting(False, "set from the training data: unanswerable questions allowed (SQuAD v2)",
                              cli=False)
    null_score_diff_threshold: float = setting(0.0, "SQuAD v2: no answer when null score - best span score > "
                                                    "this", cli=False)


class QATask(Task):
    name = "qa"
    model_task = "question-answering"
    settings_class = QASettings
    pipelines = ("question-answering",)
    pipeline_arguments = ("question", "context", "align_to_words")
    description = "SQuAD v1.1/v2.0 JSON"
    reader = staticmethod(read_squad)

    def discover(self, examples, path) -> None:
        self.settings.version_2 = any(e.is_impossible for e in examples)
        return None

    def encode(self, tokenizer, examples, label2id, path="data", training: bool = False) -> list[dict]:
        s = self.settings
        return windows(tokenizer, examples, s.max_length, s.doc_stride, s.max_query_length, training)

    def evaluate(self, model, tokenizer, examples, features, batch_size: int = 32) -> dict[str, float]:
        """Exact match and F1; SQuAD v2 adds the best no-answer threshold on this data."""
        spans = self.spans(model, tokenizer, features, batch_size)
        metric, sweep = SquadMetrics(), SquadThresholdSweep() if self.settings.version_2 else None
        for k, e in enumerate(examples):
            golds = [a["text"] for a in e.answers]
            metric.update(spans.answer(k, e.context)["answer"], golds)
            if sweep is not None:
                sweep.update(spans.span_text(k, e.context), spans.null_score_diff(k), golds)
        if sweep is None:
            return metric.compute()
        return {**metric.compute(), "null_score_diff_threshold": self.settings.null_score_diff_threshold,
                **sweep.compute()}

    def spans(self, model, tokenizer, features: list[dict], batch_size: int, align_to_words: bool = False):
        """Best answer span per example; the windows of one example may land in different batches."""
        s = self.settings
        spans = SpanAggregator(s.max_answer_length, allow_no_answer=s.version_2,
                               null_score_diff_threshold=s.null_score_diff_threshold, align_to_words=align_to_words)
        for idx, _, out in forward_batches(model, features, batch_size, tokenizer.pad_token_id):
            starts, ends = out.start_logits.float().tolist(), out.end_logits.float().tolist()
            for row, i in enumerate(idx):
                f = features[i]
                n = len(f["input_ids"])
                spans.add(f["_example"], starts[row][:n], ends[row][:n], f["_offsets"], f["_words"])
        return spans

    def predict(self, model, tokenizer, records, batch_size: int = 32, where: str = "input", lines=None,
                align_to_words: bool = True) -> list[dict]:
        """{id, answer, score, start, end}: whole words unless `align_to_words` is False (then token
        spans, as evaluation scores them)."""
        examples = self.to_examples(records, where, lines)
        spans = self.spans(model, tokenizer, self.encode(tokenizer, examples, None, path=where), batch_size,
                           align_to_words)
        return [{"id": e.id, **spans.answer(k, e.context)} for k, e in enumerate(examples)]

    def to_examples(self, records, where: str, lines=None) -> list[QAExample]:
        out = []
        for k, r in enumerate(records, 1):
            n = lines[k - 1] if lines is not None else k
            r = record_object(r, where, n)
            if not isinstance(r.get("question"), str) or not isinstance(r.get("context"), str):
                raise DataError(f"{where}:{n}: needs string fields 'question' and 'context'")
            out.append(QAExample(str(r.get("id", k)), r["question"], r["context"]))
        return out

    def read_prediction_input(self, path: str) -> tuple[list, list[int]]:
        """SQuAD JSON files (the lines are record numbers); otherwise JSONL (or '-')."""
        if path != "-" and Path(path).suffix.lower() == ".json":
            examples = read_squad(path, require_answers=False)
            return ([{"id": e.id, "question": e.question, "context": e.context} for e in examples],
                    list(range(1, len(examples) + 1)))
        return super().read_prediction_input(path)

    def pipeline(self, name, model, tokenizer, inputs, batch_size: int, question=None, context=None,
                 align_to_words: bool = True):
        if question is not None:
            single = isinstance(question, str)
            qs = [question] if single else list(question)
            cs = [context] * len(qs) if isinstance(context, str) else list(context)
            records = [{"question": q, "context": c} for q, c in zip(qs, cs)]
        else:
            single = isinstance(inputs, dict)
            records = [inputs] if single else list(inputs)
        results = self.predict(model, tokenizer, records, batch_size, align_to_words=align_to_words)
        results = [{k: r[k] for k in ("score", "start", "end", "answer")} for r in results]
        return results[0] if single else results
