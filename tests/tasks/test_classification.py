"""tasks/classification.py: readers, encoding, and fine-tuning on small real data (en sentiment)."""
import json

import pytest
import torch

import finetune_helpers as h
from plmkit import tasks
from plmkit.data.collate import pad_collate
from plmkit.errors import DataError
from plmkit.recipes.finetune import finetune
from plmkit.tasks import classification as C
from plmkit.tokenization import Tokenizer


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_pretrained(h.tiny_model_dir())


# --- classification ---------------------------------------------------------------------------
def test_classification_formats_and_kinds(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"text": "a", "label": "pos"}\n\n{"text": "b", "text_pair": "c", "label": 1}\n')
    ex = C.read_classification(p)
    assert [e.label for e in ex] == ["pos", "1"] and ex[1].text_pair == "c" and ex[1].line == 3
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
    with pytest.raises(DataError, match=r"bad.jsonl:2: malformed JSON"):
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
    to_end = tmp_path / "e.tsv"  # ... or the rest of the file, leaving no label
    to_end.write_text('text\tlabel\ngood\tpos\n"unclosed\tneg\nfine\tpos\n')
    with pytest.raises(DataError, match=r"e.tsv:3: .*unclosed quote"):
        C.read_classification(to_end)
    meant = tmp_path / "m.csv"  # a quoted field over two lines, closed: fine, located where it starts
    meant.write_text('text,label\n\n"two\nlines ""quoted""",pos\nthree,neg\n')
    rows = C.read_classification(meant)
    assert [(e.line, e.label) for e in rows] == [(3, "pos"), (5, "neg")]
    assert rows[0].text == 'two\nlines "quoted"'  # the line break inside the quotes is kept


def test_non_utf8_non_finite_and_mixed_labels_name_file_and_line(tmp_path):
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"text": "a", "label": "x"}\n{"text": "caf\xe9", "label": "y"}\n')
    with pytest.raises(DataError, match=r"latin.jsonl:2: not UTF-8"):
        C.read_classification(latin)
    nan = tmp_path / "nan.jsonl"
    nan.write_text('{"text": "a", "label": 0.5}\n{"text": "b", "label": NaN}\n')
    with pytest.raises(DataError, match=r"nan.jsonl:2: 'label' is nan"):
        C.read_classification(nan)
    named = tmp_path / "named.csv"  # in a table, "nan" / "inf" are class names, not regression targets
    named.write_text("text,label\na,nan\nb,inf\n")
    assert [e.label for e in C.read_classification(named)] == ["nan", "inf"]
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": 0.5}\n')
    with pytest.raises(DataError, match=r"mixed.jsonl: labels mix kinds"):
        C.problem_type_of(C.read_classification(mixed), mixed)


def test_dynamic_padding(tok):
    ex = [C.ClassificationExample("short", None, "a", 1), C.ClassificationExample("a much longer text " * 3, None, "b", 2)]
    feats = C.encode_examples(tok, ex, 128, {"a": 0, "b": 1})
    batch = pad_collate(tok.pad_token_id)(feats)
    assert batch["input_ids"].shape[1] == max(len(f["input_ids"]) for f in feats) < 128
    assert batch["attention_mask"].sum().item() == sum(len(f["input_ids"]) for f in feats)
    assert batch["labels"].tolist() == [0, 1]


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
