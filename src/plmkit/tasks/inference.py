"""Evaluation and prediction with a fine-tuned model directory, for any task.

A fine-tuned model directory is an ordinary Hugging Face model directory (config.json with
id2label/label2id and architectures, model.safetensors) plus the tokenizer files and
``plmkit_task.json``, which names the task and holds its settings, so that `plmkit evaluate` and
`plmkit predict` (and `plmkit.pipeline`) know what to do.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from plmkit.errors import CheckpointError, ConfigError
from plmkit.tasks.base import TASK_FILE, Task
from plmkit.tasks.fields import records_of
from plmkit.tasks.registry import get_task, load_task
from plmkit.utils.device import is_device_name
from plmkit.utils.settings import Settings, setting
from plmkit.utils.text import check_file


ONNX_BACKENDS = {"onnxruntime": "fp32", "onnxruntime-int8": "int8"}  # backend -> the ONNX graph it runs (MODEL_FILES)


@dataclass
class InferenceSettings(Settings):
    """What `plmkit evaluate` and `plmkit predict` share: the model and how to run it."""

    section = "inference"
    model: str | None = setting(None, "fine-tuned model directory", metavar="DIR", required=True)
    batch_size: int = setting(32, "examples per batch", metavar="N", at_least=1)
    device: str = setting("auto", "auto, cpu, cuda or cuda:N", metavar="DEV")
    null_score_diff_threshold: float | None = setting(
        None, "QA v2: answer only when null score - best span score <= T (off: the model's, 0); turns "
              "\"no answer\" on for a Hugging Face QA model without plmkit_task.json", metavar="T")
    backend: str = setting("torch", "what runs the model: torch (the PyTorch model), onnxruntime or onnxruntime-int8 "
                                    "(model.onnx or model.int8.onnx of a directory `plmkit export` wrote, on the CPU)",
                           choices=("torch", *ONNX_BACKENDS))

    def validate(self) -> None:
        self.need(is_device_name(self.device),
                  f"device (--device) must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        self.need(self.backend == "torch" or self.device in ("auto", "cpu"),
                  f"--backend {self.backend} runs on the CPU; drop --device {self.device}")


def load_model_dir(directory: str | Path, backend: str = "torch", task: Task | None = None):
    """(model in eval mode, tokenizer, Task with its settings) of a fine-tuned model directory; with
    an onnxruntime `backend` (ONNX_BACKENDS), the model is an `OrtModel` of the directory's ONNX graph.
    `task`: one whose pipelines take any directory (`Task.any_directory`), which loads its own model class."""
    from plmkit.models.auto import load_any, model_class, read_model_type
    from plmkit.tokenization import Tokenizer
    task = load_task(directory) if task is None else task
    if backend != "torch":
        return _load_onnx(directory, task, backend), Tokenizer.from_pretrained(directory), task
    model = (model_class(read_model_type(directory)[0], task.model_task).from_pretrained(directory)
             if task.any_directory else load_any(directory))
    expected = model_class(model.config.model_type, task.model_task)
    if not isinstance(model, expected):
        raise CheckpointError(f"{directory}: {TASK_FILE} says task {task.name!r}, which needs a {expected.__name__}, "
                              f"but config.json's architectures make it a {type(model).__name__}")
    if any(not key.startswith(task.unread_weights) for key in model.initialised_from_scratch):
        model.check_complete(directory)  # a missing head would be random
    task.check_model(model, directory)  # and what the model decides (sft's max_length, for a directory without the file)
    tokenizer = Tokenizer.from_pretrained(directory)
    model.check_vocabulary(tokenizer, directory)
    return model.eval(), tokenizer, task


def _load_onnx(directory, task: Task, backend: str):
    """The model of an exported directory on onnxruntime (`load_ort`), refused where the task needs a model
    of another kind."""
    from plmkit.models.onnx import load_ort
    model = load_ort(directory, ONNX_BACKENDS[backend])
    if model.info["model_task"] != task.model_task:
        raise CheckpointError(f"{directory}: {TASK_FILE} says task {task.name!r}, which needs a {task.model_task} model, "
                              f"but the ONNX graph is of a {model.info['model_task']} model")
    task.check_model(model, directory)
    return model.eval()


def load_for_inference(model_dir, device: str = "auto", null_score_diff_threshold: float | None = None,
                       batch_size: int = 32, backend: str = "torch", task: Task | None = None):
    """`load_model_dir` on `device`, with a QA no-answer threshold that overrides the saved one; the
    arguments are checked as `plmkit evaluate` / `predict` check their flags (`InferenceSettings`)."""
    from plmkit.utils.device import resolve_device
    InferenceSettings(model=model_dir, batch_size=batch_size, device=device,
                      null_score_diff_threshold=null_score_diff_threshold, backend=backend)
    model, tokenizer, task = load_model_dir(model_dir, backend, task)
    model.to(resolve_device(device, model.cpu_only) if backend == "torch" else "cpu")
    task = for_inference(task)
    if null_score_diff_threshold is not None:
        task = with_threshold(task, null_score_diff_threshold)
    return model, tokenizer, task


def with_threshold(task: Task, threshold: float) -> Task:
    """`task` with QA's no-answer threshold `threshold`; a model that does not say whether it answers
    "no answer" (version_2 None: a Hugging Face directory without plmkit_task.json) then does."""
    unknown = getattr(task.settings, "version_2", False) is None
    return with_settings(task, null_score_diff_threshold=threshold, **({"version_2": True} if unknown else {}))


def for_inference(task: Task) -> Task:
    """`task` with the saved settings that evaluation and prediction replace (`Task.inference_settings`)."""
    return with_settings(task, **task.inference_settings) if task.inference_settings else task


def with_settings(task: Task, **values) -> Task:
    """A copy of `task` with some settings replaced; one it lacks is a ConfigError saying so."""
    own = type(task.settings).field_names()
    for name in values:
        if name not in own:
            raise ConfigError(f"--{name.replace('_', '-')} is not a setting of a {task.name} model")
    return type(task)(type(task.settings).from_dict({**task.settings.to_dict(), **values}))


def evaluate_dir(model_dir, data, batch_size: int = 32, device: str = "auto",
                 null_score_diff_threshold: float | None = None, backend: str = "torch",
                 part=None) -> dict[str, float]:
    """Metrics of a fine-tuned model directory on a labelled data file in the training format (QA
    v2: at `null_score_diff_threshold`, default the model's, plus the best threshold on this data).
    `part`: this process's part of an evaluation that several share (an EvalShard, under torchrun);
    rank 0's metrics are those of the whole data."""
    model, tokenizer, task = load_for_inference(model_dir, device, null_score_diff_threshold, batch_size, backend)
    return evaluate_loaded(model, tokenizer, task, data, batch_size, part)


def evaluate_loaded(model, tokenizer, task: Task, data, batch_size: int = 32, part=None) -> dict[str, float]:
    """`evaluate_dir` with the model already loaded (`load_for_inference`): the task's metrics on
    the labelled file `data`. `model` is anything the task's evaluation can call like a plmkit model
    (plmkit.compression.report measures other backends through it)."""
    check_file(data, "data (a labelled file in the training format)")
    examples = task.read(data, labelled=True)
    features = task.encode(tokenizer, examples, model.config.label2id, path=data)
    shared = {"part": part} if part is not None and task.sharded_evaluation else {}
    return task.evaluate(model, tokenizer, examples, features, batch_size, **shared)


def predict_records(model, tokenizer, task: Task, records: list, batch_size: int = 32, where: str = "inputs",
                    lines: list[int] | None = None, align_to_words: bool = True) -> list[dict]:
    """One result dict per input record (see `plmkit predict --help` for the shapes); errors name
    `where`:line, the line from `lines` (one per record) or else the record's number. QA answers are
    whole words unless `align_to_words` is False (then token spans, as evaluation scores them)."""
    records = records_of(records, "records")
    if lines is not None and len(lines) != len(records):
        raise ConfigError(f"lines: {len(lines)} line numbers for {len(records)} records; give one per record")
    if not records:
        return []
    return task.predict(model, tokenizer, records, batch_size, where, lines, align_to_words)


def predict_dir(model_dir, inputs: list, batch_size: int = 32, device: str = "auto", where: str = "inputs",
                null_score_diff_threshold: float | None = None, lines: list[int] | None = None,
                backend: str = "torch") -> list[dict]:
    """`predict_records` with a fine-tuned model directory; `inputs` is a list of records (dicts,
    or texts where the task reads one text)."""
    inputs = records_of(inputs)
    model, tokenizer, task = load_for_inference(model_dir, device, null_score_diff_threshold, batch_size, backend)
    return predict_records(model, tokenizer, task, inputs, batch_size, where, lines)


def read_prediction_input(task: Task | str, path: str) -> tuple[list, list[int]]:
    """Records, and the line each starts on, from a JSONL file, '-' (stdin JSONL), or a file in
    the task's own training format (CoNLL, CSV/TSV, SQuAD JSON ...)."""
    if isinstance(task, str):
        task = get_task(task)()
    return task.read_prediction_input(path)


__all__ = ["InferenceSettings", "ONNX_BACKENDS", "evaluate_dir", "evaluate_loaded", "for_inference", "load_for_inference",
           "load_model_dir",
           "predict_dir", "predict_records",
           "read_prediction_input", "with_settings", "with_threshold"]
