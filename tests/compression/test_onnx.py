"""ONNX export: graphs with dynamic batch and sequence axes that onnxruntime runs as PyTorch does
(within 1e-4 at batch sizes and lengths the export never saw), int8 that keeps the argmax, decoders
that generate step by step on their past keys and values, encoder-decoders as Optimum's two graphs that
generate, translate and summarize token for token as PyTorch, and refusals by name."""
import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from onnx_helpers import SIZE, TEXTS, exported, randomize, task_dir
from plmkit import pipeline, tasks
from plmkit.compression import onnx as export
from plmkit.compression.onnx import export_model, export_onnx
from plmkit.errors import CheckpointError, ConfigError
from plmkit.models.auto import load_any
from plmkit.models.onnx import DECODER_INPUTS, GRAPH_FILE, OrtModel, load_ort


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
    assert info["past"]["layers"] == 2 and info["graphs"]["model"]["outputs"][:2] == ["logits", "present.0.key"]
    runner = OrtModel(tmp_path)
    ids = torch.randint(0, 80, (2, 6))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding
    want = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    out = runner(input_ids=ids, attention_mask=mask)
    tokens, steps = ids, mask
    for _ in range(6):
        step = out.logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
        tokens, steps = torch.cat([tokens, step], 1), torch.cat([steps, torch.ones_like(step)], 1)
        out = runner(input_ids=step, attention_mask=steps, past_key_values=out.past_key_values)
    assert torch.equal(tokens, want)
    generator = load_ort(tmp_path)  # plmkit's one generate, on a cache the graph reads and writes
    assert torch.equal(generator.generate(ids, attention_mask=mask, max_new_tokens=6, pad_token_id=0), want)
    beams = dict(attention_mask=mask, max_new_tokens=5, num_beams=3, num_return_sequences=2, pad_token_id=0)
    assert torch.equal(generator.generate(ids, **beams), model.generate(ids, **beams))


def test_what_cannot_be_exported_is_refused_by_name(tmp_path):
    from plmkit.models.bart import BartConfig, BartModel
    from plmkit.models.bert import BertConfig, BertForPreTraining
    from plmkit.nn.lora import apply_lora
    with pytest.raises(ConfigError, match="BartModel cannot be exported to ONNX"):
        export_model(BartModel(BartConfig.from_preset("bart-tiny")), tmp_path)
    with pytest.raises(ConfigError, match="BertForPreTraining cannot be exported to ONNX"):
        export_model(BertForPreTraining(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                   intermediate_size=64)), tmp_path)
    lora = load_any(task_dir("classification"))
    apply_lora(lora, targets=("q", "v"), rank=2)
    with pytest.raises(ConfigError, match="LoRA adapters not merged .*merge_lora"):
        export_model(lora, tmp_path)
    from plmkit.compression.quantize import quantize_model
    with pytest.raises(ConfigError, match="is quantized .*takes the fp32 model"):
        export_model(quantize_model(load_any(task_dir("classification"))), tmp_path)
    assert not (tmp_path / "model.onnx").exists()


def test_an_export_over_its_own_model_directory_is_refused_even_with_overwrite(tmp_path):
    source = tmp_path / "model"
    shutil.copytree(task_dir("classification"), source)
    before = sorted(p.name for p in source.iterdir())
    for out, how in ((source, "is"), (source / "onnx", "is inside"), (tmp_path, "holds")):
        with pytest.raises(ConfigError, match=f"--out {out} {how} the input --model {source}; inputs are never "
                                              "written over: choose another --out"):
            export_onnx(source, out, overwrite=True)
    assert sorted(p.name for p in source.iterdir()) == before  # the weights are still there


def test_a_graph_that_disagrees_with_pytorch_is_not_written(tmp_path, monkeypatch):
    """(The graph exported once before, slightly off: the check is what is tested here.)"""
    graph = exported("classification") / "model.onnx"
    monkeypatch.setattr(export, "_export", lambda spec, path: shutil.copyfile(graph, path))
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


# ---------------------------------------------------------------------- encoder-decoders
@pytest.fixture(scope="module")
def bart_export(tmp_path_factory):
    """A random BART (learned positions, BART's decoder start) and its export (Marian and BERT-to-BERT:
    onnx_helpers' task directories)."""
    from plmkit.models.bart import BartConfig, BartForConditionalGeneration
    model = randomize(BartForConditionalGeneration(BartConfig(vocab_size=90, **SIZE)), norms=False).eval()
    out = tmp_path_factory.mktemp("bart-onnx")
    export_model(model, out)
    return model, out


def dims(value) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_an_encoder_decoder_is_optimums_two_graphs_checked_at_many_shapes():
    out = exported("translation")  # Marian, int8 included
    names = {p.name for p in out.iterdir()}
    assert {"encoder_model.onnx", "decoder_model.onnx", "encoder_model.int8.onnx", "decoder_model.int8.onnx",
            "config.json", "plmkit_task.json", "tokenizer.json", GRAPH_FILE} <= names
    assert not names & {"model.onnx", "model.safetensors"}
    info = json.loads((out / GRAPH_FILE).read_text())
    assert info["model_task"] == "seq2seq-lm" and info["check"]["max_abs_diff"] <= 1e-4
    # 4 sources, each a target prefix and 3 steps on the past; then 2 + 3 steps of rows of their own lengths
    assert len(info["check"]["shapes"]) == 21 and info["check"]["shapes"][-1] == "2 rows of their own lengths, step 3"
    encoder, decoder = (onnx.load(str(out / f"{part}.onnx")).graph for part in ("encoder_model", "decoder_model"))
    assert {i.name: dims(i) for i in encoder.input} == dict.fromkeys(["input_ids", "attention_mask"],
                                                                     ["batch", "encoder_sequence"])
    assert [o.name for o in encoder.output] == ["last_hidden_state"]
    inputs = {i.name: dims(i) for i in decoder.input}
    assert list(inputs)[:8] == [*DECODER_INPUTS, "past_key_values.0.decoder.key", "past_key_values.0.decoder.value",
                                "past_key_values.0.encoder.key", "past_key_values.0.encoder.value"]
    assert inputs["encoder_hidden_states"] == ["batch", "new_encoder_sequence", 32]
    assert inputs["decoder_attention_mask"] == ["batch", "total_sequence"]  # past + new positions
    assert inputs["past_key_values.1.decoder.key"] == ["batch", 4, "past_sequence", 8]
    assert inputs["past_key_values.1.encoder.value"] == ["batch", 4, "past_encoder_sequence", 8]
    assert [o.name for o in decoder.output][:3] == ["logits", "present.0.decoder.key", "present.0.decoder.value"]


def test_an_export_whose_decoder_takes_no_mask_is_refused_for_rows_of_their_own_lengths():
    """An encoder-decoder exported before the decoder graph took decoder_attention_mask cannot step rows of their
    own lengths (a server's continuous batching): refused, naming the fix."""
    runner = load_ort(exported("translation"))
    assert runner.make_slot_cache(2, 8).slots == 2
    graph = runner.graphs["decoder_model"]
    graph.input_names = [n for n in graph.input_names if n != "decoder_attention_mask"]  # (as such a graph lists them)
    with pytest.raises(CheckpointError, match="takes no decoder_attention_mask.*export the PyTorch model again"):
        runner.make_slot_cache(2, 8)


@pytest.mark.parametrize("task", ["bart", "translation", "summarization"])
def test_generate_on_onnxruntime_is_pytorchs_token_for_token(task, request):
    """Batched sources of different lengths, greedy and 4 beams, through plmkit's one generate."""
    if task == "bart":
        model, out = request.getfixturevalue("bart_export")
    else:
        model, out = load_any(task_dir(task)).eval(), exported(task)
    runner = load_ort(out)
    ids, mask = padded_batch(model.get_input_embeddings().num_embeddings, 3, 9, seed=4)
    for settings in ({"num_beams": 1}, {"num_beams": 4, "num_return_sequences": 2}):
        want = model.generate(ids, attention_mask=mask, max_new_tokens=8, **settings)
        assert torch.equal(runner.generate(ids, attention_mask=mask, max_new_tokens=8, **settings), want)


@pytest.mark.parametrize("task", ["translation", "summarization"])
def test_predict_pipeline_and_evaluate_on_onnxruntime_answer_as_torch(task, tmp_path):
    records = TEXTS[:4]
    want = tasks.predict_dir(task_dir(task), records, device="cpu")
    assert any(next(iter(r.values())) for r in want)  # (not all empty: the comparison says something)
    assert tasks.predict_dir(exported(task), records, backend="onnxruntime") == want
    assert pipeline(task, exported(task), backend="onnxruntime")(records[:2]) == pipeline(task, task_dir(task))(records[:2])
    data = tmp_path / "eval.jsonl"
    fields = ("source", "target") if task == "translation" else ("text", "summary")
    data.write_text("".join(json.dumps(dict(zip(fields, (s, t)))) + "\n" for s, t in zip(TEXTS, TEXTS[1:])))
    torch_metrics = tasks.evaluate_dir(task_dir(task), data, device="cpu")
    onnx_metrics = tasks.evaluate_dir(exported(task), data, backend="onnxruntime")
    assert onnx_metrics.keys() == torch_metrics.keys()
    for key, value in torch_metrics.items():
        assert onnx_metrics[key] == pytest.approx(value, abs=1e-4), key


def test_int8_encoder_decoder_runs_and_stays_close():
    out = exported("translation")
    info = json.loads((out / GRAPH_FILE).read_text())["int8"]
    assert info["files"] == ["encoder_model.int8.onnx", "decoder_model.int8.onnx"] and info["argmax_agreement"] >= 0.8
    model, int8 = load_any(task_dir("translation")).eval(), load_ort(out, "int8")
    ids, mask = padded_batch(model.config.vocab_size, 4, 12, seed=6)
    labels = torch.randint(3, model.config.vocab_size, (4, 7))
    with torch.no_grad():
        want = model(ids, mask, labels=labels)
    got = int8(ids, mask, labels=labels)  # (measured: 3% mean relative difference, loss within 0.01%)
    assert (got.logits - want.logits).abs().mean() < 0.1 * want.logits.abs().mean()
    assert float(got.loss) == pytest.approx(float(want.loss), rel=0.01)
    beams = int8.generate(ids, attention_mask=mask, max_new_tokens=6, num_beams=4)
    assert beams.shape[0] == 4 and beams.shape[1] <= 7


def test_the_export_copies_no_weights_of_any_format(tmp_path):
    """A hub-style directory holds the weights in several formats and shards: none travels with the graphs."""
    from types import SimpleNamespace
    source, out = tmp_path / "model", tmp_path / "out"
    source.mkdir(), out.mkdir()
    weights = ["model.safetensors", "model-00001-of-00002.safetensors", "model.safetensors.index.json",
               "pytorch_model.bin", "pytorch_model-00001-of-00002.bin", "pytorch_model.bin.index.json",
               "tf_model.h5", "flax_model.msgpack", "rust_model.ot", "model.onnx", GRAPH_FILE]
    records = ["prune.json", "compression_report.json", "compare.json", "compare.png", "run.yaml", "metrics.jsonl",
               "training_curves.png", "train_config.json"]  # the commands' records of the source: another model's
    for name in weights + records + ["config.json", "tokenizer.json", "README.md"]:
        (source / name).write_text("{}")
    export.copy_companions(source, out, SimpleNamespace(sentence_transformers=None))
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "tokenizer.json"]


# ---------------------------------------------------------------------- weights counted once
def _tied_gpt2():
    from plmkit.models.gpt2 import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=48, n_embd=32, n_layer=2, n_head=4)).eval()


def _initializers(path) -> dict:
    from onnx import numpy_helper
    return {t.name: numpy_helper.to_array(t, str(path.parent)) for t in onnx.load(str(path)).graph.initializer}


def test_parameters_count_a_weight_two_graphs_store_once():
    """The report's onnxruntime parameter count: an encoder-decoder's shared embedding is stored in the
    encoder's graph and in the decoder's; it counted twice (Marian: 65,869 against PyTorch's 52,352)."""
    out = exported("translation")
    encoder, decoder = (_initializers(out / f"{part}.onnx") for part in ("encoder_model", "decoder_model"))
    both = [name for name in encoder.keys() & decoder.keys() if np.array_equal(encoder[name], decoder[name])]
    shared = load_any(task_dir("translation")).get_input_embeddings().weight
    assert any(encoder[name].shape == tuple(shared.shape) for name in both)
    everything = sum(w.size for w in encoder.values()) + sum(w.size for w in decoder.values())
    assert export.stored_parameters([out / "encoder_model.onnx", out / "decoder_model.onnx"]) == \
        everything - sum(encoder[name].size for name in both)


def test_a_graph_over_2_gb_keeps_its_weights_external_and_so_does_its_int8_copy(tmp_path, monkeypatch):
    """(2 GB stands at 1000 bytes here: a tiny model is exported as a large one is.) The int8 copy of a graph
    with external weights is written with its weights external too: a large model's in one protobuf would fail."""
    from plmkit.compression.report import measure
    monkeypatch.setattr(export, "TWO_GB", 1000)
    info = export_model(_tied_gpt2(), tmp_path, quantize="int8")
    names = {p.name for p in tmp_path.iterdir()}
    assert {"model.onnx", "model.onnx.data", "model.int8.onnx", "model.int8.onnx.data"} <= names
    int8 = [tmp_path / "model.int8.onnx", tmp_path / "model.int8.onnx.data"]
    assert info["int8"]["bytes"] == sum(p.stat().st_size for p in int8) and info["int8"]["argmax_agreement"] >= 0.9
    report = measure(tmp_path, backend="onnxruntime-int8", batch_sizes=(1,), warmup=0, repeats=1, new_tokens=1)
    assert report["size_mb"] * 2 ** 20 == pytest.approx(sum(p.stat().st_size for p in int8))


def test_an_exported_llama_runs_past_max_position_embeddings(tmp_path):
    """The graph gathered its rotary angles from the tables as built (max_position_embeddings rows): onnxruntime
    failed past them (GatherND), where PyTorch grows its tables."""
    from plmkit.models.llama import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=80, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=24)).eval()
    export_model(model, tmp_path)
    ids = torch.randint(0, 80, (2, 40))
    with torch.no_grad():
        want = model(ids, torch.ones_like(ids)).logits
    got = OrtModel(tmp_path)(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_question_answering_agreement_is_over_the_real_positions():
    """QA's argmax is over a window's positions: one at padding (whose logits PyTorch and a graph compute from
    different states) must not count as a disagreement."""
    from plmkit.compression.onnx import _agreement
    torch_logits, graph_logits = torch.tensor([[1.0, 2.0, 9.0]]), torch.tensor([[1.0, 2.0, -9.0]])  # (B, T)
    real = torch.tensor([[True, True, False]])
    assert _agreement(torch_logits, graph_logits, real) == 1.0
    assert _agreement(torch_logits, torch.tensor([[3.0, 2.0, 9.0]]), real) == 0.0


def test_an_export_of_a_bf16_checkpoint_names_the_graphs_fp32(tmp_path):
    """A bf16 checkpoint loads as bf16 (transformers 5's dtype="auto"); its graphs compute in fp32, and the
    exported config.json says so (it names bfloat16 in the source)."""
    source = tmp_path / "bf16"
    shutil.copytree(task_dir("classification"), source)
    load_any(source).to(torch.bfloat16).save_pretrained(source)
    assert json.loads((source / "config.json").read_text())["dtype"] == "bfloat16"
    export_onnx(source, tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["dtype"], config["torch_dtype"]) == ("float32", "float32")
    assert load_ort(tmp_path / "out").config.dtype == "float32"
