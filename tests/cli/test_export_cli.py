"""`plmkit export` then `plmkit predict / evaluate --backend onnxruntime`: the same answers as the
torch backend, from the exported directory alone."""
import json

import pytest

from onnx_helpers import exported, task_dir
from plmkit.cli import main

INPUTS = ["a wonderful film with a great cast", "dull", "Mary met Peter in London last May and John lives in Berlin",
          "Paris"]


def predictions(capsys, model, *flags) -> list[dict]:
    capsys.readouterr()
    assert main(["predict", "--model", str(model), "--input", str(predictions.input), *flags]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize("task", ["classification", "ner"])
def test_predict_with_onnxruntime_gives_the_torch_backends_answers(task, tmp_path, capsys):
    predictions.input = tmp_path / "in.jsonl"
    predictions.input.write_text("".join(json.dumps({"text": t}) + "\n" for t in INPUTS))
    want = predictions(capsys, task_dir(task))
    got = predictions(capsys, exported(task), "--backend", "onnxruntime")
    int8 = predictions(capsys, exported(task), "--backend", "onnxruntime-int8")
    assert len(want) == len(got) == len(int8) == len(INPUTS)
    if task == "classification":
        assert [r["label"] for r in got] == [r["label"] for r in want]
        assert [r["score"] for r in got] == pytest.approx([r["score"] for r in want], abs=1e-5)
        assert sum(a["label"] == b["label"] for a, b in zip(int8, want)) >= len(INPUTS) - 1
    else:
        assert any(r["entities"] for r in want)  # (random tags: something to compare)
        for a, b in zip(got, want):
            assert [(e["entity_group"], e["start"], e["end"]) for e in a["entities"]] == \
                   [(e["entity_group"], e["start"], e["end"]) for e in b["entities"]]
            assert [e["score"] for e in a["entities"]] == pytest.approx([e["score"] for e in b["entities"]], abs=1e-5)


def test_evaluate_with_onnxruntime_gives_the_torch_backends_metrics(tmp_path, capsys):
    data = tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": ["neg", "pos"][i % 2]}) + "\n" for i, t in enumerate(INPUTS)))
    scores = []
    for model, flags in [(task_dir("classification"), []), (exported("classification"), ["--backend", "onnxruntime"])]:
        capsys.readouterr()
        assert main(["evaluate", "--model", str(model), "--data", str(data), "--json", *flags]) == 0
        scores.append(json.loads(capsys.readouterr().out))
    assert scores[1]["accuracy"] == scores[0]["accuracy"] and "loss" not in scores[1]  # (no loss without labels in)


def test_the_onnxruntime_backend_is_refused_where_it_cannot_run(tmp_path, capsys):
    assert main(["predict", "--model", str(task_dir("classification")), "--input", "-", "--backend", "onnxruntime"]) == 2
    assert "no plmkit_onnx.json; the onnxruntime backend runs a directory that `plmkit export --format onnx` wrote" \
        in capsys.readouterr().err
    assert main(["predict", "--model", str(exported("classification")), "--input", "-", "--backend", "onnxruntime",
                 "--device", "cuda"]) == 2
    assert "--backend onnxruntime runs on the CPU; drop --device cuda" in capsys.readouterr().err


def test_export_refuses_to_write_over_its_input(capsys):
    model = task_dir("classification")
    assert main(["export", "--model", str(model), "--out", str(model / "onnx")]) == 2
    assert "is inside the input --model" in capsys.readouterr().err
