"""BERT pretraining (masked LM + next-sentence prediction, or masked LM only) from raw text.

`run_pretraining(PretrainConfig)` does the whole run; `plmkit pretrain` is a thin CLI over it.

A run file (YAML or JSON) is `PretrainConfig.to_dict()`: sections ``model`` (a preset
plus any BertConfig field), ``data`` (`PretrainDataConfig`) and ``train`` (`TrainConfig`),
and optionally ``out``. Unknown keys are errors that name the key.

Output directory::

    tokenizer/            WordPiece tokenizer trained on the corpus (when none was given); reused
    pretrain_config.json  the effective run file
    model/                final model: config.json, model.safetensors, tokenizer files (HF-loadable)
    metrics.jsonl, training_curves.png, checkpoints/, train_config.json   (see Trainer)

The tokenized corpus is cached under `data.cache_dir` (default ``$PLMKIT_CACHE/pretraining``,
i.e. ``~/.cache/plmkit/pretraining``), shared between runs on the same corpus and tokenizer.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from plmkit.data.corpus import iter_documents, iter_texts
from plmkit.data.loader import BatchLoader
from plmkit.data.masking import PretrainingCollator
from plmkit.data.nsp import PretrainingDataset, group_documents, nsp_instances, packed_instances
from plmkit.data.shards import TokenShards, build_token_shards
from plmkit.data.splits import split_documents
from plmkit.errors import ConfigError, TrainingError
from plmkit.utils.constants import IGNORE_INDEX
from plmkit.models.bert import BERT_PRESETS, BertConfig, BertForMaskedLM, BertForPreTraining
from plmkit.nn.embeddings import sinusoidal_table
from plmkit.training.checkpoint import list_checkpoints
from plmkit.training.config import TrainConfig, check_field_types
from plmkit.training.rng import seed_everything
from plmkit.training.trainer import Trainer, TrainResult, format_duration
from plmkit.utils.files import atomic_write_text
from plmkit.utils.paths import default_cache_dir

log = logging.getLogger(__name__)

OBJECTIVES = ("mlm+nsp", "mlm")
DEFAULT_VOCAB_SIZE = 8192  # of a tokenizer trained here

# Pretraining defaults that differ from TrainConfig's fine-tuning defaults.
TRAIN_DEFAULTS = {"lr": 5e-4, "warmup_ratio": 0.06, "weight_decay": 0.01, "save_every": 1000, "log_every": 10}
MODEL_DEFAULTS = {"preset": "bert-mini", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
                  "unigram_bias_init": True, "sinusoidal_position_init": False}
# Model-section keys that choose how the fresh model is initialised (not BertConfig fields).
INIT_KEYS = {"preset", "unigram_bias_init", "sinusoidal_position_init"}
# Data-section keys that only shape a tokenizer trained on the corpus.
TOKENIZER_TRAINING_KEYS = {"vocab_size", "lowercase"}


@dataclass
class PretrainDataConfig:
    """Corpus, tokenizer, example construction, masking and evaluation split."""

    corpus: list[str] = field(default_factory=list)  # files or directories (.txt, .txt.gz, .jsonl[.gz])
    tokenizer: str | None = None  # tokenizer directory; None: train WordPiece on the corpus into OUT/tokenizer
    vocab_size: int | None = None  # for a tokenizer trained here; None: DEFAULT_VOCAB_SIZE
    lowercase: bool | None = None  # for a tokenizer trained here; None: True
    objective: str = "mlm+nsp"
    seq_len: int = 128
    batch_size: int = 32
    mask_rate: float = 0.15
    whole_word_mask: bool = False
    short_seq_prob: float = 0.1
    nsp_prob: float = 0.5  # chance that B is a random segment
    dupe_factor: int = 1  # passes over the training documents with different NSP pairings
    min_doc_tokens: int | None = None  # merge consecutive documents of a file up to this many tokens; None: seq_len
    eval_fraction: float = 0.02  # of documents held out for evaluation
    eval_batches: int = 20  # evaluation batches at most (of batch_size examples)
    cache_dir: str | None = None  # tokenized-corpus cache; None: $PLMKIT_CACHE/pretraining

    def __post_init__(self) -> None:
        if isinstance(self.corpus, (str, os.PathLike)):
            self.corpus = [str(self.corpus)]
        self.corpus = [str(p) for p in self.corpus]
        check_field_types(self, "data")

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(f"data: {message}")

        need(self.objective in OBJECTIVES, f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        need(_int(self.seq_len) and self.seq_len >= 8, f"seq_len must be an integer >= 8, got {self.seq_len!r}")
        need(_int(self.batch_size) and self.batch_size >= 1, f"batch_size must be a positive integer, got {self.batch_size!r}")
        need(self.vocab_size is None or (_int(self.vocab_size) and self.vocab_size >= 100),
             f"vocab_size must be an integer >= 100, got {self.vocab_size!r}")
        need(0 < self.mask_rate < 1, f"mask_rate must be in (0, 1), got {self.mask_rate}")
        need(0 <= self.short_seq_prob <= 1, f"short_seq_prob must be in [0, 1], got {self.short_seq_prob}")
        need(0 <= self.nsp_prob <= 1, f"nsp_prob must be in [0, 1], got {self.nsp_prob}")
        need(_int(self.dupe_factor) and self.dupe_factor >= 1, f"dupe_factor must be a positive integer, got {self.dupe_factor!r}")
        need(self.min_doc_tokens is None or (_int(self.min_doc_tokens) and self.min_doc_tokens >= 0),
             f"min_doc_tokens must be an integer >= 0 or None, got {self.min_doc_tokens!r}")
        need(0 <= self.eval_fraction < 1, f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        need(_int(self.eval_batches) and self.eval_batches >= 1, f"eval_batches must be a positive integer, got {self.eval_batches!r}")

    @property
    def nsp(self) -> bool:
        return self.objective == "mlm+nsp"


@dataclass
class PretrainConfig:
    """A whole pretraining run: ``model`` (preset + BertConfig overrides), ``data``, ``train``, ``out``."""

    out: str | None = None
    model: dict[str, Any] = field(default_factory=lambda: dict(MODEL_DEFAULTS))
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    train: TrainConfig | None = None

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "run file") -> "PretrainConfig":
        """Build from the run-file dict; section defaults fill what is missing."""
        sections = {"out", "model", "data", "train"}
        _reject_unknown(values, sections, f"{source}: unknown top-level key")
        for name in ("model", "data", "train"):
            if not isinstance(values.get(name, {}), Mapping):
                raise ConfigError(f"{source}: section {name!r} must be a mapping, got {type(values[name]).__name__}")
        model = {**MODEL_DEFAULTS, **values.get("model", {})}
        _reject_unknown(model, INIT_KEYS | {f.name for f in dataclasses.fields(BertConfig)},
                        f"{source}: unknown model key")
        if model["preset"] not in BERT_PRESETS:
            raise ConfigError(f"{source}: unknown model preset {model['preset']!r}; choose one of {', '.join(BERT_PRESETS)}")
        for key in INIT_KEYS - {"preset"}:
            if not isinstance(model[key], bool):
                raise ConfigError(f"{source}: model {key} must be true or false, got {model[key]!r}")
        # the BertConfig is built for real once the tokenizer is known; check its fields now, before any work
        check_field_types(BertConfig.from_preset(model["preset"], **{k: v for k, v in model.items() if k not in INIT_KEYS}),
                          f"{source}: model")
        data = values.get("data", {})
        _reject_unknown(data, {f.name for f in dataclasses.fields(PretrainDataConfig)}, f"{source}: unknown data key")
        train = values.get("train", {})
        _reject_unknown(train, {f.name for f in dataclasses.fields(TrainConfig)}, f"{source}: unknown train key")
        out = values.get("out")
        return cls(out=None if out is None else str(out), model=model, data=PretrainDataConfig(**data),
                   train=TrainConfig.with_defaults(TRAIN_DEFAULTS, train))

    def to_dict(self) -> dict[str, Any]:
        return {"out": self.out, "model": dict(self.model), "data": dataclasses.asdict(self.data),
                "train": self.train.to_dict() if self.train is not None else {}}


def load_run_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML or JSON run file into a dict (not validated: see `PretrainConfig.from_dict`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read run file {path}: {err.strerror or err}") from None
    try:
        if path.suffix == ".json":
            values = json.loads(text)
        else:
            import yaml
            values = yaml.load(text, Loader=_run_file_loader())
    except Exception as err:  # yaml/json syntax errors
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {err}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a run file must be a mapping with sections model/data/train")
    return values


def _run_file_loader():
    """yaml.SafeLoader that also reads exponent floats without a dot (``5e-4``, ``1E-8``) as numbers,
    as YAML 1.2 and JSON do; PyYAML's YAML 1.1 rules would leave them strings."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
                                 list("-+0123456789"))
    return Loader


@dataclass
class PretrainResult:
    train: TrainResult
    out_dir: Path
    model_dir: Path
    tokenizer_dir: Path
    data_dir: Path
    train_examples: int
    eval_examples: int


# ---------------------------------------------------------------------------------------- the run
def run_pretraining(cfg: PretrainConfig, resume: bool = False) -> PretrainResult:
    """Tokenizer, token cache, examples, model, Trainer: the whole `plmkit pretrain` run."""
    if not cfg.out:
        raise ConfigError("say where the run goes: out (--out DIR)")
    data, train_cfg = cfg.data, cfg.train
    if train_cfg is None:
        raise ConfigError("the run has no train section")
    if not data.corpus:
        raise ConfigError("no corpus: give --corpus PATH (files or directories of .txt/.jsonl)")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    next(iter_documents(data.corpus))  # fail fast, with a clear DataError, on a missing or empty corpus
    _check_run_dir(out, cfg, resume)
    atomic_write_text(out / "pretrain_config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")

    tokenizer, tokenizer_dir = _tokenizer(data, out)
    cache_root = Path(data.cache_dir) if data.cache_dir else default_cache_dir() / "pretraining"
    shards = build_token_shards(data.corpus, tokenizer, cache_root, progress=train_cfg.progress_bar)
    train_set, eval_set = build_datasets(shards, tokenizer, data, train_cfg.seed)
    log.info(f"examples: {len(train_set):,} train, {len(eval_set) if eval_set else 0:,} held-out "
             f"({data.objective}, seq_len {data.seq_len})")

    collate = PretrainingCollator(tokenizer, data.mask_rate, data.whole_word_mask, nsp=data.nsp)
    loader = BatchLoader(train_set, data.batch_size, collate, shuffle=True, seed=train_cfg.seed,
                         drop_last=len(train_set) >= data.batch_size)
    evaluate = None
    if eval_set is not None:
        evaluate = make_evaluator(eval_set, tokenizer, data, seed=train_cfg.seed)
    elif train_cfg.eval_every is not None:
        raise ConfigError("eval_every is set but eval_fraction is 0: there is no held-out split to evaluate on")

    seed_everything(train_cfg.seed)
    model = build_model(cfg.model, tokenizer, data)
    initialise(model, cfg.model, shards)  # (a resumed run then loads its checkpoint over it)
    trainer = Trainer(model, train_cfg, loader, out, evaluate=evaluate, save_extra=tokenizer.save_pretrained)
    result = trainer.train(resume=resume)
    log.info(f"  tokenizer: {tokenizer_dir}   tokenized corpus: {shards.directory}")
    log.info(f"  metrics: {out / 'metrics.jsonl'}   checkpoints: {out / 'checkpoints'}")
    return PretrainResult(result, out, result.model_dir, tokenizer_dir, shards.directory, len(train_set),
                          len(eval_set) if eval_set else 0)


def _check_run_dir(out: Path, cfg: PretrainConfig, resume: bool) -> None:
    """Refuse, before anything in `out` is overwritten, a fresh run over another run's checkpoints
    and a resumed run whose model or data settings differ from the ones it was started with."""
    if not list_checkpoints(out / "checkpoints"):
        return
    if not resume:
        raise TrainingError(f"{out} already holds checkpoints of another run: add --resume to continue it, "
                            "or give an empty --out")
    saved_file = out / "pretrain_config.json"
    if not saved_file.is_file():
        return
    saved, now = json.loads(saved_file.read_text()), json.loads(json.dumps(cfg.to_dict()))
    changed = [f"{section}.{key} {saved[section][key]!r} -> {value!r}"
               for section in ("model", "data") for key, value in now[section].items()
               if key in saved.get(section, {}) and saved[section][key] != value
               and key not in TOKENIZER_TRAINING_KEYS]  # the run's tokenizer exists by now; see _tokenizer
    if changed:
        raise ConfigError(f"{saved_file}: a resumed run keeps its model and data settings; changed: {', '.join(changed)}")


def _tokenizer(data: PretrainDataConfig, out: Path):
    from plmkit.tokenization import Tokenizer

    if data.tokenizer:
        tokenizer = Tokenizer.from_pretrained(data.tokenizer)
        missing = [name for name in ("cls", "sep", "mask", "pad") if getattr(tokenizer, f"{name}_token_id") is None]
        if missing:
            raise ConfigError(f"tokenizer {data.tokenizer} has no {', '.join(f'[{m.upper()}]' for m in missing)} "
                              "token(s), which BERT pretraining needs; give a WordPiece tokenizer "
                              "(plmkit tokenizer train --type wordpiece) or leave --tokenizer out to train one")
        _log_ignored(data, tokenizer, f"the tokenizer in {data.tokenizer} is used as it is",
                     "vocab_size and lowercase only shape a tokenizer trained here")
        return tokenizer, Path(data.tokenizer)
    directory = out / "tokenizer"
    if (directory / "tokenizer.json").is_file():
        log.info(f"reusing the tokenizer trained earlier in {directory}")
        tokenizer = Tokenizer.from_pretrained(directory)
        _log_ignored(data, tokenizer, f"the tokenizer trained earlier in {directory} is reused",
                     "delete it to train a new one")
        return tokenizer, directory
    vocab_size, lowercase = data.vocab_size or DEFAULT_VOCAB_SIZE, data.lowercase is not False
    log.info(f"training a WordPiece tokenizer (vocab {vocab_size}, "
             f"{'lowercase' if lowercase else 'cased'}) on the corpus -> {directory}")
    tokenizer = Tokenizer.train_wordpiece(iter_texts(data.corpus), vocab_size, lowercase=lowercase)
    tokenizer.save_pretrained(directory)
    return tokenizer, directory


def _log_ignored(data: PretrainDataConfig, tokenizer, why: str, advice: str) -> None:
    """One line naming the tokenizer-training settings given (not left at None) that the tokenizer
    in use does not match."""
    normalizer = tokenizer.backend_tokenizer.normalizer
    lowercases = normalizer is not None and normalizer.normalize_str("A") == "a"
    ignored = [f"{key} {json.dumps(value)}" for key, value, actual in
               (("vocab_size", data.vocab_size, len(tokenizer)), ("lowercase", data.lowercase, lowercases))
               if value is not None and value != actual]
    if ignored:
        log.warning(f"{' and '.join(ignored)} {'is' if len(ignored) == 1 else 'are'} ignored: {why} "
                    f"({len(tokenizer)} tokens, {'lowercase' if lowercases else 'cased'}); {advice}")


def build_datasets(shards: TokenShards, tokenizer, data: PretrainDataConfig,
                   seed: int) -> tuple[PretrainingDataset, PretrainingDataset | None]:
    """(train, held-out or None) datasets: documents split first, then examples built per split."""
    need = 2 if data.nsp else 1
    min_tokens = data.seq_len if data.min_doc_tokens is None else data.min_doc_tokens
    groups = group_documents(shards, min_tokens)
    train_ids, eval_ids = split_documents(len(groups), data.eval_fraction, seed, min_eval=need, min_train=need)
    train_docs, eval_docs = [groups[i] for i in train_ids], [groups[i] for i in eval_ids]

    def instances(docs, split_seed, dupe):
        if data.nsp:
            return nsp_instances(shards, docs, data.seq_len, split_seed, data.short_seq_prob, data.nsp_prob, dupe)
        return packed_instances(shards, docs, data.seq_len)

    def dataset(rows):
        return PretrainingDataset(shards, rows, tokenizer.cls_token_id, tokenizer.sep_token_id)

    train = dataset(instances(train_docs, seed, data.dupe_factor))
    if len(eval_docs) == 0:
        return train, None
    rows = instances(eval_docs, seed + 1, 1)
    rows = rows[np.random.default_rng(seed + 2).permutation(len(rows))]  # a bounded eval sees every part
    return train, dataset(rows)


def build_model(model_cfg: Mapping[str, Any], tokenizer, data: PretrainDataConfig):
    overrides = {k: v for k, v in model_cfg.items() if k not in INIT_KEYS}
    overrides.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    overrides.setdefault("max_position_embeddings", max(512, data.seq_len))
    config = BertConfig.from_preset(model_cfg["preset"], **overrides)
    if config.max_position_embeddings < data.seq_len:
        raise ConfigError(f"seq_len={data.seq_len} exceeds max_position_embeddings={config.max_position_embeddings}")
    return (BertForPreTraining if data.nsp else BertForMaskedLM)(config)


def initialise(model, model_cfg: Mapping[str, Any], shards: TokenShards) -> None:
    """Optional starting points that save a short run its first steps (the weights stay plain BERT).

    unigram_bias_init: the MLM decoder bias is the corpus's log unigram distribution (add-one
    smoothed), so step 0 already predicts word frequencies and training goes straight to context.
    sinusoidal_position_init: the learned position table starts as sinusoids (at the token
    embeddings' scale), whose dot products already encode relative distance.
    """
    embeddings, decoder = model.bert.embeddings, model.mlm.decoder
    if model_cfg.get("unigram_bias_init", True):
        counts = np.bincount(shards.tokens, minlength=decoder.out_features)[:decoder.out_features] + 1.0  # (V,)
        with torch.no_grad():
            decoder.bias.copy_(torch.from_numpy(np.log(counts / counts.sum())))
        log.info(f"MLM decoder bias initialised to the log unigram distribution of {len(shards.tokens):,} tokens")
    if model_cfg.get("sinusoidal_position_init", False):
        table = embeddings.position.weight  # (P, D)
        with torch.no_grad():
            table.copy_(sinusoidal_table(*table.shape) * (model.config.initializer_range * math.sqrt(2)))
        log.info("position embeddings initialised to sinusoids")


def make_evaluator(dataset: PretrainingDataset, tokenizer, data: PretrainDataConfig, seed: int):
    """`evaluate(model)`: MLM accuracy / loss / perplexity and NSP accuracy / loss on at most
    `eval_batches` held-out batches, with the same masks every time (a private seeded RNG)."""
    n = min(len(dataset), data.eval_batches * data.batch_size)

    def evaluate(model) -> dict[str, float]:
        device = next(model.parameters()).device
        collate = PretrainingCollator(tokenizer, data.mask_rate, data.whole_word_mask, nsp=data.nsp,
                                      generator=torch.Generator().manual_seed(seed + 12345))
        mlm_loss = mlm_correct = nsp_loss = nsp_correct = 0.0
        mlm_count = nsp_count = 0
        for start in range(0, n, data.batch_size):
            batch = collate([dataset[i] for i in range(start, min(n, start + data.batch_size))])
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            output = model(**batch)
            labels = batch["labels"][batch["labels"] != IGNORE_INDEX]
            logits = (output.prediction_logits if data.nsp else output.logits).float()
            mlm_loss += float(F.cross_entropy(logits, labels, reduction="sum"))
            mlm_correct += float((logits.argmax(-1) == labels).sum())
            mlm_count += labels.numel()
            if data.nsp:
                nsp_logits, target = output.seq_relationship_logits.float(), batch["next_sentence_label"]
                nsp_loss += float(F.cross_entropy(nsp_logits, target, reduction="sum"))
                nsp_correct += float((nsp_logits.argmax(-1) == target).sum())
                nsp_count += target.numel()
        metrics = {"mlm_accuracy": mlm_correct / max(mlm_count, 1), "mlm_loss": mlm_loss / max(mlm_count, 1)}
        metrics["mlm_perplexity"] = math.exp(min(metrics["mlm_loss"], 50.0))
        if data.nsp:
            metrics.update(nsp_accuracy=nsp_correct / max(nsp_count, 1), nsp_loss=nsp_loss / max(nsp_count, 1))
        return metrics

    return evaluate


def format_result(result: PretrainResult) -> str:
    r = result.train
    lines = [f"pretraining done: {r.step} steps in {format_duration(r.elapsed)}, {r.tokens_per_s:,.0f} tokens/s",
             f"  examples: {result.train_examples:,} train, {result.eval_examples:,} held-out"]
    if r.eval_metrics:
        lines.append("  held-out: " + "  ".join(f"{k.removeprefix('eval_')}={v:.4g}" for k, v in r.eval_metrics.items()))
    lines.append(f"  model (HF-loadable): {result.model_dir}")
    return "\n".join(lines)


def _reject_unknown(values: Mapping[str, Any], known: set[str], what: str) -> None:
    unknown = [k for k in values if k not in known]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"{what}(s) {', '.join(hints)}")


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
