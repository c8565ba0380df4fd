"""plmkit.compression.report: what `measure` returns, the table, the JSON, and `plmkit compare`."""
import json

import pytest

import compression_helpers as ch
from plmkit.cli import main
from plmkit.compression import report as R
from plmkit.errors import ConfigError


@pytest.fixture(scope="module")
def measured():
    model, test = ch.sentiment_dir()
    return model, test, R.measure(model, eval_file=test, batch_sizes=(1, 4), warmup=1, repeats=3)


def test_measure_reports_size_speed_and_the_evaluate_metric(measured):
    from plmkit.tasks import evaluate_dir
    model, test, r = measured
    assert set(r) == {"model", "backend", "size_mb", "parameters", "latency_ms", "throughput", "inputs", "timed",
                      "threads", "clock", "task", "metric", "how"}
    assert r["timed"] == "forward pass" and r["task"] == "classification"
    assert r["size_mb"] == pytest.approx((model / "model.safetensors").stat().st_size / 2 ** 20)
    from plmkit.models.auto import load_any
    assert r["parameters"] == load_any(model).num_parameters()
    assert set(r["latency_ms"]) == set(r["throughput"]) == {1, 4}
    for b, ms in r["latency_ms"].items():
        assert ms > 0 and r["throughput"][b] == pytest.approx(b * 1000 / ms)
    metrics = evaluate_dir(model, test, device="cpu")  # the same code path; counts (n) left out
    assert r["metric"] == pytest.approx({k: v for k, v in metrics.items() if isinstance(v, float)})
    assert "accuracy" in r["metric"] and "n" not in r["metric"]
    assert r["how"] == {} and "real lengths" in r["inputs"]


def test_synthetic_inputs_without_an_eval_file(measured):
    model, _, _ = measured
    r = R.measure(model, batch_sizes=(2,), seq_len=16, warmup=1, repeats=2, threads=1, cpu_time=True)
    assert r["metric"] == {} and r["inputs"] == "synthetic, 16 tokens" and r["threads"] == 1
    assert r["clock"] == "process CPU time" and r["latency_ms"][2] > 0
    with pytest.raises(ConfigError, match="backend 'nope' is not available; choose one of torch"):
        R.measure(model, backend="nope")
    with pytest.raises(ConfigError, match="batch_sizes must be positive integers"):
        R.measure(model, batch_sizes=(0,))


def test_how_is_what_config_json_records(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "quantization_config": {"bits": 8},
                                                      "pruned_heads": {}, "rope_scaling": None}))
    assert R.recorded_how(tmp_path) == {"quantization_config": {"bits": 8}}


def test_table_ratios_and_json_round_trip(measured, tmp_path):
    _, _, r = measured
    half = {**r, "model": "x/int8", "size_mb": r["size_mb"] / 4, "latency_ms": {k: v / 2 for k, v in r["latency_ms"].items()},
            "metric": {**r["metric"], "accuracy": r["metric"]["accuracy"] - 0.01}}
    table = R.format_report([r, half], baseline=r)
    row = table.splitlines()[3]
    assert row.startswith("x/int8") and "(4.00x smaller)" in row and "(2.00x)" in row and "(-1.00 pts)" in row
    path = R.save_report(tmp_path / "out", {"before": r, "after": half})
    back = json.loads(path.read_text())
    assert path.name == R.REPORT_FILE and back["after"]["latency_ms"] == {str(k): v for k, v in half["latency_ms"].items()}
    assert R.format_report([back["before"], back["after"]], back["before"]) == table  # string keys read back


def _report(name: str, task: str | None, metric: dict) -> dict:
    return {"model": f"runs/{name}", "backend": "torch", "size_mb": 300.0, "parameters": 7.6e7,
            "latency_ms": {1: 100.0}, "throughput": {1: 10.0}, "task": task, "metric": metric}


@pytest.mark.parametrize("task,before,after,shown", [
    ("classification", {"accuracy": 0.9130, "f1": 0.9}, {"accuracy": 0.9010, "f1": 0.905}, ["-1.20 pts", "+0.50 pts"]),
    ("ner", {"f1": 0.85, "token_accuracy": 0.97}, {"f1": 0.84, "token_accuracy": 0.96}, ["-1.00 pts", "-1.00 pts"]),
    ("translation", {"bleu": 27.30, "chrf": 55.10}, {"bleu": 26.10, "chrf": 54.20}, ["-1.20", "-0.90"]),  # 0-100
    ("qa", {"exact_match": 71.5, "f1": 80.25}, {"exact_match": 70.0, "f1": 79.75}, ["-1.50", "-0.50"]),  # 0-100
    ("sft", {"perplexity": 35.2}, {"perplexity": 36.1}, ["+0.90"]),  # no fraction
    (None, {"accuracy": 0.9}, {"accuracy": 0.8}, ["-0.10"]),  # a report of no known task: as it is
])
def test_metric_differences_are_points_for_0_1_metrics_and_as_they_are_otherwise(task, before, after, shown):
    baseline = _report("teacher", task, before)
    table = R.format_report([baseline, _report("student", task, after)], baseline)
    cells = [c.strip() for c in table.splitlines()[3].split("  ") if c.strip()][-len(shown):]
    assert [c.split(" (", 1)[1].rstrip(")") for c in cells] == shown, table
    assert [float(c.split(" (")[0]) for c in cells] == pytest.approx(list(after.values()))
    assert "metrics: value (difference; pts: points, x100 of a 0-1 metric)" in table


def test_counts_are_no_metric_columns():
    from onnx_helpers import chat_dir
    model, pairs = chat_dir("gpt2")
    r = R.measure(model, eval_file=pairs, batch_sizes=(1,), warmup=0, repeats=1, new_tokens=2)
    assert set(r["metric"]) == {"loss", "perplexity"} and r["task"] == "sft"  # (sft's evaluation counts its tokens)
    old = _report("old", "sft", {**r["metric"], "tokens": 67.0, "n": 3.0})  # a report saved with counts
    assert R.metric_names([r, old]) == ["perplexity"]
    assert R.format_report([r, old], r).splitlines()[0].split()[-1] == "perplexity"  # (the last column)


def test_compare_cli_prints_writes_json_and_png(measured, tmp_path, capsys):
    model, test, _ = measured
    out = tmp_path / "cmp"
    assert main(["compare", str(model), f"torch:{model}", "--eval", str(test), "--out", str(out),
                 "--batch-sizes", "1,2", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "b2 ex/s" in printed and "accuracy" in printed and "x smaller" in printed
    saved = json.loads((out / "compare.json").read_text())
    assert saved["baseline"] == str(model) and len(saved["models"]) == 2
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["compare", str(model), "--batch-sizes", "1,x"]) == 2
    assert "--batch-sizes: comma-separated integers" in capsys.readouterr().err


def test_decoders_and_encoder_decoders_are_timed_on_synthetic_inputs(tmp_path):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parents[1] / "cli"))
    from clm_model import save_tiny_model
    from plmkit.models.marian import MarianConfig, MarianMTModel
    config = MarianConfig.from_preset("marian-tiny", vocab_size=300, decoder_vocab_size=300, pad_token_id=0,
                                      eos_token_id=1, decoder_start_token_id=0)
    MarianMTModel(config).save_pretrained(tmp_path / "marian")
    for directory in (save_tiny_model(tmp_path / "gpt2"), tmp_path / "marian"):
        r = R.measure(directory, batch_sizes=(2,), seq_len=10, warmup=1, repeats=2)
        assert r["latency_ms"][2] > 0 and r["metric"] == {} and r["parameters"] > 0
    with pytest.raises(ConfigError, match="not a fine-tuned model .* cannot be scored"):
        R.measure(tmp_path / "marian", eval_file=tmp_path / "x.jsonl")


def test_exported_encoder_decoders_and_decoders_are_measured_on_onnxruntime(tmp_path, capsys):
    """A Marian translation model and a pruned GPT-2 chat model, each on PyTorch and on its export's fp32 and
    int8 graphs: the graphs' size, generation latency, and the metric of plmkit evaluate (BLEU, perplexity)."""
    from onnx_helpers import TEXTS, chat_dir, exported, pruned_export, task_dir
    data = tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps({"source": s, "target": t}) + "\n" for s, t in zip(TEXTS, TEXTS[1:])))
    cases = [(task_dir("translation"), exported("translation"), data, ("encoder_model", "decoder_model"), "bleu"),
             (*pruned_export("gpt2"), chat_dir("gpt2")[1], ("model",), "perplexity")]
    for model, out, eval_file, parts, metric in cases:
        assert R.backend_of(out) == "onnxruntime"
        torch_r, fp32, int8 = (R.measure(model if backend == "torch" else out, eval_file=eval_file, backend=backend,
                                         batch_sizes=(1, 4), warmup=1, repeats=2, new_tokens=3)
                               for backend in ("torch", "onnxruntime", "onnxruntime-int8"))
        for precision, r in (("fp32", fp32), ("int8", int8)):
            files = [out / (f"{part}.onnx" if precision == "fp32" else f"{part}.int8.onnx") for part in parts]
            assert r["size_mb"] == pytest.approx(sum(f.stat().st_size for f in files) / 2 ** 20)
        assert int8["size_mb"] < fp32["size_mb"] and fp32["parameters"] > 0
        for r in (torch_r, fp32, int8):
            assert r["timed"] == "greedy generation of 3 new tokens per row" and set(r["latency_ms"]) == {1, 4}
            assert all(ms > 0 for ms in r["latency_ms"].values()) and metric in r["metric"]
        assert fp32["metric"] == pytest.approx(torch_r["metric"], rel=1e-4, abs=1e-4)
    capsys.readouterr()
    model, out = task_dir("translation"), exported("translation")
    assert main(["compare", str(model), str(out), f"onnxruntime-int8:{out}", "--eval", str(data), "--batch-sizes",
                 "1,2", "--new-tokens", "2", "--out", str(tmp_path / "cmp")]) == 0
    printed = capsys.readouterr().out
    assert "[onnxruntime-int8]" in printed and printed.count("timed: greedy generation of 2 new tokens per row") == 1
    assert [r["backend"] for r in json.loads((tmp_path / "cmp" / "compare.json").read_text())["models"]] == \
        ["torch", "onnxruntime", "onnxruntime-int8"]
