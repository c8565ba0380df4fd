"""`plmkit.pipeline(task, model=DIR)`: Hugging Face pipeline-shaped inference, batched internally.

    clf = plmkit.pipeline("text-classification", model="out/model")
    clf(["great film", "dull"])          # [{"label": "positive", "score": 0.97}, ...]
    ner = plmkit.pipeline("token-classification", model="ner/model")
    ner("钱其琛在北京")                   # [{"entity", "score", "index", "word", "start", "end"}, ...] per piece
    ner("钱其琛在北京", aggregation_strategy="simple")  # [{"entity_group": "PER", "score", "word", ...}, ...]
    qa = plmkit.pipeline("question-answering", model="qa/model")
    qa(question="...", context="...")   # {"answer", "score", "start", "end"}
    qa(question="...", context="...", top_k=3)  # the 3 best answers, best first
    fr_en = plmkit.pipeline("translation", model="fr-en/best")
    fr_en("Bibliothèque partagée")      # [{"translation_text": "shared library"}]
    plmkit.pipeline(model="sum/best")   # the task the directory was fine-tuned for
    plmkit.pipeline("fill-mask", model="bert/model")("Paris is the [MASK] of France.")  # any masked-LM directory
    plmkit.pipeline("feature-extraction", model="bert/model")("a text")  # last hidden states, (1, T, H)
    zs = plmkit.pipeline("zero-shot-classification", model="nli/model")  # any NLI sequence-classification directory
    zs("a text", candidate_labels=["sports", "politics"])  # {"sequence", "labels", "scores"}, best first
    plmkit.pipeline("text-generation", model="gpt/model")("Once", max_new_tokens=20)  # [{"generated_text"}]

Each task serves the pipeline names in its `pipelines` and shapes their output (plmkit.tasks).
"""
from __future__ import annotations

from plmkit import tasks
from plmkit.errors import ConfigError


class Pipeline:
    """`task` is the pipeline name, as in Hugging Face; `plmkit_task` the plmkit task serving it."""

    def __init__(self, task: str, model, device: str = "auto", batch_size: int = 32, backend: str = "torch"):
        serving = tasks.task_for_pipeline(task) if task is not None else None
        own = serving() if serving is not None and serving.any_directory else None  # it loads its model class
        self.model, self.tokenizer, self.plmkit_task = tasks.load_for_inference(model, device, batch_size=batch_size,
                                                                                backend=backend, task=own)
        served = self.plmkit_task.pipelines
        task = task if task is not None else next(iter(served), None)
        if task is None or task not in served:
            raise ConfigError(_not_served(model, self.plmkit_task, task))
        self.task, self.batch_size = task, batch_size

    def __call__(self, inputs=None, *args, **kwargs):
        """`inputs`, then the task's arguments: by name, or the first `Task.pipeline_positional` of them by position
        (zero-shot-classification's candidate_labels, as Hugging Face takes it)."""
        named = self.plmkit_task.pipeline_arguments[:self.plmkit_task.pipeline_positional]
        if len(args) > len(named):
            raise TypeError(f"{self.task} pipeline takes {len(named) + 1} positional argument(s) (inputs"
                            f"{''.join(', ' + n for n in named)}), got {len(args) + 1}; give the others by name")
        given = dict(zip(named, args))
        twice = sorted(set(given) & set(kwargs))
        if twice:
            raise TypeError(f"{self.task} pipeline got {', '.join(twice)} both by position and by name")
        kwargs = {**given, **kwargs}
        unknown = sorted(set(kwargs) - set(self.plmkit_task.pipeline_arguments))
        if unknown:
            raise ConfigError(f"{self.task} pipeline: unknown argument(s) {', '.join(unknown)}")
        return self.plmkit_task.pipeline(self.task, self.model, self.tokenizer, inputs, self.batch_size, **kwargs)


def _not_served(model, plmkit_task, asked: str | None) -> str:
    """Why the model in `model` (of `plmkit_task`) has no pipeline `asked` (None: none asked for)."""
    name, served = plmkit_task.name, plmkit_task.pipelines
    if served:
        return f"{model} is a {name!r} model, not one for {asked!r}; its pipelines: {', '.join(served)}"
    servers = [t.name for t in tasks.TASKS.values() if t.pipelines]
    return f"{model} is a {name!r} model, which no pipeline takes (they take {', '.join(servers)} models)"


def pipeline(task: str | None = None, model=None, device: str = "auto", batch_size: int = 32,
             backend: str = "torch") -> Pipeline:
    """A callable for `task` (a Hugging Face pipeline name: "text-classification", "token-classification",
    "question-answering", "translation", "fill-mask", "zero-shot-classification", "text-generation" ...;
    None: the one of the model's task) over a fine-tuned model directory; `backend` "onnxruntime" (or
    "onnxruntime-int8") runs a directory `plmkit export` wrote."""
    if task is not None and not isinstance(task, str):
        raise ConfigError(f"pipeline(task, model=DIR): task is a pipeline name (a string), got {type(task).__name__}")
    if model is None:
        raise ConfigError("pipeline(task, model=DIR): give model=, the directory of a fine-tuned model (plmkit loads "
                          "local directories only)")
    if task is not None:
        tasks.task_for_pipeline(task)  # an unknown name is an error before any loading
    return Pipeline(task, model, device, batch_size, backend)
