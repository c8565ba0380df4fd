"""The ONNX form of plmkit models: the graph each model class exports to (`GraphKind`, `TracedGraph`),
and `OrtModel`, which runs an exported directory with onnxruntime and answers as the PyTorch model does.

The graph, with Hugging Face's ONNX names (``plmkit export`` writes it, plmkit.compression.onnx):

    inputs   input_ids (B, T), attention_mask (B, T), token_type_ids (B, T) when the model takes them,
             entity_positions (B, 2) for relation classification;
             a causal LM: attention_mask (B, P + T) and past_key_values.{i}.key / .value (B, H_kv, P, d),
             P = 0 for a prompt
    outputs  the model output's tensors, the logits first: logits; start_logits, end_logits (QA);
             last_hidden_state (and pooler_output) of a plain encoder; a causal LM adds
             present.{i}.key / .value (B, H_kv, P + T, d), the next step's past

B, T and P are dynamic axes. Padding positions are computed with the rest (the traceable path,
plmkit.nn.tracing), so per-token outputs there are not the zeros of plmkit's unpadded encoder:
only real tokens' outputs are meaningful, as always.
"""
from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from plmkit.errors import CheckpointError, ConfigError, InputError
from plmkit.models.outputs import (BaseModelOutput, CausalLMOutput, ClassifierOutput, MaskedLMOutput,
                                   QuestionAnsweringOutput)
from plmkit.nn.cache import PastKeyValues

GRAPH_FILE = "plmkit_onnx.json"  # how the directory's graphs were made: kind, inputs, outputs, checks
MODEL_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class GraphKind:
    """What the graph of one kind of model returns: `outputs`, fields of `output_class` (those the
    model sets, in this order, the logits first), of which `per_token` are (B, T, ...)."""

    output_class: type
    outputs: tuple[str, ...]
    per_token: tuple[str, ...] = ()
    extra_inputs: tuple[str, ...] = ()  # beyond TEXT_INPUTS
    past: bool = False  # a causal LM: past keys and values in, present out


GRAPHS = {  # by the family registry's model task (plmkit.models.registry)
    "base": GraphKind(BaseModelOutput, ("last_hidden_state", "pooler_output"), ("last_hidden_state",)),
    "masked-lm": GraphKind(MaskedLMOutput, ("logits",), ("logits",)),
    "sequence-classification": GraphKind(ClassifierOutput, ("logits",)),
    "token-classification": GraphKind(ClassifierOutput, ("logits",), ("logits",)),
    "relation-classification": GraphKind(ClassifierOutput, ("logits",), extra_inputs=("entity_positions",)),
    "question-answering": GraphKind(QuestionAnsweringOutput, ("start_logits", "end_logits"),
                                    ("start_logits", "end_logits")),
    "causal-lm": GraphKind(CausalLMOutput, ("logits",), ("logits",), past=True),
}


def past_names(n_layers: int, prefix: str = "past_key_values") -> list[str]:
    """past_key_values.{i}.key / .value for each layer (``prefix="present"``: the outputs)."""
    return [f"{prefix}.{i}.{part}" for i in range(n_layers) for part in ("key", "value")]


def graph_inputs(model: nn.Module, kind: GraphKind) -> list[str]:
    """The graph's input names for `model`: token_type_ids only when its forward takes them."""
    takes = inspect.signature(model.forward).parameters
    names = [n for n in TEXT_INPUTS if n in takes] + list(kind.extra_inputs)
    return names + (past_names(model.config.num_layers) if kind.past else [])


class TracedGraph(nn.Module):
    """`model` as the graph's function, what ``torch.onnx.export`` traces: the tensors of `inputs`
    (positionally) -> the tuple of `outputs` (past keys and values: flat, key then value per layer)."""

    def __init__(self, model: nn.Module, kind: GraphKind, inputs: list[str], outputs: list[str]):
        super().__init__()
        self.model, self.kind, self.inputs, self.outputs = model, kind, inputs, outputs

    def forward(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        named = dict(zip(self.inputs, tensors))
        if not self.kind.past:
            out = self.model(**named)
            return tuple(getattr(out, name) for name in self.outputs)
        flat = [named.pop(name) for name in past_names(self.model.config.num_layers)]
        cache = PastKeyValues(list(zip(flat[0::2], flat[1::2])))
        out = self.model(named["input_ids"], named["attention_mask"], past_key_values=cache)
        return (out.logits, *(t for pair in cache.present() for t in pair))


class OrtModel(nn.Module):
    """An exported directory run by onnxruntime, called as the PyTorch model is: ``model(**batch)``
    with (B, T) tensors gives the same output class, with CPU tensors (inputs the graph does not take,
    such as ``labels``, are ignored; there is no loss). A causal LM takes ``past_key_values`` (the
    previous call's, a list of (k, v) pairs; none for a prompt) and returns the present ones.

        model = OrtModel(directory)            # model.onnx; precision="int8": model.int8.onnx
        out = model(input_ids=ids, attention_mask=mask)    # out.logits
    """

    def __init__(self, directory: str | Path, precision: str = "fp32", threads: int | None = None,
                 info: dict | None = None):
        """`info`: what GRAPH_FILE holds (default: read from the directory; the export's check passes
        it before writing the file)."""
        super().__init__()
        require_onnx("the onnxruntime backend")
        import onnxruntime

        from plmkit.models.auto import AutoConfig
        directory = Path(directory)
        self.info = info if info is not None else read_graph_file(directory)
        if precision not in MODEL_FILES:
            raise ConfigError(f"precision must be one of {', '.join(MODEL_FILES)}, got {precision!r}")
        path = directory / MODEL_FILES[precision]
        if not path.is_file():
            how = " (export with --quantize int8)" if precision == "int8" else ""
            raise CheckpointError(f"{directory}: no {path.name}{how}")
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.path, self.config = path, AutoConfig.from_pretrained(directory)
        self.kind = GRAPHS[self.info["model_task"]]
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.integer_inputs = {i.name for i in self.session.get_inputs() if i.type == "tensor(int64)"}
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.past = self.info.get("past")  # {"layers", "heads", "head_dim"} of a causal LM

    def num_parameters(self) -> int:
        """The numbers the graph stores (its initializers: weights, and an int8 graph's scales)."""
        import onnx
        graph = onnx.load(str(self.path), load_external_data=False).graph
        return sum(math.prod(t.dims) for t in graph.initializer)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, past_key_values=None, **batch):
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, **batch}
        if batch["attention_mask"] is None:
            batch["attention_mask"] = torch.ones_like(input_ids)
        if "token_type_ids" in self.input_names and batch.get("token_type_ids") is None:
            batch["token_type_ids"] = torch.zeros_like(input_ids)
        if self.past is not None and (past_key_values is not None or self.input_names[-1] not in batch):
            batch.update(self._past_inputs(input_ids.shape[0], past_key_values))  # (or given by name)
        missing = [n for n in self.input_names if batch.get(n) is None]
        if missing:
            raise InputError(f"{self.path}: the graph needs {', '.join(missing)}")
        feed = {n: (batch[n].long() if n in self.integer_inputs else batch[n]).detach().cpu().numpy()
                for n in self.input_names}  # (ids as int64, whatever integer type they came in)
        values = [torch.from_numpy(v) for v in self.session.run(self.output_names, feed)]
        if self.past is None:
            return self.kind.output_class(**dict(zip(self.output_names, values)))
        return CausalLMOutput(logits=values[0], past_key_values=list(zip(values[1::2], values[2::2])))

    def _past_inputs(self, batch: int, past) -> dict[str, Tensor]:
        """The past keys and values as named inputs; empty (P = 0) for a prompt."""
        if past is None:
            empty = torch.zeros(batch, self.past["heads"], 0, self.past["head_dim"])
            past = [(empty, empty)] * self.past["layers"]
        return dict(zip(past_names(self.past["layers"]), (t for pair in past for t in pair)))


def require_onnx(what: str) -> None:
    """A ConfigError saying how to install the onnx extra when one of its packages is missing."""
    import importlib.util
    missing = [name for name in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"{what} needs {', '.join(missing)}: pip install 'plmkit[onnx]'")


def read_graph_file(directory: Path) -> dict:
    """The directory's GRAPH_FILE (what `plmkit export` wrote), or an error saying to export first."""
    from plmkit.utils.text import read_json_object
    path = Path(directory) / GRAPH_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {GRAPH_FILE}; the onnxruntime backend runs a directory that "
                              f"`plmkit export --format onnx` wrote")
    info = read_json_object(path, CheckpointError)
    if info.get("model_task") not in GRAPHS:
        raise CheckpointError(f"{path}: model_task {info.get('model_task')!r} is not one plmkit exports "
                              f"({', '.join(GRAPHS)})")
    return info


def write_graph_file(directory: Path, info: dict) -> None:
    from plmkit.utils.files import atomic_write_text
    atomic_write_text(Path(directory) / GRAPH_FILE, json.dumps(info, indent=2) + "\n")


__all__ = ["GRAPHS", "GRAPH_FILE", "GraphKind", "MODEL_FILES", "OrtModel", "TracedGraph", "graph_inputs",
           "past_names", "read_graph_file", "require_onnx", "write_graph_file"]
