"""`plmkit tokenizer train`: trains, saves a loadable tokenizer, reports errors cleanly."""
import gzip
import json

from plmkit.cli import main
from plmkit.tokenization import Tokenizer

DOCS = ["The quick brown fox jumps over the lazy dog.", "我们喜欢自然语言处理。", "Tokens become ids."] * 10


def write_corpus(directory):
    (directory / "a.txt").write_text("\n\n".join(DOCS), encoding="utf-8")
    with gzip.open(directory / "b.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": d}) + "\n" for d in DOCS)


def test_train_wordpiece_from_a_directory(tmp_path, capsys):
    write_corpus(tmp_path)
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--corpus", str(tmp_path), "--vocab-size", "200", "--out", str(out)]) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    tokenizer = Tokenizer.from_pretrained(out)
    assert f"{len(tokenizer)} tokens" in summary and str(out) in summary
    assert tokenizer.tokenize("The 语言") == ["the", "语", "言"]


def test_train_bpe_cased(tmp_path, capsys):
    write_corpus(tmp_path)
    out = tmp_path / "bpe"
    argv = ["tokenizer", "train", "--corpus", str(tmp_path / "a.txt"), "--vocab-size", "300", "--out", str(out),
            "--type", "bpe", "--min-frequency", "3"]
    assert main(argv) == 0
    tokenizer = Tokenizer.from_pretrained(out)
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.decode(tokenizer.encode("The Fox 狐")) == "The Fox 狐"


def test_missing_corpus_is_a_clean_error(tmp_path, capsys):
    argv = ["tokenizer", "train", "--corpus", str(tmp_path / "nope.txt"), "--vocab-size", "100", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "nope.txt" in capsys.readouterr().err


def test_bad_out_and_min_frequency_are_clean_errors_before_training(tmp_path, capsys):
    write_corpus(tmp_path)
    taken = tmp_path / "taken"
    taken.write_text("not a directory", encoding="utf-8")
    argv = ["tokenizer", "train", "--corpus", str(tmp_path / "a.txt"), "--vocab-size", "200"]
    assert main(argv + ["--out", str(taken)]) == 2
    assert f"--out {taken}: cannot create the directory" in capsys.readouterr().err
    assert taken.read_text(encoding="utf-8") == "not a directory"
    assert main(argv + ["--out", str(tmp_path / "tok"), "--min-frequency", "-1"]) == 2
    assert "--min-frequency -1: must be 0 or more" in capsys.readouterr().err
