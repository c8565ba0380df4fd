"""tasks/classification.py: readers, encoding, and fine-tuning on small real data (en sentiment)."""
import json

import pytest
import torch

import finetune_helpers as h
from plmkit import tasks
from plmkit.data.collate import pad_collate
from plmkit.errors import ConfigError, DataError
from plmkit.recipes.finetune import finetune
from plmkit.tasks import classification as C
from plmkit.tokenization import Tokenizer


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_pretrained(h.tiny_model_dir())


# --- classification ---------------------------------------------------------------------------
def test_classification_formats_and_kinds(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"text": "a", "label": 0}\n\n{"text": "b", "text_pair": "c", "label": 1}\n')
    ex = C.read_classification(p)
    assert [e.label for e in ex] == ["0", "1"] and ex[1].text_pair == "c" and ex[1].line == 3
    multi = tmp_path / "m.jsonl"
    multi.write_text('{"text": "a", "label": ["x", "y"]}\n{"text": "b", "label": ["y"]}\n')
    assert C.problem_type_of(C.read_classification(multi)) == C.MULTI
    reg = tmp_path / "r.tsv"
    reg.write_text("text\tlabel\nfine\t0.5\nbad\t-1.25\n")
    ex = C.read_classification(reg)
    assert C.problem_type_of(ex) == C.REGRESSION and ex[1].label == -1.25 and ex[1].line == 3
    csv = tmp_path / "c.csv"
    csv.write_text('text,label\n"hello, world",positive\nbye,negative\n')
    ex = C.read_classification(csv)
    assert ex[0].text == "hello, world" and C.label_names(ex) == ["negative", "positive"]


def test_classification_errors_name_file_and_line(tmp_path, tok):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "x"\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2:\d+: not valid JSON"):
        C.read_classification(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="empty"):
        C.read_classification(empty)
    nolabel = tmp_path / "n.jsonl"
    nolabel.write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n')
    with pytest.raises(DataError, match=r"n.jsonl:2: no 'label'"):
        C.read_classification(nolabel)
    ev = tmp_path / "ev.jsonl"
    ev.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "zzz"}\n')
    with pytest.raises(DataError, match=r"ev.jsonl:2: unknown label 'zzz'"):
        C.encode_examples(tok, C.read_classification(ev), 32, {"x": 0, "y": 1}, C.SINGLE, ev)


def test_unclosed_quote_in_a_table_is_named_where_the_record_starts(tmp_path):
    runs_on = tmp_path / "q.csv"  # the quote on line 3 swallows lines 4-5 into one record
    runs_on.write_text('text,label\ngood,pos\n"unclosed film,neg\nfine,pos\n"quoted",neg\n')
    with pytest.raises(DataError, match=r"q.csv:3: .*unclosed quote.* runs on to line 5"):
        C.read_classification(runs_on)
    to_end = tmp_path / "e.csv"  # ... or the rest of the file, leaving no label
    to_end.write_text('text,label\ngood,pos\n"unclosed,neg\nfine,pos\n')
    with pytest.raises(DataError, match=r"e.csv:3: .*unclosed quote"):
        C.read_classification(to_end)
    meant = tmp_path / "m.csv"  # a quoted field over two lines, closed: fine, located where it starts
    meant.write_text('text,label\n\n"two\nlines ""quoted""",pos\nthree,neg\n')
    rows = C.read_classification(meant)
    assert [(e.line, e.label) for e in rows] == [(3, "pos"), (5, "neg")]
    assert rows[0].text == 'two\nlines "quoted"'  # the line break inside the quotes is kept


def test_a_plain_tsv_keeps_its_quotes_and_a_quoted_one_is_read_as_csv_writes_it(tmp_path):
    """TSV was read with csv's quotes: a text opening with a quote lost its quotes silently ('"Hello," he
    said.' became 'Hello, he said.') and one never closed swallowed the lines after it (an error)."""
    import csv
    plain = tmp_path / "glue.tsv"  # GLUE's TSV: no quoting, every character as it stands
    plain.write_text('text\tlabel\n"Hello," he said.\tpos\n"Unclosed, she wrote.\tneg\n"Titanic"\tpos\n')
    rows = C.read_classification(plain)
    assert [(e.text, e.label, e.line) for e in rows] == [
        ('"Hello," he said.', "pos", 2), ('"Unclosed, she wrote.', "neg", 3), ('"Titanic"', "pos", 4)]
    texts = ['"Hello," he said.', "a\ttab", "two\nlines", "plain", '"Titanic"']
    quoted = tmp_path / "pandas.tsv"  # as pandas' to_csv(sep="\t") writes it: through csv.writer
    with quoted.open("w", newline="") as out:
        csv.writer(out, delimiter="\t").writerows([("text", "label"), *((t, "x") for t in texts)])
    assert '"""Hello,"" he said."' in quoted.read_text()
    rows = C.read_classification(quoted)
    assert [e.text for e in rows] == texts and [e.line for e in rows] == [2, 3, 4, 6, 7]
    records, lines = tasks.read_prediction_input("classification", str(plain))  # prediction input alike
    assert records[0] == {"text": '"Hello," he said.'} and lines == [2, 3, 4]


def test_tables_read_as_the_csv_module_reads_them(tmp_path):
    """A field over csv's default limit (131,072 characters) and lone CR line ends, read as csv reads a
    file opened with newline=''; they were raw _csv.Error tracebacks."""
    long = tmp_path / "long.csv"
    long.write_text("text,label\n" + "word " * 30000 + ",pos\nbad film,neg\n")
    assert [(e.line, len(e.text)) for e in C.read_classification(long)] == [(2, 150000), (3, 8)]
    mac = tmp_path / "mac.csv"
    mac.write_bytes(b'text,label\rgood film,pos\r"two\rlines",neg\r')
    assert [(e.line, e.text, e.label) for e in C.read_classification(mac)] == [(2, "good film", "pos"),
                                                                              (3, "two\nlines", "neg")]
    stray = tmp_path / "stray.tsv"  # a lone CR ends a line in a \n file too
    stray.write_bytes(b"text\tlabel\ngood\rfilm\tpos\n")
    assert [e.text for e in C.read_classification(stray, require_label=False)] == ["good", "film"]
    with pytest.raises(DataError, match=r"stray.tsv:2: no 'label' field"):
        C.read_classification(stray)


def test_what_csv_cannot_parse_is_named_by_file_and_line(tmp_path, monkeypatch):
    import csv
    table = tmp_path / "t.csv"
    table.write_text("text,label\ngood,pos\n" + "x" * 20 + ",neg\n")
    own = csv.field_size_limit(8)  # a limit the reader is not allowed to raise: csv refuses line 3
    monkeypatch.setattr(csv, "field_size_limit", lambda *new: 8)
    try:
        with pytest.raises(DataError, match=r"t.csv:3: not valid CSV \(field larger than field limit \(8\)\)"):
            C.read_classification(table)
    finally:
        monkeypatch.undo()
        csv.field_size_limit(own)


def test_non_utf8_non_finite_and_mixed_labels_name_file_and_line(tmp_path):
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"text": "a", "label": "x"}\n{"text": "caf\xe9", "label": "y"}\n')
    with pytest.raises(DataError, match=r"latin.jsonl:2: not UTF-8"):
        C.read_classification(latin)
    nan = tmp_path / "nan.jsonl"
    nan.write_text('{"text": "a", "label": 0.5}\n{"text": "b", "label": NaN}\n')
    with pytest.raises(DataError, match=r"nan.jsonl:2: 'label' is nan"):
        C.read_classification(nan)
    huge = tmp_path / "huge.jsonl"
    huge.write_text('{"text": "a", "label": 0.5}\n{"text": "b", "label": 1e39}\n')
    with pytest.raises(DataError, match=r"huge.jsonl:2: 'label' is 1e\+39, beyond float32's range"):
        C.read_classification(huge)
    named = tmp_path / "named.csv"  # in a table, "nan" / "inf" are class names, not regression targets
    named.write_text("text,label\na,nan\nb,inf\n")
    assert [e.label for e in C.read_classification(named)] == ["nan", "inf"]
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": 0.5}\n')
    with pytest.raises(DataError, match=r"mixed.jsonl: labels mix kinds: string \(first at line 1\), number \(first at line 2\)"):
        C.read_classification(mixed)


def test_dynamic_padding(tok):
    ex = [C.ClassificationExample("short", None, "a", 1), C.ClassificationExample("a much longer text " * 3, None, "b", 2)]
    feats = C.encode_examples(tok, ex, 128, {"a": 0, "b": 1})
    batch = pad_collate(tok.pad_token_id)(feats)
    assert batch["input_ids"].shape[1] == max(len(f["input_ids"]) for f in feats) < 128
    assert batch["attention_mask"].sum().item() == sum(len(f["input_ids"]) for f in feats)
    assert batch["labels"].tolist() == [0, 1]


def test_cut_texts_are_counted_and_a_length_without_room_for_text_is_refused(tok, caplog):
    ex = [C.ClassificationExample("a", None, "a", 1), C.ClassificationExample("a much longer text " * 3, None, "b", 2)]
    with caplog.at_level("INFO", logger="plmkit"):
        feats = C.encode_examples(tok, ex, 4, {"a": 0, "b": 1}, path="t.jsonl")
    assert [len(f["input_ids"]) for f in feats] == [3, 4]
    assert "t.jsonl: 1 texts of 2 cut to 4 tokens" in caplog.text
    with pytest.raises(ConfigError, match="max_length=2 leaves no token of the text"):
        C.encode_examples(tok, ex, 2, {"a": 0, "b": 1})
    pairs = [C.ClassificationExample("a", "b", "a", 1)]
    with pytest.raises(ConfigError, match="max_length=4 leaves no token of each text"):
        C.encode_examples(tok, pairs, 4, {"a": 0})
    assert len(C.encode_examples(tok, pairs, 5, {"a": 0})[0]["input_ids"]) == 5


@pytest.fixture(scope="module")
def en_sentiment(tmp_path_factory):
    return h.en_sentiment_files(tmp_path_factory.mktemp("en"))


@pytest.fixture(scope="module")
def en_classifier(en_sentiment, tmp_path_factory):
    out = tmp_path_factory.mktemp("cls")
    result = finetune("classification", h.tiny_model_dir(), en_sentiment[0], out, en_sentiment[1], **h.quick())
    return out, result


def test_classification_en_sentiment(en_classifier, en_sentiment):
    out, result = en_classifier
    model_dir = out / "model"
    assert json.loads((model_dir / "plmkit_task.json").read_text())["task"] == "classification"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"} and config["architectures"] == ["BertForSequenceClassification"]
    assert (out / "best" / "best.json").is_file() and (model_dir / "tokenizer.json").is_file()
    assert 0 <= result.eval_metrics["eval_accuracy"] <= 1
    again = tasks.evaluate_dir(model_dir, en_sentiment[1], device="cpu")
    assert again["accuracy"] == pytest.approx(result.eval_metrics["eval_accuracy"])
    preds = tasks.predict_dir(model_dir, [{"text": "a wonderful film"}, {"text": "dull"}], device="cpu")
    assert all(p["label"] in ("negative", "positive") and sum(p["probabilities"].values()) == pytest.approx(1) for p in preds)
    assert json.loads((model_dir / "plmkit_task.json").read_text())["sentence_pairs"] is False
    with pytest.raises(DataError, match="inputs:1: this record has a 'text_pair', but the model reads single texts"):
        tasks.predict_dir(model_dir, [{"text": "a wonderful film", "text_pair": "yes"}], device="cpu")


def test_saved_classifier_loads_in_transformers(en_classifier):
    transformers = pytest.importorskip("transformers")
    model_dir = en_classifier[0] / "model"
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    assert hf.config.id2label == {0: "negative", 1: "positive"}
    model, tok, _ = tasks.load_model_dir(model_dir)
    enc = tok(["a wonderful film", "dull and far too long for its own good"], padding=True, return_tensors="pt")
    with torch.no_grad():
        ours, theirs = model(**enc).logits, hf(**enc).logits
    assert torch.allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("config, problem, labels", [
    ({"id2label": {0: "LABEL_0"}, "problem_type": "regression"}, C.REGRESSION, [4.5, 1.0]),
    ({"id2label": {0: "LABEL_0"}}, C.REGRESSION, [4.5, 1.0]),  # no problem_type, one label: regression
    ({"id2label": {0: "a", 1: "b", 2: "c"}, "problem_type": "multi_label_classification"}, C.MULTI, [["a", "b"], ["c"]]),
    ({"id2label": {0: "a", 1: "b"}}, None, ["a", "b"]),  # single-label, as before
])
def test_a_hugging_face_classifier_is_read_with_the_problem_type_of_its_config(tmp_path, tok, config, problem, labels):
    """A directory without plmkit_task.json was always single-label: a regression model's one logit
    went through a softmax (score 1.0 for every text), and evaluation refused its own kind of labels."""
    from plmkit.models.bert import BertForSequenceClassification
    BertForSequenceClassification.from_pretrained(h.tiny_model_dir(), **config).save_pretrained(tmp_path / "hf")
    tok.save_pretrained(tmp_path / "hf")
    assert tasks.load_task(tmp_path / "hf").settings.problem_type == problem
    texts = ["good movie", "bad film"]
    preds = tasks.predict_dir(tmp_path / "hf", texts, device="cpu")
    keys = {C.REGRESSION: {"label", "score"}, C.MULTI: {"labels", "probabilities"}}  # raw value; sigmoids
    assert all(set(p) == keys.get(problem, {"label", "score", "probabilities"}) for p in preds)
    data = write(tmp_path / "d.jsonl", [{"text": t, "label": v} for t, v in zip(texts, labels)])
    metric = {C.REGRESSION: "pearson", C.MULTI: "f1"}.get(problem, "accuracy")
    assert metric in tasks.evaluate_dir(tmp_path / "hf", data, device="cpu")


# --- the values a record holds are checked where they enter (issue 14) ---------------------------
def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("labels, message", [
    (["positive", 1], r": labels mix kinds: string \(first at line 1\), integer \(first at line 2\)"),
    ([1, "1"], r": labels mix kinds: integer \(first at line 1\), string \(first at line 2\)"),
    ([True, 0], r": labels mix kinds: boolean \(first at line 1\), integer \(first at line 2\)"),
    ([["x"], ["y", 5]], r":2: 'label' mixes integer and string items"),
    ([["x"], ["y", "y"]], r":2: 'label' item 1: label 'y' is also the label of item 0"),
    ([["x"], [1], ["y"]], r": labels mix kinds: list of strings \(first at line 1\), list of integers \(first at line 2\)"),
    (["x", ""], r":2: 'label' is empty"),
    (["x", None], r":2: 'label' is null"),
    (["x", {"a": 1}], r":2: 'label' must be a string, an integer or true/false, got dict"),
])
def test_the_labels_of_a_file_have_one_json_type(tmp_path, labels, message):
    """1 and "1" used to become one class, "positive" and 1 three classes with "1" among them."""
    path = write(tmp_path / "l.jsonl", [{"text": f"t{i}", "label": v} for i, v in enumerate(labels)])
    with pytest.raises(DataError, match=r"l.jsonl" + message):
        C.read_classification(path)


def test_booleans_are_the_classes_false_and_true_and_integers_stay_integers(tmp_path):
    ex = C.read_classification(write(tmp_path / "b.jsonl", [{"text": "a", "label": True}, {"text": "b", "label": False}]))
    assert C.label_names(ex) == ["false", "true"]
    ex = C.read_classification(write(tmp_path / "i.jsonl", [{"text": "a", "label": 10}, {"text": "b", "label": 9}]))
    assert C.label_names(ex) == ["9", "10"]


def test_class_names_that_only_look_like_integers_sort_as_text(tmp_path):
    """"²" passes str.isdigit but not int(), and "--1" passed lstrip("-"): label sorting crashed."""
    for odd in ("\u00b2", "--1"):
        ex = C.read_classification(write(tmp_path / "s.jsonl", [{"text": "a", "label": "1"}, {"text": "b", "label": odd}]))
        assert C.label_names(ex) == sorted(["1", odd])
    ex = C.read_classification(write(tmp_path / "n.jsonl", [{"text": "a", "label": "-3"}, {"text": "b", "label": "-20"}]))
    assert C.label_names(ex) == ["-20", "-3"]


@pytest.mark.parametrize("row, message", [
    ({"text": "", "label": "x"}, "'text' is empty"),
    ({"text": 5, "label": "x"}, "'text' must be a string, got int 5"),
    ({"text": "a", "sentence": "b", "label": "x"}, "give one of 'text', 'sentence', not both"),
    ({"text": "a", "text_pair": " ", "label": "x"}, "'text_pair' is empty"),
])
def test_record_fields_are_checked_alike_in_training_and_prediction(tmp_path, row, message):
    with pytest.raises(DataError, match=r"r.jsonl:2: " + message):
        C.read_classification(write(tmp_path / "r.jsonl", [{"text": "ok", "label": "x"}, row]))
    with pytest.raises(DataError, match=r"in.jsonl:7: " + message):  # prediction: the same rules
        tasks.predict_records(None, None, C.ClassificationTask(), [row], where="in.jsonl", lines=[7])


def test_csv_header_and_empty_cells(tmp_path):
    dup = tmp_path / "dup.csv"
    dup.write_text("text,label,text\ngood,pos,other\n")
    with pytest.raises(DataError, match=r"dup.csv:1: column 3: column name 'text' is also the column name of column 1"):
        C.read_classification(dup)
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\ngood,pos\nbad,\n")
    with pytest.raises(DataError, match=r"empty.csv:3: 'label' is empty"):
        C.read_classification(empty)
    assert len(C.read_classification(empty, require_label=False)) == 2  # prediction does not read the label


def test_a_label_of_another_problem_than_the_model_is_refused(tmp_path, tok):
    for problem, label, message in ((C.MULTI, "x", r"multi-label model: 'label' must be a list"),
                                    (C.SINGLE, ["x"], r"single-label model: 'label' must be one label"),
                                    (C.REGRESSION, "x", r"regression model: 'label' must be a number")):
        example = C.ClassificationExample("a", None, label, 4)
        with pytest.raises(DataError, match=r"ev.jsonl:4: this is a " + message):
            C.encode_examples(tok, [example], 32, {"x": 0, "y": 1}, problem, "ev.jsonl")


def test_a_model_reads_sentence_pairs_or_single_texts_as_it_was_trained(tok):
    pairs, single = C.ClassificationTask.of(sentence_pairs=True), C.ClassificationTask.of(sentence_pairs=False)
    with pytest.raises(DataError, match=r"in.jsonl:3: this record has no 'text_pair', but the model reads sentence pairs"):
        tasks.predict_records(None, tok, pairs, [{"text": "a", "text_pair": "b"}, {"text": "c"}], where="in.jsonl",
                              lines=[1, 3])
    with pytest.raises(DataError, match=r"inputs:1: this record has a 'text_pair', but the model reads single texts"):
        tasks.predict_records(None, tok, single, [{"text": "a", "text_pair": "b"}])
    unknown = C.ClassificationTask()  # a model saved before this was recorded: the records agree among themselves
    with pytest.raises(DataError, match=r"inputs:2: this record has no 'text_pair', but line 1 has one"):
        unknown.encode(tok, unknown.to_examples([{"text": "a", "text_pair": "b"}, {"text": "c"}], "inputs"), None,
                       path="inputs")
    examples = [C.ClassificationExample("a", "b", "x", 1), C.ClassificationExample("c", "d", "y", 2)]
    learner = C.ClassificationTask()
    learner.discover(examples, "train.jsonl")
    assert learner.settings.sentence_pairs is True and learner.settings.to_dict()["sentence_pairs"] is True


def test_a_problem_type_the_run_gives_is_honoured_when_the_labels_fit_it(tmp_path, tok):
    """problem_type in a run file (or finetune(problem_type=...)) is not replaced by what the labels suggest:
    integer scores are regression targets when regression is asked; labels of another kind are refused."""
    ints = [C.ClassificationExample(f"t{i}", None, str(i % 3), i + 1) for i in range(6)]
    task = C.ClassificationTask.of(problem_type=C.REGRESSION)
    assert task.discover(ints, "scores.jsonl") == ["score"] and task.settings.problem_type == C.REGRESSION
    assert [f["labels"] for f in task.encode(tok, ints, {"score": 0}, "scores.jsonl")] == [0.0, 1.0, 2.0] * 2
    words = [C.ClassificationExample("a", None, "pos", 1), C.ClassificationExample("b", None, "neg", 2)]
    floats = [C.ClassificationExample("a", None, 0.5, 1), C.ClassificationExample("b", None, 1.5, 2)]
    for given, examples, message in (
            (C.REGRESSION, words, r"t.jsonl:1: problem_type is regression \(given\), but 'label' 'pos' is not a "
                                  r"number"),
            (C.MULTI, words, r"problem_type is multi_label_classification \(given\), but the training labels are "
                             r"single class names"),
            (C.SINGLE, floats, r"the training labels are numbers \(regression targets\)")):
        with pytest.raises(DataError, match=message):
            C.ClassificationTask.of(problem_type=given).discover(examples, "t.jsonl")
    with pytest.raises(DataError, match=r"sentence_pairs is true \(given\), but the training records have no "
                                        r"'text_pair'"):
        C.ClassificationTask.of(sentence_pairs=True).discover(words, "t.jsonl")
    found = C.ClassificationTask()  # nothing given: the labels decide
    assert found.discover(ints, "t.jsonl") == ["0", "1", "2"] and found.settings.problem_type == C.SINGLE
    scores = h.write_jsonl(tmp_path / "scores.jsonl", [{"text": f"t{i}", "label": i % 3} for i in range(12)])
    finetune("classification", h.tiny_model_dir(), scores, tmp_path / "run", problem_type="regression",
             **h.quick(max_steps=1))
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert (config["problem_type"], len(config["id2label"])) == (C.REGRESSION, 1)
