"""Extractive question answering: SQuAD v1.1 / v2.0 JSON, answers as character spans of the context.

Long contexts are cut into windows of `max_length` tokens ([CLS] question [SEP] context-window
[SEP]); consecutive windows overlap by `doc_stride` tokens (Hugging Face's meaning of doc_stride;
a quarter of max_length by default), which must leave each window new context tokens.
Each window keeps the character offsets of its context tokens, so a predicted token span maps
straight back to a character span of the original context. SQuAD v2 unanswerable questions (and
windows that do not hold the answer) point at [CLS].
"""
from __future__ import annotations

import math
import logging
from dataclasses import dataclass, field as dataclass_field, replace
from pathlib import Path

from plmkit.errors import ConfigError, DataError
from plmkit.evaluation import SquadMetrics, SquadThresholdSweep
from plmkit.tasks.base import Task, TaskSettings
from plmkit.tasks.common import default_stride, forward_batches, pipeline_records, window_starts
from plmkit.tasks.fields import BOOLEAN, ID, INTEGER, LIST, TEXT, check_unique, each_record, field
from plmkit.utils.constants import IGNORE_INDEX
from plmkit.utils.settings import is_int, setting
from plmkit.utils.text import check_file, describe, parse_json, read_text

log = logging.getLogger("plmkit")


@dataclass
class QAExample:
    id: str | int
    question: str
    context: str
    answers: list[dict] = dataclass_field(default_factory=list)  # {"text", "answer_start"}
    is_impossible: bool = False


def has_unanswerable(examples: list[QAExample]) -> bool:
    """Whether `examples` hold an unanswerable question (SQuAD v2 data)."""
    return any(e.is_impossible or not e.answers for e in examples)


def read_squad(path: str | Path, require_answers: bool = True) -> list[QAExample]:
    """Questions of a SQuAD v1.1 / v2.0 JSON file. A question without an id gets
    ``"<article>-<paragraph>-<question>"`` (numbers from 0); ids must be unique."""
    path = check_file(path)
    text = read_text(path)
    shape = ("QA data is one SQuAD JSON document, {\"data\": [{\"paragraphs\": [{\"context\", \"qas\": "
             "[{\"id\", \"question\", \"answers\"}]}]}]}")
    try:
        doc = parse_json(text, path)
    except DataError as err:
        raise DataError(f"{err}; {shape}, not JSON lines" if "(Extra data)" in str(err) else str(err)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise DataError(f"{path}: not a SQuAD file: {shape}")
    examples, places = [], []
    for a, article in enumerate(doc["data"]):
        _need_object(article, f"{path}: data[{a}]")
        for p, para in enumerate(field(article, "paragraphs", f"{path}: data[{a}]", LIST)):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            _need_object(para, where)
            context = field(para, "context", where, TEXT)
            for q, qa in enumerate(field(para, "qas", where, LIST)):
                _need_object(qa, f"{where}.qas[{q}]")
                qid = field(qa, "id", f"{where}.qas[{q}]", ID, required=False)
                qid = f"{a}-{p}-{q}" if qid is None else qid
                qwhere = f"{where}.qas[{q}] (id {qid!r})"
                question = field(qa, "question", qwhere, TEXT)
                impossible = field(qa, "is_impossible", qwhere, BOOLEAN, required=False) or False
                answers = field(qa, "answers", qwhere, LIST, required=False) or []
                for n, ans in enumerate(answers):
                    _check_answer(ans, context, f"{qwhere}: answers[{n}]")
                if impossible and answers:
                    raise DataError(f"{qwhere}: is_impossible is true, yet it has {len(answers)} answer(s); "
                                    "an unanswerable question has \"answers\": []")
                if require_answers and not answers and not impossible:
                    raise DataError(f"{qwhere}: no answers and not is_impossible")
                examples.append(QAExample(qid, question, context, answers, impossible))
                places.append(f"data[{a}].paragraphs[{p}].qas[{q}]")
    if not examples:
        raise DataError(f"{path}: no questions")
    check_unique(((e.id, place) for e, place in zip(examples, places)), "id", f"{path}: ")
    return examples


def _check_answer(answer, context: str, where: str) -> None:
    """An answer: a non-empty 'text' found at the integer 'answer_start' of the context."""
    _need_object(answer, where)
    text = field(answer, "text", where, TEXT)
    start = field(answer, "answer_start", where, INTEGER)
    if context[start:start + len(text)] != text or start < 0:
        raise DataError(f"{where}: answer {text!r} is not at answer_start={start} of the context")


def _need_object(value, where: str) -> None:
    if not isinstance(value, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(value).__name__} {value!r:.40}")


def query_limit(max_length: int) -> int:
    """Question tokens kept when max_query_length is not given: 64, at most half the window."""
    return min(64, max_length // 2)


def windows(tokenizer, examples: list[QAExample], max_length: int = 384, doc_stride: int | None = None,
            max_query_length: int | None = None, training: bool = False) -> list[dict]:
    """One feature per window. `_example` indexes `examples`; `_offsets` holds (start, end) character
    offsets into the context for context tokens and None elsewhere, `_words` the same for the whole
    word each token belongs to. With `training`, the first answer gives `start_positions` /
    `end_positions` (0 = [CLS] when the window lacks it; -100, ignored, for a question read without
    answers that is not marked impossible: distillation's transfer data). `doc_stride` and `max_query_length` default
    to `default_stride` and `query_limit`; a doc_stride that leaves a window no new context token is
    a ConfigError (`QASettings` refuses one for the longest question)."""
    doc_stride = default_stride(max_length) if doc_stride is None else doc_stride
    max_query_length = query_limit(max_length) if max_query_length is None else max_query_length
    backend = tokenizer.backend_tokenizer
    questions = backend.encode_batch([e.question for e in examples], add_special_tokens=False)
    contexts = backend.encode_batch([e.context for e in examples], add_special_tokens=False)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    features = []
    for i, (e, q, c) in enumerate(zip(examples, questions, contexts)):
        q_ids = q.ids[:max_query_length]
        room = max_length - len(q_ids) - 3
        if room < 1 or not 0 <= doc_stride < room:
            raise ConfigError(f"doc_stride={doc_stride} must be below the {max(room, 0)} context tokens of a "
                              f"max_length={max_length} window after a {len(q_ids)}-token question")
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
                start_pos = end_pos = 0 if e.answers or e.is_impossible else IGNORE_INDEX
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
    ranked, null = ranked_spans(start_logits, end_logits, offsets, max_answer_length, n_best, words)
    return (ranked[0] if ranked else None), null


def ranked_spans(start_logits: list[float], end_logits: list[float], offsets: list, max_answer_length: int = 30,
                 n_best: int = 20, words: list | None = None, k: int = 1) -> tuple[list[Candidate], float]:
    """The `k` best distinct context spans of one window, best first, among those of its max(n_best, k) best
    start and end tokens (a span that several token spans widen to counts once), and the window's null score."""
    bounds = words or offsets
    ctx = [t for t, o in enumerate(offsets) if o is not None]
    log_z_s = _logsumexp([start_logits[0]] + [start_logits[t] for t in ctx])
    log_z_e = _logsumexp([end_logits[0]] + [end_logits[t] for t in ctx])
    n_best = max(n_best, k)
    top_s = sorted(ctx, key=lambda t: -start_logits[t])[:n_best]
    top_e = sorted(ctx, key=lambda t: -end_logits[t])[:n_best]
    pairs = [(start_logits[s] + end_logits[e], s, e) for s in top_s for e in top_e
             if s <= e and e - s + 1 <= max_answer_length]
    pairs.sort(key=lambda p: -p[0])  # (stable: of equal scores, the first found, as before)
    out, seen = [], set()
    for score, s, e in pairs:
        span = (bounds[s][0], bounds[e][1])
        if span not in seen:
            seen.add(span)
            out.append(Candidate(score, math.exp(score - log_z_s - log_z_e), *span))
            if len(out) == k:
                break
    return out, start_logits[0] + end_logits[0]


def _logsumexp(values: list[float]) -> float:
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


class SpanAggregator:
    """Keeps, per example, the best span over its windows and the lowest null score (streamed).

    With `allow_no_answer` (SQuAD v2), an example gets the empty answer when its null score minus
    its best span score exceeds `null_score_diff_threshold` (Hugging Face's rule and name). With
    `top_k` > 1 it keeps the `top_k` best distinct spans over the windows too (`answers`)."""

    def __init__(self, max_answer_length: int = 30, allow_no_answer: bool = False,
                 null_score_diff_threshold: float = 0.0, align_to_words: bool = False, top_k: int = 1):
        self.max_answer_length = max_answer_length
        self.top_k = top_k
        self.top: dict[int, list[Candidate]] = {}  # example -> its best spans, best first (top_k > 1)
        self.align_to_words = align_to_words  # answers of whole words (HF pipeline); else token spans
        self.allow_no_answer = allow_no_answer
        self.null_score_diff_threshold = null_score_diff_threshold
        self.best: dict[int, Candidate] = {}
        self.null: dict[int, tuple[float, float]] = {}  # example -> (null score, null prob)

    def add(self, example: int, start_logits: list[float], end_logits: list[float], offsets: list,
            words: list | None = None) -> None:
        ranked, null = ranked_spans(start_logits, end_logits, offsets, self.max_answer_length,
                                    words=words if self.align_to_words else None, k=self.top_k)
        cand = ranked[0] if ranked else None
        if self.top_k > 1:  # (of equal scores, the earlier window's first, as `best` keeps it)
            kept: dict[tuple[int, int], Candidate] = {}
            for c in sorted(self.top.get(example, []) + ranked, key=lambda c: -c.score):
                kept.setdefault((c.start, c.end), c)  # a span two windows found: its best score
            self.top[example] = list(kept.values())[:self.top_k]
        z = _logsumexp([start_logits[0]] + [start_logits[k] for k, o in enumerate(offsets) if o is not None]) \
            + _logsumexp([end_logits[0]] + [end_logits[k] for k, o in enumerate(offsets) if o is not None])
        self._keep(example, cand, (null, math.exp(null - z)))

    def _keep(self, example: int, cand: Candidate | None, null: tuple[float, float]) -> None:
        if cand is not None and (example not in self.best or cand.score > self.best[example].score):
            self.best[example] = cand
        if example not in self.null or null[0] < self.null[example][0]:
            self.null[example] = null

    def entries(self) -> list[tuple[int, tuple[Candidate | None, tuple[float, float]]]]:
        """(example, (best span, (null score, null prob))) of every example seen: what `merge` takes."""
        return [(k, (self.best.get(k), null)) for k, null in self.null.items()]

    def merge(self, entries) -> None:
        """Add what other aggregators found (`entries()` of the windows they saw)."""
        for example, (cand, null) in entries:
            self._keep(example, cand, null)

    def routed(self, part) -> "SpanAggregator":
        """An aggregator of the examples this process scores (`part.owns`: an EvalShard), holding what the
        windows of every process found for them (`part.route`)."""
        mine = SpanAggregator(self.max_answer_length, self.allow_no_answer, self.null_score_diff_threshold,
                              self.align_to_words)
        mine.merge(part.route(self.entries()))
        return mine

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

    def answers(self, example: int, context: str, k: int) -> list[dict]:
        """The `k` best answers, ranked by span score (start + end logit), as `answer` picks the first: the
        empty answer ranks where `answer`'s no-answer rule puts it (null score - threshold), or alone when no
        window has a valid span; `answer(example, context)` is `answers(example, context, 1)[0]`."""
        spans = self.top.get(example) or ([self.best[example]] if example in self.best else [])
        out = [{"answer": context[c.start:c.end], "score": c.prob, "start": c.start, "end": c.end} for c in spans]
        if self.allow_no_answer or not spans:
            bar = self.null.get(example, (0.0, 0.0))[0] - self.null_score_diff_threshold
            rank = next((n for n, c in enumerate(spans) if c.score < bar), len(spans))
            out.insert(rank, {"answer": "", "score": self.null.get(example, (0.0, 0.0))[1], "start": 0, "end": 0})
        return out[:k]


@dataclass
class QASettings(TaskSettings):
    """A window is [CLS] question [SEP] context [SEP]: the context tokens it holds after the longest
    question (max_length - max_query_length - 3) must be more than doc_stride, so that consecutive
    windows move on."""

    section = "qa"
    doc_stride: int | None = setting(None, "token overlap of consecutive context windows; off: max length / 4",
                                     metavar="N", at_least=0)
    max_query_length: int | None = setting(None, "question tokens kept; off: 64, at most half the max length",
                                           metavar="N", at_least=1)
    max_answer_length: int = setting(30, "longest answer, in tokens", metavar="N", at_least=1)
    version_2: bool | None = setting(False, "unanswerable questions allowed (SQuAD v2): true given, or when the "
                                            "training data has any; None, not known (a Hugging Face model without "
                                            "plmkit_task.json): evaluation decides it by its data, and a no-answer "
                                            "threshold given to evaluate or predict turns it on", cli=False)
    null_score_diff_threshold: float = setting(0.0, "SQuAD v2: no answer when null score - best span score > "
                                                    "this", cli=False)

    def query_tokens(self) -> int:
        return self.max_query_length if self.max_query_length is not None else query_limit(self.max_length)

    def stride_tokens(self) -> int:
        return self.doc_stride if self.doc_stride is not None else default_stride(self.max_length)

    def validate(self) -> None:
        length = self.max_length
        self.need(length is not None, f"{self._named('max_length')} is needed: QA reads windows of that many tokens")
        query, stride = self.query_tokens(), self.stride_tokens()
        room = length - query - 3
        self.need(room >= 1, f"{self._named('max_query_length')}={query} leaves no room for the context in "
                             f"max_length={length} windows ([CLS] question [SEP] context [SEP]); "
                             f"use at most {length - 4}")
        self.need(stride < room, f"{self._named('doc_stride')}={stride} must be below {room}, the context tokens of a "
                                 f"window after the longest question (max_length {length} - max_query_length {query} "
                                 "- 3), so that consecutive windows move on")


class QATask(Task):
    name = "qa"
    model_task = "question-answering"
    settings_class = QASettings
    pipelines = ("question-answering",)
    pipeline_arguments = ("question", "context", "align_to_words", "top_k", "handle_impossible_answer",
                          "max_answer_len")
    description = "SQuAD v1.1/v2.0 JSON"
    reader = staticmethod(read_squad)
    _seen: dict | None = None  # a stream's ids so far, one per record (`for_stream`); None: each call alone

    def shared_text(self, example: QAExample) -> str:
        return example.context  # (the questions of one paragraph are held out together)

    def discover(self, examples, path) -> None:
        """SQuAD v2 when the run says so (version_2: true) or the training data holds unanswerable questions."""
        self.settings.version_2 = bool(self.settings.version_2) or has_unanswerable(examples)
        return None

    @classmethod
    def from_config(cls, config) -> "QATask":
        """A Hugging Face QA model's config does not say whether it learnt SQuAD v2's "no answer": version_2
        is None (`decided_by` the evaluation data, or turned on by a threshold given at inference)."""
        return cls.of(version_2=None)

    def decided_by(self, examples: list[QAExample]) -> "QATask":
        """This task, or where version_2 is not known (None) a copy with it decided as fine-tuning decides
        it: by whether `examples` hold unanswerable questions."""
        if self.settings.version_2 is not None:
            return self
        return type(self)(replace(self.settings, version_2=has_unanswerable(examples)))

    def soft_targets(self) -> str:
        return "span"

    def encode(self, tokenizer, examples, label2id, path="data", training: bool = False) -> list[dict]:
        s = self.settings
        return windows(tokenizer, examples, s.max_length, s.stride_tokens(), s.query_tokens(), training)

    sharded_evaluation = True

    def evaluate(self, model, tokenizer, examples, features, batch_size: int = 32, part=None) -> dict[str, float]:
        """Exact match and F1; SQuAD v2 adds the best no-answer threshold on this data. Shared by several
        processes (`part`), each reads its rows of the windows; the spans found for a question are
        brought to the one process that scores it (`part.route`), and the scores summed (the v2
        threshold sweep needs every question's four numbers: gathered to rank 0). A model whose version_2
        is not known is evaluated as the data is: SQuAD v2 when it holds unanswerable questions."""
        if self.settings.version_2 is None:
            return self.decided_by(examples).evaluate(model, tokenizer, examples, features, batch_size, part)
        spans = self.spans(model, tokenizer, features, batch_size, part=part)
        scored = range(len(examples))
        if part is not None:
            spans = spans.routed(part)
            scored = [k for k in scored if part.owns(k)]
        metric, sweep = SquadMetrics(), SquadThresholdSweep() if self.settings.version_2 else None
        for k in scored:
            e = examples[k]
            golds = [a["text"] for a in e.answers]
            metric.update(spans.answer(k, e.context)["answer"], golds)
            if sweep is not None:
                sweep.update(spans.span_text(k, e.context), spans.null_score_diff(k), golds)
        if part is not None:
            for m in (metric, sweep):
                if m is not None:
                    m.reduce(part)
        if sweep is None:
            return metric.compute()
        return {**metric.compute(), "null_score_diff_threshold": self.settings.null_score_diff_threshold,
                **sweep.compute()}

    def spans(self, model, tokenizer, features: list[dict], batch_size: int, align_to_words: bool = False,
              part=None, top_k: int = 1, allow_no_answer: bool | None = None,
              max_answer_length: int | None = None) -> "SpanAggregator":
        """Best answer span per example (and with `top_k` the best few); the windows of one example may land in
        different batches (and with `part`, on different processes: each process sees its rows only).
        `allow_no_answer` and `max_answer_length` replace the settings' version_2 and max_answer_length."""
        s = self.settings
        spans = SpanAggregator(s.max_answer_length if max_answer_length is None else max_answer_length,
                               allow_no_answer=bool(s.version_2) if allow_no_answer is None else allow_no_answer,
                               null_score_diff_threshold=s.null_score_diff_threshold, align_to_words=align_to_words,
                               top_k=top_k)
        for idx, _, out in forward_batches(model, features, batch_size, tokenizer.pad_token_id, part):
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

    def for_stream(self) -> "QATask":
        stream = type(self)(self.settings)
        stream._seen = {}
        return stream

    def to_examples(self, records, where: str, lines=None) -> list[QAExample]:
        """Non-empty 'question' and 'context', as in training, and an optional unique 'id' (a record
        without one gets its number in the input, from 1, as a string). In a stream (`for_stream`) the
        numbers and the uniqueness run across all its calls."""
        seen = {} if self._seen is None else self._seen
        out, places = [], []
        for k, (n, r) in enumerate(each_record(records, where, lines), len(seen) + 1):
            places.append(f"{where}:{n}")
            qid = field(r, "id", places[-1], ID, required=False)
            out.append(QAExample(str(k) if qid is None else qid, field(r, "question", places[-1], TEXT),
                                 field(r, "context", places[-1], TEXT)))
        check_unique(((e.id, place) for e, place in zip(out, places)), "id", seen=seen)
        return out

    def read_prediction_input(self, path: str) -> tuple[list, list[int]]:
        """SQuAD JSON files (the lines are record numbers); otherwise JSONL (or '-')."""
        if path != "-" and Path(path).suffix.lower() == ".json":
            examples = read_squad(path, require_answers=False)
            return ([{"id": e.id, "question": e.question, "context": e.context} for e in examples],
                    list(range(1, len(examples) + 1)))
        return super().read_prediction_input(path)

    def pipeline(self, name, model, tokenizer, inputs, batch_size: int, question=None, context=None,
                 align_to_words: bool = True, top_k: int | None = None, handle_impossible_answer: bool | None = None,
                 max_answer_len: int | None = None):
        """Records ({"question", "context"} dicts), or question= and context=: strings or lists of
        them, a string going with every item of the other list (as in Hugging Face). Per question its
        {"score", "start", "end", "answer"}; with `top_k` > 1 a list of its `top_k` best distinct answers
        (fewer when the context has fewer), best first. `handle_impossible_answer`: whether the empty answer
        (no answer) may be given (None: as the model was trained, SQuAD v2 or not); `max_answer_len`: the
        longest answer in tokens (None: the model's max_answer_length)."""
        for key, value in (("align_to_words", align_to_words), ("handle_impossible_answer", handle_impossible_answer)):
            if not isinstance(value, bool) and (value is not None or key == "align_to_words"):
                raise ConfigError(f"{name} pipeline: {key} must be True or False, got {describe(value)}")
        for key, value in (("top_k", top_k), ("max_answer_len", max_answer_len)):
            if value is not None and not (is_int(value) and value >= 1):
                raise ConfigError(f"{name} pipeline: {key} must be a positive integer, got {describe(value)}")
        if question is None and context is None:
            records, single = pipeline_records(inputs, name)
        elif inputs is not None:
            raise ConfigError(f"{name} pipeline: give records or question= and context=, not both")
        else:
            records, single = _question_records(question, context, name)
        examples = self.to_examples(records, "inputs")
        spans = self.spans(model, tokenizer, self.encode(tokenizer, examples, None, path="inputs"), batch_size,
                           align_to_words, top_k=top_k or 1, allow_no_answer=handle_impossible_answer,
                           max_answer_length=max_answer_len)
        if top_k is None or top_k == 1:  # (HF: top_k=1 is the answer's dict)
            results = [spans.answer(k, e.context) for k, e in enumerate(examples)]
        else:
            results = [spans.answers(k, e.context, top_k) for k, e in enumerate(examples)]
        results = [_pipeline_order(r) for r in results]
        return results[0] if single else results

    @classmethod
    def from_file_values(cls, values, source: str) -> "QATask":
        """Files written before the windows were checked may hold a doc_stride (their default 128)
        that leaves no room: their windows moved one token at a time. Such a file is read with the
        defaults for the window settings, and says so."""
        try:
            return super().from_file_values(values, source)
        except ConfigError as err:
            window = ("doc_stride", "max_query_length")
            try:
                task = super().from_file_values({k: v for k, v in values.items() if k not in window}, source)
            except ConfigError:
                raise err from None
            log.warning("plmkit: %s; reading it with the default doc_stride=%d and max_query_length=%d instead",
                        err, task.settings.stride_tokens(), task.settings.query_tokens())
            return task


def _pipeline_order(result):
    """HF's key order of an answer dict (or of each of a list of them)."""
    if isinstance(result, list):
        return [_pipeline_order(r) for r in result]
    return {k: result[k] for k in ("score", "start", "end", "answer")}


def _question_records(question, context, pipeline: str) -> tuple[list[dict], bool]:
    """{"question", "context"} records of a pipeline's question= and context= (see `QATask.pipeline`)."""
    given = {"question": question, "context": context}
    for key, value in given.items():
        if not isinstance(value, (str, list, tuple)):
            raise ConfigError(f"{pipeline} pipeline: {key}= must be a string or a list of strings, "
                              f"got {describe(value)}")
    lists = {k: len(v) for k, v in given.items() if not isinstance(v, str)}
    if len(set(lists.values())) > 1:
        raise ConfigError(f"{pipeline} pipeline: {lists['question']} questions but {lists['context']} contexts; "
                          "give lists of the same length (or one string for all)")
    n = next(iter(lists.values()), 1)
    spread = {k: [v] * n if isinstance(v, str) else list(v) for k, v in given.items()}
    return [{"question": q, "context": c} for q, c in zip(spread["question"], spread["context"])], not lists
