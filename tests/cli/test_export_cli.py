"""`plmkit export` then `plmkit predict / evaluate / generate --backend onnxruntime`: the same answers as
the torch backend, from the exported directory alone; pruned decoders (`plmkit prune`) included."""
import json

import pytest
import torch

from onnx_helpers import TEXTS, chat_dir, exported, pruned_export, task_dir
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


def generated(capsys, model, prompts, *flags) -> list[dict]:
    """`plmkit generate --input prompts --greedy` lines."""
    capsys.readouterr()
    assert main(["generate", "--model", str(model), "--input", str(prompts), "--greedy", "--max-new-tokens", "8",
                 "--batch-size", "3", *flags]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_pruned_decoder_exports_and_generates_the_torch_backends_tokens(family, tmp_path, capsys):
    """plmkit prune, then export (each layer's past with its own heads: GPT-2 lost a head, Llama a key/value
    group), then generate on onnxruntime: PyTorch's greedy tokens, in batches of prompts of several lengths."""
    from plmkit.models.auto import load_any
    from plmkit.models.onnx import GRAPH_FILE, load_ort
    pruned, out = pruned_export(family)
    info = json.loads((out / GRAPH_FILE).read_text())
    assert info["past"]["heads"] == [1, 2] or info["past"]["heads"] == [2, 1]  # (2 a layer before)
    assert info["check"]["max_abs_diff"] <= 1e-4 and info["int8"]["argmax_agreement"] >= 0.8
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello\nhow are you?\n\nwhat is your name? good morning to you\n")
    want = generated(capsys, pruned, prompts, "--device", "cpu")
    assert generated(capsys, out, prompts, "--backend", "onnxruntime") == want
    assert len(generated(capsys, out, prompts, "--backend", "onnxruntime-int8")) == len(want) == 4
    model, runner = load_any(pruned).eval(), load_ort(out)  # token for token, beams too
    ids = torch.randint(3, model.config.vocab_size, (3, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    for settings in ({"num_beams": 1}, {"num_beams": 3, "num_return_sequences": 2}):
        kwargs = dict(attention_mask=mask, max_new_tokens=8, pad_token_id=0, **settings)
        assert torch.equal(runner.generate(ids, **kwargs), model.generate(ids, **kwargs))


@pytest.mark.parametrize("task", ["translation", "summarization"])
def test_generate_on_onnxruntime_translates_and_summarises_as_torch(task, tmp_path, capsys):
    """An encoder-decoder's prompt is its source: its output alone, streamed (--prompt) or as JSON lines."""
    prompts = tmp_path / "sources.txt"
    prompts.write_text("\n".join(TEXTS[:4]) + "\n")
    want = generated(capsys, task_dir(task), prompts, "--device", "cpu")
    assert any(row["completion"] for row in want)  # (not all empty: the comparison says something)
    assert generated(capsys, exported(task), prompts, "--backend", "onnxruntime") == want
    capsys.readouterr()
    for flags in ([], ["--backend", "onnxruntime"]):
        assert main(["generate", "--model", str(exported(task) if flags else task_dir(task)), "--prompt", TEXTS[0],
                     "--greedy", "--max-new-tokens", "8", *flags]) == 0
    streamed = capsys.readouterr().out.splitlines()
    assert streamed == [want[0]["completion"]] * 2  # (the source is not echoed)


def test_generate_on_onnxruntime_is_refused_without_a_generating_export(capsys):
    for model, message in [(chat_dir("gpt2")[0], "no plmkit_onnx.json; the onnxruntime backend runs a directory that "
                                                 "`plmkit export --format onnx` wrote"),
                           (exported("classification"), "an export of a sequence-classification model, which does not "
                                                        "generate")]:
        assert main(["generate", "--model", str(model), "--prompt", "hello", "--backend", "onnxruntime"]) == 2
        assert message in capsys.readouterr().err
    assert main(["generate", "--model", str(pruned_export("gpt2")[1]), "--prompt", "hello", "--backend",
                 "onnxruntime", "--device", "cuda"]) == 2
    assert "--backend onnxruntime runs on the CPU; drop --device cuda" in capsys.readouterr().err


def test_evaluate_an_exported_chat_model_gives_the_torch_backends_perplexity(capsys):
    pruned, out = pruned_export("gpt2")
    pairs = chat_dir("gpt2")[1]
    scores = []
    for model, flags in [(pruned, ["--device", "cpu"]), (out, ["--backend", "onnxruntime"])]:
        capsys.readouterr()
        assert main(["evaluate", "--model", str(model), "--data", str(pairs), "--json", *flags]) == 0
        scores.append(json.loads(capsys.readouterr().out))
    assert scores[1]["perplexity"] == pytest.approx(scores[0]["perplexity"], rel=1e-5)
