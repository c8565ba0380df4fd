"""``zero-shot-classification``: any candidate labels scored by an NLI sequence classifier, each label posed as the
hypothesis ("This example is {label}.") of the text as premise. A pipeline-only task: its model is the
sequence-classification model of any directory holding one (`Task.any_directory`), whose config labels one class
entailment.

The call convention, scores and output are transformers' ZeroShotClassificationPipeline's.
"""
from __future__ import annotations

import torch

from plmkit.errors import ConfigError
from plmkit.tasks.base import Task
from plmkit.tasks.common import forward_batches, pipeline_texts
from plmkit.utils.text import describe


def entailment_id(config) -> int:
    """The class whose name starts with "entail" (any case), as HF finds it; a ConfigError when none does."""
    label2id = config.label2id or {}
    for label, index in label2id.items():
        if label.lower().startswith("entail"):
            return index
    raise ConfigError(f"zero-shot-classification pipeline: the model's labels ({', '.join(label2id) or 'none'}) have "
                      "no entailment class; it needs an NLI model (config.json id2label naming one 'entailment')")


def _candidate_labels(labels, pipeline: str) -> list[str]:
    """A list of labels, or one string of comma-separated labels (as in HF)."""
    if isinstance(labels, str):
        labels = [label.strip() for label in labels.split(",") if label.strip()]
    if not isinstance(labels, (list, tuple)) or not all(isinstance(label, str) for label in labels):
        raise ConfigError(f"{pipeline} pipeline: candidate_labels must be a label, a comma-separated string of them "
                          f"or a list of them, got {describe(labels)}")
    if not labels:
        raise ConfigError(f"{pipeline} pipeline: give at least one candidate label")
    return list(labels)


class ZeroShotClassificationTask(Task):
    name = "zero-shot-classification"
    model_task = "sequence-classification"
    any_directory = True
    pipelines = ("zero-shot-classification",)
    pipeline_arguments = ("candidate_labels", "hypothesis_template", "multi_label")
    pipeline_positional = 1  # classifier(texts, ["sports", "politics"]), as Hugging Face

    def pipeline(self, name, model, tokenizer, inputs, batch_size: int, candidate_labels=None,
                 hypothesis_template: str = "This example is {}.", multi_label: bool = False):
        """Per text {"sequence", "labels", "scores"}, the labels by descending score: a softmax of the entailment
        logits across the labels, or with `multi_label` (or a single label) each label's softmax of entailment
        against contradiction (HF's: class 0, or the last when entailment is class 0). A dict for one text."""
        entail = entailment_id(model.config)
        labels = _candidate_labels(candidate_labels, name)
        if not isinstance(hypothesis_template, str) or hypothesis_template.format(labels[0]) == hypothesis_template:
            raise ConfigError(f"{name} pipeline: hypothesis_template must be a string with {{}} where the label goes, "
                              f"got {describe(hypothesis_template)}")
        if not isinstance(multi_label, bool):
            raise ConfigError(f"{name} pipeline: multi_label must be True or False, got {describe(multi_label)}")
        texts, single = pipeline_texts(inputs, name)
        hypotheses = [hypothesis_template.format(label) for label in labels]
        features = [f for text in texts for f in _pairs(tokenizer, model, text, hypotheses)]
        logits: list = [None] * len(features)
        for idx, _, output in forward_batches(model, features, batch_size, tokenizer.pad_token_id):
            for row, i in enumerate(idx):
                logits[i] = output.logits[row].float().cpu()
        out = []
        for k, text in enumerate(texts):
            rows = logits[k * len(labels):(k + 1) * len(labels)]
            if multi_label or len(labels) == 1:
                contradiction = -1 if entail == 0 else 0
                scores = [row[[contradiction, entail]].softmax(-1)[1].item() for row in rows]
            else:
                scores = torch.stack(rows)[:, entail].softmax(-1).tolist()
            order = sorted(range(len(labels)), key=scores.__getitem__)[::-1]  # HF's reversed argsort (ties: last first)
            out.append({"sequence": text, "labels": [labels[i] for i in order], "scores": [scores[i] for i in order]})
        return out[0] if single else out


def _pairs(tokenizer, model, text: str, hypotheses: list[str]) -> list[dict]:
    """(text, hypothesis) features, the text cut (never the hypothesis) to the model's positions."""
    limit = min(tokenizer.model_max_length or 10 ** 9, model.config.max_positions or 10 ** 9)
    try:
        enc = tokenizer([text] * len(hypotheses), hypotheses, truncation="only_first", max_length=limit)
    except Exception as err:  # a hypothesis longer than the limit alone: uncut, as HF does
        if "too short" not in str(err):
            raise
        enc = tokenizer([text] * len(hypotheses), hypotheses)
    return [{k: enc[k][i] for k in ("input_ids", "token_type_ids") if k in enc} for i in range(len(hypotheses))]


__all__ = ["ZeroShotClassificationTask", "entailment_id"]
