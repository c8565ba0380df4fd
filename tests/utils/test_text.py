"""Text reading: lines end at \\n (and \\r\\n) only, so raw separators inside JSON strings survive."""
import json

import pytest

from plmkit.errors import DataError
from plmkit.utils.text import jsonl_rows, read_lines, split_lines

SEPARATORS = "\u0085\u2028\u2029\x0c\x1c\x0b"  # all of them break str.splitlines()


def test_split_lines_only_at_newlines():
    assert split_lines("a\r\nb\nc") == ["a", "b", "c"]
    assert split_lines("a\nb\n") == ["a", "b"]
    assert split_lines(f"x{SEPARATORS}y\n") == [f"x{SEPARATORS}y"]


def test_jsonl_keeps_records_with_raw_unicode_separators(tmp_path):
    texts = [f"great film{sep}really" for sep in SEPARATORS]
    path = tmp_path / "reviews.jsonl"
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    assert len(path.read_text(encoding="utf-8").splitlines()) > len(texts)  # what the old reader saw
    rows = list(jsonl_rows(path))
    assert [n for n, _ in rows] == list(range(1, len(texts) + 1))
    assert [r["text"] for _, r in rows] == texts


def test_crlf_and_bom(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes("\ufeffone\r\ntwo\r\n".encode("utf-8"))
    assert read_lines(path) == ["one", "two"]


@pytest.mark.parametrize("content, message", [(None, "no such file"), (b"  \n", "empty"),
                                              (b"ok\n\xff\n", r":2: not UTF-8")])
def test_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / "data.jsonl"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_lines(path)


def test_malformed_line_named(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n\n{"a": \n[1]\n')
    with pytest.raises(DataError, match=r"d.jsonl:3:7: not valid JSON"):
        list(jsonl_rows(path))
    path.write_text('{"a": 1}\n[1]\n')
    with pytest.raises(DataError, match=r"d.jsonl:2: expected a JSON object, got list"):
        list(jsonl_rows(path))


def test_a_path_that_is_no_file_says_what_it_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for path, message in ((tmp_path, r": is a directory; give a data file in it"), ("", r"^empty path"),
                          (["d.jsonl"], r"^the data must be the path of a data file, got list \['d.jsonl'\]"),
                          ("nope.jsonl", r"^nope.jsonl: no such file")):
        with pytest.raises(DataError, match=message):
            read_lines(path)


def test_stdin_is_read_as_a_file_is(monkeypatch):
    import io
    from plmkit.utils.text import read_stdin

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO("\ufeff{\"a\": 1}\n".encode("utf-8"))))
    assert read_stdin() == '{"a": 1}\n'  # the BOM dropped, as in a file
    for raw, message in ((b"", r"<stdin>: no input \(stdin is empty\)"), (b"\n \n", "no input"),
                         (b"ok\n\xff\n", r"<stdin>:2: not UTF-8")):
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(raw)))
        with pytest.raises(DataError, match=message):
            read_stdin()


def test_half_a_utf16_pair_is_named_at_its_line(tmp_path):
    from plmkit.utils.text import parse_json
    assert parse_json('{"a": "\\ud83d\\ude00"}', "f") == {"a": "\U0001F600"}  # a pair is one character
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "fine"}\n{"text": "x \\ud800 y"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"d.jsonl:2:13: \\ud800 is half a UTF-16 pair, no character"):
        list(jsonl_rows(path))
    with pytest.raises(DataError, match=r"f.json:2:8: \\udc00 is half"):
        parse_json('{"a": "\\ud83d\\ude00",\n "b": "\\udc00"}', "f.json")


def test_a_pipe_is_read_once_and_refused_when_it_sends_no_text(tmp_path):
    import os
    import threading
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for sent, outcome in ((b"one\ntwo\n", ["one", "two"]), (b"ok\n\xff\n", r"pipe:2: not UTF-8"),
                          (b"a\0b", "sends NUL bytes")):
        writer = threading.Thread(target=lambda: fifo.write_bytes(sent))
        writer.start()
        if isinstance(outcome, list):
            assert read_lines(fifo) == outcome
        else:
            with pytest.raises(DataError, match=outcome):
                read_lines(fifo)
        writer.join()


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_a_bad_byte_is_placed_from_the_files_start_bom_or_not(tmp_path, bom):
    """An Excel export: a BOM, then a Latin-1 É starting row 2."""
    from plmkit.utils.text import read_json, read_utf8
    path = tmp_path / "rows.csv"
    path.write_bytes(bom + b"text,label\n\xc9t\xe9,1\n")
    at = len(bom) + 11
    with pytest.raises(DataError, match=rf"rows.csv:2: not UTF-8 text \(byte {at}: b'\\xc9'\)"):
        read_utf8(path)
    path.write_bytes(bom + b'{"a":\n"\xc9"}')
    with pytest.raises(DataError, match=rf"rows.csv:2: not UTF-8 text \(byte {len(bom) + 7}\)"):
        read_json(path)
