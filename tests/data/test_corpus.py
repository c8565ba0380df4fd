"""Tests of plmkit.data.corpus: reading corpora and splitting sentences."""
from __future__ import annotations

import gzip
import json

import pytest

from plmkit.data.corpus import Document, corpus_files, iter_documents, iter_texts, split_sentences
from plmkit.errors import ConfigError, DataError

HAMLET = """Ber.
Who's there?

Fran.
Nay, answer me: stand, and unfold yourself.


Ber.
Long live the king!
"""


def write(path, text, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


# --- reading ---------------------------------------------------------------------

def test_txt_paragraphs_are_documents_with_file_line_sources(tmp_path):
    f = write(tmp_path / "hamlet.txt", HAMLET)
    docs = list(iter_documents(f))
    assert docs == [
        Document("Ber.\nWho's there?", f"{f}:1"),
        Document("Fran.\nNay, answer me: stand, and unfold yourself.", f"{f}:4"),
        Document("Ber.\nLong live the king!", f"{f}:8"),
    ]


def test_txt_without_blank_lines_is_one_document_and_crlf_bom_are_handled(tmp_path):
    f = write(tmp_path / "one.txt", "\ufeffline one\r\nline two  \r\n")
    assert list(iter_texts([f])) == ["line one\nline two"]


def write_gz(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode("utf-8")))


def test_gzip_and_jsonl_and_directories_recursively_sorted(tmp_path):
    write_gz(tmp_path / "b" / "z.txt.gz", "gz one\n\ngz two\n")
    write(tmp_path / "a.jsonl", '{"text": "json one", "label": 1}\n\n{"text": "json two"}\n')
    write_gz(tmp_path / "b" / "c" / "y.jsonl.gz", json.dumps({"text": "nested"}) + "\n")
    write(tmp_path / "README.md", "not a corpus file, skipped inside directories")
    docs = list(iter_documents(tmp_path))
    assert [d.text for d in docs] == ["json one", "json two", "nested", "gz one", "gz two"]
    assert docs[1].source == f"{tmp_path / 'a.jsonl'}:3"


def test_a_file_reached_twice_is_read_once_and_named_once(tmp_path, caplog):
    """A directory and a file inside it (or a link to it): its documents would be duplicated, and could
    land on both sides of a held-out split."""
    write(tmp_path / "corpus" / "a.txt", "one\n\ntwo\n")
    write(tmp_path / "corpus" / "b.txt", "three\n")
    (tmp_path / "link.txt").symlink_to(tmp_path / "corpus" / "a.txt")
    roots = [tmp_path / "corpus", str(tmp_path / "corpus" / "a.txt"), tmp_path / "link.txt"]
    with caplog.at_level("WARNING", logger="plmkit.data.corpus"):
        assert list(corpus_files(roots)) == [tmp_path / "corpus" / "a.txt", tmp_path / "corpus" / "b.txt"]
        assert [d.text for d in iter_documents(roots)] == ["one", "two", "three"]
    warned = [r.getMessage() for r in caplog.records if "already reached" in r.getMessage()]
    assert len(warned) == 1 and str(tmp_path / "corpus" / "a.txt") in warned[0]  # once, not at every pass


def test_iter_texts_accepts_str_paths_and_is_lazy(tmp_path):
    f = write(tmp_path / "x.jsonl", '{"text": "first"}\nnot json\n')
    texts = iter_texts(str(f))
    assert next(texts) == "first"  # streamed: the bad line is not read yet
    with pytest.raises(DataError, match=r"x\.jsonl:2:1: not valid JSON"):
        next(texts)


@pytest.mark.parametrize("line, message", [
    ('{"title": "no text"}', "no 'text' field"),
    ('{"text": 42}', "'text' is int"),
    ('["text"]', "no 'text' field"),
])
def test_jsonl_without_string_text_names_file_and_line(tmp_path, line, message):
    f = write(tmp_path / "bad.jsonl", '{"text": "ok"}\n' + line + "\n")
    with pytest.raises(DataError, match=rf"bad\.jsonl:2: {message}"):
        list(iter_documents(f))


def test_fields_read_both_sides_of_parallel_records(tmp_path):
    f = write(tmp_path / "pairs.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"source": "Good morning.", "target": "早上好。", "id": 1},
        {"text": "A long article about tokenizers.", "summary": "Tokenizers."},
        {"text": "only a text"},
        {"source": "Blank target.", "target": " "},
    ]) + "\n")
    docs = list(iter_documents(f, fields="auto"))
    assert [d.text for d in docs] == ["Good morning.", "早上好。", "A long article about tokenizers.", "Tokenizers.",
                                      "only a text", "Blank target."]
    assert [d.source.rsplit(":", 1)[1] for d in docs] == ["1", "1", "2", "2", "3", "4"]
    g = write(tmp_path / "de_en.jsonl", '{"de": "Hallo", "en": "Hello"}\n{"de": "Danke", "en": "Thanks"}\n')
    assert list(iter_texts(g, fields="en")) == ["Hello", "Thanks"]  # a str names one field
    assert list(iter_texts(g, fields=("en", "de"))) == ["Hello", "Hallo", "Thanks", "Danke"]


@pytest.mark.parametrize("fields, line, message", [
    (("de", "en"), '{"de": "Hallo"}', r"no 'en' field \(it has 'de'\); each line needs string fields \"de\", \"en\""),
    ("auto", '{"de": "Hallo", "en": "Hello"}',
     r"no 'text' field \(it has 'de', 'en'\); each line needs a string field \"text\", or both sides of a pair "
     r"\(source/target, text/summary\), or name its fields with --fields"),
    ("auto", '{"source": "a", "target": 3}', "'target' is int"),
    (("text",), '[1, 2]', r"no 'text' field \(the line is a JSON list, not an object\)"),
])
def test_records_without_the_fields_name_file_and_line(tmp_path, fields, line, message):
    f = write(tmp_path / "bad.jsonl", '{"text": "t", "summary": "s", "de": "d", "en": "e"}\n' + line + "\n")
    with pytest.raises(DataError, match=rf"bad\.jsonl:2: {message}"):
        list(iter_documents(f, fields=fields))
    with pytest.raises(ConfigError, match="name one or more JSONL fields"):
        next(iter_texts(f, fields=()))


def test_non_utf8_names_file_and_byte_offset(tmp_path):
    f = write(tmp_path / "latin.txt", "ok line\ncaf\u00e9\n", encoding="latin-1")
    with pytest.raises(DataError, match=r"latin\.txt: not UTF-8 at byte offset 11 \(line 2\)"):
        list(iter_documents(f))
    g = tmp_path / "latin.txt.gz"
    g.write_bytes(gzip.compress("ok\n\u00e9".encode("latin-1")))
    with pytest.raises(DataError, match=r"byte offset 3 of the decompressed data \(line 2\)"):
        list(iter_documents(g))


def test_on_read_reports_the_bytes_on_disk(tmp_path):
    # compressed bytes for .gz, whole lines for .jsonl: the calls add up to the files' sizes
    write_gz(tmp_path / "a.txt.gz", "".join(f"line {i} of some text\n\n" for i in range(5000)))
    write(tmp_path / "b.jsonl", "".join(json.dumps({"text": f"doc {i}", "id": i}) + "\n" for i in range(500)))
    for name in ("a.txt.gz", "b.jsonl"):
        read = []
        docs = list(iter_documents(tmp_path / name, on_read=read.append))
        assert len(docs) in (5000, 500) and sum(read) == (tmp_path / name).stat().st_size


def test_broken_gzip_is_a_data_error(tmp_path):
    f = write(tmp_path / "broken.txt.gz", "plain text, not gzip")
    with pytest.raises(DataError, match="broken.txt.gz: cannot read"):
        list(iter_documents(f))


def test_empty_corpus_lists_paths(tmp_path):
    empty = write(tmp_path / "empty.txt", "\n  \n")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match=r"empty corpus: .*empty\.txt, .*nothing"):
        list(iter_documents([empty, tmp_path / "nothing"]))


def test_unsupported_and_missing_paths(tmp_path):
    csv = write(tmp_path / "data.csv", "a,b\n")
    with pytest.raises(DataError, match="unsupported corpus file"):
        list(iter_documents(csv))
    with pytest.raises(DataError, match="no such file or directory"):
        list(iter_documents(tmp_path / "missing.txt"))


# --- sentences -------------------------------------------------------------------

def test_english_prose_with_abbreviations_decimals_and_quotes():
    text = ('Mr. Smith paid $3.50 for the book, i.e. a bargain. Then he left! '
            'Did Dr. Jones see J. K. Rowling? She said "No." And so on, etc. and more.')
    assert split_sentences(text) == [
        "Mr. Smith paid $3.50 for the book, i.e. a bargain.",
        "Then he left!",
        "Did Dr. Jones see J. K. Rowling?",
        'She said "No."',
        "And so on, etc. and more.",
    ]


def test_ordinary_words_and_names_before_a_full_stop_end_the_sentence():
    """"no", "ed", "est", "co", "al" were abbreviations everywhere: "The answer was no. Then ..." stayed one
    sentence (and so one NSP segment). Now "No." and the like are abbreviations before a number only."""
    assert split_sentences("The answer was no. Then we left.") == ["The answer was no.", "Then we left."]
    assert split_sentences("I met Ed. Then Al. He smiled.") == ["I met Ed.", "Then Al.", "He smiled."]
    assert split_sentences("He works at Acme Co. The firm grew.") == ["He works at Acme Co.", "The firm grew."]
    assert split_sentences("It was the best est. Rest now.") == ["It was the best est.", "Rest now."]
    for kept in ("See No. 5 and Fig. 2 for details.", "The firm, est. 1901, grew.", "Smith et al. Nature 2001.",
                 "Read the 2nd ed. 1999 printing.", "Mr. Smith of Acme Inc. Ltd. paid, cf. Vol. 3."):
        assert split_sentences(kept) == [kept]


def test_shakespeare_verse_lines_and_wrapped_prose():
    verse = ("From fairest creatures we desire increase,\n"
             "That thereby beauty's rose might never die,\n"
             "  Pity the world, or else this glutton be,\n"
             "  To eat the world's due, by the grave and thee.")
    assert split_sentences(verse) == [
        "From fairest creatures we desire increase,",
        "That thereby beauty's rose might never die,",
        "Pity the world, or else this glutton be,",
        "To eat the world's due, by the grave and thee.",
    ]
    speech = "Fran.\nNay, answer me: stand, and unfold yourself. Who's there?"
    assert split_sentences(speech) == ["Fran.", "Nay, answer me: stand, and unfold yourself.", "Who's there?"]
    wrapped = "[Exeunt, bearing off the dead bodies; after the which a peal of\nordnance is shot off.]"
    assert split_sentences(wrapped) == [
        "[Exeunt, bearing off the dead bodies; after the which a peal of ordnance is shot off.]"]
    assert split_sentences("So am I. Then go.") == ["So am I.", "Then go."]


def test_chinese_and_mixed_text():
    text = "中共中央总书记江泽民发表新年讲话。他说：“我们充满信心！”你同意吗？当然；我同意……好吧"
    assert split_sentences(text) == [
        "中共中央总书记江泽民发表新年讲话。", "他说：“我们充满信心！”", "你同意吗？", "当然；", "我同意……", "好吧"]
    review = "宝宝一岁七个月,不是太喜欢,也许是因为色彩不够鲜艳.而且对他而言,可能太简单了."
    assert split_sentences(review) == ["宝宝一岁七个月,不是太喜欢,也许是因为色彩不够鲜艳.", "而且对他而言,可能太简单了."]
    mixed = "我用 Python 3.11 写代码。It works. 很好！"
    assert split_sentences(mixed) == ["我用 Python 3.11 写代码。", "It works.", "很好！"]


def test_blank_and_whitespace_only_text():
    assert split_sentences("") == []
    assert split_sentences(" \n\n ") == []


def test_a_corpus_that_is_no_regular_file_is_refused(tmp_path):
    import os
    os.mkfifo(tmp_path / "c.txt")
    with pytest.raises(DataError, match=r"c.txt: not a regular file \(a pipe or a device\?\); a corpus is read more "
                                        r"than once"):
        list(iter_texts(tmp_path / "c.txt"))


def test_a_jsonl_corpus_python_cannot_read_is_named_by_file_and_line(tmp_path):
    """An integer of more than 4,300 digits made json.loads raise ValueError: a traceback, not file:line."""
    corpus = write(tmp_path / "c.jsonl", '{"text": "fine"}\n{"text": "x", "id": ' + "9" * 5000 + "}\n")
    with pytest.raises(DataError, match=r"c.jsonl:2:21: an integer of 5000 digits, more than the 4300 Python reads"):
        list(iter_documents([corpus]))
