"""Inputs are never written over: every command that writes refuses an output that is, holds or lies
inside one of its inputs, naming both, before it writes anything."""
import hashlib

import pytest

from plmkit.cli import main


def _digest(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "bert"}\n')
    (d / "model.safetensors").write_bytes(b"weights")
    return d


@pytest.mark.parametrize("out", ["model", "model/finetuned"])
def test_finetune_into_its_own_model_is_refused(tmp_path, model_dir, capsys, out):
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "a", "label": "x"}\n')
    before = _digest(model_dir)
    assert main(["finetune", "--task", "classification", "--model", str(model_dir), "--train", str(train),
                 "--out", str(tmp_path / out), "--max-steps", "1"]) == 2
    err = capsys.readouterr().err
    assert f"--out {tmp_path / out}" in err and f"the input --model {model_dir}" in err
    assert _digest(model_dir) == before and not (tmp_path / "model" / "finetuned").exists()


def test_finetune_into_the_folder_of_its_data_is_refused(tmp_path, model_dir, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text('{"text": "a", "label": "x"}\n')
    assert main(["finetune", "--task", "classification", "--model", str(model_dir), "--train",
                 str(data / "train.jsonl"), "--out", str(data), "--max-steps", "1"]) == 2
    assert "holds the input --train" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["predict", "generate"])
def test_an_output_file_that_is_the_input_is_refused(tmp_path, model_dir, capsys, command):
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "a", "prompt": "a"}\n')
    assert main([command, "--model", str(model_dir), "--input", str(path), "--output", str(path)]) == 2
    assert f"--output {path} is the input --input {path}" in capsys.readouterr().err
    assert path.read_text() == '{"text": "a", "prompt": "a"}\n'


def test_pretrain_into_the_folder_of_its_corpus_is_refused(tmp_path, capsys):
    (tmp_path / "corpus.txt").write_text("one two three\n")
    assert main(["pretrain", "--corpus", str(tmp_path / "corpus.txt"), "--out", str(tmp_path), "--max-steps", "1"]) == 2
    assert f"--out {tmp_path} holds the input --corpus" in capsys.readouterr().err
