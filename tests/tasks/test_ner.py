"""tasks/ner.py: CoNLL reading, word-piece labels, windows over long sentences (one prediction per word), entity F1."""
import json

import pytest
import torch

import finetune_helpers as h
from finetune_helpers import PerTokenModel
from plmkit import tasks
from plmkit.errors import ConfigError, DataError
from plmkit.models.bert import BertForTokenClassification
from plmkit.recipes.finetune import finetune
from plmkit.tasks import ner as N
from plmkit.tasks.ner import NerTask
from plmkit.tokenization import Tokenizer


# words whose first word pieces differ in the tiny vocabulary; "paris" has three pieces
TAG_OF = {"paris": "B-LOC", "钱": "B-PER", "film": "O", "the": "O", "is": "O", "and": "O", "movie": "O"}


LABELS = ["O", "B-LOC", "B-PER"]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_pretrained(h.tiny_model_dir())


def long_sentences(n_words=(60, 45)) -> list[N.Sentence]:
    order = list(TAG_OF)
    out = []
    for k, n in enumerate(n_words):
        words = [order[(i * 3 + k) % len(order)] for i in range(n)]
        out.append(N.Sentence(words, [TAG_OF[w] for w in words], 1))
    return out


def oracle(tok) -> PerTokenModel:
    """Tags each word right from its first piece (other pieces and [CLS]/[SEP] say 'O')."""
    table = torch.zeros(len(tok), len(LABELS))
    for word, tag in TAG_OF.items():
        table[tok.convert_tokens_to_ids(tok.tokenize(word)[0]), LABELS.index(tag)] = 5.0
    return PerTokenModel(table, LABELS)


def test_ner_long_sentences_get_one_prediction_per_word(tok):
    sentences = long_sentences()
    model = oracle(tok)
    small = NerTask.of(max_length=16, stride=4, scheme="BIO")
    large = NerTask.of(max_length=256, scheme="BIO")
    assert len(small.encode(tok, sentences, None)) > 2 * len(sentences)  # really windowed
    records = [{"tokens": s.tokens} for s in sentences]
    windowed = tasks.predict_records(model, tok, small, records, batch_size=3)
    assert windowed == tasks.predict_records(model, tok, large, records)  # the same as one window per sentence
    for r, s in zip(windowed, sentences):
        assert r["tags"] == s.tags  # every word, also those past max_length, has its own prediction
        assert [e["start"] for e in r["entities"]] == [i for i, t in enumerate(s.tags) if t != "O"]
    texts = [{"text": " ".join(s.tokens)} for s in sentences]
    by_text = tasks.predict_records(model, tok, small, texts, batch_size=3)
    assert by_text == tasks.predict_records(model, tok, large, texts)
    assert [e["word"] for e in by_text[0]["entities"]] == [w for w in sentences[0].tokens if TAG_OF[w] != "O"]
    # evaluation scores whole sentences: every entity (and every word) past the first window counts
    features = small.encode(tok, sentences, model.config.label2id)
    metrics = small.evaluate(model, tok, sentences, features, batch_size=3)
    assert metrics["f1"] == 1.0 and metrics["recall"] == 1.0 and metrics["token_accuracy"] == 1.0
    assert metrics["n"] == len(sentences)


def test_ner_eval_loss_is_the_mean_over_words_counted_once(tok):
    torch.manual_seed(0)
    model = PerTokenModel(torch.randn(len(tok), len(LABELS)), LABELS)
    sentences = long_sentences((60, 45, 7))  # windows and batches of different sizes
    expected = []  # logits depend on each piece alone: a word's loss is that of its first piece
    for s in sentences:
        for word, tag in zip(s.tokens, s.tags):
            logits = model.table.weight[tok.convert_tokens_to_ids(tok.tokenize(word)[0])]
            expected.append(float(torch.nn.functional.cross_entropy(logits, torch.tensor(LABELS.index(tag)))))
    for spec in (NerTask.of(max_length=16, stride=4, scheme="BIO"), NerTask.of(max_length=256)):
        features = spec.encode(tok, sentences, model.config.label2id)
        metrics = spec.evaluate(model, tok, sentences, features, batch_size=3)
        assert metrics["loss"] == pytest.approx(sum(expected) / len(expected), rel=1e-6)


def test_ner_window_large_enough_equals_a_plain_forward(tok):
    model = BertForTokenClassification.from_pretrained(h.tiny_model_dir(), id2label=dict(enumerate(LABELS)))
    [sentence] = long_sentences((50,))
    spec = NerTask.of(max_length=200, scheme="BIO")
    [result] = tasks.predict_records(model, tok, spec, [{"tokens": sentence.tokens}])
    pieces = [tok.backend_tokenizer.encode(w, add_special_tokens=False).ids for w in sentence.tokens]
    ids = [tok.cls_token_id] + [i for p in pieces for i in p] + [tok.sep_token_id]
    with torch.no_grad():
        tags = model(torch.tensor([ids])).logits[0].argmax(-1).tolist()
    firsts = [1 + sum(len(p) for p in pieces[:w]) for w in range(len(pieces))]
    assert result["tags"] == [LABELS[tags[pos]] for pos in firsts]
    [windowed] = tasks.predict_records(model, tok, NerTask.of(max_length=16), [{"tokens": sentence.tokens}])
    assert len(windowed["tags"]) == len(sentence.tokens)


def test_ner_finetune_on_long_sentences(tmp_path):
    conll = tmp_path / "long.conll"
    conll.write_text("\n\n".join("\n".join(f"{w}\t{t}" for w, t in zip(s.tokens, s.tags))
                                 for s in long_sentences((60, 45, 30))) + "\n", encoding="utf-8")
    opts = dict(max_steps=2, batch_size=4, lr=1e-3, max_length=16, stride=4, progress_bar=False,
                device="cpu", precision="fp32")
    result = finetune("ner", h.tiny_model_dir(), conll, tmp_path / "out", conll, **opts)
    spec = json.loads((tmp_path / "out" / "model" / "plmkit_task.json").read_text())
    assert spec["stride"] == 4 and spec["max_length"] == 16
    again = tasks.evaluate_dir(tmp_path / "out" / "model", conll, device="cpu")
    assert again["f1"] == pytest.approx(result.eval_metrics["eval_f1"]) and again["n"] == 3


def test_conll_prediction_input_missing_or_not_utf8(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        tasks.read_prediction_input("ner", str(tmp_path / "nope.conll"))
    latin = tmp_path / "latin.conll"
    latin.write_bytes(b"John\nJos\xe9\n")
    with pytest.raises(DataError, match=r"latin.conll:2: not UTF-8"):
        tasks.read_prediction_input("ner", str(latin))
    import os
    import threading
    pipe = tmp_path / "p.conll"  # <(cmd) or a FIFO: read once, whole
    os.mkfifo(pipe)
    writer = threading.Thread(target=lambda: pipe.write_text("John B-PER\nruns O\n\nMary B-PER\n"))
    writer.start()
    records, lines = tasks.read_prediction_input("ner", str(pipe))
    writer.join()
    assert records == [{"tokens": ["John", "runs"]}, {"tokens": ["Mary"]}] and lines == [1, 4]


# --- NER --------------------------------------------------------------------------------------
def test_conll_reader_tab_and_space(tmp_path):
    p = tmp_path / "a.conll"
    p.write_text("-DOCSTART- O\n\nJohn B-PER\nlives O\nin O\nNew B-LOC\nYork I-LOC\n\n\n钱\tB-PER\n其\tE-PER\n")
    s = N.read_conll(p)
    assert [x.tokens for x in s] == [["John", "lives", "in", "New", "York"], ["钱", "其"]]
    assert s[1].tags == ["B-PER", "E-PER"] and s[0].line == 3
    assert N.scheme_of(N.tag_names(s)) == "BIOES"
    bad = tmp_path / "b.conll"
    bad.write_text("a\tO\nb\tX-PER\n")
    with pytest.raises(DataError, match=r"b.conll:2: tag 'X-PER'"):
        N.read_conll(bad)
    one = tmp_path / "c.conll"
    one.write_text("a\tO\n\nlonely\n")
    with pytest.raises(DataError, match=r"c.conll:3"):
        N.read_conll(one)
    mixed = tmp_path / "d.conll"  # CoNLL-2003's 4 columns, one line missing its chunk tag
    mixed.write_text("EU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-MISC\n")
    with pytest.raises(DataError, match=r"d.conll:3: 3 column\(s\), but the file's lines have 4 \(from line 1\)"):
        N.read_conll(mixed)
    four = tmp_path / "e.conll"
    four.write_text("EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n")
    assert N.read_conll(four)[0].tags == ["B-ORG", "O"]


def test_ner_label_alignment_first_piece(tok):
    s = N.Sentence(["Unbelievably", "good", "钱"], ["B-MISC", "O", "B-PER"], 1)
    label2id = {"O": 0, "B-MISC": 1, "B-PER": 2}
    f = N.encode_sentences(tok, [s], 64, label2id)[0]
    n = [len(tok.tokenize(w)) for w in s.tokens]
    assert n[0] > 1  # the word really is split
    expected_labels, expected_words, firsts = [-100], [-1], []
    for w, (k, tag) in enumerate(zip(n, s.tags)):
        firsts.append(len(expected_labels))
        expected_labels += [label2id[tag]] + [-100] * (k - 1)
        expected_words += [w] * k
    assert f["labels"] == expected_labels + [-100]
    assert f["_word_index"] == expected_words + [-1]
    token_preds = list(range(len(f["input_ids"])))
    merger = N.WindowMerger()
    merger.add(f, token_preds)
    assert merger.words(0, 3) == firsts
    with pytest.raises(DataError, match="unknown tag 'I-XYZ'"):
        N.encode_sentences(tok, [N.Sentence(["a"], ["I-XYZ"], 7, [7])], 64, label2id, "f.conll")


def test_ner_long_sentence_windows_cover_every_word(tok):
    words = ("Unbelievably good films about 钱其琛 and Paris " * 6).split()
    s = N.Sentence(words, ["B-PER" if w == "钱其琛" else "O" for w in words], 1)
    label2id = {"O": 0, "B-PER": 1}
    pieces = [i for w in words for i in tok.backend_tokenizer.encode(w, add_special_tokens=False).ids]
    [whole] = N.encode_sentences(tok, [s], len(pieces) + 2, label2id)  # a window large enough: no windowing
    assert whole["input_ids"] == [tok.cls_token_id] + pieces + [tok.sep_token_id] and whole["_window"] == 0
    feats = N.encode_sentences(tok, [s], 12, label2id, stride=3)
    assert len(feats) > 3 and all(len(f["input_ids"]) <= 12 for f in feats)
    assert [(f["_sentence"], f["_window"]) for f in feats] == [(0, k) for k in range(len(feats))]
    bodies = [f["input_ids"][1:-1] for f in feats]
    assert all(a[-3:] == b[:3] for a, b in zip(bodies, bodies[1:]))  # consecutive windows share `stride` pieces
    assert [i for b in bodies[:-1] for i in b[:-3]] + bodies[-1] == pieces  # together they hold every piece
    assert {w for f in feats for w in f["_word_index"] if w >= 0} == set(range(len(words)))
    for f in feats:  # a word's label sits at its first piece only; a word cut by the window start is left out
        for pos, w in enumerate(f["_word_index"]):
            first = w >= 0 and f["_word_index"][pos - 1] != w
            assert (f["labels"][pos] != -100) == first
            if first:
                assert f["labels"][pos] == label2id[s.tags[w]]
    assert N.encode_sentences(tok, [s], 12, label2id) == feats  # the default stride: max_length // 4 = 3
    with pytest.raises(ConfigError, match="stride=10"):
        N.encode_sentences(tok, [s], 12, label2id, stride=10)


def test_window_merger_takes_each_word_from_its_most_central_window():
    merger = N.WindowMerger()
    a = {"_sentence": 0, "_window": 0, "_word_index": [-1, 0, 1, 1, 2, -1]}  # word 2 one piece from the edge
    b = {"_sentence": 0, "_window": 1, "_word_index": [-1, -1, 2, 3, 4, -1]}  # word 2 two pieces from it
    merger.add(b, list("ABCDEF"))  # windows may come in any order
    merger.add(a, list("abcdef"))
    assert merger.words(0, 6) == ["b", "c", "C", "D", "E", None]
    for window in (1, 0):  # equally central: the earlier window wins, whatever the order
        merger.add({"_sentence": 1, "_window": window, "_word_index": [-1, 0, -1]}, ["", f"w{window}", ""])
    assert merger.words(1, 1) == ["w0"]


def test_entity_spans_bio_and_bioes():
    assert N.entity_spans(["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-ORG"]) == [
        ("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 5), ("ORG", 5, 6)]
    assert N.entity_spans(["S-PER", "B-LOC", "I-LOC", "E-LOC", "O"]) == [("PER", 0, 1), ("LOC", 1, 4)]


def test_ner_peoples_daily(tmp_path):
    d = h.data_dir("zh-ner")
    train = h.head_conll(d / "train.conll", tmp_path / "train.conll", 200)
    dev = h.head_conll(d / "dev.conll", tmp_path / "dev.conll", 40)
    result = finetune("ner", h.tiny_model_dir(), train, tmp_path / "out", dev, **h.quick(lr=3e-3, epochs=2))
    assert {"eval_precision", "eval_recall", "eval_f1", "eval_token_accuracy"} <= set(result.eval_metrics)
    model_dir = tmp_path / "out" / "model"
    spec = json.loads((model_dir / "plmkit_task.json").read_text())
    assert spec["task"] == "ner" and spec["scheme"] == "BIO"
    id2label = json.loads((model_dir / "config.json").read_text())["id2label"]
    assert id2label["0"] == "O" and {"B-PER", "I-PER", "B-LOC", "B-ORG"} <= set(id2label.values())
    [by_words, by_text] = [tasks.predict_dir(model_dir, [r], device="cpu")[0]
                           for r in ({"tokens": list("钱其琛在北京")}, {"text": "钱其琛在北京"})]
    assert len(by_words["tags"]) == 6
    for e in by_text["entities"]:
        assert "钱其琛在北京"[e["start"]:e["end"]] == e["word"]


# --- JSONL training data, and the values a record holds (issue 14) -------------------------------
def test_ner_training_data_in_json_lines(tmp_path):
    path = tmp_path / "ner.jsonl"
    path.write_text('{"tokens": ["John", "lives", "in", "Paris"], "tags": ["B-PER", "O", "O", "B-LOC"]}\n\n'
                    '{"tokens": ["钱", "其"], "ner_tags": ["B-PER", "E-PER"]}\n', encoding="utf-8")
    s = NerTask().read(path)
    assert [(x.tokens, x.tags, x.line) for x in s] == [(["John", "lives", "in", "Paris"], ["B-PER", "O", "O", "B-LOC"], 1),
                                                       (["钱", "其"], ["B-PER", "E-PER"], 3)]
    for row, message in (({"tokens": ["a", "b"], "tags": ["O"]}, "2 tokens but 1 tags"),
                         ({"tokens": ["a"], "ner_tags": [3]}, "'ner_tags' holds integers \\(class ids\\)"),
                         ({"tokens": ["a"], "tags": ["O"], "ner_tags": ["O"]}, "give one of 'tags', 'ner_tags'"),
                         ({"tokens": ["a", ""], "tags": ["O", "O"]}, "'tokens' item 1 is empty"),
                         ({"tokens": ["a"], "tags": ["PER"]}, "tag 'PER' is not 'O'"),
                         ({"tokens": ["a"]}, "no 'tags' field")):
        path.write_text(json.dumps({"tokens": ["x"], "tags": ["O"]}) + "\n" + json.dumps(row) + "\n")
        with pytest.raises(DataError, match=r"ner.jsonl:2: " + message):
            NerTask().read(path)
    brace = tmp_path / "brace.conll"  # CoNLL whose first token is "{": not taken for JSON
    brace.write_text("{\tO\nParis\tB-LOC\n")
    assert NerTask().read(brace)[0].tokens == ["{", "Paris"]


@pytest.mark.parametrize("first, message", [
    ('{"tokens": ["John"], "tags": ["B-PER"]', r":1:39: not valid JSON \(Expecting ',' delimiter\)"),  # no closing }
    ("{'tokens': ['John'], 'tags': ['B-PER']}", r":1:2: not valid JSON \(Expecting property name"),  # a Python dict
])
def test_a_malformed_first_json_line_is_a_json_error(tmp_path, first, message):
    """It was read as CoNLL, and the error blamed a tag made of JSON fragments."""
    path = tmp_path / "ner.jsonl"
    path.write_text(first + '\n{"tokens": ["Mary"], "tags": ["B-PER"]}\n')
    with pytest.raises(DataError, match=r"ner.jsonl" + message):
        NerTask().read(path)


@pytest.mark.parametrize("record, message", [
    ({"tokens": [1, 2]}, "'tokens' item 0 must be a string, got int 1"),
    ({"tokens": [None, "a"]}, "'tokens' item 0 must be a string, got NoneType None"),
    ({"tokens": ["a", ""]}, "'tokens' item 1 is empty"),
    ({"tokens": []}, "'tokens' is an empty list"),
    ({"text": ""}, "'text' \\(or 'tokens', a list of words\\) is empty"),
    ({"text": "钱其琛", "tokens": ["钱"]}, "give one of 'text', 'tokens', not both"),
])
def test_ner_prediction_records_are_checked_by_type(record, message):
    with pytest.raises(DataError, match=r"in.jsonl:2: " + message):
        NerTask().to_examples([record], "in.jsonl", [2])


def test_window_settings_that_leave_no_room_are_refused_where_they_enter():
    with pytest.raises(ConfigError, match=r"stride \(--stride\)=10 must be below 10, the word pieces of a max_length=12 window"):
        NerTask.of(max_length=12, stride=10)
    with pytest.raises(ConfigError, match=r"max_length \(--max-length\) must be at least 3 for NER windows"):
        NerTask.of(max_length=None)
    with pytest.raises(ConfigError, match=r"scheme must be one of BIO, BIOES, got 'IOB'"):
        NerTask.of(scheme="IOB")
    assert NerTask.of(max_length=12, stride=9).settings.stride == 9


def test_a_tag_scheme_the_run_gives_must_be_the_training_tags():
    bio = [N.Sentence(["Anna", "Smith"], ["B-PER", "I-PER"], 1)]
    bioes = [N.Sentence(["Anna", "Smith", "Tom"], ["B-PER", "E-PER", "S-PER"], 1)]
    with pytest.raises(DataError, match=r"t.conll: scheme is BIO \(given\), but the training tags are BIOES: some tags "
                                        r"are E-/S-"):
        NerTask.of(scheme="BIO").discover(bioes, "t.conll")
    with pytest.raises(DataError, match=r"scheme is BIOES \(given\), but the training tags are BIO: no tag is E- "
                                        r"or S-"):
        NerTask.of(scheme="BIOES").discover(bio, "t.conll")
    task = NerTask.of(scheme="BIOES")
    task.discover(bioes, "t.conll")
    assert task.settings.scheme == "BIOES"
