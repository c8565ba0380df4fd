"""tasks/qa.py: SQuAD reading, context windows, answer spans, the SQuAD v2 no-answer threshold."""
import json

import pytest
import torch

import finetune_helpers as h
from finetune_helpers import PerTokenModel
from plmkit import tasks
from plmkit.errors import DataError
from plmkit.recipes.finetune import finetune
from plmkit.tasks import qa as Q
from plmkit.tasks.qa import QATask
from plmkit.tokenization import Tokenizer


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_pretrained(h.tiny_model_dir())


# --- QA ---------------------------------------------------------------------------------------
def test_qa_windows_round_trip_answers(tmp_path, tok):
    ex = Q.read_squad(h.squad_file(tmp_path / "s.json"))
    assert ex[3].is_impossible and not ex[3].answers
    feats = Q.windows(tok, ex, max_length=32, doc_stride=16, training=True)
    per_example = {}
    for f in feats:
        per_example.setdefault(f["_example"], []).append(f)
        assert len(f["input_ids"]) <= 32
    assert max(len(v) for v in per_example.values()) > 2  # long contexts really are split
    for i, e in enumerate(ex):
        hits = [f for f in per_example[i] if f["start_positions"] > 0]
        if e.is_impossible:
            assert not hits
            continue
        assert hits, e.id
        for f in hits:  # the labelled token span maps back to exactly the answer's characters
            start, end = f["_offsets"][f["start_positions"]][0], f["_offsets"][f["end_positions"]][1]
            assert e.context[start:end] == e.answers[0]["text"]
    # overlapping windows: consecutive windows share doc_stride context tokens
    first = [f for f in per_example[0]]
    offs0 = [o for o in first[0]["_offsets"] if o is not None]
    offs1 = [o for o in first[1]["_offsets"] if o is not None]
    assert offs0[-16:] == offs1[:16]


def test_qa_best_span_and_no_answer():
    offsets = [None, None, (0, 3), (4, 9), (10, 12), None]
    s = [5.0, 0, 1.0, 6.0, 0.5, 0]
    e = [5.0, 0, 0.0, 1.0, 6.0, 0]
    agg = Q.SpanAggregator(max_answer_length=5, allow_no_answer=True)
    agg.add(0, s, e, offsets)
    assert agg.answer(0, "abc defgh ij")["answer"] == "defgh ij"
    s[0] = e[0] = 9.0
    agg = Q.SpanAggregator(allow_no_answer=True)
    agg.add(0, s, e, offsets)
    assert agg.answer(0, "abc defgh ij")["answer"] == ""
    agg = Q.SpanAggregator(max_answer_length=1)
    agg.add(0, s, e, offsets)
    assert agg.answer(0, "abc defgh ij")["answer"] in ("defgh", "ij")


def test_qa_answers_widen_to_whole_words_when_asked(tok):
    context = "the unbelievable tower"
    (f,) = Q.windows(tok, [Q.QAExample("q", "what?", context)], max_length=64)
    pieces = [k for k, o in enumerate(f["_offsets"]) if o is not None and 4 <= o[0] < 16]
    assert len(pieces) > 1  # "unbelievable" is split into word pieces
    assert all(f["_words"][k] == (4, 16) for k in pieces)
    s, e = [0.0] * len(f["input_ids"]), [0.0] * len(f["input_ids"])
    s[pieces[1]] = e[pieces[1]] = 9.0  # the model points inside the word
    for align, answer in ((False, context[slice(*f["_offsets"][pieces[1]])]), (True, "unbelievable")):
        agg = Q.SpanAggregator(align_to_words=align)
        agg.add(0, s, e, f["_offsets"], f["_words"])
        assert agg.answer(0, context)["answer"] == answer


def test_squad_reader_errors(tmp_path):
    p = tmp_path / "s.json"
    p.write_text(json.dumps({"data": [{"paragraphs": [{"context": "abc", "qas": [
        {"id": "x", "question": "q?", "answers": [{"text": "zz", "answer_start": 0}]}]}]}]}))
    with pytest.raises(DataError, match=r"data\[0\].paragraphs\[0\].qas\[0\] \(id 'x'\)"):
        Q.read_squad(p)
    p.write_text('{"data": [\n  oops]}')
    with pytest.raises(DataError, match=r"s.json:2: not valid JSON"):
        Q.read_squad(p)
    p.write_bytes(b'{"data": [{"paragraphs": [{"context": "caf\xe9", "qas": []}]}]}')
    with pytest.raises(DataError, match=r"s.json:1: not UTF-8"):
        Q.read_squad(p)
    for doc, where in (({"data": ["oops"]}, r"data\[0\]"),
                       ({"data": [{"paragraphs": ["oops"]}]}, r"data\[0\].paragraphs\[0\]"),
                       ({"data": [{"paragraphs": [{"context": "abc", "qas": ["oops"]}]}]}, r"qas\[0\]"),
                       ({"data": [{"paragraphs": [{"context": "abc", "qas": [
                           {"id": "x", "question": "q?", "answers": ["abc"]}]}]}]}, r"answers\[0\]")):
        p.write_text(json.dumps(doc))
        with pytest.raises(DataError, match=where + ": expected a JSON object, got str"):
            Q.read_squad(p)


def test_squad_v2_null_score_diff_threshold(tok):
    # one-word contexts: null score 0 ([CLS] logits 0), span score 2 * logit(word), so diff = -2 * logit(word)
    rows = [("q1", "film", 1.0, True), ("q2", "movie", -0.5, True),  # diffs -2 and 1: both answerable
            ("q3", "and", -1.5, False), ("q4", "the", -1.0, False)]  # diffs 3 and 2: unanswerable
    table = torch.zeros(len(tok), 1)
    examples = []
    for qid, word, logit, answerable in rows:
        table[tok.convert_tokens_to_ids(word), 0] = logit
        examples.append(Q.QAExample(qid, "is ?", word, [{"text": word, "answer_start": 0}] if answerable else [],
                                          not answerable))
    model = PerTokenModel(table, qa=True)
    spec = QATask.of(max_length=32, version_2=True)
    features = spec.encode(tok, examples, None)
    metrics = spec.evaluate(model, tok, examples, features)
    assert metrics["exact_match"] == 75 and metrics["null_score_diff_threshold"] == 0  # q2 wrongly unanswered
    assert metrics["best_exact"] == 100 and metrics["best_exact_thresh"] == 1.0
    assert metrics["best_f1"] == 100 and metrics["best_f1_thresh"] == 1.0
    tuned = QATask.of(max_length=32, version_2=True, null_score_diff_threshold=1.0)
    assert tuned.evaluate(model, tok, examples, features)["exact_match"] == 100
    records = [{"id": e.id, "question": e.question, "context": e.context} for e in examples]
    assert [r["answer"] for r in tasks.predict_records(model, tok, tuned, records)] == ["film", "movie", "", ""]
    assert [r["answer"] for r in tasks.predict_records(model, tok, spec, records)] == ["film", "", "", ""]


def test_qa_answers_are_exact_context_spans(tmp_path):
    data = h.squad_file(tmp_path / "squad.json")
    result = finetune("qa", h.tiny_model_dir(), data, tmp_path / "out", data,
                            **h.quick(epochs=2, batch_size=4, max_length=48, doc_stride=16, lr=3e-3))
    assert {"eval_exact_match", "eval_f1", "eval_no_ans_f1"} <= set(result.eval_metrics)
    spec = json.loads((tmp_path / "out" / "model" / "plmkit_task.json").read_text())
    assert spec["version_2"] is True and spec["max_length"] == 48
    para = h.SQUAD["data"][0]["paragraphs"][0]
    records = [{"id": q["id"], "question": q["question"], "context": para["context"]} for q in para["qas"]]
    for r in tasks.predict_dir(tmp_path / "out" / "model", records, device="cpu"):
        assert r["answer"] == para["context"][r["start"]:r["end"]]
        assert 0 <= r["score"] <= 1
