"""`plmkit.pipeline(task, model=DIR)`: Hugging Face pipeline-shaped inference, batched internally.

    clf = plmkit.pipeline("text-classification", model="out/model")
    clf(["great film", "dull"])          # [{"label": "positive", "score": 0.97}, ...]
    ner = plmkit.pipeline("token-classification", model="ner/model")
    ner("钱其琛在北京")                   # [{"entity_group": "PER", "score", "word", "start", "end"}, ...]
    qa = plmkit.pipeline("question-answering", model="qa/model")
    qa(question="...", context="...")   # {"answer", "score", "start", "end"}
"""
from __future__ import annotations

from plmkit import tasks
from plmkit.errors import ConfigError

_LEGACY = object()  # top_k not passed: Hugging Face's legacy output shape

PIPELINE_TASKS = {"text-classification": "classification", "sentiment-analysis": "classification",
                  "token-classification": "ner", "ner": "ner", "question-answering": "qa",
                  "relation-classification": "relation"}


class Pipeline:
    def __init__(self, task: str, model, device: str = "auto", batch_size: int = 32):
        from plmkit.training.trainer import resolve_device
        self.model, self.tokenizer, self.spec = tasks.load_model_dir(model)
        if self.spec.task != PIPELINE_TASKS[task]:
            raise ConfigError(f"{model} is a {self.spec.task!r} model, not one for {task!r}")
        self.task, self.batch_size = task, batch_size
        self.model.to(resolve_device(device))

    def __call__(self, inputs=None, *, question=None, context=None, top_k: int | None = _LEGACY,
                 align_to_words: bool = True, aggregation_strategy: str | None = None, **unknown):
        if unknown:
            raise ConfigError(f"{self.task} pipeline: unknown argument(s) {', '.join(sorted(unknown))}")
        if aggregation_strategy == "none":
            raise ConfigError("token-classification gives whole-word entities (each word tagged by its first "
                              "piece, like aggregation_strategy='first'); per-piece output is not offered")
        if self.spec.task == "qa":
            return self._qa(inputs, question, context, align_to_words)
        single = isinstance(inputs, (str, dict))
        records = [inputs] if single else list(inputs)
        results = tasks.predict_records(self.model, self.tokenizer, self.spec, records, self.batch_size)
        if self.spec.task == "ner":
            out = [r["entities"] for r in results]
        elif self.spec.task == "classification":
            out = [self._labels(r, top_k) for r in results]
        else:
            out = [{"label": r["relation"], "score": r["score"]} for r in results]
        if single and self.spec.task == "classification":  # HF: a list for one text, flat
            return out if top_k is _LEGACY or isinstance(out[0], dict) else out[0]
        return out[0] if single else out

    @staticmethod
    def _labels(result: dict, top_k):
        """HF's shapes: without ``top_k`` the best label's dict; with it a list of the ``top_k`` best
        (all for None), even for top_k=1."""
        if "probabilities" not in result:  # regression
            return {"label": result["label"], "score": result["score"]}
        ranked = sorted(result["probabilities"].items(), key=lambda kv: -kv[1])
        ranked = [{"label": k, "score": v} for k, v in ranked]
        return ranked[0] if top_k is _LEGACY else ranked[:top_k] if top_k else ranked

    def _qa(self, inputs, question, context, align_to_words: bool):
        if question is not None:
            single = isinstance(question, str)
            qs = [question] if single else list(question)
            cs = [context] * len(qs) if isinstance(context, str) else list(context)
            records = [{"question": q, "context": c} for q, c in zip(qs, cs)]
        else:
            single = isinstance(inputs, dict)
            records = [inputs] if single else list(inputs)
        results = tasks.predict_records(self.model, self.tokenizer, self.spec, records, self.batch_size,
                                        align_to_words=align_to_words)
        results = [{k: r[k] for k in ("score", "start", "end", "answer")} for r in results]
        return results[0] if single else results


def pipeline(task: str, model, device: str = "auto", batch_size: int = 32) -> Pipeline:
    """A callable for `task` ("text-classification", "token-classification", "question-answering")
    over a fine-tuned model directory."""
    if task not in PIPELINE_TASKS:
        raise ConfigError(f"unknown pipeline task {task!r}; choose one of {', '.join(PIPELINE_TASKS)}")
    return Pipeline(task, model, device, batch_size)
