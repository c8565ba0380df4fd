"""`plmkit tokenizer train`: trains, saves a loadable tokenizer, reports errors cleanly."""
import gzip
import json
import re

import pytest

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


@pytest.mark.parametrize("given", [["my_corpus_dir"], ["GOOD", "my_corpus_dir"], [""], ["empty_dir"]])
def test_every_corpus_value_is_a_path_and_a_missing_or_empty_one_is_refused(tmp_path, capsys, monkeypatch, given):
    corpus = write_corpus(tmp_path)
    (tmp_path / "empty_dir").mkdir()
    monkeypatch.chdir(tmp_path)
    paths = [str(corpus / "a.txt") if c == "GOOD" else c for c in given]
    argv = ["tokenizer", "train", "--corpus", *paths, "--vocab-size", "100", "--out", str(tmp_path / "tok")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and (given[-1] or '--corpus ""') in err
    assert not (tmp_path / "tok").exists()


def test_quiet_turns_the_trainers_progress_bars_off(tmp_path, monkeypatch):
    import sys

    seen = {}
    real = Tokenizer.train.__func__
    monkeypatch.setattr(Tokenizer, "train", classmethod(lambda cls, *a, **kw: seen.update(kw) or real(cls, *a, **kw)))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    corpus = write_corpus(tmp_path)
    argv = ["tokenizer", "train", "--corpus", str(corpus / "a.txt"), "--vocab-size", "100", "--out"]
    assert main(argv + [str(tmp_path / "a")]) == 0 and seen["show_progress"] is True
    assert main(["--quiet"] + argv + [str(tmp_path / "b")]) == 0 and seen["show_progress"] is False


def test_bad_out_and_min_frequency_are_clean_errors_before_training(tmp_path, capsys):
    corpus = write_corpus(tmp_path)
    taken = tmp_path / "taken"
    taken.write_text("not a directory", encoding="utf-8")
    argv = ["tokenizer", "train", "--corpus", str(corpus / "a.txt"), "--vocab-size", "200"]
    assert main(argv + ["--out", str(taken)]) == 2
    assert f"cannot write into directory {taken} (it is a file); give another with --out" in capsys.readouterr().err
    assert taken.read_text(encoding="utf-8") == "not a directory"
    assert main(argv + ["--out", str(tmp_path / "tok"), "--min-frequency", "-1"]) == 2
    assert "min_frequency (--min-frequency) must be an integer >= 0, got int -1" in capsys.readouterr().err


def test_an_output_inside_the_corpus_is_refused(tmp_path, capsys):
    corpus = write_corpus(tmp_path)
    argv = ["tokenizer", "train", "--corpus", str(corpus), "--vocab-size", "200", "--out", str(corpus / "tok")]
    assert main(argv) == 2
    assert f"--out {corpus / 'tok'} is inside the input --corpus {corpus}" in capsys.readouterr().err
    assert not (corpus / "tok").exists()


def write_pairs(root):
    directory = root / "pairs"
    directory.mkdir(exist_ok=True)
    records = [{"source": "The weather is nice today.", "target": "今天天气很好。"},
               {"source": "We like natural language processing.", "target": "我们喜欢自然语言处理。"}] * 15
    (directory / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                                           encoding="utf-8")
    return directory / "train.jsonl"


def test_train_unigram_marian_style_on_both_sides_of_a_parallel_corpus(tmp_path, capsys):
    from transformers import AutoTokenizer as HFAutoTokenizer

    out = tmp_path / "tok"
    argv = ["tokenizer", "train", "--corpus", str(write_pairs(tmp_path)), "--vocab-size", "300", "--model", "unigram",
            "--out", str(out)]
    assert main(argv) == 0
    tokenizer = Tokenizer.from_pretrained(out)
    assert f"trained a unigram tokenizer (PreTrainedTokenizerFast) with {len(tokenizer)} tokens" in capsys.readouterr().out
    text = "We like 今天天气。"
    assert tokenizer.decode(tokenizer.encode(text), skip_special_tokens=True) == text
    assert tokenizer.encode(text)[-1] == tokenizer.eos_token_id == 0 and tokenizer.pad_token_id == 2
    assert HFAutoTokenizer.from_pretrained(out)(text).input_ids == tokenizer.encode(text)


def test_train_byte_bpe_bart_style_with_chosen_fields(tmp_path):
    corpus = tmp_path / "de_en.jsonl"
    corpus.write_text('{"de": "Guten Tag", "en": "Good day", "id": 1}\n' * 10, encoding="utf-8")
    out = tmp_path / "bart"
    argv = ["tokenizer", "train", "--corpus", str(corpus), "--vocab-size", "300", "--model", "byte-bpe",
            "--style", "bart", "--fields", "de, en", "--out", str(out)]
    assert main(argv) == 0
    tokenizer = Tokenizer.from_pretrained(out)
    assert tokenizer.tokenizer_class == "BartTokenizer" and tokenizer.mask_token_id == 4
    assert [tokenizer.tokenize(t) for t in ("Guten Tag", "Good day")] == [["Guten", "ĠTag"], ["Good", "Ġday"]]
    assert tokenizer("Guten").input_ids == [0, tokenizer.convert_tokens_to_ids("Guten"), 2]


def test_help_lists_the_models_styles_and_fields_with_defaults(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # no line breaks inside "byte-bpe"
    with pytest.raises(SystemExit):
        main(["tokenizer", "train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for expected in ("--model {wordpiece,byte-bpe,bpe,unigram}", "(default: wordpiece)", "--style {bert,gpt2,bart,marian}",
                     "(default: the model's own: wordpiece bert, byte-bpe gpt2, bpe marian, unigram marian)",
                     "--fields NAMES", "(default: auto: source,target or text,summary", "--type bpe is --model byte-bpe",
                     "(default: 2)"):
        assert expected in text, expected


@pytest.mark.parametrize("extra, message", [
    (["--fields", "source,translation"], r"train.jsonl:1: no 'translation' field \(it has 'source', 'target'\); "
                                         r"each line needs string fields \"source\", \"translation\""),
    (["--fields", "source,,target"], r"--fields 'source,,target': name JSONL fields separated by commas"),
    (["--model", "unigram", "--vocab-size", "200"], r"vocab_size=200 must be an int larger than 259, the 3 special "
                                                    r"tokens plus 256 byte tokens"),
    (["--model", "wordpiece", "--style", "bart"], r"model='wordpiece' and style='bert' go together only"),
    (["--model", "bpe", "--type", "bpe"], r"give --model only: --type is its old spelling"),
])
def test_bad_input_is_a_one_line_error(tmp_path, capsys, extra, message):
    argv = ["tokenizer", "train", "--corpus", str(write_pairs(tmp_path)), "--vocab-size", "300",
            "--out", str(tmp_path / "tok")] + extra
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert not (tmp_path / "tok" / "tokenizer.json").exists()


def test_a_corpus_with_no_text_is_a_one_line_error(tmp_path, capsys):
    corpus = tmp_path / "blank.jsonl"
    corpus.write_text('{"source": " ", "target": ""}\n\n', encoding="utf-8")
    argv = ["tokenizer", "train", "--corpus", str(corpus), "--vocab-size", "300", "--model", "unigram",
            "--out", str(tmp_path / "tok")]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (f"plmkit tokenizer: error: empty corpus: no documents in {corpus}; give "
                                               "files or directories holding non-empty .txt, .txt.gz, .jsonl, "
                                               ".jsonl.gz files")


def test_a_tokenizer_or_model_in_out_is_kept_and_flags_that_do_not_apply_are_refused(tmp_path, capsys):
    corpus = write_corpus(tmp_path)
    argv = ["tokenizer", "train", "--corpus", str(corpus / "a.txt"), "--vocab-size", "200"]
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "vocab.txt").write_text("[PAD]\n")
    assert main(argv + ["--out", str(model)]) == 2
    assert "already holds vocab.txt, config.json" in capsys.readouterr().err
    assert (model / "vocab.txt").read_text() == "[PAD]\n"
    assert main(argv + ["--out", str(model), "--overwrite"]) == 0
    for extra, message in [(["--model", "byte-bpe", "--no-lowercase"], "lowercase (--no-lowercase) is for model wordpiece, not byte-bpe"),
                           (["--model", "unigram", "--min-frequency", "3"], "min_frequency (--min-frequency) is for model wordpiece, bpe, byte-bpe, not unigram"),
                           (["--out", ""], "--out is empty")]:
        assert main(argv + ["--out", str(tmp_path / "t2"), *extra] if "--out" not in extra else argv + extra) == 2
        assert message in capsys.readouterr().err
