"""tasks/qa.py: SQuAD reading, context windows, answer spans, the SQuAD v2 no-answer threshold."""
import json
import math

import pytest
import torch

import finetune_helpers as h
from finetune_helpers import PerTokenModel
from plmkit import tasks
from plmkit.errors import ConfigError, DataError
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
    feats = Q.windows(tok, ex, max_length=32, doc_stride=8, training=True)
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
    assert offs0[-8:] == offs1[:8]


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


def test_qa_top_k_spans_are_distinct_context_spans_best_first():
    """The pipeline's top_k: the question ([CLS] q [SEP]) and padding ([SEP] [PAD]) score highest yet are never
    spans; a span two windows both find is listed once; the empty answer ranks by the no-answer rule."""
    offsets = [None, None, None, (0, 3), (4, 9), (10, 12), None, None]  # [CLS] q [SEP] 3 tokens [SEP] [PAD]
    s = [1.0, 9.0, 9.0, 2.0, 1.5, 0.0, 9.0, 9.0]
    e = [1.0, 9.0, 9.0, 0.0, 2.0, 1.0, 9.0, 9.0]
    agg = Q.SpanAggregator(top_k=10)
    agg.add(0, s, e, offsets)
    agg.add(0, s, e, offsets)  # an overlapping window finding the same spans
    ranked = agg.answers(0, "abc defgh ij", 10)
    assert [r["answer"] for r in ranked] == ["abc defgh", "defgh", "abc defgh ij", "defgh ij", "abc", "ij"]
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)
    assert ranked[0] == agg.answer(0, "abc defgh ij") and agg.answers(0, "abc defgh ij", 2) == ranked[:2]
    assert Q.ranked_spans(s, e, offsets, k=3)[0][0] == Q.best_spans(s, e, offsets)[0]
    v2 = Q.SpanAggregator(top_k=10, allow_no_answer=True)
    v2.add(0, s, [1.4, 9.0, 9.0, 0.0, 0.5, 1.0, 9.0, 9.0], offsets)  # null 2.4, spans 3, 2.5, 2.5, 2 ...
    assert [r["answer"] for r in v2.answers(0, "abc defgh ij", 5)] == ["abc defgh ij", "abc defgh", "defgh ij", "",
                                                                       "abc"]


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
    with pytest.raises(DataError, match=r"s.json:2:3: not valid JSON"):
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


def test_a_hugging_face_qa_model_is_squad_v2_where_the_data_is_or_a_threshold_says(tmp_path, tok):
    """A directory without plmkit_task.json (config.json does not say SQuAD v1.1 or v2.0) was always read
    as v1.1: evaluate on v2 data never answered "no answer" nor swept the threshold, and nothing turned it on."""
    from plmkit.models.bert import BertForQuestionAnswering
    hf = tmp_path / "hf"
    BertForQuestionAnswering.from_pretrained(h.tiny_model_dir()).save_pretrained(hf)
    tok.save_pretrained(hf)
    assert tasks.load_task(hf).settings.version_2 is None  # not known
    v2 = h.squad_file(tmp_path / "v2.json")
    sweep = {"null_score_diff_threshold", "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"}
    assert sweep <= set(tasks.evaluate_dir(hf, v2, device="cpu"))
    doc = json.loads(v2.read_text())
    for para in doc["data"][0]["paragraphs"]:
        para["qas"] = [q for q in para["qas"] if q["answers"]]
    (tmp_path / "v1.json").write_text(json.dumps(doc))
    assert not sweep & set(tasks.evaluate_dir(hf, tmp_path / "v1.json", device="cpu"))  # v1.1 data: v1.1
    records = [{"question": "Where is it?", "context": "The tower is in Paris."}] * 2
    assert all(r["answer"] for r in tasks.predict_dir(hf, records, device="cpu"))  # as Hugging Face's pipeline
    asked = tasks.predict_dir(hf, records, device="cpu", null_score_diff_threshold=-1e9)  # a threshold given
    assert [r["answer"] for r in asked] == ["", ""]
    QATask.of(version_2=False).save(hf)  # a task file that says v1.1 is what counts
    assert not sweep & set(tasks.evaluate_dir(hf, v2, device="cpu"))


# --- the values a record holds are checked where they enter (issue 14) ---------------------------
def squad_doc(*qas, context="The tower is in Paris."):
    return {"data": [{"paragraphs": [{"context": context, "qas": list(qas)}]}]}


PARIS = {"text": "Paris", "answer_start": 16}


@pytest.mark.parametrize("qa, message", [
    ({"id": "a", "question": "Where?", "answers": [{"text": "Paris", "answer_start": "16"}]},
     r"answers\[0\]: 'answer_start' must be an integer, got str '16'"),
    ({"id": "a", "question": "Where?", "answers": [{"text": "", "answer_start": 16}]}, r"answers\[0\]: 'text' is empty"),
    ({"id": "a", "question": "Where?", "answers": [PARIS], "is_impossible": True},
     r"is_impossible is true, yet it has 1 answer\(s\)"),
    ({"id": "a", "question": "Where?", "answers": [PARIS], "is_impossible": "no"}, r"'is_impossible' must be true or false"),
    ({"id": "a", "question": "Where?", "answers": {"text": ["Paris"]}}, r"'answers' must be a list, got dict"),
    ({"id": 1.5, "question": "Where?", "answers": [PARIS]}, r"'id' must be a string or an integer, got float 1.5"),
    ({"id": "a", "question": " ", "answers": [PARIS]}, r"'question' is empty"),
])
def test_squad_values_are_checked_by_type(tmp_path, qa, message):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(squad_doc(qa)))
    with pytest.raises(DataError, match=r"s.json: data\[0\].paragraphs\[0\].qas\[0\].*: " + message):
        Q.read_squad(path)


def test_squad_ids_are_unique_and_a_missing_one_is_generated(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(squad_doc({"id": "q1", "question": "Where?", "answers": [PARIS]},
                                         {"question": "Which city?", "answers": [PARIS]},
                                         {"id": "q1", "question": "What?", "answers": [PARIS]})))
    with pytest.raises(DataError, match=r"s.json: data\[0\].paragraphs\[0\].qas\[2\]: id 'q1' is also the id of "
                                        r"data\[0\].paragraphs\[0\].qas\[0\]"):
        Q.read_squad(path)
    path.write_text(json.dumps(squad_doc({"id": "q1", "question": "Where?", "answers": [PARIS]},
                                         {"question": "Which city?", "answers": [PARIS]})))
    assert [e.id for e in Q.read_squad(path)] == ["q1", "0-0-1"]


def test_qa_data_in_another_shape_says_what_qa_reads(tmp_path):
    lines = tmp_path / "s.jsonl"
    lines.write_text('{"question": "Where?", "context": "In Paris."}\n{"question": "Where?", "context": "In Rome."}\n')
    with pytest.raises(DataError, match=r"s.jsonl:2:1: not valid JSON \(Extra data.*QA data is one SQuAD JSON document.*not JSON lines"):
        Q.read_squad(lines)
    one = tmp_path / "one.json"
    one.write_text('{"question": "Where?", "context": "In Paris."}')
    with pytest.raises(DataError, match=r"one.json: not a SQuAD file: QA data is one SQuAD JSON document"):
        Q.read_squad(one)


def test_prediction_records_follow_the_training_rules(tok):
    task = QATask.of(max_length=64)
    for record, message in (({"question": "", "context": "In Paris."}, "'question' is empty"),
                            ({"question": "Where?", "context": ""}, "'context' is empty"),
                            ({"question": "Where?"}, "no 'context' field")):
        with pytest.raises(DataError, match=r"in.jsonl:5: " + message):
            tasks.predict_records(None, tok, task, [record], where="in.jsonl", lines=[5])
    twice = [{"id": "a", "question": "Where?", "context": "In Paris."}] * 2
    with pytest.raises(DataError, match=r"in.jsonl:4: id 'a' is also the id of in.jsonl:2"):
        task.to_examples(twice, "in.jsonl", [2, 4])
    assert [e.id for e in task.to_examples([{"question": "Q?", "context": "C."}] * 2, "inputs")] == ["1", "2"]


def test_a_stream_numbers_its_records_and_keeps_their_ids_unique_across_calls():
    """`plmkit predict --input -` predicts each line alone: every record without an id was "1", and a
    repeated id passed."""
    record = {"question": "Q?", "context": "C."}
    stream = QATask().for_stream()
    assert [stream.to_examples([record], "<stdin>", [n])[0].id for n in (1, 3, 4)] == ["1", "2", "3"]
    stream.to_examples([{**record, "id": "q"}], "<stdin>", [5])
    with pytest.raises(DataError, match=r"<stdin>:7: id 'q' is also the id of <stdin>:5; each must be unique"):
        stream.to_examples([{**record, "id": "q"}], "<stdin>", [7])
    task = QATask()  # outside a stream each call is a list of its own
    assert [task.to_examples([record], "inputs")[0].id for _ in range(2)] == ["1", "1"]
    assert task.for_stream() is not task and task.for_stream().to_examples([record], "inputs")[0].id == "1"


def test_window_settings_that_leave_no_room_are_refused_with_the_numbers():
    """The old defaults (max_length 128, doc_stride 128) moved the windows one token at a time."""
    with pytest.raises(ConfigError, match=r"doc_stride \(--doc-stride\)=128 must be below 61, the context tokens of "
                                          r"a window after the longest question \(max_length 128 - max_query_length 64"):
        QATask.of(max_length=128, doc_stride=128)
    with pytest.raises(ConfigError, match=r"max_query_length \(--max-query-length\)=100 leaves no room for the context "
                                          r"in max_length=64 windows.*use at most 60"):
        QATask.of(max_length=64, max_query_length=100)
    defaults = QATask().settings
    assert (defaults.max_length, defaults.stride_tokens(), defaults.query_tokens()) == (128, 32, 64)
    assert (QATask.of(max_length=48).settings.stride_tokens(), QATask.of(max_length=48).settings.query_tokens()) == (12, 24)


def test_a_long_context_gets_a_few_windows_with_the_defaults(tok):
    context = "The tower is in Paris and it is tall. " * 70
    example = Q.QAExample("q", "Where is the tower?", context)
    n_tokens = len(tok.backend_tokenizer.encode(context, add_special_tokens=False).ids)
    features = QATask().encode(tok, [example], None)
    room = 128 - len(tok.tokenize(example.question)) - 3
    assert n_tokens > 500 and len(features) == math.ceil((n_tokens - room) / (room - 32)) + 1  # not one per token


def test_task_files_whose_windows_never_moved_are_read_with_the_defaults(tmp_path, caplog):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / tasks.TASK_FILE).write_text(json.dumps({"task": "qa", "max_length": 128, "doc_stride": 128,
                                                        "max_query_length": 64, "version_2": True}))
    task = tasks.load_task(tmp_path)
    assert (task.settings.stride_tokens(), task.settings.query_tokens(), task.settings.version_2) == (32, 64, True)
    assert "doc_stride (--doc-stride)=128 must be below 61" in caplog.text and "default doc_stride=32" in caplog.text
    (tmp_path / tasks.TASK_FILE).write_text(json.dumps({"task": "qa", "max_length": "long", "doc_stride": 128}))
    with pytest.raises(ConfigError, match="max_length"):  # other errors are not passed over
        tasks.load_task(tmp_path)


def test_version_2_given_true_is_kept_when_the_training_data_has_no_unanswerable_question(tmp_path):
    squad = h.squad_file(tmp_path / "squad.json")
    answerable = [q for q in QATask().read(squad) if q.answers]
    given = QATask.of(version_2=True)
    given.discover(answerable, squad)
    assert given.settings.version_2 is True
    found = QATask()
    found.discover(answerable, squad)
    assert found.settings.version_2 is False
