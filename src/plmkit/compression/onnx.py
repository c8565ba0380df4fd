"""`plmkit export --format onnx`: a model directory as ONNX graphs beside its tokenizer, config and task
files, checked against PyTorch on export; optionally onnxruntime's dynamic int8 of each graph.

An encoder (with its task head) or a causal LM is one graph, OUT/model.onnx; an encoder-decoder (BART,
Marian, BERT-to-BERT) two, as Hugging Face Optimum lays them out: OUT/encoder_model.onnx and
OUT/decoder_model.onnx (one decoder graph for the first step and the following ones). The graphs
(inputs, outputs, dynamic axes) are described in plmkit.models.onnx, which also runs them (`load_ort`,
``plmkit predict --backend onnxruntime``, ``plmkit serve``).

Exporter: ``torch.onnx.export(dynamo=True)``, that is `torch.export`, which refuses a branch or a shape
that depends on values instead of freezing the example's choice into the graph, as the TorchScript
exporter (deprecated since torch 2.9) does silently (it also cannot trace SDPA's ``enable_gqa``). The
model runs its traceable path (plmkit.nn.tracing): padding computed and masked instead of removed.
The example batch has EXAMPLE_BATCH rows of EXAMPLE_LENGTH tokens, some padded (a causal LM: after
EXAMPLE_PAST cached positions; a decoder: EXAMPLE_TARGET tokens after EXAMPLE_PAST, over a source of
EXAMPLE_SOURCE past and new positions), sizes chosen unlike each other and unlike 0 and 1, which
torch.export would fix in the graph.

Check: fresh inputs of other batch sizes and lengths (CHECK_SHAPES; a causal LM: prompts, then steps
that feed each step's present keys and values back as the next past; an encoder-decoder: sources and
target prefixes of SEQ2SEQ_SHAPES, then such steps, through the models' generation hooks, and rows of
their own target lengths stepped together on a `Seq2SeqSlotCache`, as a server steps them) run through
onnxruntime and through PyTorch's ordinary eager forward (padding removed, the fast paths taken); the
largest absolute difference over the outputs of real tokens must stay within `tolerance` (1e-4), or
nothing is written.

int8 (``--quantize int8``): ``onnxruntime.quantization.quantize_dynamic``: int8 weights of the MatMul
and Gemm nodes, activations quantized per batch at run time. Lossy by design, so it is not held to the
tolerance: its agreement with fp32 PyTorch's argmax (classes, tags, answer starts, next tokens) on the
same inputs is measured and recorded.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import shutil
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from plmkit.compression.records import is_record_file
from plmkit.errors import CheckpointError, ConfigError
from plmkit.generation import lm_vocab
from plmkit.models.config import read_config_json
from plmkit.models.io import is_weight_file
from plmkit.models.onnx import (EXPORTED, GRAPH_FILE, GRAPHS, SEQ2SEQ, TEXT_INPUTS, GraphKind,
                                OrtDirectory, OrtModel, TracedDecoder, TracedEncoder, TracedGraph, graph_file,
                                graph_inputs, graph_parts, load_ort, past_names, require_onnx, write_graph_file)
from plmkit.nn.cache import PastKeyValues
from plmkit.nn.tracing import traceable
from plmkit.utils.files import atomic_write_text
from plmkit.utils.settings import Settings, setting

log = logging.getLogger("plmkit")

FORMATS = ("onnx",)
QUANTIZATIONS = ("int8",)
TOLERANCE = 1e-4
EXAMPLE_BATCH, EXAMPLE_LENGTH, EXAMPLE_PAST = 3, 11, 5
EXAMPLE_TARGET, EXAMPLE_SOURCE = 6, (4, 7)  # a decoder's new tokens; its source: past and new positions
CHECK_SHAPES = ((1, 6), (5, 17), (2, 1), (4, 29))  # (batch, length): other than the example's
SEQ2SEQ_SHAPES = ((1, 6, 4), (5, 17, 9), (2, 1, 1), (4, 29, 2))  # (batch, source length, target prefix)
DECODE_STEPS = (1, 1, 3)  # new tokens per step after a causal LM's prompt (a decoder's target prefix)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx")  # files of the model directory not copied
TWO_GB = 2 ** 31  # protobuf's limit: larger weights go to an external data file


@dataclass
class ExportSettings(Settings):
    """`plmkit export`: what to export, where, and how it is checked."""

    section = "export"
    model: str | None = setting(None, "model directory to export (fine-tuned, or a plain encoder, causal LM or "
                                      "encoder-decoder)", metavar="DIR", required=True)
    out: str | None = setting(None, "directory to write (an earlier export there is replaced): model.onnx (an "
                                    "encoder-decoder: encoder_model.onnx and decoder_model.onnx) beside the "
                                    "tokenizer, config.json and task files",
                              metavar="DIR", required=True)
    format: str = setting("onnx", "export format", choices=FORMATS)
    quantize: str | None = setting(None, "also write model.int8.onnx (encoder_model.int8.onnx ...): onnxruntime's "
                                         "dynamic int8 quantization (--backend onnxruntime-int8 runs it)",
                                   choices=QUANTIZATIONS, const_flags={"--int8": "int8"})
    tolerance: float = setting(TOLERANCE, "largest |onnxruntime - PyTorch| the check accepts", metavar="T", above=0)
    overwrite: bool = setting(False, "replace an --out that holds other files than an earlier export")


@dataclass
class GraphSpec:
    """One graph of an export: its file stem (`part`), the module ``torch.onnx.export`` traces, its input
    and output names, an example input per name and the dynamic axes of each input."""

    part: str
    module: nn.Module
    inputs: list[str]
    outputs: list[str]
    example: dict[str, Tensor]
    axes: dict[str, dict[int, str]]


def export_onnx(model_dir: str | Path, out: str | Path, *, quantize: str | None = None,
                tolerance: float = TOLERANCE, overwrite: bool = False) -> dict:
    """Export the model directory `model_dir` into the directory `out` (replaced whole, and only once
    the check has passed) with its companion files; returns what GRAPH_FILE records. An `out` that
    is `model_dir`, lies inside it or holds it is refused whatever `overwrite` says (it would replace the
    model); one that holds other files than an earlier export is refused unless `overwrite`."""
    from plmkit.models.auto import load_any
    from plmkit.utils.files import atomic_write_dir, refuse_foreign_dir, refuse_overwriting_inputs
    require_onnx("plmkit export --format onnx")
    refuse_overwriting_inputs(out, "--out", [("--model", model_dir)])
    if not overwrite:
        refuse_foreign_dir(out, f"--out {out}", lambda d: (d / GRAPH_FILE).is_file(),
                           "give a new directory, or --overwrite to replace it and everything in it")
    model = load_any(model_dir)
    model.check_complete(model_dir)  # a head the weights lack would be random in the graph too
    info = {}

    def write(temp: Path) -> None:
        copy_companions(Path(model_dir), temp, model)
        info.update(export_model(model, temp, quantize=quantize, tolerance=tolerance))

    atomic_write_dir(out, write)
    return info


def export_model(model: nn.Module, directory: str | Path, *, quantize: str | None = None,
                 tolerance: float = TOLERANCE) -> dict:
    """Write the graphs (model.onnx; an encoder-decoder's encoder_model.onnx and decoder_model.onnx), their
    int8 copies when asked, and GRAPH_FILE of `model` (put in eval mode, in fp32) into `directory` (and
    its config.json when the directory has none), checked as the module docstring says; an error names
    what could not be exported or checked."""
    require_onnx("ONNX export")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ConfigError(f"quantize must be one of {', '.join(QUANTIZATIONS)}, got {quantize!r}")
    model_task = exportable(model)
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ConfigError(f"{type(model).__name__} is on {next(model.parameters()).device}: export runs on the CPU, "
                          "where onnxruntime checks it (model.cpu())")
    model = model.float().eval()
    directory = Path(directory)
    if not (directory / "config.json").is_file():  # (a model in memory; export_onnx copies the directory's)
        model.config.architectures = [type(model).__name__]
        model.config.set_dtype(torch.float32)
        model.config.save(directory)
    else:  # the graphs compute in fp32, whatever dtype the source's config.json names (a bf16 checkpoint's)
        _name_fp32(directory / "config.json")
    specs = graph_specs(model, model_task)
    graph = _info(model, model_task, specs)
    paths = [directory / graph_file("fp32", spec.part) for spec in specs]
    for spec, path in zip(specs, paths):
        log.info("plmkit: exporting %s to ONNX, %s (%s -> %s)", type(model).__name__, path.name,
                 ", ".join(spec.inputs[:4]) + (", past keys/values" if len(spec.inputs) > 4 else ""),
                 ", ".join(spec.outputs[:3]) + (", present" if len(spec.outputs) > 3 else ""))
        _export(spec, path)
    checks = check_export(model, model_task, load_ort(directory, info=graph))
    worst = max(c["max_abs_diff"] for c in checks)
    log.info("plmkit: onnxruntime vs PyTorch at %d shapes: max |difference| %.2e (tolerance %.0e)",
             len(checks), worst, tolerance)
    if not worst <= tolerance:
        for path in paths:
            path.unlink()
        bad = next(c for c in checks if not c["max_abs_diff"] <= tolerance)
        raise CheckpointError(f"the exported graph disagrees with PyTorch: max |difference| {bad['max_abs_diff']:.3g} "
                              f"at {bad['shape']} ({bad['output']}), above the tolerance {tolerance:g}; not kept")
    info = {**graph, "opset": _opset(paths[0]),
            "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
            "example": {spec.part: {name: list(t.shape) for name, t in spec.example.items()
                                    if not name.startswith("past_key_values.")} for spec in specs},
            "check": {"tolerance": tolerance, "max_abs_diff": worst, "shapes": [c["shape"] for c in checks]}}
    if quantize == "int8":
        info["int8"] = quantize_int8(model, model_task, directory, info)
    write_graph_file(directory, info)
    return info


def exportable(model: nn.Module) -> str:
    """The model task (EXPORTED) of `model`, or a ConfigError naming what stands in the way."""
    from plmkit.models.registry import family
    from plmkit.nn.lora import MERGEABLE
    from plmkit.nn.quantized import QuantizedEmbedding, QuantizedLinear
    config = getattr(model, "config", None)
    if config is None:
        raise ConfigError(f"{type(model).__name__} is not a plmkit model; export takes a model directory or a "
                          "PreTrainedModel")
    model_task = family(config.model_type).task_of(type(model).__name__)
    if model_task not in EXPORTED or (getattr(model, "is_encoder_decoder", False) and model_task != SEQ2SEQ):
        raise ConfigError(f"{type(model).__name__} cannot be exported to ONNX: plmkit exports "
                          f"{', '.join(EXPORTED)} models (encoders with their task heads, decoders with past keys/values, "
                          "encoder-decoders with their LM head); pretraining heads and bare encoder-decoders are not "
                          "supported")
    adapters = [name for name, m in model.named_modules() if isinstance(m, MERGEABLE)]
    if adapters:
        raise ConfigError(f"{type(model).__name__} holds LoRA adapters not merged ({', '.join(adapters[:3])}"
                          f"{' ...' if len(adapters) > 3 else ''}): merge them first (plmkit.nn.lora.merge_lora, or "
                          "save_pretrained, which merges them) and export the merged model")
    quantized = [name for name, m in model.named_modules()
                 if isinstance(m, (QuantizedLinear, QuantizedEmbedding)) or type(m).__module__.startswith("torch.ao")]
    if quantized:
        raise ConfigError(f"{type(model).__name__} is quantized ({', '.join(quantized[:3])}"
                          f"{' ...' if len(quantized) > 3 else ''}): ONNX export takes the fp32 model (the one "
                          "plmkit quantize started from); --quantize int8 gives onnxruntime's int8")
    return model_task


def _name_fp32(config_file: Path) -> None:
    """config.json's dtype fields (transformers 5's dtype, 4.x's torch_dtype) set to float32 where they name another."""
    config = read_config_json(config_file)
    named = {key: config[key] for key in ("dtype", "torch_dtype") if config.get(key) not in (None, "float32")}
    if named:
        atomic_write_text(config_file, json.dumps({**config, **dict.fromkeys(named, "float32")}, indent=2,
                                                  sort_keys=True) + "\n")


def copy_companions(source: Path, directory: Path, model) -> None:
    """What makes the exported directory self-contained: every top-level file of the model directory
    but the weights (config.json, tokenizer files, plmkit_task.json, generation_config.json ...) and
    the sentence-transformers module files; not the commands' records of the source (prune.json,
    compression_report.json ...: plmkit.compression.records), which describe another model."""
    for file in sorted(source.iterdir()):
        if file.is_file() and not file.name.endswith(WEIGHT_SUFFIXES) and not is_weight_file(file.name) and (
                not is_record_file(file.name)):  # (no weights of any format: tf_model.h5, *.bin.index.json ...)
            shutil.copyfile(file, directory / file.name)
    if model.sentence_transformers is not None:
        model.sentence_transformers.write(directory)


# ---------------------------------------------------------------------- the graphs
def graph_specs(model: nn.Module, model_task: str) -> list[GraphSpec]:
    """The graphs an export of `model` writes (model_task: `exportable`'s)."""
    if model_task == SEQ2SEQ:
        return seq2seq_specs(model)
    kind = GRAPHS[model_task]
    inputs, outputs = graph_inputs(model, kind), _output_names(model, kind)
    example = random_inputs(model, kind, EXAMPLE_BATCH, EXAMPLE_LENGTH, EXAMPLE_PAST if kind.past else 0)
    return [GraphSpec("model", TracedGraph(model, kind, inputs, outputs), inputs, outputs,
                      {name: example[name] for name in inputs}, {name: _dynamic_axes(name, kind) for name in inputs})]


def seq2seq_specs(model: nn.Module) -> list[GraphSpec]:
    """An encoder-decoder's encoder_model and decoder_model graphs (plmkit.models.onnx)."""
    g = torch.Generator().manual_seed(0)
    layers = model.decoder_layers()
    attn, cross = layers[0].attn, layers[0].cross_attn
    b, (s_past, s_new) = EXAMPLE_BATCH, EXAMPLE_SOURCE
    source = dict(zip(("input_ids", "attention_mask"), padded_ids(source_vocab(model), b, EXAMPLE_LENGTH, g)))
    encoder_axes = {0: "batch", 1: "encoder_sequence"}
    encoder = GraphSpec("encoder_model", TracedEncoder(model), list(source), ["last_hidden_state"], source,
                        dict.fromkeys(source, encoder_axes))
    example = {"input_ids": torch.randint(0, lm_vocab(model.config), (b, EXAMPLE_TARGET), generator=g),
               "encoder_attention_mask": padded_ids(2, b, s_past + s_new, g)[1],
               "encoder_hidden_states": torch.randn(b, s_new, model.config.d_model, generator=g),
               "decoder_attention_mask": padded_ids(2, b, EXAMPLE_PAST + EXAMPLE_TARGET, g)[1].flip(1)}
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "encoder_attention_mask": encoder_axes,
            "encoder_hidden_states": {0: "batch", 1: "new_encoder_sequence"},
            "decoder_attention_mask": {0: "batch", 1: "total_sequence"}}  # past + new positions
    for name in past_names(len(layers), seq2seq=True):
        own = ".decoder." in name
        heads, d = (attn.n_kv_heads, attn.d_head) if own else (cross.n_kv_heads, cross.d_head)
        example[name] = torch.randn(b, heads, EXAMPLE_PAST if own else s_past, d, generator=g)
        axes[name] = {0: "batch", 2: "past_sequence" if own else "past_encoder_sequence"}
    outputs = ["logits", *past_names(len(layers), "present", seq2seq=True)]
    return [encoder, GraphSpec("decoder_model", TracedDecoder(model), list(example), outputs, example, axes)]


def source_vocab(model: nn.Module) -> int:
    """How many ids an encoder-decoder's source may hold."""
    return model.get_input_embeddings().num_embeddings


def _output_names(model: nn.Module, kind: GraphKind) -> list[str]:
    """The outputs the model sets (a BERT without a pooler has no pooler_output), then the present."""
    inputs = random_inputs(model, kind, EXAMPLE_BATCH, EXAMPLE_LENGTH, EXAMPLE_PAST if kind.past else 0)
    with torch.no_grad():
        out = _torch_forward(model, kind, inputs)
    names = [name for name in kind.outputs if getattr(out, name, None) is not None]
    return names + (past_names(model.config.num_layers, "present") if kind.past else [])


def _info(model, model_task: str, specs: list[GraphSpec]) -> dict:
    info = {"format": "onnx", "model_task": model_task, "architecture": type(model).__name__,
            "graphs": {spec.part: {"file": graph_file("fp32", spec.part), "inputs": spec.inputs, "outputs": spec.outputs}
                       for spec in specs}, "past": None}
    if model_task == SEQ2SEQ:
        attn = model.decoder_layers()[0].attn
        info["past"] = {"layers": len(model.decoder_layers()), "heads": attn.n_kv_heads, "head_dim": attn.d_head}
    elif GRAPHS[model_task].past:
        layers = model.make_cache(1, 1).layers  # (B, H_kv, max_len, d) buffers
        heads = [layer.k.shape[1] for layer in layers]  # one count, or a pruned model's per layer
        info["past"] = {"layers": len(layers), "heads": heads[0] if len(set(heads)) == 1 else heads,
                        "head_dim": layers[0].k.shape[3]}
    return info


def _export(spec: GraphSpec, path: Path) -> None:
    model = spec.module.model
    args = tuple(spec.example[name] for name in spec.inputs)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    chatter = io.StringIO()  # the exporter prints its steps on stdout, which is the command's output
    with traceable(), torch.no_grad(), contextlib.redirect_stdout(chatter), _quiet("torch.onnx"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecations and axis renaming notes: the check below is what counts
        try:
            torch.onnx.export(spec.module.eval(), args, str(path), dynamo=True, input_names=spec.inputs,
                              output_names=spec.outputs, dynamic_shapes=(tuple(spec.axes[n] for n in spec.inputs),),
                              external_data=size > TWO_GB * 0.9, verbose=False)
        except Exception as err:  # torch.export's errors are pages long: the first lines say it
            first = "\n".join(str(err).splitlines()[:6])
            raise CheckpointError(f"torch.onnx.export failed for {type(model).__name__} ({path.name}): {first}") from err


def external_data_files(proto, path: Path) -> list[Path]:
    """The files beside the graph file `path` that hold weights of `proto` (loaded without them): those of a
    graph over protobuf's 2 GB limit."""
    from onnx.external_data_helper import uses_external_data
    return sorted({path.parent / entry.value for t in proto.graph.initializer if uses_external_data(t)
                   for entry in t.external_data if entry.key == "location"})


def stored_parameters(paths: list[Path]) -> int:
    """The numbers the graph files `paths` store, each weight once: an initializer that a graph counted before
    holds too (the same name and values: an encoder-decoder's shared embedding, in its encoder's graph and in
    its decoder's) does not count again."""
    import numpy as np
    import onnx
    from onnx import numpy_helper
    graphs = [(path, onnx.load(str(path), load_external_data=False).graph) for path in paths]
    shared = {name for name, n in Counter(t.name for _, graph in graphs for t in graph.initializer).items() if n > 1}
    total, seen = 0, {}  # seen: name -> the values of the initializers of that name counted so far
    for path, graph in graphs:
        for t in graph.initializer:
            if t.name in shared:
                value = numpy_helper.to_array(t, str(path.parent))
                if any(np.array_equal(value, v) for v in seen.get(t.name, ())):
                    continue
                seen.setdefault(t.name, []).append(value)
            total += math.prod(t.dims)
    return total


def _dynamic_axes(name: str, kind: GraphKind) -> dict[int, str]:
    if name.startswith("past_key_values."):
        return {0: "batch", 2: "past_sequence"}
    if name == "attention_mask" and kind.past:
        return {0: "batch", 1: "total_sequence"}  # past + new positions
    if name in TEXT_INPUTS:
        return {0: "batch", 1: "sequence"}
    return {0: "batch"}


@contextlib.contextmanager
def _quiet(name: str):
    """Logger `name`'s lines below ERROR off meanwhile: the exporter's registration warnings
    (torchvision absent ...), the advice onnxruntime's quantizer logs through `logging.warning`, which
    would also give the root logger a handler for good (the null handler here prevents that)."""
    logger, null = logging.getLogger(name), logging.NullHandler()
    level = logger.level
    logger.setLevel(logging.ERROR)
    logger.addHandler(null)
    try:
        yield
    finally:
        logger.removeHandler(null)
        logger.setLevel(level)


def _opset(path: Path) -> int:
    import onnx
    proto = onnx.load(str(path), load_external_data=False)
    return next(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx"))


# ---------------------------------------------------------------------- inputs and the check
def padded_ids(vocab: int, batch: int, length: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """(B, T) random ids and their mask: row 0 full, the others padded on the right to random lengths."""
    ids = torch.randint(0, vocab, (batch, length), generator=g)
    real = torch.randint(1, length + 1, (batch,), generator=g)
    real[0] = length
    return ids, (torch.arange(length)[None] < real[:, None]).long()


def random_inputs(model: nn.Module, kind: GraphKind, batch: int, length: int, past: int = 0,
                  seed: int = 0) -> dict[str, Tensor]:
    """A batch the graph takes: random token ids; row 0 full, the others padded (on the right; a
    causal LM's prompt on the left) to random lengths; token types 0 then 1 where the model has two;
    a causal LM's past keys and values computed by the model from a random prompt of `past` tokens."""
    g = torch.Generator().manual_seed(seed)
    c = model.config
    ids, mask = padded_ids(c.vocab_size, batch, length, g)
    if kind.past:
        inputs = {"input_ids": ids}
        if past:
            prompt = random_inputs(model, kind, batch, past, 0, seed + 1)
            with torch.no_grad():
                present = _torch_forward(model, kind, prompt).past_key_values
            inputs["attention_mask"] = torch.cat([prompt["attention_mask"], torch.ones_like(ids)], 1)
            inputs.update(zip(past_names(c.num_layers), (t for pair in present for t in pair)))
        else:
            inputs["attention_mask"] = mask.flip(1)  # left padding
            inputs.update(zip(past_names(c.num_layers), _empty_past(model, batch)))
        return inputs
    real = mask.sum(1)
    positions = torch.arange(length)[None]  # (1, T)
    inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    if getattr(c, "type_vocab_size", 1) > 1:
        inputs["token_type_ids"] = ((positions >= real[:, None] // 2) & mask.bool()).long()
    if "entity_positions" in kind.extra_inputs:
        first = (torch.rand(batch, generator=g) * real).long()
        second = first + (torch.rand(batch, generator=g) * (real - first)).long()
        inputs["entity_positions"] = torch.stack([first, second], 1)
    return inputs


def _empty_past(model: nn.Module, batch: int) -> list[Tensor]:
    """(B, H_kv, 0, d) keys and values per layer, each with its layer's heads (a pruned model's differ)."""
    return [torch.zeros(batch, layer.k.shape[1], 0, layer.k.shape[3]) for layer in model.make_cache(1, 1).layers
            for _ in ("key", "value")]


def _torch_forward(model: nn.Module, kind: GraphKind, inputs: dict[str, Tensor]):
    """The model's ordinary (eager) forward on the graph's inputs."""
    if not kind.past:
        return model(**{k: v for k, v in inputs.items() if k in graph_inputs(model, kind)})
    flat = [inputs[name] for name in past_names(model.config.num_layers)]
    cache = PastKeyValues(list(zip(flat[0::2], flat[1::2])))
    out = model(inputs["input_ids"], inputs["attention_mask"], past_key_values=cache)
    out.past_key_values = cache.present()
    return out


def check_inputs_at(model: nn.Module, kind: GraphKind) -> list[tuple[str, dict[str, Tensor]]]:
    """(shape label, inputs) of the check: CHECK_SHAPES within the model's positions; a causal LM's
    prompts each followed by DECODE_STEPS steps on its past."""
    limit = model.config.max_positions or 512
    cases = []
    for seed, (batch, length) in enumerate(CHECK_SHAPES):
        length = min(length, limit - (sum(DECODE_STEPS) if kind.past else 0))
        inputs = random_inputs(model, kind, batch, length, seed=100 + seed)
        cases.append((f"batch {batch} x {length}", inputs))
        past = length
        for step, new in enumerate(DECODE_STEPS if kind.past else ()):
            g = torch.Generator().manual_seed(200 + 10 * seed + step)
            with torch.no_grad():
                present = _torch_forward(model, kind, inputs).past_key_values
            inputs = {"input_ids": torch.randint(0, model.config.vocab_size, (batch, new), generator=g),
                      "attention_mask": torch.cat([inputs["attention_mask"], torch.ones(batch, new, dtype=torch.long)], 1),
                      **dict(zip(past_names(model.config.num_layers), (t for pair in present for t in pair)))}
            cases.append((f"batch {batch} x {new} after {past}", inputs))
            past += new
    return cases


def check_export(model: nn.Module, model_task: str, runner: OrtDirectory) -> list[dict]:
    """`check_graph`, or for an encoder-decoder `check_seq2seq`."""
    if model_task == SEQ2SEQ:
        return check_seq2seq(model, runner)
    return check_graph(model, GRAPHS[model_task], runner)


def check_graph(model: nn.Module, kind: GraphKind, runner: OrtModel) -> list[dict]:
    """Per check case: the largest |onnxruntime - PyTorch| over the outputs (real tokens only where
    the output is per token), the output where it is, and the argmax agreement of the first output."""
    results = []
    for shape, inputs in check_inputs_at(model, kind):
        with torch.no_grad():
            ref = _flat_outputs(_torch_forward(model, kind, inputs), runner.output_names)
        got = _flat_outputs(runner(**inputs), runner.output_names)
        mask = inputs["attention_mask"][:, -inputs["input_ids"].shape[1]:].bool()  # (B, T) the new tokens
        diffs = {name: _max_diff(ref[name], got[name], mask if name in kind.per_token else None)
                 for name in runner.output_names}
        first = runner.output_names[0]
        results.append(_result(shape, diffs, _agreement(ref[first], got[first], mask if first in kind.per_token else None)))
    return results


def check_seq2seq(model: nn.Module, runner: OrtDirectory) -> list[dict]:
    """Per source shape of SEQ2SEQ_SHAPES and per decoder call after it (a target prefix, then
    DECODE_STEPS): the largest |onnxruntime - PyTorch| of the encoder's states (real tokens; the first
    call) and of the logits, each model run through its own generation hooks (`encode`, `make_cache`,
    the forward on the cache), and the logits' argmax agreement; then `check_slot_steps`."""
    limit, vocab = model.config.max_positions or 512, lm_vocab(model.config)
    results = []
    for seed, (batch, length, target) in enumerate(SEQ2SEQ_SHAPES):
        g = torch.Generator().manual_seed(100 + seed)
        ids, mask = padded_ids(source_vocab(model), batch, min(length, limit), g)
        target = min(target, limit - sum(DECODE_STEPS))
        with torch.no_grad():
            states = [m.encode(ids, mask) for m in (model, runner)]  # (B, S, D): PyTorch's, onnxruntime's
            caches = [m.make_cache(batch, target + sum(DECODE_STEPS), s, mask) for m, s in zip((model, runner), states)]
            diffs = {"last_hidden_state": _max_diff(*states, mask.bool())}
            past = 0
            for new in (target, *DECODE_STEPS):
                tokens = torch.randint(0, vocab, (batch, new), generator=g)
                want, got = (m(decoder_input_ids=tokens, past_key_values=cache).logits
                             for m, cache in zip((model, runner), caches))
                diffs["logits"] = _max_diff(want, got, None)
                shape = f"batch {batch}, source {ids.shape[1]}: target {new}" + (f" after {past}" if past else "")
                results.append(_result(shape, diffs, _agreement(want, got, None)))
                diffs, past = {}, past + new
    return results + check_slot_steps(model, runner)


def check_slot_steps(model: nn.Module, runner: OrtDirectory, steps: tuple[int, ...] = (2, 3)) -> list[dict]:
    """Rows of their own target lengths stepped together, as a server's continuous batching steps them (the
    decoder mask hides a shorter row's columns past its length): a source joins and decodes ``steps[0]``
    tokens alone, a second joins, both decode ``steps[1]``; each step's logits compared."""
    g = torch.Generator().manual_seed(300)
    ids, mask = padded_ids(source_vocab(model), 2, min(7, model.config.max_positions or 512), g)
    caches = [m.make_slot_cache(2, sum(steps) + 1) for m in (model, runner)]
    results = []
    with torch.no_grad():
        for row, count in enumerate(steps):
            for m, cache in zip((model, runner), caches):
                cross = m.cross_keys_values(m.encode(ids[row:row + 1], mask[row:row + 1]))  # (1, H, S, d) each
                cache.join_source([(k[0], v[0]) for k, v in cross], int(mask[row].sum()))
            for step in range(count):
                tokens = torch.randint(0, lm_vocab(model.config), (row + 1, 1), generator=g)
                want, got = (m(decoder_input_ids=tokens, decoder_attention_mask=cache.step_mask(),
                               decoder_position_ids=cache.positions(), past_key_values=cache).logits
                             for m, cache in zip((model, runner), caches))
                for cache in caches:
                    cache.advance()
                results.append(_result(f"{row + 1} rows of their own lengths, step {step + 1}",
                                       {"logits": _max_diff(want, got, None)}, _agreement(want, got, None)))
    return results


def _result(shape: str, diffs: dict[str, float], agreement: float) -> dict:
    worst = max(diffs, key=diffs.get)
    return {"shape": shape, "max_abs_diff": diffs[worst], "output": worst, "argmax_agreement": agreement}


def _flat_outputs(out, names: list[str]) -> dict[str, Tensor]:
    """The graph's outputs by name from a model output (present keys and values from its past)."""
    present = [n for n in names if n.startswith("present.")]
    values = {name: getattr(out, name) for name in names if name not in present}
    if present:
        values.update(zip(present, (t for pair in out.past_key_values for t in pair)))
    return values


def _max_diff(a: Tensor, b: Tensor, mask: Tensor | None) -> float:
    diff = (a.float() - b.float()).abs()
    if mask is not None:
        diff = diff[mask]  # (N, ...) real tokens
    return float(diff.max()) if diff.numel() else 0.0


def _agreement(a: Tensor, b: Tensor, mask: Tensor | None) -> float:
    if mask is not None and a.shape == mask.shape:  # QA's (B, T) logits: the argmax over the real positions
        a, b = (x.float().masked_fill(~mask, float("-inf")) for x in (a, b))
    same = a.argmax(-1) == b.argmax(-1)
    if mask is not None and same.shape == mask.shape:  # per-token classes
        same = same[mask]
    return float(same.float().mean()) if same.numel() else 1.0


def quantize_int8(model: nn.Module, model_task: str, directory: Path, info: dict) -> dict:
    """The int8 copy of each graph (model.int8.onnx ...) by onnxruntime's dynamic quantization, and its
    agreement with fp32 PyTorch. A graph whose weights are in an external file (over protobuf's 2 GB) gets
    an int8 copy with its weights in one too (model.int8.onnx.data)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    import onnx
    files = []
    for part in graph_parts(model_task):
        source, target = directory / graph_file("fp32", part), directory / graph_file("int8", part)
        proto = onnx.load(str(source), load_external_data=False)
        external = bool(external_data_files(proto, source))
        onnx.load_external_data_for_model(proto, str(directory))
        weights = {t.name for t in proto.graph.initializer}  # their shapes recorded again would contradict the
        kept = [v for v in proto.graph.value_info if v.name not in weights]  # quantizer's reshaped copies
        del proto.graph.value_info[:]
        proto.graph.value_info.extend(kept)
        with _quiet(""):
            quantize_dynamic(proto, str(target), weight_type=QuantType.QInt8, use_external_data_format=external)
        files.append((source, target))
    checks = check_export(model, model_task, load_ort(directory, "int8", info=info))
    agreement = sum(c["argmax_agreement"] for c in checks) / len(checks)
    worst = max(c["max_abs_diff"] for c in checks)
    log.info("plmkit: int8 (onnxruntime dynamic quantization): argmax agreement with fp32 %.1f%%, max |difference| "
             "%.3g; %s", 100 * agreement, worst, ", ".join(f"{s.name} {_size(s)} -> {_size(t)}" for s, t in files))
    return {"files": [t.name for _, t in files], "method": "onnxruntime.quantization.quantize_dynamic, int8 weights (QInt8)",
            "argmax_agreement": agreement, "max_abs_diff": worst, "bytes": sum(graph_bytes(t) for _, t in files)}


def graph_bytes(path: Path) -> int:
    """The size of the graph file `path` and of its external weights (`path`.data), if any."""
    data = path.with_name(f"{path.name}.data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def _size(path: Path) -> str:
    return f"{graph_bytes(path) / 2 ** 20:.1f} MiB"


__all__ = ["ExportSettings", "FORMATS", "GraphSpec", "QUANTIZATIONS", "TOLERANCE", "check_export", "check_graph",
           "check_seq2seq", "export_model", "export_onnx", "exportable", "graph_specs", "padded_ids", "random_inputs"]
