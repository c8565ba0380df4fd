"""Knowledge distillation as a fine-tuning run: ``plmkit distill``.

    from plmkit.recipes.distill import distill
    distill("classification", "runs/sentiment/best", "train.jsonl", "runs/small", eval_data="dev.jsonl",
            init_from_teacher=True, student_layers=3)
    distill(..., init_from_teacher=True, student_layers=4, student_hidden=256, student_heads=8, student_ffn=1024)

A distillation run is a fine-tuning run (plmkit.recipes.finetune) with a teacher. `DistillRun` adds the
``distill`` section (plmkit.compression.distill.DistillSettings: the teacher, the student's start, the
losses' weights) and its ``model`` section is the student (``--student DIR``, ``--student-preset NAME``,
or ``--init-from-teacher``); every other setting, the batches, the Trainer, evaluation, checkpoints and
``--resume`` are fine-tuning's. `DistillSteps` replaces the steps that differ:

* the task, its settings (tag scheme, problem type, lengths ...) and the tokenizer are the teacher's
  (a task setting given on the command line replaces the teacher's);
* training records may lack labels (transfer data): they get soft targets only;
* the labels of the student's head are the teacher's, in its order (a student whose head has other labels
  starts a new one with ``--new-head``), so that its logits and the teacher's soft targets match row by row;
* a student made from the teacher (``--init-from-teacher``) takes its blocks of `layer_map`, and with
  ``--student-hidden``, ``--student-heads`` or ``--student-ffn`` only part of their width: the
  teacher's most important heads and neurons, scored on the first ``--selection-examples`` training
  records, and its hidden channels of the largest LayerNorm scales (plmkit.compression.width); with
  ``--hidden-weight`` such a student learns the teacher's hidden states at the channels it kept;
* the Trainer trains a `DistillationModel` (the student plus the teacher's losses) and saves the
  student alone: OUT/model and OUT/best are ordinary fine-tuned model directories;
* a task without soft targets but with generated targets (sft, translation, summarization) is distilled
  at the sequence level: the teacher writes the targets of the training records first
  (`Task.teacher_targets`), then the student is fine-tuned on them as usual.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

from plmkit.compression.distill import (DistillationModel, DistillSettings, has_label_names, layers_in_words,
                                        student_from_teacher)
from plmkit.errors import ConfigError, PlmkitError
from plmkit.recipes.finetune import (FinetuneResult, FinetuneRun, ModelSettings, Steps, nest, prepare_model, run,
                                     run_type)
from plmkit.tasks import Task
from plmkit.utils.settings import setting

log = logging.getLogger("plmkit")


@dataclass
class StudentSettings(ModelSettings):
    """The model section of a distillation run: the student (fine-tuning's model settings otherwise)."""

    path: str | None = setting(None, "the student's starting model directory (a pretrained encoder, say); it must "
                                     "share the teacher's vocabulary", flags=("--student",), metavar="DIR",
                               shapes_run=False)
    preset: str | None = setting(None, "a student of this preset's shape with random weights, e.g. bert-mini (the "
                                       "teacher's tokenizer)", flags=("--student-preset",), metavar="NAME",
                                 fixed_on_resume=True)


@dataclass
class DistillRun(FinetuneRun):
    """A distillation run; `run_type(task, DistillRun)` adds the task's own section."""

    command: ClassVar[str] = "distill"
    purpose: ClassVar[str] = "distil"
    model: StudentSettings = field(default_factory=StudentSettings)
    distill: DistillSettings = field(default_factory=DistillSettings)

    def model_needed(self) -> list[tuple[Any, str]]:
        m, d = self.model, self.distill
        return [(d.teacher, "the teacher: --teacher DIR (distill: teacher:)"),
                (m.path or m.preset or d.init_from_teacher, "the student: --student DIR, --student-preset NAME or "
                                                           "--init-from-teacher")]

    def validate(self) -> None:
        super().validate()
        m, d = self.model, self.distill
        if d.init_from_teacher and (m.path or m.preset):
            raise ConfigError("distill: --init-from-teacher makes the student from the teacher: drop --student / "
                              "--student-preset")
        if m.init is not None:
            raise ConfigError("distill: --init bert2bert is fine-tuning's; a student is --student DIR, "
                              "--student-preset NAME or --init-from-teacher")

    def check_given(self, given: dict[str, set[str]]) -> None:
        super().check_given(given)
        self.data.need_with(given["data"], ["eval_fraction"], False,
                            "would hold out training records, which may have no labels here: give --eval FILE")

    def steps(self) -> "DistillSteps":
        return DistillSteps(self)


class DistillSteps(Steps):
    """Fine-tuning's steps with a teacher (see the module docstring)."""

    config: DistillRun

    def check_inputs(self) -> None:
        from plmkit.models.io import check_model_dir
        check_model_dir(self.config.distill.teacher)
        super().check_inputs()

    def inputs(self) -> list[tuple[str, str | None]]:
        return [("--teacher", self.config.distill.teacher)] + [
            ("--student" if flag == "--model" else flag, path) for flag, path in super().inputs()]

    @functools.cached_property
    def _teacher(self) -> tuple[Any, Any, Task]:
        from plmkit.tasks.inference import load_model_dir
        from plmkit.utils.device import resolve_device
        model, tokenizer, task = load_model_dir(self.config.distill.teacher)
        return model.to(resolve_device(self.config.train.device)), tokenizer, task

    def task(self) -> Task:
        from plmkit.tasks.inference import with_settings
        _, _, task = self._teacher
        if task.name != self.config.task:
            raise ConfigError(f"distill: the teacher {self.config.distill.teacher} is a {task.name} model, not "
                              f"{self.config.task}: give --task {task.name}")
        own = self.config.task_settings
        given = {name: getattr(own, name) for name in getattr(own, "given", ())}
        return with_settings(task, **given) if given else task

    def tokenizer(self):
        from plmkit.tokenization import Tokenizer
        m = self.config.model
        return Tokenizer.from_pretrained(m.tokenizer or self.config.distill.teacher)

    def _student_tokenizer(self):
        """The tokenizer of --student DIR (None: none given, or the directory has no tokenizer files and
        reads the teacher's)."""
        from plmkit.tokenization import Tokenizer
        m = self.config.model
        if m.path is None or m.tokenizer is not None:
            return None
        try:
            return Tokenizer.from_pretrained(m.path)
        except PlmkitError:
            return None

    def training_examples(self, task: Task, tokenizer) -> list:
        path = self.config.data.train
        if task.soft_targets() is not None:
            self._examples = task.read(path, labelled=None)  # records without labels: soft targets only
            return self._examples
        teacher, _, _ = self._teacher
        examples = task.teacher_targets(teacher, tokenizer, task.read(path, labelled=False),
                                        self.config.data.eval_batch_size or max(self.config.data.batch_size, 32))
        if examples is None:
            raise ConfigError(f"distill: {task.name} models are distilled neither by their logits nor by generated "
                              "targets (classification, ner, qa, relation: logits; sft, translation, summarization: "
                              "targets)")
        log.info("plmkit: distill: the teacher wrote the targets of %s training records (sequence-level)",
                 f"{len(examples):,}")
        return examples

    def labels(self, task: Task, examples: list) -> list[str] | None:
        teacher, _, _ = self._teacher
        rows = task.soft_targets()
        names = teacher.config.id2label if rows is not None and has_label_names(rows) else None
        return [names[i] for i in range(len(names))] if names else None

    def model(self, task: Task, tokenizer, labels: list[str] | None):
        d, m = self.config.distill, self.config.model
        own = self._student_tokenizer()
        if own is not None:  # adapted with its own tokenizer, as fine-tuning would (relations add their markers) ...
            student = prepare_model(task, m.path, own, labels, m.dropout, new_head=m.new_head)
            if own.get_vocab() != tokenizer.get_vocab():  # ... after which it must read the teacher's tokens
                raise ConfigError(f"distill: the student {m.path} and the teacher {d.teacher} have different "
                                  "vocabularies; a student learns from the teacher's outputs on the same tokens: "
                                  "give a student with the teacher's vocabulary (or --student-preset NAME)")
            return student
        if not d.init_from_teacher:
            return super().model(task, tokenizer, labels)
        teacher, _, _ = self._teacher
        overrides = teacher.config.dropout_overrides(m.dropout) if m.dropout is not None else {}
        if d.narrows():
            student, self._channels = self._narrowed(teacher, task, tokenizer, overrides)
        else:
            student = student_from_teacher(teacher, d.student_layers, **overrides)
        task.adapt(student, tokenizer)  # as a loaded student is (sft: a pad token the teacher's tokenizer lacks)
        log.info("plmkit: distill: a student of %s layers from the teacher's %s, %d wide of its %d: %s parameters",
                 layers_in_words(student), layers_in_words(teacher), student.config.d_model, teacher.config.d_model,
                 f"{student.num_parameters():,}")
        return student

    def _narrowed(self, teacher, task: Task, tokenizer, overrides: dict):
        """The student narrowed by the teacher's importance and activations on the first training records
        (plmkit.compression.width), and the hidden channels it kept."""
        from plmkit.compression.width import narrowed_student
        from plmkit.data.loader import BatchLoader
        d, data, rows = self.config.distill, self.config.data, task.soft_targets()
        if rows is None:
            raise ConfigError(f"distill: --student-hidden, --student-heads and --student-ffn select from a teacher "
                              f"distilled by its logits; {task.name} is distilled at the sequence level: give "
                              "--student-layers alone")
        features = task.encode(tokenizer, self._examples[:d.selection_examples], teacher.config.label2id,
                               path=data.train, training=True)
        batches = BatchLoader(features, data.batch_size, task.collate(tokenizer), shuffle=False)
        return narrowed_student(teacher, batches, rows, d.student_layers, d.student_hidden, d.student_heads,
                                d.student_ffn, task.forward_kwargs, task.progress, **overrides)

    def trained(self, model, task: Task, tokenizer):
        d, rows = self.config.distill, task.soft_targets()
        if rows is None:
            losses = {"temperature", "alpha", "hidden_weight", "attention_weight"} & getattr(d, "given", set())
            if losses:
                raise ConfigError(f"distill: {', '.join(sorted(losses))} weigh(s) logit losses; {task.name} is distilled "
                                  "at the sequence level (the student learns the teacher's generated targets)")
            return model
        teacher, _, _ = self._teacher
        return DistillationModel(model, teacher, d, rows, getattr(self, "_channels", None))


def distill(task: str, teacher, train, out_dir, eval_data=None, **settings: Any) -> FinetuneResult:
    """Distil `teacher` (a fine-tuned model directory of `task`) into a student trained on `train`, written
    to `out_dir`; `settings` are the run's fields by name (``student_preset="bert-mini"``,
    ``init_from_teacher=True, student_layers=3``, ``temperature=4, epochs=3, ...``)."""
    values = {"task": task, "out": out_dir, "teacher": teacher, "train": train, "eval": eval_data, **settings}
    if "student" in values:  # (the section's field is `path`: --student)
        values["path"] = values.pop("student")
    if "student_preset" in values:
        values["preset"] = values.pop("student_preset")
    return run(run_type(task, DistillRun).build(nest(task, values, DistillRun), source=f"distill({task!r})"))


__all__ = ["DistillRun", "DistillSteps", "StudentSettings", "distill"]
