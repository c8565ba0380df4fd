"""What the text-to-text tasks share (translation.py, summarization.py): a source text in, a target
text out, with an encoder-decoder (BART, Marian, BERT-to-BERT).

* Data: JSONL records with the task's two fields (``source``/``target``, ``text``/``summary``);
  sources and targets are cut to ``max_length`` / ``max_target_length`` tokens, and how many were cut
  is said. A target always ends with the end-of-sequence token (kept when the text is cut).
* Training: the teacher-forced cross-entropy of the target, with ``label_smoothing``.
* Evaluation: the loss, then the targets *generated* for (the first ``eval_samples`` of) the
  evaluation data, with the task's decoding settings (``num_beams`` ...), scored with BLEU and chrF
  (sacreBLEU) and ROUGE-1/2/L (rouge-score), on a 0-100 scale; a progress bar shows the generation.
* Prediction and the pipelines: the generated text, in Hugging Face's shapes (``translation_text``,
  ``summary_text``, ``generated_text``).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from plmkit.data.collate import pad_sequences
from plmkit.errors import ConfigError, DataError
from plmkit.evaluation.seq2seq import SummarizationMetrics, TranslationMetrics
from plmkit.tasks.base import Task, TaskSettings
from plmkit.tasks.common import batches_by_length, pipeline_records, say_cut
from plmkit.tasks.fields import TEXT, each_record, field
from plmkit.utils.constants import IGNORE_INDEX
from plmkit.utils.device import model_device
from plmkit.utils.settings import setting
from plmkit.utils.text import check_file, jsonl_rows
from plmkit.utils.progress import progress_bar

log = logging.getLogger("plmkit")


@dataclass
class Seq2SeqSettings(TaskSettings):
    """Lengths, the loss and how targets are generated (evaluation, prediction); saved with the model."""

    max_target_length: int = setting(128, "target tokens kept (end-of-sequence included)", metavar="N", at_least=2)
    label_smoothing: float = setting(0.1, "label smoothing of the target cross-entropy", metavar="E", at_least=0,
                                     below=1)
    num_beams: int = setting(4, "beams when generating targets (evaluation, prediction; 1: greedy)", metavar="N",
                             at_least=1)
    length_penalty: float = setting(1.0, "beam scores are divided by length ** this (> 1 favours longer outputs)",
                                    metavar="P")
    no_repeat_ngram_size: int = setting(0, "never generate an n-gram twice (0: off)", metavar="N", at_least=0)
    eval_samples: int | None = setting(500, "evaluation examples whose targets are generated during training "
                                            "(the first N; off: all)", metavar="N", at_least=1, shapes_run=False)
    decoder_start_token_id: int | None = setting(None, "set from the model: the token its decoder starts with, "
                                                       "left out of the labels when the tokenizer puts it first",
                                                 cli=False, at_least=0)


@dataclass
class Seq2SeqExample:
    source: str
    target: str | None
    line: int


class Seq2SeqTask(Task):
    """A task with one source text and one target text per record (see the module docstring)."""

    model_task = "seq2seq-lm"
    settings_class = Seq2SeqSettings
    source_field: ClassVar[str]
    target_field: ClassVar[str]
    output_key: ClassVar[str]  # the pipeline's (and predict's) name of the generated text
    pipeline_arguments = ("num_beams", "max_new_tokens")
    inference_settings = {"eval_samples": None}  # the training-time subset: plmkit evaluate scores every record

    # ------------------------------------------------------------------ data
    def read(self, path, labelled: bool = True) -> list[Seq2SeqExample]:
        path = check_file(path)
        examples = [self.example(row, f"{path}:{n}", n, labelled) for n, row in jsonl_rows(path)]
        if not examples:
            raise DataError(f"{path}: no examples")
        return examples

    def example(self, row: dict, where: str, line: int, labelled: bool) -> Seq2SeqExample:
        source = field(row, self.source_field, where, TEXT)
        target = field(row, self.target_field, where, TEXT, required=labelled) if labelled else None
        return Seq2SeqExample(source, target, line)

    def encode(self, tokenizer, examples, label2id, path="data", training: bool = False) -> list[dict]:
        """Source ids, and target ids as ``labels`` (without the decoder's start token: the model puts it
        in front); how many sources and targets were cut is said once."""
        s = self.settings
        sources = [e.source for e in examples]
        targets = [e.target for e in examples] if all(e.target is not None for e in examples) else None
        batch = tokenizer(sources, text_target=targets, truncation=True, max_length=s.max_length,
                          max_target_length=s.max_target_length)
        say_cut(path, batch, {"input_ids": ("sources", s.max_length), "labels": ("targets", s.max_target_length)})
        start = s.decoder_start_token_id
        features = []
        for i in range(len(examples)):
            feature = {"input_ids": batch["input_ids"][i], "_example": i}
            if targets is not None:
                labels = list(batch["labels"][i])
                feature["labels"] = labels[1:] if labels and start is not None and labels[0] == start else labels
            features.append(feature)
        return features

    def collate(self, tokenizer):
        pad = tokenizer.pad_token_id

        def collate(features: list[dict]) -> dict[str, torch.Tensor]:
            ids, mask = pad_sequences([f["input_ids"] for f in features], pad)
            batch = {"input_ids": ids, "attention_mask": mask}
            if "labels" in features[0]:
                batch["labels"] = pad_sequences([f["labels"] for f in features], IGNORE_INDEX)[0]
            return batch

        return collate

    # ------------------------------------------------------------------ model
    @property
    def forward_kwargs(self) -> dict[str, Any]:
        return {"label_smoothing": self.settings.label_smoothing}

    def adapt(self, model, tokenizer) -> None:
        self.check_model(model, "the model")

    def check_model(self, model, where) -> None:
        """The model must be an encoder-decoder whose positions hold the lengths asked for."""
        config = model.config
        if not hasattr(model, "encode"):
            raise ConfigError(f"{where} is a {type(model).__name__}, not an encoder-decoder: {self.name} needs one "
                              "(a BART or Marian directory, --init bert2bert --model BERT_DIR, or --preset NAME)")
        self.settings.decoder_start_token_id = config.decoder_start_token_id
        if self.settings.max_length is None:
            self.settings.max_length = min(512, config.max_positions or 512)
        for name, limit in (("max_length", config.max_positions), ("max_target_length", config.max_positions)):
            value = getattr(self.settings, name)
            if limit is not None and value is not None and value > limit:
                raise ConfigError(f"{name}={value} is longer than {where} takes ({limit} positions); use "
                                  f"--{name.replace('_', '-')} {limit} or less")

    # ------------------------------------------------------------------ evaluation
    def main_metric(self) -> str:
        raise NotImplementedError

    def metrics(self):
        """The scorers of this task's evaluation (each with update(predictions, references) and compute())."""
        return [TranslationMetrics(self.target_language()), SummarizationMetrics()]

    def target_language(self) -> str | None:
        return None

    sharded_evaluation = True

    def evaluate(self, model, tokenizer, examples, features, batch_size: int = 32, part=None) -> dict[str, float]:
        """The teacher-forced loss and the scores of generated targets (the first `eval_samples`). Shared
        by several processes (`part`), each generates its rows of every batch and the scores' sufficient
        statistics are summed (BLEU's n-gram matches and lengths, chrF's character n-gram counts, ROUGE's
        sums of per-example F1): no process holds every prediction."""
        n = len(examples) if self.settings.eval_samples is None else min(len(examples), self.settings.eval_samples)
        examples, features = examples[:n], features[:n]
        metrics = {"loss": self.loss(model, tokenizer, features, batch_size, part)}
        with part.unsharded(model) if part is not None else contextlib.nullcontext():  # (ranks end generating apart)
            predictions = self.generate(model, tokenizer, features, batch_size, progress=f"generating {n:,} targets",
                                        part=part)
        mine = [i for i, text in enumerate(predictions) if text is not None]
        for scorer in self.metrics():
            scorer.update([predictions[i] for i in mine], [examples[i].target for i in mine])
            if part is not None:
                scorer.reduce(part)
            metrics.update(scorer.compute())
        return metrics

    def loss(self, model, tokenizer, features, batch_size: int, part=None) -> float:
        """The mean loss per target token (`part`: this process's rows of each batch, the sums added up)."""
        collate, device = self.collate(tokenizer), model_device(model)
        total = count = 0.0
        with torch.no_grad():
            for idx in batches_by_length(features, batch_size):
                batch, own = collate([features[i] for i in idx]), True
                if part is not None:
                    batch, own = part.rows(batch)
                batch = {k: v.to(device) for k, v in batch.items()}
                out = model(**batch, **self.forward_kwargs)  # (on every process: a sharded model's collectives)
                tokens = int((batch["labels"] != IGNORE_INDEX).sum()) if own else 0
                total, count = total + float(out.loss) * tokens, count + tokens
        if part is not None:
            total, count = part.sums([total, count])
        return total / max(count, 1)

    def generate(self, model, tokenizer, features, batch_size: int, progress: str | None = None, part=None,
                 **overrides) -> list:
        """The generated text of each feature's source, in order (batches of similar source lengths);
        with `part`, of this process's rows of each batch only (None for the others'). The task's decoding:
        beam search (greedy with one beam), never sampling, whatever the model's generation_config says."""
        s, positions = self.settings, model.config.max_positions
        # (the decoder's start token takes a position: a target of max_target_length = positions has one fewer)
        most = s.max_target_length if positions is None else min(s.max_target_length, positions - 1)
        settings = {"do_sample": False, "num_beams": s.num_beams, "length_penalty": s.length_penalty,
                    "no_repeat_ngram_size": s.no_repeat_ngram_size, "max_new_tokens": most, **overrides,
                    "return_dict_in_generate": False}  # (ids, whatever the model's generation_config.json says)
        device = model_device(model)
        out: list[str | None] = [None] * len(features)
        was_training = model.training
        model.eval()
        bar = progress_bar(total=len(features), desc=progress, unit="example", leave=False,
                   disable=progress is None or not self.progress or not log.isEnabledFor(logging.INFO))
        try:
            for idx in batches_by_length(features, batch_size):
                mine = part.share(idx) if part is not None else idx
                if mine:
                    ids, mask = pad_sequences([features[i]["input_ids"] for i in mine], tokenizer.pad_token_id)
                    generated = model.generate(ids.to(device), attention_mask=mask.to(device), **settings)
                    for row, i in enumerate(mine):
                        out[i] = tokenizer.decode(generated[row].tolist(), skip_special_tokens=True).strip()
                bar.update(len(idx))
        finally:
            bar.close()
            model.train(was_training)
        return out

    def teacher_targets(self, teacher, tokenizer, examples, batch_size: int = 32) -> list[Seq2SeqExample]:
        """The examples with the targets `teacher` generates for their sources (this task's decoding settings)."""
        features = self.encode(tokenizer, [Seq2SeqExample(e.source, None, e.line) for e in examples], None)
        texts = self.generate(teacher, tokenizer, features, batch_size, progress=f"teacher: {len(features):,} targets")
        return [Seq2SeqExample(e.source, text, e.line) for e, text in zip(examples, texts)]

    def finished(self, result) -> str:
        metric = self.main_metric()
        value = result.eval_metrics.get(f"eval_{metric}")
        score = f", dev {metric} {value:.2f}" if value is not None else ""
        return (f"{self.name} done: {result.train_examples:,} examples{score}; use it: plmkit predict --model "
                f"{result.best_dir or result.model_dir} --input FILE|- (one JSON line each)")

    # ------------------------------------------------------------------ prediction
    def to_examples(self, records, where: str, lines=None) -> list[Seq2SeqExample]:
        return [self.example(r, f"{where}:{n}", n, labelled=False)
                for n, r in each_record(records, where, lines, text_field=self.source_field)]

    def predict(self, model, tokenizer, records, batch_size: int = 32, where: str = "input", lines=None,
                align_to_words: bool = True, **generation) -> list[dict]:
        if not records:
            return []
        features = self.encode(tokenizer, self.to_examples(records, where, lines), None, path=where)
        return [{self.output_key: text} for text in self.generate(model, tokenizer, features, batch_size, **generation)]

    def pipeline(self, name, model, tokenizer, inputs, batch_size: int, **generation):
        key = "generated_text" if name == "text2text-generation" else self.output_key
        records, single = pipeline_records(inputs, name, text_field=self.source_field)
        return [{key: r[self.output_key]} for r in self.predict(model, tokenizer, records, batch_size,
                                                               where="inputs", **generation)]  # a list, as in HF


__all__ = ["Seq2SeqExample", "Seq2SeqSettings", "Seq2SeqTask"]
