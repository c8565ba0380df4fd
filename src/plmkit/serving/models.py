"""What the server serves: a model directory loaded once (`load_served_model`, the one place a model
enters the server) and what it can answer.

* a decoder-only LM (a pretrained GPT-2 / Llama, or one fine-tuned with ``--task sft``): completions
  and chat completions, continuous batching (serving/batching.py);
* a fine-tuned model with a task (``plmkit_task.json``, or the task model its config.json names): the
  task endpoints whose Hugging Face pipeline name the task serves (classification, NER, QA on an
  encoder; translation, summarization on an encoder-decoder), through the task's own `predict`; an
  encoder-decoder (BART, Marian, BERT-to-BERT) also answers completions: the prompt is its source;
* an encoder without a task head (a sentence-transformers directory such as all-MiniLM-L6-v2, or any
  base encoder): embeddings, pooled as its sentence-transformers files say (mean + L2 norm otherwise).

Every encoder (with or without a task) also draws its attention maps (/v1/attention).

Variants: a quantized directory (`plmkit quantize`) loads through `from_pretrained` unchanged; an ONNX
export (`plmkit export`) runs on onnxruntime (its fp32 graphs, else its int8 ones, plmkit.models.onnx)
behind the same `ServedModel`: an exported decoder LM answers completions and chat in the same
continuous batching (the graph reads and writes the server's `SlotKVCache`), an exported task model
(an encoder's, or a translation or summarization encoder-decoder's) its task endpoints (not
/v1/attention: the graphs return no attention maps).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from plmkit.errors import ConfigError
from plmkit.models.sentence_transformers import sentence_embeddings
from plmkit.serving.batching import TurnLock

# the endpoint of each task pipeline (Hugging Face's names, which a task lists in its `pipelines`)
MAX_ATTENTION_TOKENS = 64  # a picture of more is unreadable
TASK_ENDPOINTS = {"classify": "text-classification", "ner": "token-classification", "qa": "question-answering",
                  "translate": "translation", "summarize": "summarization"}


@dataclass
class ServedModel:
    name: str
    path: Path
    model: torch.nn.Module
    tokenizer: object
    task: object | None = None  # a plmkit Task (with its settings) or None
    pooling: str = "mean"
    normalize: bool = True
    max_input_tokens: int | None = None  # embeddings: the sentence-transformers max_seq_length
    created: int = field(default_factory=lambda: int(time.time()))
    backend: str = "torch"  # or onnxruntime / onnxruntime-int8: an exported directory's graph
    lock: TurnLock = field(default_factory=TurnLock)  # held by whoever runs the model (its batchers), in turn

    @property
    def generates(self) -> bool:
        """A decoder-only LM: completions and chat."""
        return hasattr(self.model, "make_cache") and not getattr(self.model, "is_encoder_decoder", False)

    @property
    def is_seq2seq(self) -> bool:
        """An encoder-decoder: completions (its source in, the target out) and its task's routes."""
        return getattr(self.model, "is_encoder_decoder", False)

    @property
    def is_encoder(self) -> bool:
        return not self.generates and not self.is_seq2seq

    @property
    def embeds(self) -> bool:
        return self.is_encoder and self.task is None

    def serves(self, endpoint: str) -> bool:
        """Whether a task endpoint (a key of TASK_ENDPOINTS) answers with this model."""
        return (self.task is not None and not self.generates
                and TASK_ENDPOINTS.get(endpoint) in getattr(self.task, "pipelines", ()))

    @property
    def endpoints(self) -> list[str]:
        """The /v1 routes this model answers."""
        if self.generates:
            return ["/v1/completions", "/v1/chat/completions"]
        out = [f"/v1/{e}" for e in TASK_ENDPOINTS if self.serves(e)]
        if self.is_seq2seq:
            out.append("/v1/completions")
        if self.embeds:
            out.append("/v1/embeddings")
        if self.is_encoder and self.backend == "torch":
            out.append("/v1/attention")
        return out

    @property
    def kind(self) -> str:
        if self.generates:
            return "decoder"
        return "embedding" if self.embeds else "task"

    @property
    def context_length(self) -> int:
        """Positions a sequence may take: the learned positions, else the trained context, else 2048."""
        config = self.model.config
        return config.max_positions or config.context_length or 2048

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters(), torch.empty(0)).device  # (onnxruntime's: no parameters, the CPU)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) padded ids -> (B, D) sentence embeddings."""
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, D)
        return sentence_embeddings(hidden, attention_mask, self.pooling, self.normalize)

    def attention_png(self, text: str, layers: list[int] | None = None) -> bytes:
        """The attention maps (mean over heads) of this encoder over ``text``, as a PNG (explicit attention path)."""
        from plmkit.visualization import attention_png
        enc = self.tokenizer(text, return_tensors="pt")
        n = enc["input_ids"].shape[1]
        if n > MAX_ATTENTION_TOKENS:
            raise ConfigError(f"input has {n} tokens; an attention picture takes at most {MAX_ATTENTION_TOKENS}")
        count = self.model.config.num_layers
        layers = list(range(count)) if layers is None else layers
        bad = [i for i in layers if not 0 <= i < count]
        if bad or not layers:
            raise ConfigError(f"layers: {bad or 'none'} - this model has layers 0 to {count - 1}")
        with self.lock, torch.inference_mode():  # (in turn with the batchers running the same model)
            out = self.model(**{k: v.to(self.device) for k, v in enc.items()}, output_attentions=True)
        tokens = self.tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist())
        return attention_png(tokens, out.attentions, layers, title=text if len(text) <= 80 else text[:77] + "...")


def load_served_model(name: str, directory: str | Path, device: str = "auto") -> ServedModel:
    """Load a model directory for serving (see the module docstring for what each kind answers)."""
    from plmkit import tasks
    from plmkit.models.io import check_model_dir
    from plmkit.tasks.base import TASK_FILE

    directory = check_model_dir(directory)
    exported = _onnx_model(name, directory, device)
    if exported is not None:
        return exported
    task = None
    if not (directory / TASK_FILE).is_file():
        try:
            task = tasks.load_task(directory)  # the task model config.json's architectures name, if any
        except ConfigError:
            task = None
    if task is not None or (directory / TASK_FILE).is_file():
        model, tokenizer, task = tasks.load_for_inference(directory, device)
        served = ServedModel(name, directory, model, tokenizer, task)
        if served.generates:
            served.task = None  # completions and chat: the task (sft) adds nothing
        return served
    return _embedding_model(name, directory, device)


def _onnx_model(name: str, directory: Path, device: str) -> ServedModel | None:
    """An exported directory (`plmkit export`) on onnxruntime, its fp32 graphs else its int8 ones: a decoder
    LM answers completions and chat (with or without a task file, as its PyTorch directory), a task model
    its task endpoints; None for a PyTorch directory. An export of a model without a task is refused by name."""
    from plmkit import tasks
    from plmkit.models.onnx import GRAPH_FILE, graph_file, graph_parts, load_ort, read_graph_file
    from plmkit.tasks.base import TASK_FILE
    from plmkit.tasks.inference import ONNX_BACKENDS
    from plmkit.tokenization import Tokenizer

    if not (directory / GRAPH_FILE).is_file() or any(directory.glob("*.safetensors")):
        return None
    info = read_graph_file(directory)
    parts = graph_parts(info["model_task"])
    backend = next((backend for backend, precision in ONNX_BACKENDS.items()
                    if all((directory / graph_file(precision, part)).is_file() for part in parts)), None)
    if backend is None:
        raise ConfigError(f"{directory}: {GRAPH_FILE} but no ONNX graphs ({', '.join(graph_file('fp32', p) for p in parts)})")
    if info["model_task"] == "causal-lm":
        model = load_ort(directory, ONNX_BACKENDS[backend], info=info).eval()  # an OrtModelForCausalLM
        return ServedModel(name, directory, model, Tokenizer.from_pretrained(directory), backend=backend)
    if not (directory / TASK_FILE).is_file():
        raise ConfigError(f"{directory}: an ONNX export without {TASK_FILE}; plmkit serves exported decoder LMs and task "
                          "models (classification, NER, QA, translation, summarization) on onnxruntime; serve the "
                          "PyTorch directory for embeddings")
    model, tokenizer, task = tasks.load_for_inference(directory, device, backend=backend)
    if getattr(model, "is_encoder_decoder", False):
        model.make_slot_cache(1, 1)  # (an export older than the decoder graph's mask is refused now, naming the fix)
    return ServedModel(name, directory, model, tokenizer, task, backend=backend)


def _embedding_model(name: str, directory: Path, device: str) -> ServedModel:
    from plmkit.models.auto import AutoModel
    from plmkit.tokenization import Tokenizer
    from plmkit.utils.device import resolve_device

    model = AutoModel.from_pretrained(directory)
    model = model.to(resolve_device(device, model.cpu_only)).eval()  # (int8 layers: the CPU)
    if not hasattr(model, "embeddings") or getattr(model, "is_encoder_decoder", False):
        raise ConfigError(f"{directory}: a {type(model).__name__} with no task: plmkit serves a decoder LM, a fine-tuned "
                          "task model or an encoder (embeddings)")
    tokenizer = Tokenizer.from_pretrained(directory)
    model.check_vocabulary(tokenizer, directory)
    files = model.sentence_transformers
    pooling = (files.pooling if files is not None else None) or "mean"
    if pooling not in ("mean", "cls", "max"):
        raise ConfigError(f"{directory}: sentence-transformers pooling {pooling!r} is not one plmkit computes "
                          "(mean, cls, max)")
    normalize = files.normalize if files is not None else True
    limit = files.max_seq_length if files is not None else None
    return ServedModel(name, directory, model, tokenizer, None, pooling, normalize, limit)


__all__ = ["ServedModel", "TASK_ENDPOINTS", "load_served_model"]
