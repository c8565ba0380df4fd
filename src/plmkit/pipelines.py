"""`plmkit.pipeline(task, model=DIR)`: Hugging Face pipeline-shaped inference, batched internally.

    clf = plmkit.pipeline("text-classification", model="out/model")
    clf(["great film", "dull"])          # [{"label": "positive", "score": 0.97}, ...]
    ner = plmkit.pipeline("token-classification", model="ner/model")
    ner("钱其琛在北京")                   # [{"entity_group": "PER", "score", "word", "start", "end"}, ...]
    qa = plmkit.pipeline("question-answering", model="qa/model")
    qa(question="...", context="...")   # {"answer", "score", "start", "end"}

Each task serves the pipeline names in its `pipelines` and shapes their output (plmkit.tasks).
"""
from __future__ import annotations

from plmkit import tasks
from plmkit.errors import ConfigError


class Pipeline:
    """`task` is the pipeline name, as in Hugging Face; `plmkit_task` the plmkit task serving it."""

    def __init__(self, task: str, model, device: str = "auto", batch_size: int = 32):
        wanted = tasks.task_for_pipeline(task)
        self.model, self.tokenizer, self.plmkit_task = tasks.load_for_inference(model, device, batch_size=batch_size)
        if not isinstance(self.plmkit_task, wanted):
            raise ConfigError(f"{model} is a {self.plmkit_task.name!r} model, not one for {task!r}")
        self.task, self.batch_size = task, batch_size

    def __call__(self, inputs=None, **kwargs):
        unknown = sorted(set(kwargs) - set(self.plmkit_task.pipeline_arguments))
        if unknown:
            raise ConfigError(f"{self.task} pipeline: unknown argument(s) {', '.join(unknown)}")
        return self.plmkit_task.pipeline(self.task, self.model, self.tokenizer, inputs, self.batch_size, **kwargs)


def pipeline(task: str, model, device: str = "auto", batch_size: int = 32) -> Pipeline:
    """A callable for `task` (a Hugging Face pipeline name: "text-classification",
    "token-classification", "question-answering", ...) over a fine-tuned model directory."""
    tasks.task_for_pipeline(task)  # an unknown name is an error before any loading
    return Pipeline(task, model, device, batch_size)
