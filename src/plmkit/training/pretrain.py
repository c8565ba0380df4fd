"""BERT pretraining (masked LM + next-sentence prediction, or masked LM only) from raw text: the
pipeline of `plmkit.recipes.pretrain` for the objectives ``mlm+nsp`` and ``mlm``.

`pretrain(config)` takes a `PretrainRun` (sections model / data / train, and out) that the recipe
has checked (`check`) and whose output directory it has prepared.

Output directory::

    tokenizer/            WordPiece tokenizer trained on the corpus (when none was given); reused on a
                          resume, or by a rerun after a failed start on the same corpus and settings
    run.yaml              the effective run file (written by the recipe)
    model/                final model: config.json, model.safetensors, tokenizer files (HF-loadable)
    metrics.jsonl, training_curves.png, checkpoints/, train_config.json   (see Trainer)

The tokenized corpus is cached under `data.cache_dir` (default ``$PLMKIT_CACHE/pretraining``,
i.e. ``~/.cache/plmkit/pretraining``), shared between runs on the same corpus and tokenizer.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from plmkit.data.corpus import iter_texts
from plmkit.data.loader import BatchLoader
from plmkit.data.masking import PretrainingCollator
from plmkit.data.nsp import PretrainingDataset, nsp_instances, packed_instances, split_examples
from plmkit.data.shards import TokenShards, build_token_shards
from plmkit.errors import ConfigError
from plmkit.utils.constants import DEFAULT_VOCAB_SIZE, IGNORE_INDEX
from plmkit.models.bert import BERT_PRESETS, BertConfig, BertForMaskedLM, BertForPreTraining
from plmkit.nn.embeddings import sinusoidal_table
from plmkit.training import distributed
from plmkit.training.config import check_field_types
from plmkit.training.fingerprint import with_tokenizer
from plmkit.training.rng import seed_everything
from plmkit.training.trainer import Trainer, TrainResult, format_duration
from plmkit.training.vocab import REUSED_ADVICE
from plmkit.utils.paths import default_cache_dir
from plmkit.utils.settings import check_known

log = logging.getLogger(__name__)


def check(config) -> None:
    """Refuse, before any work, a model section BERT cannot build: an unknown preset, a config field
    BertConfig does not have (named, with a close match), a value of the wrong type."""
    model = config.model
    if model.preset not in BERT_PRESETS:
        raise ConfigError(f"unknown model preset {model.preset!r} for --objective {config.data.objective}; "
                          f"choose one of {', '.join(BERT_PRESETS)}")
    check_known(model.config, [f.name for f in dataclasses.fields(BertConfig)] + model.field_names(), "model")
    check_field_types(bert_config(model), "model")  # built for real once the tokenizer is known


def bert_config(model, **fields) -> BertConfig:
    """The BertConfig of a `PretrainModel`: its preset, `dropout` for every dropout rate, `norm_first`,
    then its own config fields (more specific, they win), then `fields`."""
    overrides = BertConfig.from_preset(model.preset).dropout_overrides(model.dropout)
    if model.norm_first is not None:
        overrides["norm_first"] = model.norm_first
    return BertConfig.from_preset(model.preset, **{**overrides, **model.config, **fields})


def tokenizer_settings(config) -> dict[str, Any]:
    """What shapes the tokenizer this pipeline trains, besides the corpus and its size (the recipe records it)."""
    return {"lowercase": config.data.lowercase is not False}


def model_fields(model) -> dict[str, Any]:
    """What a fresh model gets from a `PretrainModel` (the preset resolved into every BertConfig
    field), for the recipe's check that a resumed run keeps its model."""
    fields = {k: v for k, v in bert_config(model).to_dict().items() if k not in ("model_type", "vocab_size",
                                                                                  "pad_token_id")}
    return {"preset": model.preset, "unigram_bias_init": model.unigram_bias_init,
            "sinusoidal_position_init": model.sinusoidal_position_init, **fields}


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
def pretrain(config, resume: bool | str = False, accept_changes: bool = False, **trainer_options) -> PretrainResult:
    """Tokenizer, token cache, examples, model, Trainer: a BERT pretraining run in `config.out`."""
    data, train_cfg, out = config.data, config.train, Path(config.out)
    with distributed.main_first():  # rank 0 trains the tokenizer and fills the cache, the others read them
        tokenizer, tokenizer_dir = _tokenizer(data, out)
        cache_root = Path(data.cache_dir) if data.cache_dir else default_cache_dir() / "pretraining"
        shards = build_token_shards(data.corpus, tokenizer, cache_root,
                                    progress=train_cfg.progress_bar and distributed.is_main())
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
    model = build_model(config.model, tokenizer, data)
    initialise(model, config.model, shards)  # (a resumed run then loads its checkpoint over it)
    trainer = Trainer(model, train_cfg, loader, out, evaluate=evaluate, save_extra=tokenizer.save_pretrained,
                      **with_tokenizer(trainer_options, tokenizer_dir))
    result = trainer.train(resume, accept_changes)
    log.info(f"  tokenizer: {tokenizer_dir}   tokenized corpus: {shards.directory}")
    log.info(f"  metrics: {out / 'metrics.jsonl'}   checkpoints: {out / 'checkpoints'}")
    return PretrainResult(result, out, result.model_dir, tokenizer_dir, shards.directory, len(train_set),
                          len(eval_set) if eval_set else 0)


def _tokenizer(data, out: Path):
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
        _log_ignored(data, tokenizer, f"the tokenizer trained earlier in {directory} is reused", REUSED_ADVICE)
        return tokenizer, directory
    vocab_size, lowercase = data.vocab_size or DEFAULT_VOCAB_SIZE, data.lowercase is not False
    log.info(f"training a WordPiece tokenizer (vocab {vocab_size}, "
             f"{'lowercase' if lowercase else 'cased'}) on the corpus -> {directory}")
    tokenizer = Tokenizer.train_wordpiece(iter_texts(data.corpus), vocab_size, lowercase=lowercase)
    tokenizer.save_pretrained(directory)
    return tokenizer, directory


def _log_ignored(data, tokenizer, why: str, advice: str) -> None:
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


def build_datasets(shards: TokenShards, tokenizer, data,
                   seed: int) -> tuple[PretrainingDataset, PretrainingDataset | None]:
    """(train, held-out or None) datasets: documents split first, then examples built per split."""
    def instances(docs, split_seed, held_out):
        if data.nsp:
            return nsp_instances(shards, docs, data.seq_len, split_seed, data.short_seq_prob, data.nsp_prob,
                                 1 if held_out else data.dupe_factor)
        return packed_instances(shards, docs, data.seq_len)

    def dataset(rows):
        return PretrainingDataset(shards, rows, tokenizer.cls_token_id, tokenizer.sep_token_id)

    train, held_out = split_examples(shards, data.group_tokens, data.eval_fraction, seed, instances,
                                     need=2 if data.nsp else 1)
    return dataset(train), None if held_out is None else dataset(held_out)


def build_model(model, tokenizer, data):
    """A fresh BertForPreTraining (mlm+nsp) or BertForMaskedLM of the `model` section for `tokenizer`."""
    positions = {} if "max_position_embeddings" in model.config else {"max_position_embeddings": max(512, data.seq_len)}
    config = bert_config(model, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **positions)
    if config.max_position_embeddings < data.seq_len:
        raise ConfigError(f"seq_len={data.seq_len} exceeds max_position_embeddings={config.max_position_embeddings}")
    return (BertForPreTraining if data.nsp else BertForMaskedLM)(config)


def initialise(model, model_cfg, shards: TokenShards) -> None:
    """Optional starting points that save a short run its first steps (the weights stay plain BERT).

    unigram_bias_init: the MLM decoder bias is the corpus's log unigram distribution (add-one
    smoothed), so step 0 already predicts word frequencies and training goes straight to context.
    sinusoidal_position_init: the learned position table starts as sinusoids (at the token
    embeddings' scale), whose dot products already encode relative distance.
    """
    embeddings, decoder = model.bert.embeddings, model.mlm.decoder
    if model_cfg.unigram_bias_init:
        counts = np.bincount(shards.tokens, minlength=decoder.out_features)[:decoder.out_features] + 1.0  # (V,)
        with torch.no_grad():
            decoder.bias.copy_(torch.from_numpy(np.log(counts / counts.sum())))
        log.info(f"MLM decoder bias initialised to the log unigram distribution of {len(shards.tokens):,} tokens")
    if model_cfg.sinusoidal_position_init:
        table = embeddings.position.weight  # (P, D)
        with torch.no_grad():
            table.copy_(sinusoidal_table(*table.shape) * (model.config.initializer_range * math.sqrt(2)))
        log.info("position embeddings initialised to sinusoids")


def make_evaluator(dataset: PretrainingDataset, tokenizer, data, seed: int):
    """`evaluate(model)`: MLM accuracy / loss / perplexity and NSP accuracy / loss on at most
    `eval_batches` held-out batches, with the same masks every time (a private seeded RNG). Under
    torchrun each rank evaluates its rows of every batch and the sums are added up across ranks."""
    n = min(len(dataset), data.eval_batches * data.batch_size)
    part = distributed.EvalShard()

    @distributed.sharded_evaluation
    def evaluate(model) -> dict[str, float]:
        device = next(model.parameters()).device
        collate = PretrainingCollator(tokenizer, data.mask_rate, data.whole_word_mask, nsp=data.nsp,
                                      generator=torch.Generator().manual_seed(seed + 12345))
        sums = [0.0] * 6  # mlm: loss, correct, count; nsp: loss, correct, count
        for start in range(0, n, data.batch_size):
            batch, own = part.rows(collate([dataset[i] for i in range(start, min(n, start + data.batch_size))]))
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            output = model(**batch)
            if not own:
                continue
            labels = batch["labels"][batch["labels"] != IGNORE_INDEX]
            logits = (output.prediction_logits if data.nsp else output.logits).float()
            heads = [(logits, labels)]
            if data.nsp:
                heads.append((output.seq_relationship_logits.float(), batch["next_sentence_label"]))
            for k, (head, target) in enumerate(heads):
                sums[3 * k] += float(F.cross_entropy(head, target, reduction="sum"))
                sums[3 * k + 1] += float((head.argmax(-1) == target).sum())
                sums[3 * k + 2] += target.numel()
        mlm_loss, mlm_correct, mlm_count, nsp_loss, nsp_correct, nsp_count = part.sums(sums)
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


__all__ = ["PretrainResult", "bert_config", "build_datasets", "build_model", "check", "format_result", "initialise",
           "make_evaluator", "model_fields", "pretrain", "tokenizer_settings"]
