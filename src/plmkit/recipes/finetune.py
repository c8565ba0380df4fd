"""Fine-tuning any task (plmkit.tasks) from a pretrained model directory: ``plmkit finetune``.

    from plmkit.recipes.finetune import finetune
    finetune("ner", "runs/bert/model", "train.conll", "runs/ner", "dev.conll", epochs=2, stride=32)

A run is a `FinetuneRun` (plmkit.training.run_config): sections ``model`` (the model directory,
dropout, freezing, LoRA), ``data`` (files, batches), ``train`` (TrainConfig; fine-tuning's defaults
below, then the task's) and one named after the task with its own settings (saved next to the model
as plmkit_task.json). `run_type(task)` is the run type of a task; `build_run` picks it from the
``task`` value of the layers; `run(config)` trains. The run writes OUT/run.yaml (the effective run
file), OUT/model (final), OUT/best (best by the task's main metric, with eval data), metrics.jsonl
and training_curves.png; model directories carry the tokenizer, the labels and plmkit_task.json.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Hashable, Mapping

from plmkit.errors import CheckpointError, ConfigError, DataError
from plmkit.tasks import Task, get_task, task_names
from plmkit.tasks.common import length_of
from plmkit.training.checkpoint import resume_checkpoint
from plmkit.training.config import TrainConfig
from plmkit.training.fingerprint import check_resume, fingerprint
from plmkit.training.run_config import RunConfig, read_run_file
from plmkit.training.trainer import TrainResult
from plmkit.training.run_dir import claimed, clear
from plmkit.utils.files import refuse_overwriting_inputs
from plmkit.utils.settings import Settings, check_known, setting

log = logging.getLogger("plmkit")

FINETUNE_DEFAULTS = {"train": {"warmup_ratio": 0.1}}
DEFAULT_EPOCHS = 3.0  # how long a run trains that says neither max_steps, epochs nor time_budget


@dataclass
class ModelSettings(Settings):
    section = "model"
    path: str | None = setting(None, "pretrained model directory (config.json, weights, tokenizer)",
                               flags=("--model",), metavar="DIR", shapes_run=False)  # its files are compared
    init: str | None = setting(None, "bert2bert: an encoder-decoder whose encoder and decoder both start from the "
                                     "BERT of --model (Rothe et al., 2020; translation, summarization)",
                               choices=("bert2bert",), fixed_on_resume=True)
    preset: str | None = setting(None, "start from this preset's random weights instead of --model (with "
                                       "--tokenizer): e.g. marian-small, bart-small, bert-mini", metavar="NAME",
                                 fixed_on_resume=True)
    tokenizer: str | None = setting(None, "tokenizer directory (off: the model directory's)", metavar="DIR",
                                    shapes_run=False)
    dropout: float | None = setting(None, "hidden and attention dropout while fine-tuning; off: as in the model's "
                                          "config (plmkit pretrain writes 0, fine-tuning usually wants 0.1)", metavar="P",
                                    at_least=0, below=1)
    new_head: bool = setting(False, "start the task head from scratch for the training data's labels; off: a model "
                                    "fine-tuned for the task keeps its head, its labels and their order (the data's "
                                    "labels must be among them)", fixed_on_resume=True)
    freeze_embeddings: bool = setting(False, "freeze the embeddings", fixed_on_resume=True)
    freeze_layers: int = setting(0, "freeze the embeddings and the first K layers", metavar="K", at_least=0,
                                 fixed_on_resume=True)
    freeze_body: bool = setting(False, "train the task head only", fixed_on_resume=True)
    lora_rank: int | None = setting(None, "train LoRA adapters of this rank (+ the head)", metavar="R", at_least=1,
                                    fixed_on_resume=True)
    lora_alpha: float = setting(16.0, "LoRA scale numerator (scale = alpha / rank)", metavar="A", above=0)
    lora_dropout: float = setting(0.05, "dropout on the LoRA input", metavar="P", at_least=0, below=1)
    lora_targets: tuple[str, ...] | None = setting(None, "comma-separated Linear names that get adapters "
                                                         "(q,k,v,out,fc_in,fc_out); off: q,v with --lora-rank",
                                                   metavar="NAMES", fixed_on_resume=True)

    def validate(self) -> None:
        self.need(not (self.preset and self.path), "give --model DIR (a pretrained model) or --preset NAME (random "
                                                   "weights), not both")
        self.need(not (self.init and self.preset), "--init bert2bert warm-starts from --model, not from a --preset")
        self.need(not (self.freeze_body and (self.freeze_layers or self.freeze_embeddings)),
                  "freeze_body (--freeze-body) freezes the whole body already: drop --freeze-layers / "
                  "--freeze-embeddings")
        self.need(not (self.freeze_body and self.lora_rank), "freeze_body (--freeze-body) trains the head only, so "
                                                             "LoRA adapters would be frozen too: drop one of them")
        self.need(self.lora_targets is None or len(self.lora_targets) > 0,
                  "lora_targets (--lora-targets) is empty: name the Linear layers (q,v ...) or leave it out")

    def check_given(self, given: set[str]) -> None:
        self.need_with(given, ("lora_alpha", "lora_dropout", "lora_targets"), self.lora_rank is not None,
                       "needs lora_rank (--lora-rank R): without a rank there are no adapters")
        self.need_with(given, ["new_head"], self.path is not None,
                       "replaces the head of a model directory (--model DIR; distill: --student DIR); a preset's "
                       "weights are all new, and a student made from the teacher keeps the teacher's head")


@dataclass
class DataSettings(Settings):
    section = "data"
    alternatives = (("eval", "eval_fraction"),)  # --eval replaces a held-out fraction given before (sft's)
    train: str | None = setting(None, "training data: " + "; ".join(
        f"{t.description} ({name})" for name, t in ((n, get_task(n)) for n in task_names())), metavar="FILE",
        shapes_run=False)  # (the contents of the data files are compared on resume)
    eval: str | None = setting(None, "evaluation data, same format (evaluated every epoch)", metavar="FILE",
                               shapes_run=False)
    eval_fraction: float = setting(0.0, "without --eval: hold out this (seeded) fraction of the training examples",
                                   metavar="F", at_least=0, below=1)
    batch_size: int = setting(16, "examples per batch", metavar="N", at_least=1)
    eval_batch_size: int | None = setting(None, "examples per evaluation batch; off: max(batch size, 32)",
                                          metavar="N", at_least=1, shapes_run=False)
    group_by_length: bool = setting(False, "batches of similar lengths: less padding (the encoder already skips "
                                           "padding tokens outside attention, so this saves little there)")

    def check_given(self, given: set[str]) -> None:
        self.need_with(given, ["eval_fraction"], not (self.eval and self.eval_fraction),
                       "holds out training examples for evaluation only without --eval: give one of them")


@dataclass
class FinetuneTrain(TrainConfig):
    """The train section of a fine-tuning run: metric_for_best defaults to the task's main metric when
    there is evaluation data, so early stopping needs no metric here; `run` fills it in. A run that says
    neither max_steps, epochs nor time_budget trains DEFAULT_EPOCHS epochs; max_steps or time_budget
    alone ends the run when given (as Hugging Face's max_steps overrides num_train_epochs)."""

    epochs: float | None = setting(None, f"stop after this many passes over the training data; off: "
                                         f"{DEFAULT_EPOCHS:g} unless --max-steps or --time-budget is given",
                                   metavar="N", above=0)

    def validate(self) -> None:
        if self.max_steps is None and self.epochs is None and self.time_budget is None:
            self.epochs = DEFAULT_EPOCHS
        patience, self.early_stopping_patience = self.early_stopping_patience, None
        try:
            super().validate()
        finally:
            self.early_stopping_patience = patience


@dataclass
class FinetuneRun(RunConfig):
    """A fine-tuning run; `run_type(task)` adds the task's own section."""

    defaults = FINETUNE_DEFAULTS
    command: ClassVar[str] = "finetune"  # how errors name the run
    purpose: ClassVar[str] = "fine-tune"  # "say which task to ..."
    task: str | None = setting(None, "what to fine-tune for (sft: a causal LM on prompt/response pairs, "
                                     "for plmkit chat)", choices=task_names(), fixed_on_resume=True)
    out: str | None = setting(None, "output directory", metavar="DIR", shapes_run=False)
    resume: bool = setting(False, "continue from OUT/checkpoints/latest, exactly (the same settings and data)",
                           shapes_run=False, in_run_file=False)
    resume_from: str | None = setting(None, "continue from this checkpoint directory instead of the latest "
                                            "(implies --resume)", metavar="DIR", shapes_run=False,
                                      in_run_file=False)
    resume_with_changes: bool = setting(False, "resume although settings or data changed (they are named in the log; "
                                               "the LR schedule goes on from where it was; implies --resume)",
                                        shapes_run=False, in_run_file=False)
    overwrite: bool = setting(False, "replace the run already in --out (its model, best, checkpoints and metrics are "
                                     "removed when this one starts training)", shapes_run=False, in_run_file=False)
    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    train: FinetuneTrain = field(default_factory=FinetuneTrain)

    def validate(self) -> None:
        for ok, what in self.needed():
            if not ok:
                raise ConfigError(f"{self.command}: say {what}")
        if self.model.init == "bert2bert" and get_task(self.task).model_task != "seq2seq-lm":
            raise ConfigError(f"finetune: --init bert2bert makes an encoder-decoder (for translation or summarization); "
                              f"--task {self.task} fine-tunes the model of --model as it is")

    def needed(self) -> list[tuple[Any, str]]:
        """(value, what to say when it is missing) for what a run must be given."""
        return [(self.task, "the task: --task " + "|".join(task_names())), *self.model_needed(),
                (self.data.train, "the training data: --train FILE (data: train:)"),
                (self.out, "the output directory: --out DIR (out:)")]

    def model_needed(self) -> list[tuple[Any, str]]:
        return [(self.model.path or self.model.preset, "the pretrained model directory: --model DIR (model: path:), "
                                                       "or --preset NAME with --tokenizer DIR"),
                (not self.model.preset or self.model.tokenizer, "--tokenizer DIR: --preset starts from random weights and "
                                                                "has no tokenizer (plmkit tokenizer train makes one)")]

    def check_given(self, given: dict[str, set[str]]) -> None:
        self.train.need_with(given["train"], ["layer_lr_decay"], not self.model.freeze_body,
                             "scales the learning rates of the body's layers, which --freeze-body freezes")
        if not (self.data.eval or self.data.eval_fraction):  # nothing to evaluate on
            because = "needs evaluation data: give --eval FILE (or --eval-fraction F)"
            self.train.need_with(given["train"], ("eval_every", "early_stopping_patience", "metric_for_best",
                                                  "greater_is_better"), False, because)
            self.data.need_with(given["data"], ["eval_batch_size"], False, because)

    @property
    def resume_target(self) -> bool | str:
        """What `Trainer.train(resume=...)` gets: a checkpoint directory, True (the latest) or False."""
        return self.resume_from or bool(self.resume or self.resume_with_changes)

    @property
    def task_settings(self):
        return getattr(self, self.task)

    def make_task(self) -> Task:
        """The task with a copy of this run's settings for it (fine-tuning fills in what the data says)."""
        return get_task(self.task)(dataclasses.replace(self.task_settings))

    def steps(self) -> "Steps":
        """What `run` does at each step (a kind of run built on fine-tuning replaces some)."""
        return Steps(self)


@functools.cache
def run_type(name: str, base: type[FinetuneRun] = FinetuneRun) -> type[FinetuneRun]:
    """The run type of task `name`: `base` (FinetuneRun, or a kind of run built on it: DistillRun) plus a
    section `name` holding the task's settings, with the task's `run_defaults` over the base's defaults."""
    task = get_task(name)
    sections = {s for s, v in base.defaults.items() if isinstance(v, Mapping)} | set(task.run_defaults)
    defaults: dict[str, Any] = {s: {**base.defaults.get(s, {}), **task.run_defaults.get(s, {})} for s in sections}
    defaults["task"] = name
    settings = task.settings_class
    cls = dataclasses.make_dataclass(f"{settings.__name__.removesuffix('Settings')}{base.__name__}",
                                     [(name, settings, field(default_factory=settings))], bases=(base,),
                                     namespace={"defaults": defaults, "__module__": base.__module__})

    def validate(self) -> None:
        base.validate(self)
        if self.task != name:
            raise ConfigError(f"{base.command}: this run type is for task {name!r}, not {self.task!r}")

    cls.validate = validate
    return cls


def build_run(*layers: Mapping[str, Any], source: str = "run file", base: type[FinetuneRun] = FinetuneRun) -> FinetuneRun:
    """The run of `layers` (run dicts, later ones win) for the task the last of them names."""
    name = next((layer["task"] for layer in reversed(layers) if isinstance(layer, Mapping) and layer.get("task")), None)
    if name is None:
        raise ConfigError(f"{source}: say which task to {base.purpose}: --task {'|'.join(task_names())} "
                          "(task: in a run file)")
    return run_type(name, base).build(*layers, source=source)


def load_run(path: str | Path | None, *overrides: Mapping[str, Any], base: type[FinetuneRun] = FinetuneRun) -> FinetuneRun:
    """The run of a YAML/JSON run file (None: none) with `overrides` on top."""
    if path is None:
        return build_run(*overrides, source="flags", base=base)
    return build_run(read_run_file(path), *overrides, source=str(path), base=base)


def nest(name: str, values: Mapping[str, Any], base: type[FinetuneRun] = FinetuneRun) -> dict[str, Any]:
    """A run dict from flat field names (``lr=1e-3, stride=4``) of task `name`'s run type."""
    run_cls = run_type(name, base)
    where: dict[str, str | None] = {f: None for f in run_cls.top_level()}
    for section, settings in run_cls.sections().items():
        where.update(dict.fromkeys(settings.field_names(), section))
    check_known(values, list(where), f"{base.command}({name!r})")
    out: dict[str, Any] = {}
    for key, value in values.items():
        if where[key] is None:
            out[key] = value
        else:
            out.setdefault(where[key], {})[key] = value
    return out


@dataclass
class FinetuneResult(TrainResult):
    train_examples: int
    eval_examples: int


def finetune(task: str, model_dir, train, out_dir, eval_data=None, **settings: Any) -> FinetuneResult:
    """Fine-tune `model_dir` for `task` on `train` into `out_dir`; `settings` are the run's fields
    by name (``epochs=1, lr=1e-3, lora_rank=8, stride=32, ...``, any section)."""
    given = nest(task, {"task": task, "out": out_dir, "path": model_dir, "train": train, "eval": eval_data,
                        **settings})  # (paths become strings, other types are refused by name)
    return run(run_type(task).build(given, source=f"finetune({task!r})"))


# ------------------------------------------------------------------ the run
def run(config: FinetuneRun) -> FinetuneResult:
    """Fine-tune as `config` says (see the module docstring), owning the output directory meanwhile;
    under torchrun, every rank runs it (plmkit.training.distributed)."""
    from plmkit.training import distributed
    resume, config.overwrite = distributed.resume_after_restart(config.resume_target, config.overwrite)
    if resume is True:  # (torchrun --max-restarts: the latest checkpoint)
        config.resume, config.resume_from = True, None
    with distributed.process_group(config.train.device):
        return _claimed_run(config)


def _claimed_run(config: FinetuneRun) -> FinetuneResult:
    from plmkit.training import distributed
    steps = config.steps()
    distributed.check_batch_size(config.data.batch_size)
    steps.check_inputs()  # the inputs first: a mistyped --model is named as one, before --out is made
    inputs = steps.inputs()
    refuse_overwriting_inputs(config.out, "--out", inputs)
    with claimed(config.out, config.command, bool(config.resume_target), config.overwrite) as out:
        fp = fingerprint(config, {flag: [path] for flag, path in inputs})
        if config.resume_target:
            check_resume(resume_checkpoint(out / "checkpoints", config.resume_target), fp, config.resume_with_changes)
        return _run(config, steps, out, fp)


class Steps:
    """The steps of a fine-tuning run that a kind of run built on it replaces (`FinetuneRun.steps`):
    distillation (plmkit.recipes.distill) reads its task and tokenizer from the teacher, takes records
    without labels, builds a student and trains it inside a module that adds the teacher's losses.
    `_run` calls them in the order they are defined here; everything else (batches, the Trainer,
    evaluation, saving, resuming) is the same for every kind of run."""

    def __init__(self, config: FinetuneRun):
        self.config = config

    def check_inputs(self) -> None:
        """Refuse a missing input by name, before anything is written."""
        from plmkit.models.io import check_model_dir
        if self.config.model.path is not None:
            check_model_dir(self.config.model.path)

    def inputs(self) -> list[tuple[str, str | None]]:
        """(flag, path) of what the run reads: never written over, and fingerprinted for --resume."""
        m, d = self.config.model, self.config.data
        return [("--model", m.path), ("--tokenizer", m.tokenizer), ("--train", d.train), ("--eval", d.eval)]

    def task(self) -> Task:
        return self.config.make_task()

    def tokenizer(self):
        from plmkit.tokenization import Tokenizer
        m = self.config.model
        return Tokenizer.from_pretrained(m.tokenizer or m.path)

    def training_examples(self, task: Task, tokenizer) -> list:
        return task.read(self.config.data.train)

    def labels(self, task: Task, examples: list) -> list[str] | None:
        """The label names of the model's head (and whatever else the data decides in the task's settings):
        the data's, in the order of the head that --model holds when it was fine-tuned for the task
        (`head_order`), unless new_head starts a new one."""
        labels = task.discover(examples, self.config.data.train)
        m = self.config.model
        if labels is None or m.path is None or m.new_head:
            return labels
        return head_order(labels, head_labels(task, m.path), m.path, self.config.data.train)

    def model(self, task: Task, tokenizer, labels: list[str] | None):
        m = self.config.model
        return prepare_model(task, m.path, tokenizer, labels, m.dropout, preset=m.preset, init=m.init,
                             new_head=m.new_head)

    def trained(self, model, task: Task, tokenizer):
        """The module the Trainer trains and saves (through its save_pretrained): the model itself."""
        return model


def _run(config: FinetuneRun, steps: Steps, out: Path, fp: dict) -> FinetuneResult:
    from plmkit.data.loader import BatchLoader
    from plmkit.training import distributed
    from plmkit.training.rng import seed_everything
    from plmkit.training.trainer import Trainer

    task, m, d = steps.task(), config.model, config.data
    task.progress = config.train.progress_bar and distributed.is_main()
    seed_everything(config.train.seed)
    tokenizer = steps.tokenizer()
    train_examples = steps.training_examples(task, tokenizer)
    labels = steps.labels(task, train_examples)  # of every training example: a held-out one's label is known too
    eval_examples, eval_where = (task.read(d.eval), d.eval) if d.eval else (None, None)
    if eval_examples is None and d.eval_fraction:
        train_examples, eval_examples = hold_out(train_examples, d.eval_fraction, config.train.seed,
                                                 task.shared_text)
        eval_where = f"{d.train} (held out)"
    if d.eval and os.path.realpath(d.eval) == os.path.realpath(d.train):
        log.warning("plmkit: --eval is the training file: the evaluations (and the best model) measure how well "
                    "the model fits its own training data")

    model = steps.model(task, tokenizer, labels)
    task.check_model(model, m.path)
    label2id = model.config.label2id if labels is not None else None
    train_features = task.encode(tokenizer, train_examples, label2id, path=d.train, training=True)
    eval_features = (task.encode(tokenizer, eval_examples, label2id, path=eval_where)
                     if eval_examples is not None else None)
    log.info("plmkit: %s: %s training examples%s", task.name, f"{len(train_examples):,}",
             f", {len(eval_examples):,} for evaluation" if eval_examples is not None else "")

    frozen = set_trainable(model, task, tokenizer, m)
    trainable = model.num_parameters(trainable_only=True)
    log.info("plmkit: %s: %s of %s parameters trainable%s", type(model).__name__, f"{trainable:,}",
             f"{model.num_parameters():,}", f" ({len(frozen)} tensors frozen)" if frozen else "")
    trained = steps.trained(model, task, tokenizer)

    loader = BatchLoader(train_features, d.batch_size, task.collate(tokenizer), shuffle=True, seed=config.train.seed,
                         group_by_length=length_of if d.group_by_length else None)
    has_eval = eval_features is not None
    train_cfg = trainer_config(config.train, task, has_eval)
    eval_batch_size = d.eval_batch_size or max(d.batch_size, 32)

    def evaluate(_trained):  # (the Trainer's module is `model`, or holds it: `model` is what is evaluated)
        return task.evaluate(model, tokenizer, eval_examples, eval_features, eval_batch_size, **shared)

    shared = {"part": distributed.EvalShard()} if task.sharded_evaluation else {}
    if shared:  # (each rank its part, the metrics reduced across ranks)
        evaluate = distributed.sharded_evaluation(evaluate)

    def save_extra(directory: Path) -> None:
        tokenizer.save_pretrained(directory)
        task.save(directory)

    trainer = Trainer(trained, train_cfg, loader, out, evaluate=evaluate if has_eval else None, save_extra=save_extra,
                      forward_kwargs=task.forward_kwargs, fingerprint=fp,
                      on_start=lambda: config.save(out / "run.yaml"),  # once training starts (or resumes) for real
                      eval_each_epoch=has_eval and config.train.eval_every is None)
    if config.overwrite and distributed.is_main():  # the earlier run goes once everything above has worked
        clear(out)
    result = trainer.train(resume=config.resume_target, accept_changes=config.resume_with_changes)
    return FinetuneResult(**{f.name: getattr(result, f.name) for f in dataclasses.fields(result)},
                          train_examples=len(train_examples),
                          eval_examples=len(eval_examples) if eval_examples is not None else 0)


def trainer_config(train: TrainConfig, task: Task, has_eval: bool) -> TrainConfig:
    """The Trainer's config: with eval data, the task's main metric choosing the best checkpoint unless
    metric_for_best names one (and evaluation every epoch unless eval_every says otherwise: `_run`)."""
    values = {f.name: getattr(train, f.name) for f in dataclasses.fields(train)}
    values.update(eval_every=train.eval_every if has_eval else None,
                  early_stopping_patience=train.early_stopping_patience if has_eval else None,
                  metric_for_best=train.metric_for_best or (task.main_metric() if has_eval else None))
    return TrainConfig(**values)


def hold_out(examples: list, fraction: float, seed: int,
             shared: Callable[[Any], Hashable | None] = lambda example: None) -> tuple[list, list]:
    """(train, held out): a seeded `fraction` of `examples` (at least one) held out, order kept; the examples
    with one `shared` text (`Task.shared_text`: a QA paragraph's questions) held out together, or kept."""
    groups: dict[Hashable, list[int]] = {}
    for i, example in enumerate(examples):
        key = shared(example)
        groups.setdefault(("own", i) if key is None else ("shared", key), []).append(i)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(fraction * len(order)))
    if len(order) - n_eval < 1:
        what = "example(s)" if len(order) == len(examples) else "text(s) that the examples share"
        raise DataError(f"{len(order)} {what}: too few to hold out {n_eval} for evaluation; "
                        "lower eval_fraction or give --eval")
    held = {i for group in order[:n_eval] for i in group}
    return ([e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held])


# ------------------------------------------------------------------ the model
NEW_HEAD_HOW = ("start a new head for the data's labels with --new-head (model: new_head: true), or fine-tune the "
                "pretrained model it was fine-tuned from")


def head_labels(task: Task, model_dir) -> list[str] | None:
    """The labels of the `task` head that `model_dir` holds, in the order of its rows (LABEL_0 ... where
    config.json names none); None when it holds no head of the task (a pretrained body, another task's head)."""
    from plmkit.models.auto import AutoConfig, model_class, read_model_type
    model_type, architectures = read_model_type(model_dir)
    if model_class(model_type, task.model_task).__name__ not in architectures:
        return None
    return AutoConfig.from_pretrained(model_dir).row_labels


def unnamed(head: list[str]) -> bool:
    """Whether a head's labels are Hugging Face's placeholders (LABEL_0, LABEL_1 ...), which name no class."""
    return head == [f"LABEL_{i}" for i in range(len(head))]


def head_order(labels: list[str], head: list[str] | None, model_dir, path) -> list[str]:
    """The training data's `labels` as the head of `model_dir` numbers them (`head`: its labels, None: it has
    none), as Hugging Face's run_glue keeps a fine-tuned model's label ids: the head's labels, which must
    include the data's (those the data lacks stay, with a warning); rows without names (LABEL_0 ...) take
    the data's labels when there are as many."""
    if head is None:
        return labels
    if set(labels) == set(head):
        return head
    if unnamed(head):
        if len(head) == len(labels):
            return labels
        raise DataError(f"{path}: the training data has {len(labels)} labels, but the head in {model_dir} has "
                        f"{len(head)} (unnamed); {NEW_HEAD_HOW}")
    unknown = [name for name in labels if name not in head]
    if unknown:
        raise DataError(f"{path}: the training data has label(s) the head in {model_dir} lacks: {', '.join(unknown)} "
                        f"(its labels: {', '.join(head)}); give data with its labels, or {NEW_HEAD_HOW}")
    log.warning("plmkit: the training data has no example of %s, label(s) of the head in %s: kept, so the model can "
                "still predict them (--new-head: a new head for the data's labels alone)",
                ", ".join(name for name in head if name not in labels), model_dir)
    return head


def check_head_labels(task: Task, model_dir, labels: list[str]) -> None:
    """Refuse to load the `task` head of `model_dir` for other `labels` than its own, in its order: its rows
    would answer for other labels (a head of as many unnamed rows takes any names)."""
    head = head_labels(task, model_dir)
    if head is None or head == labels or unnamed(head) and len(head) == len(labels):
        return
    raise ConfigError(f"{model_dir} holds a {task.name} head for the labels {', '.join(head)} (in this order), not "
                      f"{', '.join(labels)}: its rows would answer for other labels; give its labels in its order, "
                      "start the head anew (--new-head), or start from a model without this head")


def prepare_model(task: Task, model_dir, tokenizer, labels: list[str] | None = None, dropout: float | None = None,
                  *, preset: str | None = None, init: str | None = None, new_head: bool = False):
    """The task model initialised from `model_dir` (a pretrained body or a task checkpoint), with the
    labels, the task's config fields and `dropout` replacing the checkpoint's dropout rates
    (pretraining often runs without); then adapted by the task (new tokens ...). A task checkpoint's head
    is kept for its own labels in its order only (`check_head_labels`); `new_head` starts it from scratch.

    preset: random weights of that preset instead, sized for `tokenizer`; init="bert2bert": an
    encoder-decoder whose two halves both start from the BERT in `model_dir` (Rothe et al., 2020)."""
    from plmkit.models.auto import model_class, read_model_type
    from plmkit.models.io import check_model_dir
    from plmkit.models.registry import config_from_preset, family, family_of_preset
    if new_head and labels is None:
        raise ConfigError(f"new_head (--new-head) starts a new head for the training data's labels; {task.name} "
                          "models have no labels")
    overrides = dict(task.model_overrides())
    if labels is not None:
        overrides["id2label"] = dict(enumerate(labels))
        overrides["label2id"] = None
    if preset is not None:
        cls = family_of_preset(preset, task=task.model_task).model_class(task.model_task)
        config = config_from_preset(preset, dropout=dropout, **{**cls.config_class.tokenizer_fields(tokenizer),
                                                                **overrides})
        model = cls(config)
        log.info("plmkit: %s from preset %s: %s parameters, random weights", cls.__name__, preset,
                 f"{model.num_parameters():,}")
    elif init == "bert2bert":
        cls = family("encoder-decoder").model_class(task.model_task)
        model = cls.from_encoder_decoder_pretrained(model_dir, dropout=dropout,
                                                    **cls.config_class.tokenizer_fields(tokenizer))
    else:
        cls = model_class(read_model_type(model_dir)[0], task.model_task)
        if dropout is not None:
            overrides.update(cls.config_class.from_json_file(check_model_dir(model_dir) / "config.json")
                             .dropout_overrides(dropout))
        if new_head:
            model = with_new_head(cls, model_dir, overrides)
        else:
            if labels is not None:
                check_head_labels(task, model_dir, labels)
            model = cls.from_pretrained(model_dir, **overrides, dtype="float32")  # to train: fp32 (a bf16 one too)
    model.check_vocabulary(tokenizer, model_dir or preset)
    task.adapt(model, tokenizer)
    return model


def with_new_head(cls, model_dir, overrides: dict[str, Any]):
    """`cls` of `model_dir` with its task head started from scratch for the labels of `overrides` (new_head):
    the checkpoint is loaded with its own head, then its body's weights are copied into a new model."""
    own = {k: v for k, v in overrides.items() if k not in ("id2label", "label2id")}
    loaded = cls.from_pretrained(model_dir, **own)
    id2label = overrides["id2label"]
    model = cls(loaded.config.with_labels([id2label[i] for i in range(len(id2label))]))
    body = {k: v for k, v in loaded.state_dict().items() if in_body(model, k)}
    result = model.load_state_dict(body, strict=False)
    lost = [k for k in result.missing_keys if in_body(model, k)] + list(result.unexpected_keys)
    if lost:
        raise CheckpointError(f"{model_dir}: --new-head cannot carry its body into a new {cls.__name__}: "
                              f"{', '.join(lost[:6])}{' ...' if len(lost) > 6 else ''} do not match")
    model.initialised_from_scratch = tuple(result.missing_keys)
    for carried in ("generation_config", "generation_config_others", "sentence_transformers"):
        setattr(model, carried, getattr(loaded, carried))
    log.info("plmkit: %s: a new head (%s) from scratch for the labels %s (new_head)", cls.__name__,
             ", ".join(result.missing_keys), ", ".join(model.config.id2label.values()))
    return model.eval()


def freeze(model, embeddings: bool = False, layers: int = 0, body: bool = False) -> list[str]:
    """Stop gradients: the embeddings, the embeddings + first `layers` layers, or the whole body
    (`body`: only the task head trains). Returns the frozen parameter names."""
    if hasattr(model, "encode") and (embeddings or layers or body):  # an encoder-decoder
        raise ConfigError(f"--freeze-embeddings/--freeze-layers/--freeze-body are for encoders and decoders; "
                          f"{type(model).__name__} trains whole (or with --lora-rank)")
    prefix = model.base_prefix + "." if model.base_prefix else ""
    n_layers = model.config.num_layers
    if layers < 0 or layers > n_layers:
        raise ConfigError(f"freeze_layers={layers}: the model has {n_layers} layers")
    if body and all(name.startswith(prefix) for name, _ in model.named_parameters()):
        tied = [name for name, _ in model.named_parameters(remove_duplicate=False) if not name.startswith(prefix)]
        why = (f"({', '.join(tied)}) is tied to its token embedding, which freezing the body freezes too" if tied
               else "has no parameters outside its body")
        raise ConfigError(f"--freeze-body trains the task head only, but {type(model).__name__}'s head {why}, so "
                          "nothing would train: use --lora-rank R or --freeze-layers K instead")
    frozen = []
    for name, p in model.named_parameters():
        inner = name[len(prefix):] if name.startswith(prefix) else None
        if inner is None:
            continue  # the task head
        parts = inner.split(".")
        hit = body or ((embeddings or layers > 0) and parts[0] == "embeddings") \
            or (parts[0] == "layers" and int(parts[1]) < layers)
        if hit:
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def in_body(model, name: str) -> bool:
    """Whether parameter `name` is the body's, not the task head's: under `base_prefix`, or in a model
    without one (an encoder-decoder) under its `body_roots` (what lies outside, a projection between the
    halves, is new)."""
    if model.base_prefix:
        return name.startswith(model.base_prefix + ".")
    return name.split(".")[0] in model.body_roots


def set_trainable(model, task: Task, tokenizer, m: ModelSettings) -> list[str]:
    """Freeze what `m` asks and add its LoRA adapters (the task head always trains), then let the
    task train what it must (relation markers' new rows). Returns the names frozen by `freeze`."""
    from plmkit.nn.lora import apply_lora
    frozen = freeze(model, m.freeze_embeddings, m.freeze_layers, m.freeze_body)
    if m.lora_rank:
        targets = m.lora_targets or ("q", "v")
        head = [p for n, p in model.named_parameters() if not in_body(model, n)]
        wrapped = apply_lora(model, targets, m.lora_rank, m.lora_alpha, m.lora_dropout)
        for p in head:
            p.requires_grad_(True)
        frozen_weights = set(frozen)
        for name, p in model.named_parameters():  # adapters of layers frozen above stay frozen too
            module, param = name.rsplit(".", 1)
            if param in ("lora_A", "lora_B") and module + ".weight" in frozen_weights:
                p.requires_grad_(False)
        log.info("plmkit: LoRA rank %d on %d layers (%s)", m.lora_rank, len(wrapped), ",".join(targets))
    task.train_extra(model, tokenizer)
    return frozen


__all__ = ["DEFAULT_EPOCHS", "DataSettings", "FINETUNE_DEFAULTS", "FinetuneResult", "FinetuneRun", "FinetuneTrain",
           "ModelSettings", "Steps", "build_run", "check_head_labels", "finetune", "freeze", "head_labels",
           "head_order", "hold_out", "load_run", "nest", "prepare_model", "run", "run_type", "set_trainable",
           "trainer_config", "with_new_head"]
