import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import finetune_helpers as h  # noqa: E402

from plmkit.data.tasks import classification as C, ner as N, pad_collate, qa as Q, relation as R  # noqa: E402
from plmkit.errors import ConfigError, DataError  # noqa: E402
from plmkit.tokenization import Tokenizer  # noqa: E402


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


# --- relation ---------------------------------------------------------------------------------
def test_relation_markers_and_positions(tmp_path, tok):
    path = h.relation_file(tmp_path / "r.jsonl")
    ex = R.read_relations(path)
    assert R.with_markers(ex[0]) == " [E1] Steve Jobs [/E1]  founded  [E2] Apple [/E2]  in 1976."
    tok = Tokenizer.from_pretrained(h.tiny_model_dir())
    tok.add_special_tokens({"additional_special_tokens": list(R.MARKERS)})
    f = R.encode_relations(tok, ex, 64, {"founded": 0, "capital_of": 1, "no_relation": 2})
    e1, e2 = tok.convert_tokens_to_ids(["[E1]", "[E2]"])
    assert all(x["input_ids"][x["entity_positions"][0]] == e1 and x["input_ids"][x["entity_positions"][1]] == e2
               for x in f)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "ab cd", "head": {"start": 0, "end": 3}, "tail": [2, 5], "relation": "x"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: head .* overlap"):
        R.read_relations(bad)
    bad.write_text(json.dumps({"text": "ab", "head": [0, 1], "tail": [1, 9], "relation": "x"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: 'tail' span 1..9"):
        R.read_relations(bad)


def test_relation_entity_beyond_max_length_is_an_error(tmp_path):
    """A marker cut off by truncation would silently point the classifier at [CLS]."""
    tok = Tokenizer.from_pretrained(h.tiny_model_dir())
    with pytest.raises(ConfigError, match="lacks the entity markers"):  # not a misleading "beyond max_length"
        R.encode_relations(tok, R.read_relations(h.relation_file(tmp_path / "r.jsonl")), 64, None)
    tok.add_special_tokens({"additional_special_tokens": list(R.MARKERS)})
    text = "the film " * 40 + "Steve Jobs founded Apple"
    end = len(text)
    path = h.relation_file(tmp_path / "long.jsonl", [
        h.RELATIONS[0], {"text": text, "head": [end - 24, end - 14], "tail": [end - 5, end], "relation": "founded"}])
    ex = R.read_relations(path)
    with pytest.raises(DataError, match=r"long.jsonl:2: the head entity lies beyond max_length=32"):
        R.encode_relations(tok, ex, 32, {"founded": 0, "no_relation": 1}, path)
    assert len(R.encode_relations(tok, ex, 256, {"founded": 0, "no_relation": 1}, path)) == 2


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
