"""ONNX export: graphs with dynamic batch and sequence axes that onnxruntime runs as PyTorch does
(within 1e-4 at batch sizes and lengths the export never saw), int8 that keeps the argmax, decoders
that generate step by step on their past keys and values, and refusals by name."""
import json
import shutil

import onnx
import pytest
import torch

from onnx_helpers import exported, task_dir
from plmkit.compression import onnx as export
from plmkit.compression.onnx import export_model, export_onnx
from plmkit.errors import CheckpointError, ConfigError
from plmkit.models.auto import load_any
from plmkit.models.onnx import GRAPH_FILE, OrtModel


def padded_batch(vocab: int, batch: int, length: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, length), generator=g)
    mask = (torch.arange(length)[None] < torch.randint(1, length + 1, (batch,), generator=g)[:, None]).long()
    mask[0] = 1
    return ids, mask


@pytest.mark.parametrize("task", ["classification", "ner"])
def test_onnxruntime_equals_pytorch_at_shapes_the_export_never_saw(task):
    out = exported(task)
    info = json.loads((out / GRAPH_FILE).read_text())
    assert info["check"]["max_abs_diff"] <= 1e-4 and len(info["check"]["shapes"]) >= 4
    graph = onnx.load(str(out / "model.onnx"))
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.graph.input}
    assert inputs == dict.fromkeys(["input_ids", "attention_mask", "token_type_ids"], ["batch", "sequence"])
    assert graph.graph.output[0].name == "logits"
    model, runner = load_any(task_dir(task)).eval(), OrtModel(out)
    for batch, length in [(7, 13), (1, 1), (3, 40)]:
        ids, mask = padded_batch(model.config.vocab_size, batch, length)
        with torch.no_grad():
            want = model(ids, mask).logits  # the eager, unpadded forward
        got = runner(input_ids=ids, attention_mask=mask).logits
        real = mask.bool() if want.dim() == 3 else torch.ones(batch, dtype=torch.bool)
        torch.testing.assert_close(got[real], want[real], atol=1e-4, rtol=0)


def test_the_exported_directory_stands_on_its_own():
    out = exported("classification")
    names = {p.name for p in out.iterdir()}
    assert {"model.onnx", "model.int8.onnx", "config.json", "plmkit_task.json", "tokenizer.json", GRAPH_FILE} <= names
    assert "model.safetensors" not in names
    assert (out / "plmkit_task.json").read_bytes() == (task_dir("classification") / "plmkit_task.json").read_bytes()


def test_int8_keeps_the_argmax_in_a_smaller_file():
    out = exported("classification")
    info = json.loads((out / GRAPH_FILE).read_text())["int8"]
    assert info["argmax_agreement"] >= 0.9
    assert (out / "model.int8.onnx").stat().st_size < (out / "model.onnx").stat().st_size
    model, runner = load_any(task_dir("classification")).eval(), OrtModel(out, "int8")
    ids, mask = padded_batch(model.config.vocab_size, 64, 12, seed=5)
    with torch.no_grad():
        want = model(ids, mask).logits.argmax(-1)
    assert (runner(input_ids=ids, attention_mask=mask).logits.argmax(-1) == want).float().mean() >= 0.9


def _gpt2():
    from plmkit.models.gpt2 import GPT2Config, GPT2LMHeadModel
    return GPT2LMHeadModel(GPT2Config(vocab_size=80, n_positions=48, n_embd=32, n_layer=2, n_head=4))


def _llama():
    from plmkit.models.llama import LlamaConfig, LlamaForCausalLM
    return LlamaForCausalLM(LlamaConfig(vocab_size=80, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=48))


@pytest.mark.parametrize("build", [_gpt2, _llama], ids=["gpt2", "llama"])
def test_a_decoder_generates_step_by_step_on_its_past_as_pytorch_does(build, tmp_path):
    """One graph for the prompt (past of length 0) and every step after it: greedy decoding through
    onnxruntime, feeding each present back as the next past, gives plmkit's greedy tokens."""
    torch.manual_seed(0)
    model = build().eval()
    info = export_model(model, tmp_path)
    assert info["past"]["layers"] == 2 and info["outputs"][:2] == ["logits", "present.0.key"]
    runner = OrtModel(tmp_path)
    ids = torch.randint(0, 80, (2, 6))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding
    want = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    out = runner(input_ids=ids, attention_mask=mask)
    tokens = ids
    for _ in range(6):
        step = out.logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
        tokens, mask = torch.cat([tokens, step], 1), torch.cat([mask, torch.ones_like(step)], 1)
        out = runner(input_ids=step, attention_mask=mask, past_key_values=out.past_key_values)
    assert torch.equal(tokens, want)


def test_what_cannot_be_exported_is_refused_by_name(tmp_path):
    from plmkit.models.bart import BartConfig, BartForConditionalGeneration
    from plmkit.nn.lora import apply_lora
    with pytest.raises(ConfigError, match="BartForConditionalGeneration cannot be exported to ONNX"):
        export_model(BartForConditionalGeneration(BartConfig.from_preset("bart-tiny")), tmp_path)
    lora = load_any(task_dir("classification"))
    apply_lora(lora, targets=("q", "v"), rank=2)
    with pytest.raises(ConfigError, match="LoRA adapters not merged .*merge_lora"):
        export_model(lora, tmp_path)
    from plmkit.compression.quantize import quantize_model
    with pytest.raises(ConfigError, match="is quantized .*takes the fp32 model"):
        export_model(quantize_model(load_any(task_dir("classification"))), tmp_path)
    assert not (tmp_path / "model.onnx").exists()


def test_a_graph_that_disagrees_with_pytorch_is_not_written(tmp_path, monkeypatch):
    """(The graph exported once before, slightly off: the check is what is tested here.)"""
    graph = exported("classification") / "model.onnx"
    monkeypatch.setattr(export, "_export", lambda model, kind, inputs, outputs, path: shutil.copyfile(graph, path))
    forward = OrtModel.forward

    def off(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        out.logits[..., 0] += 1e-3
        return out

    monkeypatch.setattr(OrtModel, "forward", off)
    with pytest.raises(CheckpointError, match=r"disagrees with PyTorch: max \|difference\| 0.001 .* tolerance 0.0001"):
        export_onnx(task_dir("classification"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_report_measures_an_exported_directory_on_onnxruntime(tmp_path):
    """plmkit.compression.report's onnxruntime backends: the graph's file size, latency at each batch
    size, and the metric of `plmkit evaluate --backend onnxruntime`."""
    from onnx_helpers import TEXTS
    from plmkit.compression.report import measure
    data = tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": ["neg", "pos"][i % 2]}) + "\n" for i, t in enumerate(TEXTS)))
    out = exported("classification")
    torch_report = measure(task_dir("classification"), eval_file=data, batch_sizes=(1, 4), repeats=2)
    for backend, file in [("onnxruntime", "model.onnx"), ("onnxruntime-int8", "model.int8.onnx")]:
        report = measure(out, eval_file=data, batch_sizes=(1, 4), backend=backend, threads=1, repeats=2)
        assert report["size_mb"] == (out / file).stat().st_size / 2 ** 20
        assert set(report["latency_ms"]) == {1, 4} and report["how"]["onnx"]["check"]["max_abs_diff"] <= 1e-4
        assert report["parameters"] > 0
        if backend == "onnxruntime":
            assert report["metric"]["accuracy"] == torch_report["metric"]["accuracy"]
