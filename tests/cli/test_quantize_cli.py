"""`plmkit quantize` end to end on tiny models: the report, then evaluate / predict / pipeline /
generate on the int8 directory unchanged, and fine-tuning it refused by name."""
import json
import sys
from pathlib import Path

import pytest

import compression_helpers as ch
import plmkit
from plmkit.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from clm_model import save_tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def int8(tmp_path_factory):
    model, test = ch.sentiment_dir()
    out = tmp_path_factory.mktemp("q") / "int8"
    assert main(["quantize", "--model", str(model), "--out", str(out), "--eval", str(test), "--batch-sizes", "1,4",
                 "--threads", "1"]) == 0
    return model, out, test


def test_quantize_prints_and_saves_the_report(int8, capsys):
    model, out, _ = int8
    report = json.loads((out / "compression_report.json").read_text())
    assert report["before"]["model"] == str(model) and report["after"]["model"] == str(out)
    assert report["after"]["how"]["quantization_config"]["method"] == "dynamic-int8"
    assert report["after"]["size_mb"] < 0.3 * report["before"]["size_mb"]
    assert report["after"]["parameters"] == report["before"]["parameters"]
    assert abs(report["after"]["metric"]["accuracy"] - report["before"]["metric"]["accuracy"]) <= 0.05


def test_evaluate_predict_and_pipeline_run_unchanged(int8, capsys):
    model, out, test = int8
    scores = {}
    for directory in (model, out):
        assert main(["evaluate", "--model", str(directory), "--data", str(test), "--json"]) == 0
        scores[directory] = json.loads(capsys.readouterr().out)
    assert abs(scores[out]["accuracy"] - scores[model]["accuracy"]) <= 0.05
    assert main(["predict", "--model", str(out), "--input", str(test)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 100 and {r["label"] for r in rows} <= {"negative", "positive"}
    fp32 = plmkit.pipeline("text-classification", model=model)(["a dull film", "a wonderful film"])
    int8_answers = plmkit.pipeline("text-classification", model=out)(["a dull film", "a wonderful film"])
    assert [a["label"] for a in int8_answers] == [a["label"] for a in fp32]


def test_finetuning_an_int8_model_is_refused(int8, tmp_path, capsys):
    _, out, test = int8
    assert main(["finetune", "--task", "classification", "--model", str(out), "--train", str(test),
                 "--out", str(tmp_path / "ft"), "--max-steps", "1", "--device", "cpu"]) == 2
    assert "cannot be trained or fine-tuned; train the fp32 model and quantize the result" in capsys.readouterr().err


def test_generate_with_an_int8_decoder(tmp_path, capsys):
    model = save_tiny_model(tmp_path / "gpt2")
    out = tmp_path / "gpt2-int8"
    assert main(["quantize", "--model", str(model), "--out", str(out), "--method", "weight-int8", "--no-report"]) == 0
    capsys.readouterr()
    for directory in (model, out):
        assert main(["generate", "--model", str(directory), "--prompt", "The old sailor", "--max-new-tokens", "6",
                     "--greedy"]) == 0
    fp32_text, int8_text = capsys.readouterr().out.splitlines()[-2:]
    assert int8_text.startswith("The old sailor") and int8_text == fp32_text  # weight-int8: fp32 compute


@pytest.mark.parametrize("flags, message", [(["--batch-sizes", "1,x"], "--batch-sizes"),
                                            (["--batch-sizes", "0"], "--batch-sizes"),
                                            (["--threads", "0"], "--threads 0"),
                                            (["--eval", "missing.jsonl"], "--eval missing.jsonl: no such file")])
def test_report_flags_are_checked_before_the_work(tmp_path, capsys, flags, message):
    model, _ = ch.sentiment_dir()
    out = tmp_path / "int8"
    assert main(["quantize", "--model", str(model), "--out", str(out), *flags]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_compare_checks_its_out_before_measuring(tmp_path, capsys, monkeypatch):
    import plmkit.compression.report as report
    model, _ = ch.sentiment_dir()
    monkeypatch.setattr(report, "measure", lambda *a, **kw: pytest.fail("measured before --out was checked"))
    (tmp_path / "a_file").write_text("")
    assert main(["compare", str(model), "--out", str(tmp_path / "a_file")]) == 2
    assert "give another with --out" in capsys.readouterr().err
