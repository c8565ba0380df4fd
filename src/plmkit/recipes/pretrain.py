"""Pretraining from raw text: one run type for every objective, `run(config)` for the whole run.

    from plmkit.recipes.pretrain import PretrainRun, run
    config = PretrainRun.build({"out": "runs/gpt", "data": {"objective": "clm", "corpus": ["shakespeare/"]},
                                "model": {"preset": "gpt2-mini"}, "train": {"time_budget": "10m"}})
    result = run(config)

``plmkit pretrain`` is this run type's flags (`plmkit.cli.flags`) over the same call. A run file
(YAML or JSON) has sections ``model`` (a preset, how the fresh model starts, and any config field
of its family, e.g. ``layer_norm_eps``), ``data`` (`PretrainData`) and ``train`` (`TrainConfig`),
plus ``out``. Each objective's defaults are declared once, below: BERT's (``mlm+nsp``, ``mlm``)
are `PretrainRun.defaults`; a decoder's (``clm``) and BART's (``denoise``) `PretrainRun.variant_defaults`.
Settings that only some objectives read are `OBJECTIVE_ONLY`'s: unset (None) for the others, and
refused by name when given. The objective's pipeline lives in `PIPELINES` (BERT:
plmkit.training.pretrain; decoders: plmkit.training.clm; BART: plmkit.training.denoise), each module
with ``check(config)``, ``pretrain(config, resume, accept_changes, **trainer_options)`` (the last
passed to its Trainer), ``model_fields(model)``, ``tokenizer_settings(config)`` (what shapes the tokenizer
it trains) and ``format_result(result)``; a new objective is one more entry.

Output directory: ``run.yaml`` (the effective run file: ``--config OUT/run.yaml`` runs it again),
the tokenizer, ``model/`` (HF-loadable), metrics, checkpoints (see the pipelines and the Trainer).
"""
from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plmkit.errors import ConfigError, TrainingError
from plmkit.training.config import TrainConfig
from plmkit.training.fingerprint import fingerprint
from plmkit.training.run_config import RunConfig, read_run_file
from plmkit.utils.constants import DEFAULT_VOCAB_SIZE
from plmkit.training.run_dir import claimed, clear
from plmkit.training.vocab import record_source, source_mismatch
from plmkit.utils.files import check_creatable, refuse_overwriting_inputs, retire_dir
from plmkit.utils.settings import Settings, setting

log = logging.getLogger(__name__)

BERT_OBJECTIVES = ("mlm+nsp", "mlm")
# objective -> the module of its pipeline
PIPELINES = {**dict.fromkeys(BERT_OBJECTIVES, "plmkit.training.pretrain"), "clm": "plmkit.training.clm",
             "denoise": "plmkit.training.denoise"}
OBJECTIVES = tuple(PIPELINES)
# settings that only some objectives read -> those objectives: None (unset) for the others, refused when set
OBJECTIVE_ONLY = {
    "model": dict.fromkeys(("norm_first", "unigram_bias_init", "sinusoidal_position_init"), BERT_OBJECTIVES),
    "data": {**dict.fromkeys(("lowercase", "whole_word_mask", "short_seq_prob", "nsp_prob", "dupe_factor"),
                             BERT_OBJECTIVES),
             **dict.fromkeys(("mask_rate", "min_doc_tokens"), (*BERT_OBJECTIVES, "denoise")),
             **dict.fromkeys(("poisson_lambda", "permute_sentences"), ("denoise",))},
}


def unused(objective: str, section: str) -> dict[str, None]:
    """The settings of `section` that `objective` does not read, unset: part of its variant defaults."""
    return {name: None for name, users in OBJECTIVE_ONLY[section].items() if objective not in users}


# data settings that only shape a tokenizer trained here: a resumed run has its tokenizer already
TOKENIZER_TRAINING_KEYS = ("vocab_size", "lowercase")
RUN_FILE = "run.yaml"
LEGACY_RUN_FILES = ("pretrain_config.json", "clm_config.json")  # written before run.yaml, still resumable


@dataclass
class PretrainModel(Settings):
    """The fresh model: its preset, how it starts, and any config field of its family."""

    section = "model"
    extras = "config"

    preset: str = setting("bert-mini", "model size: bert-tiny/mini/small/medium/base; with --objective clm "
                                       "gpt2-tiny/mini/small/... or llama-tiny/mini/...; with --objective denoise "
                                       "bart-tiny/small/base", metavar="NAME")
    dropout: float = setting(0.0, "every dropout rate of the body (hidden, attention, embeddings)", metavar="P",
                             at_least=0, below=1)
    norm_first: bool | None = setting(None, "pre-LayerNorm BERT blocks (stabler; not loadable by HF BertModel)",
                                      flags=("--pre-ln", "--norm-first"))
    unigram_bias_init: bool | None = setting(True, "start the MLM decoder bias at the corpus's log word "
                                                   "frequencies (else zero)",
                                             const_flags={"--no-unigram-init": False})
    sinusoidal_position_init: bool | None = setting(False, "start the learned position embeddings as sinusoids "
                                                           "(they stay trainable, HF-loadable)",
                                                    flags=("--sinusoidal-positions", "--sinusoidal-position-init"))
    # the family's own config fields (BertConfig's layer_norm_eps, say), given flat in the model section
    config: dict[str, Any] = setting(help="config fields of the model's family", default_factory=dict, cli=False)

    @classmethod
    def layered(cls, *layers, source=None, defaults=0):
        """`Settings.layered`, where a `dropout` given at a layer also replaces the family's dropout
        rates given at earlier ones (``--dropout 0.1`` wins over a run file's ``hidden_dropout_prob``;
        given together, the family field wins: it is the more specific)."""
        if not any("dropout" in layer for layer in layers[1:]):
            return super().layered(*layers, source=source, defaults=defaults)
        rates = _dropout_fields()
        kept: list = []
        for layer in map(cls._flat, layers):
            if "dropout" in layer:
                kept = [{k: v for k, v in earlier.items() if k not in rates} for earlier in kept]
            kept.append(layer)
        return super().layered(*kept, source=source, defaults=defaults)


@dataclass
class PretrainData(Settings):
    """Corpus, tokenizer, example construction, masking and evaluation split."""

    section = "data"

    corpus: list[str] = setting(help="text corpus: .txt/.txt.gz/.jsonl files or directories",
                                default_factory=list, metavar="PATH", shapes_run=False)  # its files are compared
    tokenizer: str | None = setting(None, "use this tokenizer instead of training one on the corpus into OUT/tokenizer",
                                    metavar="DIR", shapes_run=False)
    vocab_size: int | None = setting(None, f"vocabulary of a tokenizer trained here (off: {DEFAULT_VOCAB_SIZE})",
                                     metavar="N", at_least=100)
    lowercase: bool | None = setting(None, "lowercase a WordPiece tokenizer trained here (off: yes)",
                                     const_flags={"--cased": False})
    objective: str = setting("mlm+nsp", "mlm+nsp: BERT's sentence pairs; mlm: packed sentences; clm: a GPT-2/Llama "
                                        "decoder by next-token prediction (byte-level BPE); denoise: a BART "
                                        "encoder-decoder rebuilding text from text infilling and sentence permutation "
                                        "(byte-level BPE)", choices=OBJECTIVES)
    seq_len: int = setting(128, "tokens per example, specials included", metavar="N", at_least=8)
    batch_size: int = setting(32, "examples per batch", metavar="N", at_least=1)
    mask_rate: float | None = setting(0.15, "fraction of tokens masked (denoise: in spans, each replaced by one "
                                            "mask token)", metavar="P", above=0, below=1)
    poisson_lambda: float | None = setting(None, "denoise: span lengths of text infilling ~ Poisson(L)", metavar="L",
                                           above=0)
    permute_sentences: bool | None = setting(None, "denoise: shuffle each example's sentences before infilling")
    whole_word_mask: bool | None = setting(False, "mask whole words (## pieces with their word)")
    short_seq_prob: float | None = setting(0.1, "chance that an NSP example is made shorter than seq_len", metavar="P",
                                           at_least=0, at_most=1)
    nsp_prob: float | None = setting(0.5, "chance that segment B is a random one", metavar="P", at_least=0, at_most=1)
    dupe_factor: int | None = setting(1, "passes over the training documents with different NSP pairings", metavar="N",
                                      at_least=1)
    min_doc_tokens: int | None = setting(None, "merge consecutive short documents of a file up to N tokens "
                                               "(off: seq_len; 0: never)", metavar="N", at_least=0)
    eval_fraction: float = setting(0.02, "fraction of documents held out for evaluation", metavar="F", at_least=0,
                                   below=1)
    eval_batches: int = setting(20, "evaluation batches at most (of batch_size examples)", metavar="N", at_least=1,
                                shapes_run=False)
    cache_dir: str | None = setting(None, "tokenized-corpus cache (off: $PLMKIT_CACHE/pretraining, or /clm)",
                                    metavar="DIR", shapes_run=False)

    @property
    def nsp(self) -> bool:
        return self.objective == "mlm+nsp"

    @property
    def group_tokens(self) -> int:
        """How many tokens consecutive short documents of a file are grouped up to (min_doc_tokens)."""
        return self.seq_len if self.min_doc_tokens is None else self.min_doc_tokens

    def validate(self) -> None:
        seen: dict[str, str] = {}
        for path in self.corpus:
            key = os.path.realpath(path)
            self.need(key not in seen, f"corpus: {path} is given twice (as {seen.get(key)}): its documents would count "
                                       "twice, and held-out ones would be trained on too")
            seen[key] = path


@dataclass
class PretrainRun(RunConfig):
    """A pretraining run: ``out``, ``model``, ``data`` (with the objective) and ``train``."""

    defaults = {"train": {"lr": 5e-4, "warmup_ratio": 0.06, "save_every": 1000}}  # BERT's
    variant_key = ("data", "objective")
    variant_defaults = {
        "clm": {  # small decoders trained from scratch (nanoGPT's choices)
            "model": {"preset": "gpt2-tiny", **unused("clm", "model")},
            "data": {"seq_len": 256, "batch_size": 16, "eval_fraction": 0.05, **unused("clm", "data")},
            "train": {"lr": 1e-3, "weight_decay": 0.1, "betas": (0.9, 0.95), "warmup_ratio": 0.05,
                      "schedule": "cosine", "min_lr_ratio": 0.1},
        },
        "denoise": {  # BART's noise (Lewis et al.), a small model's optimizer (see plmkit.training.denoise)
            "model": {"preset": "bart-tiny", **unused("denoise", "model")},
            "data": {"seq_len": 256, "batch_size": 16, "eval_fraction": 0.05, "mask_rate": 0.3, "poisson_lambda": 3.0,
                     "permute_sentences": True, **unused("denoise", "data")},
            "train": {"lr": 1e-3, "betas": (0.9, 0.98), "eps": 1e-6, "warmup_ratio": 0.05, "schedule": "linear"},
        },
    }

    model: PretrainModel
    data: PretrainData
    train: TrainConfig
    out: str | None = setting(None, "output directory (tokenizer, checkpoints, metrics, final model)", metavar="DIR",
                              shapes_run=False)

    def validate(self) -> None:
        if self.out is not None:
            self.out = str(self.out)
        objective = self.data.objective
        own = [(section, name, users, getattr(getattr(self, section), name))
               for section, names in OBJECTIVE_ONLY.items() for name, users in names.items()]
        given = [f"{section}.{name} ({', '.join(getattr(self, section).flag_spellings(name))}) is for "
                 f"{', '.join(users)}" for section, name, users, value in own
                 if objective not in users and value is not None]
        if given:
            raise ConfigError(f"not used by --objective {objective}: {'; '.join(given)}; leave them out")
        unset = [f"{section}.{name}" for section, name, users, value in own
                 if objective in users and value is None and self.default(section, name, objective) is not None]
        if unset:
            raise ConfigError(f"{', '.join(unset)}: --objective {objective} needs a value (null given)")
        for name in set(self.model.config) & {"vocab_size", "pad_token_id"}:
            raise ConfigError(f"model.{name}: the tokenizer decides it (data.vocab_size, --vocab-size, sizes a tokenizer "
                              "trained here)")
        pipeline(objective).check(self)

    def fingerprint_settings(self) -> tuple[dict[str, Any], list[str]]:
        """The settings of the fingerprint (`plmkit.training.fingerprint`), the model section resolved by
        its objective's pipeline into every field of the architecture, which a resume cannot change (its
        dropout rates and how a fresh model starts aside)."""
        from plmkit.training.fingerprint import settings_of
        settings, fixed = settings_of(self)
        settings = {k: v for k, v in settings.items() if not k.startswith("model.")}
        model = json.loads(json.dumps(pipeline(self.data.objective).model_fields(self.model)))
        free = _dropout_fields() | {"dropout", "unigram_bias_init", "sinusoidal_position_init"}
        settings.update({f"model.{k}": v for k, v in model.items()})
        return settings, fixed + [f"model.{k}" for k in model if k not in free] + ["data.objective"]

    def check_given(self, given: dict[str, set[str]]) -> None:
        if not self.data.eval_fraction:  # nothing held out to evaluate on
            because = "needs held-out documents: give --eval-fraction F"
            self.train.need_with(given["train"], ("eval_every", "early_stopping_patience", "metric_for_best",
                                                  "greater_is_better"), False, because)
            self.data.need_with(given["data"], ["eval_batches"], False, because)
        if self.data.objective == "mlm":
            self.data.need_with(given["data"], ("nsp_prob", "short_seq_prob", "dupe_factor"), False,
                                "shapes next-sentence pairs: it applies to --objective mlm+nsp only")


def _dropout_fields() -> set[str]:
    """The dropout rates of every family's config (`ModelConfig.dropout_fields`)."""
    from plmkit.models.registry import families
    return {name for family in families().values() for name in family.config.dropout_fields}


def pipeline(objective: str):
    """The module that pretrains with `objective` (imported on first use: it brings torch)."""
    return importlib.import_module(PIPELINES[objective])


def run(config: PretrainRun, resume: bool | str = False, accept_changes: bool = False, overwrite: bool = False):
    """Tokenizer, tokenized corpus, examples, model, Trainer: the whole `plmkit pretrain` run.
    resume: continue from OUT/checkpoints/latest (True) or from a given checkpoint directory, with the
    settings and data the run started with unless `accept_changes` (then continuing with the changes);
    overwrite: replace the run already in OUT (see plmkit.training.run_dir). Under torchrun, every rank
    runs it (plmkit.training.distributed)."""
    from plmkit.training import distributed
    resume, overwrite = distributed.resume_after_restart(resume, overwrite)  # (torchrun --max-restarts)
    with distributed.process_group(config.train.device):
        return _run(config, resume, accept_changes, overwrite)


def _run(config: PretrainRun, resume: bool | str, accept_changes: bool, overwrite: bool):
    if not config.out:
        raise ConfigError("say where the run goes: out (--out DIR)")
    if not config.data.corpus:
        raise ConfigError("no corpus: give --corpus PATH (files or directories of .txt/.jsonl)")
    from plmkit.data.corpus import iter_documents
    from plmkit.training import distributed

    refuse_overwriting_inputs(config.out, "--out", [("--tokenizer", config.data.tokenizer),
                                                    *(("--corpus", c) for c in config.data.corpus)])
    distributed.check_batch_size(config.data.batch_size)
    next(iter_documents(config.data.corpus))  # fail fast, with a clear DataError, on a missing or empty corpus
    if config.data.cache_dir:  # found now, not after the tokenizer is trained
        cache = Path(config.data.cache_dir).resolve()
        for flag, given in [("--tokenizer", config.data.tokenizer), *(("--corpus", c) for c in config.data.corpus)]:
            if given is not None and cache.is_relative_to(Path(given).resolve()):  # its files would be read as input
                raise ConfigError(f"--cache-dir {config.data.cache_dir} is in the input {flag} {given}: its files "
                                  f"would be read as part of it; give another --cache-dir")
        check_creatable(config.data.cache_dir, "--cache-dir")
    with claimed(config.out, "pretrain", bool(resume), overwrite) as out:  # one owner, an earlier run kept
        fp = fingerprint(config, {"--corpus": config.data.corpus, "--tokenizer": [config.data.tokenizer]})
        source = tokenizer_source(config, fp)
        with distributed.main_first():
            if overwrite and distributed.is_main():
                clear(out)  # (the tokenizer too, before the new one is trained into it)
            elif not resume and distributed.is_main():
                retire_foreign_tokenizer(out / "tokenizer", config, source)
            check_run_dir(out, config, resume, fp, accept_changes)
        trains_tokenizer = not config.data.tokenizer and not (out / "tokenizer" / "tokenizer.json").is_file()
        try:
            return pipeline(config.data.objective).pretrain(config, resume, accept_changes, fingerprint=fp,
                                                            on_start=lambda: config.save(out / RUN_FILE))
        finally:  # (a start that fails after training it leaves it, for the next start of the same source)
            if trains_tokenizer and distributed.is_main() and (out / "tokenizer" / "tokenizer.json").is_file():
                with contextlib.suppress(OSError):  # without the record, the next fresh run trains another
                    record_source(out / "tokenizer", source)


def tokenizer_source(config: PretrainRun, fp: dict[str, Any]) -> dict[str, Any]:
    """What a tokenizer trained into OUT/tokenizer is made of: the corpus (its files' digests in the
    fingerprint `fp`) and the settings that shape it (`plmkit.training.vocab.record_source`): its size and
    the pipeline's own (`tokenizer_settings`: BERT's lowercasing, the model_max_length of a decoder's or BART's)."""
    data = config.data
    settings = {"trained_by": PIPELINES[data.objective], "vocab_size": data.vocab_size or DEFAULT_VOCAB_SIZE,
                **pipeline(data.objective).tokenizer_settings(config)}
    return {"corpus": fp["data"]["--corpus"], "settings": settings}


def retire_foreign_tokenizer(directory: Path, config: PretrainRun, source: dict[str, Any]) -> None:
    """Before a fresh run: remove the tokenizer an earlier start left in `directory` unless this run would
    train the same one (the same corpus and settings), saying why; the run then trains its own."""
    if not directory.exists():
        return
    given = config.data.tokenizer
    why = f"this run uses --tokenizer {given}" if given else source_mismatch(directory, source)
    if why is None:
        return
    log.warning(f"{directory} (left by an earlier start) is not this run's tokenizer: {why}; "
                f"{'it is removed' if given else 'a new one is trained in its place'}")
    retire_dir(directory)


def format_result(result) -> str:
    """The summary lines of a finished run (any objective)."""
    return importlib.import_module(type(result).__module__).format_result(result)


# ------------------------------------------------------------------------------------------ resume
def check_run_dir(out: Path, config: PretrainRun, resume: bool | str, fp: dict | None = None,
                  accept_changes: bool = False) -> None:
    """Refuse, before anything in `out` is overwritten, a fresh run over another run's checkpoints
    and a resumed run that differs from the one it continues (`plmkit.training.fingerprint`; for a
    checkpoint of a plmkit that kept no fingerprint, its model and data settings in the saved run file)."""
    from plmkit.training import fingerprint as fingerprints
    from plmkit.training.checkpoint import list_checkpoints, resume_checkpoint

    if not list_checkpoints(out / "checkpoints"):
        return
    if not resume:
        raise TrainingError(f"{out} already holds checkpoints of another run: add --resume to continue it, "
                            "or give an empty --out")
    checkpoint = resume_checkpoint(out / "checkpoints", resume)
    if checkpoint is not None and fp is not None and fingerprints.read(checkpoint) is not None:
        fingerprints.check_resume(checkpoint, fp, accept_changes)
        return
    saved = saved_run(out)
    if saved is None:
        return
    path, given, before = saved
    changed = [f"model.{key} {value!r} -> {now!r}" for key, value, now in _changes(
        pipeline(before.data.objective).model_fields(before.model),
        pipeline(config.data.objective).model_fields(config.model))]
    now_data = config.data.to_dict()
    changed += [f"data.{key} {value!r} -> {now!r}" for key, value, now in _changes(
        {k: v for k, v in before.data.to_dict().items() if k in given.get("data", {})}, now_data)
        if key not in TOKENIZER_TRAINING_KEYS]  # the run's tokenizer exists by now (see the pipelines)
    if changed:
        raise ConfigError(f"{path}: a resumed run keeps its model and data settings; changed: {', '.join(changed)}")


def _changes(before: dict[str, Any], now: dict[str, Any]):
    """(key, before, now) for each key of `before` whose value differs in `now` (JSON-compared)."""
    for key, value in before.items():
        if key in now and json.dumps(value) != json.dumps(now[key]):
            yield key, value, now[key]


def saved_run(out: Path) -> tuple[Path, dict[str, Any], PretrainRun] | None:
    """(file, its dict, the run) of the run that wrote `out`: its run.yaml, or the pretrain_config.json
    (BERT) / clm_config.json (decoders) that earlier plmkit versions wrote; None if there is none."""
    for name in (RUN_FILE, *LEGACY_RUN_FILES):
        path = out / name
        if path.is_file():
            values = read_run_file(path)
            if name == "clm_config.json":
                values = _from_clm_arguments(values)
            return path, values, PretrainRun.build(values, source=str(path))
    return None


def _from_clm_arguments(args: dict[str, Any]) -> dict[str, Any]:
    """clm_config.json (the keyword arguments of the old run_clm_pretraining) as a run dict."""
    data = {key: args[key] for key in ("corpus", "tokenizer", "vocab_size", "seq_len", "batch_size", "eval_fraction",
                                       "eval_batches") if key in args}
    model = {key: args[key] for key in ("preset", "dropout") if key in args}
    return {"model": {**model, **(args.get("model_overrides") or {})}, "data": {"objective": "clm", **data},
            "train": args.get("train") or {}}


__all__ = ["OBJECTIVE_ONLY", "OBJECTIVES", "PIPELINES", "PretrainData", "PretrainModel", "PretrainRun",
           "check_run_dir", "format_result", "pipeline", "run", "saved_run"]
