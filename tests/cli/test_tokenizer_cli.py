"""`plmkit tokenizer train`: trains, saves a loadable tokenizer, reports errors cleanly."""
import gzip
import json

from plmkit.cli import main
from plmkit.tokenization import Tokenizer

DOCS = ["The quick brown fox jumps over the lazy dog.", "我们喜欢自然语言处理。", "Tokens become ids."] * 10


def write_corpus(root):
    """The corpus in root/corpus (outputs go beside it: a command refuses to write inside its inputs)."""
    directory = root / "corpus"
    directory.mkdir(exist_ok=True)
    (directory / "a.txt").write_text("\n\n".join(DOCS), encoding="utf-8")
    with gzip.open(directory / "b.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": d}) + "\n" for d in DOCS)
    return directory


def test_train_wordpiece_from_a_directory(tmp_path, capsys):
    corpus = write_corpus(tmp_path)
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--corpus", str(corpus), "--vocab-size", "200", "--out", str(out)]) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    tokenizer = Tokenizer.from_pretrained(out)
    assert f"{len(tokenizer)} tokens" in summary and str(out) in summary
    assert tokenizer.tokenize("The 语言") == ["the", "语", "言"]


def test_train_bpe_cased(tmp_path, capsys):
    corpus = write_corpus(tmp_path)
    out = tmp_path / "bpe"
    argv = ["tokenizer", "train", "--corpus", str(corpus / "a.txt"), "--vocab-size", "300", "--out", str(out),
            "--type", "bpe", "--min-frequency", "3"]
    assert main(argv) == 0
    tokenizer = Tokenizer.from_pretrained(out)
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.decode(tokenizer.encode("The Fox 狐")) == "The Fox 狐"


def test_missing_corpus_is_a_clean_error(tmp_path, capsys):
    argv = ["tokenizer", "train", "--corpus", str(tmp_path / "nope.txt"), "--vocab-size", "100",
            "--out", str(tmp_path / "tok")]
    assert main(argv) == 2
    assert "nope.txt" in capsys.readouterr().err


def test_bad_out_and_min_frequency_are_clean_errors_before_training(tmp_path, capsys):
    corpus = write_corpus(tmp_path)
    taken = tmp_path / "taken"
    taken.write_text("not a directory", encoding="utf-8")
    argv = ["tokenizer", "train", "--corpus", str(corpus / "a.txt"), "--vocab-size", "200"]
    assert main(argv + ["--out", str(taken)]) == 2
    assert f"cannot write into directory {taken} (it is a file); give another with --out" in capsys.readouterr().err
    assert taken.read_text(encoding="utf-8") == "not a directory"
    assert main(argv + ["--out", str(tmp_path / "tok"), "--min-frequency", "-1"]) == 2
    assert "--min-frequency -1: must be 0 or more" in capsys.readouterr().err


def test_an_output_inside_the_corpus_is_refused(tmp_path, capsys):
    corpus = write_corpus(tmp_path)
    argv = ["tokenizer", "train", "--corpus", str(corpus), "--vocab-size", "200", "--out", str(corpus / "tok")]
    assert main(argv) == 2
    assert f"--out {corpus / 'tok'} is inside the input --corpus {corpus}" in capsys.readouterr().err
    assert not (corpus / "tok").exists()
