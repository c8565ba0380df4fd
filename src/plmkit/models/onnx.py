"""The ONNX form of plmkit models: the graphs each model class exports to (`GraphKind`, `TracedGraph`,
`TracedEncoder`, `TracedDecoder`), and the models that run an exported directory with onnxruntime and
answer as the PyTorch model does (`load_ort`: `OrtModel`, `OrtModelForCausalLM`, `OrtModelForSeq2SeqLM`).

The graphs, with Hugging Face's (and Optimum's) ONNX names (``plmkit export`` writes them,
plmkit.compression.onnx):

model.onnx, an encoder with its head or a causal LM:
    inputs   input_ids (B, T), attention_mask (B, T), token_type_ids (B, T) when the model takes them,
             entity_positions (B, 2) for relation classification;
             a causal LM: attention_mask (B, P + T) and past_key_values.{i}.key / .value (B, H_kv, P, d),
             P = 0 for a prompt, H_kv layer i's key/value heads (a pruned model's layers differ)
    outputs  the model output's tensors, the logits first: logits; start_logits, end_logits (QA);
             last_hidden_state (and pooler_output) of a plain encoder; a causal LM adds
             present.{i}.key / .value (B, H_kv, P + T, d), the next step's past

encoder_model.onnx and decoder_model.onnx, an encoder-decoder (Optimum's layout; one decoder graph for the
first step and every later one, Optimum's merged decoder without its ``use_cache_branch`` switch):
    encoder  input_ids (B, S), attention_mask (B, S) -> last_hidden_state (B, S, D), the states the
             decoder reads (a BERT-to-BERT's projected to the decoder's width)
    decoder  input_ids (B, T) the target tokens, encoder_attention_mask (B, S), encoder_hidden_states
             (B, S_new, D), past_key_values.{i}.decoder.key / .value (B, H, P, d) (self-attention) and
             past_key_values.{i}.encoder.key / .value (B, H, S_past, d) (cross-attention)
             -> logits (B, T, V), present.{i}.decoder.* (B, H, P + T, d), present.{i}.encoder.* (B, H, S, d)
             The cross-attention keys and values are the past ones followed by those projected from
             encoder_hidden_states (S = S_past + S_new): the first step gives the encoder's states and
             an empty past (P = S_past = 0), every later step the previous present and states of
             length 0, so the source is projected once. Rows are target sequences: beams of one
             source each carry their own copy of its states.
             decoder_attention_mask (B, P + T): 0 hides a past column, and each row's positions count
             its visible columns, so rows of their own target lengths step together (a server's
             continuous batching: a shorter row's columns past its own length are hidden).

B, T, P and the source lengths are dynamic axes. Padding positions are computed with the rest (the
traceable path, plmkit.nn.tracing), so per-token outputs there are not the zeros of plmkit's unpadded
encoder: only real tokens' outputs are meaningful, as always.
"""
from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.errors import CheckpointError, ConfigError, InputError, PlmkitError
from plmkit.generation import GenerationMixin
from plmkit.models.outputs import (BaseModelOutput, CausalLMOutput, ClassifierOutput, MaskedLMOutput,
                                   QuestionAnsweringOutput, Seq2SeqLMOutput)
from plmkit.models.decoder import causal_lm_loss
from plmkit.models.seq2seq import shift_tokens_right
from plmkit.nn.cache import KVCache, PastKeyValues, Seq2SeqPastKeyValues, Seq2SeqSlotCache, heads_per_layer
from plmkit.nn.masks import padding_bias, positions_from_mask
from plmkit.utils.constants import IGNORE_INDEX

GRAPH_FILE = "plmkit_onnx.json"  # how the directory's graphs were made: kind, inputs, outputs, checks
PRECISIONS = ("fp32", "int8")
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
DECODER_INPUTS = ("input_ids", "encoder_attention_mask", "encoder_hidden_states", "decoder_attention_mask")  # + past
SEQ2SEQ = "seq2seq-lm"  # the model task exported as two graphs
SEQ2SEQ_PARTS = ("encoder_model", "decoder_model")


def graph_file(precision: str, part: str = "model") -> str:
    """The file name of graph `part` (model; an encoder-decoder's encoder_model, decoder_model) at `precision`."""
    return f"{part}.onnx" if precision == "fp32" else f"{part}.{precision}.onnx"


MODEL_FILES = {precision: graph_file(precision) for precision in PRECISIONS}


@dataclass(frozen=True)
class GraphKind:
    """What the graph of one kind of model returns: `outputs`, fields of `output_class` (those the
    model sets, in this order, the logits first), of which `per_token` are (B, T, ...)."""

    output_class: type
    outputs: tuple[str, ...]
    per_token: tuple[str, ...] = ()
    extra_inputs: tuple[str, ...] = ()  # beyond TEXT_INPUTS
    past: bool = False  # a causal LM: past keys and values in, present out


GRAPHS = {  # the one-graph kinds, by the family registry's model task (plmkit.models.registry)
    "base": GraphKind(BaseModelOutput, ("last_hidden_state", "pooler_output"), ("last_hidden_state",)),
    "masked-lm": GraphKind(MaskedLMOutput, ("logits",), ("logits",)),
    "sequence-classification": GraphKind(ClassifierOutput, ("logits",)),
    "token-classification": GraphKind(ClassifierOutput, ("logits",), ("logits",)),
    "relation-classification": GraphKind(ClassifierOutput, ("logits",), extra_inputs=("entity_positions",)),
    "question-answering": GraphKind(QuestionAnsweringOutput, ("start_logits", "end_logits"),
                                    ("start_logits", "end_logits")),
    "causal-lm": GraphKind(CausalLMOutput, ("logits",), ("logits",), past=True),
}
EXPORTED = (*GRAPHS, SEQ2SEQ)  # every model task plmkit exports


def graph_parts(model_task: str) -> tuple[str, ...]:
    """The graphs an export of a `model_task` model consists of (file stems)."""
    return SEQ2SEQ_PARTS if model_task == SEQ2SEQ else ("model",)


def past_names(n_layers: int, prefix: str = "past_key_values", seq2seq: bool = False) -> list[str]:
    """past_key_values.{i}.key / .value for each layer (``prefix="present"``: the outputs); `seq2seq`:
    past_key_values.{i}.decoder.key / .value (self-attention), then .encoder.key / .value (cross-attention)."""
    sides = ("decoder.", "encoder.") if seq2seq else ("",)
    return [f"{prefix}.{i}.{side}{part}" for i in range(n_layers) for side in sides for part in ("key", "value")]


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


class TracedEncoder(nn.Module):
    """An encoder-decoder's encoder_model graph: (input_ids, attention_mask) -> (last_hidden_state,)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *tensors: Tensor) -> tuple[Tensor]:
        input_ids, attention_mask = tensors
        return (self.model.encode(input_ids, attention_mask),)


class TracedDecoder(nn.Module):
    """An encoder-decoder's decoder_model graph (see the module docstring): DECODER_INPUTS, then the past
    of every layer (self-attention key and value, cross-attention key and value) -> the logits, then
    the present in the same order."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        input_ids, encoder_mask, states, decoder_mask, *past = tensors
        own, cross = [], []
        for i, layer in enumerate(self.model.decoder_layers()):
            k, v = layer.cross_attn.project_kv(states)  # (B, H, S_new, d)
            own.append((past[4 * i], past[4 * i + 1]))
            cross.append((torch.cat([past[4 * i + 2], k], 2), torch.cat([past[4 * i + 3], v], 2)))  # (B, H, S, d)
        cache = Seq2SeqPastKeyValues(own, cross, padding_bias(encoder_mask, states.dtype))
        positions = (decoder_mask.cumsum(1) - 1)[:, past[0].shape[2]:].clamp(min=0)  # (B, T): visible columns before
        logits = self.model(decoder_input_ids=input_ids, decoder_attention_mask=decoder_mask,
                            decoder_position_ids=positions, past_key_values=cache).logits
        return (logits, *(t for (k, v), (ck, cv) in zip(cache.present(), cross) for t in (k, v, ck, cv)))


# ---------------------------------------------------------------------- running an exported directory
class OrtGraph:
    """One graph file in an onnxruntime session, fed and answering torch tensors (on the CPU) by name.
    ``spinning`` False: the session's threads sleep as soon as a run ends instead of spinning for the next
    one, which would take the cores from the PyTorch work between two runs (a decoding step's)."""

    def __init__(self, path: Path, threads: int | None = None, spinning: bool = True):
        import onnxruntime
        options = onnxruntime.SessionOptions()
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads is not None:
            options.intra_op_num_threads = threads
        self.path = path
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.integer_inputs = {i.name for i in self.session.get_inputs() if i.type == "tensor(int64)"}
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: dict[str, Tensor | None]) -> list[Tensor]:
        """The outputs (in `output_names` order) for `inputs` by name (ids as int64, whatever integer type
        they came in; others it does not take are ignored)."""
        missing = [n for n in self.input_names if inputs.get(n) is None]
        if missing:
            raise InputError(f"{self.path}: the graph needs {', '.join(missing)}")
        feed = {n: np.ascontiguousarray((inputs[n].long() if n in self.integer_inputs else inputs[n]).detach().cpu().numpy())
                for n in self.input_names}
        return [torch.from_numpy(v) for v in self.session.run(self.output_names, feed)]

    def num_parameters(self) -> int:
        """The numbers the graph stores (its initializers: weights, and an int8 graph's scales)."""
        import onnx
        graph = onnx.load(str(self.path), load_external_data=False).graph
        return sum(math.prod(t.dims) for t in graph.initializer)


class OrtDirectory(nn.Module):
    """What every model run from an exported directory has: ``info`` (what GRAPH_FILE records), the
    ``config`` and ``generation_config`` of the model it was exported from, and ``graphs``, an `OrtGraph`
    per graph file at `precision` (fp32: model.onnx ...; int8: model.int8.onnx ...). `info`: what
    GRAPH_FILE holds (default: read from the directory; the export's check passes it before writing it)."""

    spinning = True  # (`OrtGraph`) a forward pass is one run; a decoder's steps have PyTorch work between runs

    def __init__(self, directory: str | Path, precision: str = "fp32", threads: int | None = None,
                 info: dict | None = None):
        super().__init__()
        require_onnx("the onnxruntime backend")
        from plmkit.models.auto import AutoConfig
        from plmkit.models.base import directory_generation_config
        directory = Path(directory)
        self.info = info if info is not None else read_graph_file(directory)
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        paths = {part: directory / graph_file(precision, part) for part in graph_parts(self.info["model_task"])}
        absent = [p.name for p in paths.values() if not p.is_file()]
        if absent:
            how = " (export with --quantize int8)" if precision == "int8" else ""
            raise CheckpointError(f"{directory}: no {', '.join(absent)}{how}")
        self.graphs = {part: OrtGraph(path, threads, self.spinning) for part, path in paths.items()}
        self.path, self.config = next(iter(paths.values())), AutoConfig.from_pretrained(directory)
        self.generation_config = directory_generation_config(directory, self.config)
        # {"layers", "heads", "head_dim"} of a causal LM's or decoder's cache (heads: one count, or one per layer)
        self.past = self.info.get("past")

    def num_parameters(self) -> int:
        return sum(graph.num_parameters() for graph in self.graphs.values())


class OrtModel(OrtDirectory):
    """An exported encoder (with its head) or causal LM, called as the PyTorch model is: ``model(**batch)``
    with (B, T) tensors gives the same output class, with CPU tensors (inputs the graph does not take,
    such as ``labels``, are ignored; there is no loss). A causal LM takes ``past_key_values`` (the
    previous call's, a list of (k, v) pairs; none for a prompt) and returns the present ones.

        model = OrtModel(directory)            # model.onnx; precision="int8": model.int8.onnx
        out = model(input_ids=ids, attention_mask=mask)    # out.logits
    """

    def __init__(self, directory: str | Path, precision: str = "fp32", threads: int | None = None,
                 info: dict | None = None):
        super().__init__(directory, precision, threads, info)
        if self.info["model_task"] not in GRAPHS:
            raise CheckpointError(f"{directory}: an export of a {self.info['model_task']} model: load it with load_ort")
        self.graph = self.graphs["model"]
        self.session, self.input_names, self.output_names = self.graph.session, self.graph.input_names, self.graph.output_names
        self.kind = GRAPHS[self.info["model_task"]]

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, past_key_values=None, **batch):
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, **batch}
        if self.past is not None and (past_key_values is not None or self.input_names[-1] not in batch):
            batch.update(self._past_inputs(input_ids.shape[0], past_key_values))  # (or given by name)
        if batch["attention_mask"] is None:
            past = batch[self.input_names[-1]].shape[2] if self.past is not None else 0
            batch["attention_mask"] = torch.ones(input_ids.shape[0], past + input_ids.shape[1], dtype=torch.long)
        if "token_type_ids" in self.input_names and batch.get("token_type_ids") is None:
            batch["token_type_ids"] = torch.zeros_like(input_ids)
        values = self.graph.run(batch)
        if self.past is None:
            return self.kind.output_class(**dict(zip(self.output_names, values)))
        return CausalLMOutput(logits=values[0], past_key_values=list(zip(values[1::2], values[2::2])))

    def _past_inputs(self, batch: int, past) -> dict[str, Tensor]:
        """The past keys and values as named inputs; empty (P = 0) for a prompt."""
        if past is None:
            heads = heads_per_layer(self.past["layers"], self.past["heads"])
            past = [(torch.zeros(batch, h, 0, self.past["head_dim"]),) * 2 for h in heads]
        return dict(zip(past_names(self.past["layers"]), (t for pair in past for t in pair)))


class OrtModelForCausalLM(GenerationMixin, OrtModel):
    """An exported causal LM with ``generate`` and ``stream`` (plmkit.generation, as the PyTorch model), and
    the forward a decoding loop calls with a plmkit cache (`make_cache`; a server's `SlotKVCache`): the
    graph takes the cache's keys and values as its past and the new positions of its present are written
    into the cache, as the PyTorch model writes them. Positions come from the attention mask (the graph
    takes no position ids); ``position_ids`` that say otherwise are refused."""

    spinning = False

    def make_cache(self, batch: int, max_len: int, dtype: torch.dtype | None = None, device=None,
                   kind: type[KVCache] = KVCache) -> KVCache:
        p = self.past
        return kind(p["layers"], batch, p["heads"], max_len, p["head_dim"], torch.float32, "cpu")

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, position_ids: Tensor | None = None,
                past_key_values=None, logits_to_keep: int = 0, labels: Tensor | None = None,
                return_logits: bool | None = None, **batch) -> CausalLMOutput:
        """The PyTorch model's forward (see the class docstring); labels (B, T) aligned with input_ids
        (shifted inside) give the mean next-token cross-entropy; return_logits is accepted and ignored
        (the graph's logits are there anyway)."""
        n, t = input_ids.shape
        cache = past_key_values
        in_place = cache is not None and not isinstance(cache, (list, tuple))  # a plmkit cache
        if in_place:
            length = cache.length
            if hasattr(cache, "appended_mask"):  # a SlotKVCache: rows of their own lengths
                attention_mask = cache.appended_mask()
            past = [(layer.k[:n, :, :length], layer.v[:n, :, :length]) for layer in cache.layers]
        else:
            past, length = cache, 0 if cache is None else cache[0][0].shape[2]
        if attention_mask is None:
            attention_mask = torch.ones(n, length + t, dtype=torch.long)
        if position_ids is not None and not torch.equal(position_ids.cpu().expand(n, t),
                                                        positions_from_mask(attention_mask)[:, -t:]):
            raise InputError("the exported graph takes its positions from the attention mask, and position_ids "
                             "differ from them: pass the mask of the whole sequence instead")
        out = super().forward(input_ids, attention_mask, past, **batch)
        if in_place:
            for layer, (k, v) in zip(cache.layers, out.past_key_values):
                layer.update(k[:, :, -t:], v[:, :, -t:])
            out.past_key_values = cache
        if labels is not None:
            out.loss = causal_lm_loss(out.logits, labels)
        if logits_to_keep:
            out.logits = out.logits[:, -logits_to_keep:]
        return out


class OrtDecoderCache:
    """What an exported decoder carries from one call to the next, for ``rows`` target sequences (the
    beams or samples of a source are consecutive rows, each with its own copy of the source): the
    source's mask (rows, S), its encoder states (rows, S, D) until the first call has projected them
    into the cross-attention keys and values (then (rows, 0, D)), and the graph's last present outputs
    as they came back, its next past (per layer: self-attention key and value, cross-attention key
    and value)."""

    def __init__(self, states: Tensor, mask: Tensor, past: dict, group: int = 1):
        self.states, self.mask, self.group = states, mask, group  # group: consecutive rows of one source
        self.names = past_names(past["layers"], seq2seq=True)
        empty = states.new_zeros(states.shape[0], past["heads"], 0, past["head_dim"])
        self.past = [empty] * len(self.names)

    @property
    def length(self) -> int:
        """Target positions so far."""
        return self.past[0].shape[2]

    def inputs(self) -> dict[str, Tensor]:
        return {"encoder_attention_mask": self.mask, "encoder_hidden_states": self.states,
                **dict(zip(self.names, self.past))}

    def update(self, present: list[Tensor]) -> None:
        self.past, self.states = present, self.states[:, :0]  # (the source is in the cross keys and values now)

    def keep(self, rows: Tensor) -> None:
        """Keep only rows ``rows`` (M,), in that order (a server's batch: finished sequences leave)."""
        self.past = [t.index_select(0, rows) for t in self.past]
        self.states, self.mask = self.states.index_select(0, rows), self.mask.index_select(0, rows)
        self.group = 1

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` (N,), in that order (beam search). The rows of one source hold the same
        source: unless a row takes another source's, only the self-attention keys and values move."""
        rows = torch.arange(len(index), device=index.device)
        if not torch.equal(index // self.group, rows // self.group):
            self.keep(index)
            return
        self.past = [t.index_select(0, index) if ".decoder." in name else t for name, t in zip(self.names, self.past)]


class OrtModelForSeq2SeqLM(GenerationMixin, OrtDirectory):
    """An exported encoder-decoder (encoder_model.onnx, decoder_model.onnx) with the hooks of
    plmkit.generation (`encode`, `make_cache` and the forward on a cache), so ``generate`` and ``stream``
    run as on the PyTorch model, token for token; the forward with ``labels`` gives the loss. A server's
    continuous batching steps it on a `Seq2SeqSlotCache` as the PyTorch model (`make_slot_cache`,
    `cross_keys_values`): the graph reads the active rows' columns as its past, each row's own hidden by
    the decoder mask past its length, and each row's new keys and values are written at its own column.

        model = load_ort(directory)
        ids = model.generate(input_ids, attention_mask=mask, num_beams=4, max_new_tokens=40)
    """

    is_encoder_decoder = True
    spinning = False  # 8 rows of a Marian-base, a step: 14 ms instead of 19-25 with onnxruntime's threads spinning

    def cross_keys_values(self, encoder_states: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Each decoder layer's cross-attention keys and values of (B, S, D) ``encoder_states``, (B, H, S, d)
        each: the graph projects them in a first step (its start token's logits are not kept)."""
        b, start = encoder_states.shape[0], self.config.decoder_start_token_id
        cache = self.make_cache(b, 0, encoder_states)
        self(decoder_input_ids=torch.full((b, 1), start, dtype=torch.long), past_key_values=cache)
        return list(zip(cache.past[2::4], cache.past[3::4]))

    def make_slot_cache(self, slots: int, max_len: int) -> Seq2SeqSlotCache:
        """An empty cache for continuous batching (see `Seq2SeqSlotCache`); an export whose decoder graph
        takes no decoder_attention_mask (made before it took one) is refused, naming the fix."""
        if "decoder_attention_mask" not in self.graphs["decoder_model"].input_names:
            raise CheckpointError(f"{self.path.parent}: exported by an earlier plmkit, its decoder graph takes no "
                                  "decoder_attention_mask, which decoding rows of their own lengths together needs; "
                                  "export the PyTorch model again (plmkit export)")
        p = self.past
        return Seq2SeqSlotCache(p["layers"], slots, p["heads"], max_len, p["head_dim"], torch.float32, "cpu")

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, S) source -> (B, S, D) the states the decoder reads."""
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        return self.graphs["encoder_model"].run({"input_ids": input_ids, "attention_mask": mask})[0]

    def make_cache(self, rows: int, max_len: int, encoder_states: Tensor, encoder_mask: Tensor | None = None,
                   dtype: torch.dtype | None = None) -> OrtDecoderCache:
        """The decoder's state for ``rows`` target sequences over the (B_s, S, D) states of B_s sources
        (rows = B_s * g); ``max_len`` is not needed (the past grows with each call)."""
        sources = encoder_states.shape[0]
        if rows % sources:
            raise PlmkitError(f"{rows} target rows for {sources} sources: give each source the same number of rows")
        mask = torch.ones(encoder_states.shape[:2], dtype=torch.long) if encoder_mask is None else encoder_mask
        g = rows // sources
        return OrtDecoderCache(encoder_states.repeat_interleave(g, 0), mask.repeat_interleave(g, 0), self.past, g)

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                decoder_input_ids: Tensor | None = None, past_key_values: OrtDecoderCache | None = None,
                labels: Tensor | None = None, logits_to_keep: int = 0, label_smoothing: float = 0.0,
                decoder_attention_mask: Tensor | None = None, decoder_position_ids: Tensor | None = None
                ) -> Seq2SeqLMOutput:
        """The PyTorch model's forward: input_ids / attention_mask (B, S) the source (or a cache made by
        `make_cache`, which the call advances, or a `Seq2SeqSlotCache`: one step of its active rows, whose
        mask and positions it gives); labels (B, T) -> decoder inputs shifted right and the mean
        cross-entropy (label_smoothing as torch's); logits_to_keep: the last k positions only.
        decoder_attention_mask and decoder_position_ids are the cache's (the graph takes its positions from
        its mask): given, they are checked against it."""
        if decoder_input_ids is None:
            if labels is None:
                raise PlmkitError("give labels or decoder_input_ids: the decoder needs its inputs")
            decoder_input_ids = shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)
        cache = past_key_values
        if isinstance(cache, Seq2SeqSlotCache):
            logits = self._slot_step(decoder_input_ids, cache, decoder_attention_mask, decoder_position_ids)
            return Seq2SeqLMOutput(None, logits[:, -logits_to_keep:] if logits_to_keep else logits, cache)
        if cache is None:
            if input_ids is None:
                raise PlmkitError("give the source (input_ids), or a cache made by make_cache")
            cache = self.make_cache(input_ids.shape[0], 0, self.encode(input_ids, attention_mask), attention_mask)
        (b, t), p = decoder_input_ids.shape, cache.length
        logits, *present = self.graphs["decoder_model"].run({"input_ids": decoder_input_ids, **cache.inputs(),
                                                             "decoder_attention_mask": torch.ones(b, p + t)})
        cache.update(present)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                                   ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing)
        return Seq2SeqLMOutput(loss, logits[:, -logits_to_keep:] if logits_to_keep else logits, cache)

    def _slot_step(self, tokens: Tensor, cache: Seq2SeqSlotCache, mask: Tensor | None,
                   positions: Tensor | None) -> Tensor:
        """(n, 1, V) the logits of one token (n, 1) for each active row of ``cache``, whose keys and values
        it writes at each row's own column. The graph appends the new column after the longest row's
        (`SlotKVCache.appended_mask` hides the columns between)."""
        n, length, width = cache.active, cache.length, cache.source_width
        appended = cache.appended_mask()  # (n, length + 1)
        if (mask is not None and not torch.equal(mask.cpu(), cache.step_mask().cpu())) or (
                positions is not None and not torch.equal(positions.cpu(), cache.positions().cpu())):
            raise InputError("a slot cache's step takes the cache's own step_mask() and positions()")
        past = [t for layer, (ck, cv) in zip(cache.layers, cache.cross)
                for t in (layer.k[:n, :, :length], layer.v[:n, :, :length], ck, cv)]
        source_mask = (torch.arange(width)[None] < cache.source_lengths[:n, None]).long()  # (n, S)
        logits, *present = self.graphs["decoder_model"].run({
            "input_ids": tokens, "decoder_attention_mask": appended, "encoder_attention_mask": source_mask,
            "encoder_hidden_states": torch.zeros(n, 0, self.config.d_model),
            **dict(zip(past_names(len(cache.layers), seq2seq=True), past))})
        for layer, k, v in zip(cache.layers, present[0::4], present[1::4]):
            layer.update(k[:, :, -1:], v[:, :, -1:])
        return logits


def load_ort(directory: str | Path, precision: str = "fp32", threads: int | None = None,
             info: dict | None = None) -> OrtDirectory:
    """The model of an exported directory on onnxruntime, by what it holds: an `OrtModelForSeq2SeqLM`, an
    `OrtModelForCausalLM`, else an `OrtModel` (see `OrtDirectory` for the arguments)."""
    info = info if info is not None else read_graph_file(Path(directory))
    cls = {SEQ2SEQ: OrtModelForSeq2SeqLM, "causal-lm": OrtModelForCausalLM}.get(info["model_task"], OrtModel)
    return cls(directory, precision, threads, info)


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
    if info.get("model_task") not in EXPORTED:
        raise CheckpointError(f"{path}: model_task {info.get('model_task')!r} is not one plmkit exports "
                              f"({', '.join(EXPORTED)})")
    return info


def write_graph_file(directory: Path, info: dict) -> None:
    from plmkit.utils.files import atomic_write_text
    atomic_write_text(Path(directory) / GRAPH_FILE, json.dumps(info, indent=2) + "\n")


__all__ = ["DECODER_INPUTS", "EXPORTED", "GRAPHS", "GRAPH_FILE", "GraphKind", "MODEL_FILES", "OrtDecoderCache",
           "OrtDirectory", "OrtGraph", "OrtModel", "OrtModelForCausalLM", "OrtModelForSeq2SeqLM", "PRECISIONS",
           "SEQ2SEQ", "SEQ2SEQ_PARTS", "TracedDecoder", "TracedEncoder", "TracedGraph", "graph_file", "graph_inputs",
           "graph_parts", "load_ort", "past_names", "read_graph_file", "require_onnx", "write_graph_file"]
