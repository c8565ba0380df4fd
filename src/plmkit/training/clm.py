"""Causal-LM pretraining of a GPT-2 or Llama style decoder from raw text (nanoGPT-style, on the
shared Trainer).

    result = run_clm_pretraining(["shakespeare/"], "runs/gpt", preset="gpt2-mini", seq_len=256,
                                 batch_size=16, time_budget="10m")
    result.perplexity, result.model_dir

Steps: a byte-level BPE tokenizer (given, or trained on the corpus with ``<|endoftext|>`` and a
``<|pad|>`` pad token), the corpus tokenized once per document into a cached memory-mapped array
(plmkit.data.clm), a seeded split of whole documents into train / held-out, blocks of ``seq_len``
tokens packed with block-diagonal attention, the Trainer, and perplexity on the held-out blocks.

Output directory::

    tokenizer/            the tokenizer (trained here when none was given; reused on a rerun)
    clm_config.json       the arguments of the run
    model/                final model: config.json, model.safetensors, tokenizer files (HF-loadable:
                          transformers' AutoModelForCausalLM / AutoTokenizer read it)
    metrics.jsonl, training_curves.png, checkpoints/, train_config.json   (see Trainer)
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from plmkit.data.clm import PackedBlocks, build_document_shards, collate_blocks
from plmkit.data.corpus import iter_documents, iter_texts
from plmkit.data.loader import BatchLoader
from plmkit.data.splits import split_documents
from plmkit.errors import ConfigError
from plmkit.evaluation.perplexity import evaluate_perplexity
from plmkit.training.config import TrainConfig
from plmkit.training.rng import seed_everything
from plmkit.training.trainer import Trainer, TrainResult, format_duration
from plmkit.utils.files import atomic_write_text
from plmkit.utils.paths import default_cache_dir

log = logging.getLogger(__name__)

PAD_TOKEN = "<|pad|>"
# Defaults for small decoders trained from scratch (nanoGPT's choices); any TrainConfig field overrides.
CLM_TRAIN_DEFAULTS = {"lr": 1e-3, "weight_decay": 0.1, "betas": (0.9, 0.95), "warmup_ratio": 0.05,
                      "schedule": "cosine", "min_lr_ratio": 0.1, "grad_clip": 1.0, "log_every": 10,
                      "save_every": 1000}  # as BERT pretraining: --resume needs a checkpoint


@dataclass
class ClmResult:
    train: TrainResult
    out_dir: Path
    model_dir: Path
    tokenizer_dir: Path
    data_dir: Path
    train_blocks: int
    eval_blocks: int
    perplexity: float | None  # held-out, at the end of training


def run_clm_pretraining(corpus: str | Path | Sequence[str | Path], out: str | Path, *,
                        tokenizer: str | Path | None = None, vocab_size: int | None = None, preset: str = "gpt2-tiny",
                        seq_len: int = 256, batch_size: int = 16, dropout: float = 0.0,
                        eval_fraction: float = 0.05, eval_batches: int = 20, cache_dir: str | Path | None = None,
                        model_overrides: dict[str, Any] | None = None, resume: bool = False,
                        **train: Any) -> ClmResult:
    """Pretrain a decoder with next-token prediction; see the module docstring.

    corpus: .txt/.txt.gz/.jsonl files or directories. tokenizer: a tokenizer directory, or None to
    train a byte-level BPE of `vocab_size` (default 8192) on the corpus. preset: gpt2-tiny/mini/small/... or
    llama-tiny/mini/...; `model_overrides` replace config fields. The context window
    (n_positions / max_position_embeddings) is `seq_len`. ``**train``: TrainConfig fields, e.g.
    max_steps=200, time_budget="10m", lr=6e-4, eval_every=100 (defaults: CLM_TRAIN_DEFAULTS).
    """
    corpus = [str(corpus)] if isinstance(corpus, (str, Path)) else [str(p) for p in corpus]
    if not corpus:
        raise ConfigError("no corpus: give files or directories of .txt/.jsonl")
    if not 0 <= eval_fraction < 1:
        raise ConfigError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    train_cfg = TrainConfig.with_defaults(CLM_TRAIN_DEFAULTS, train)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    next(iter_documents(corpus))  # a missing or empty corpus fails here, clearly
    args = dict(corpus=corpus, tokenizer=None if tokenizer is None else str(tokenizer), vocab_size=vocab_size,
                preset=preset, seq_len=seq_len, batch_size=batch_size, dropout=dropout, eval_fraction=eval_fraction,
                eval_batches=eval_batches, model_overrides=model_overrides or {}, train=train_cfg.to_dict())
    atomic_write_text(out / "clm_config.json", json.dumps(args, indent=2) + "\n")

    tok, tokenizer_dir = _tokenizer(tokenizer, corpus, vocab_size, seq_len, out)
    cache_root = Path(cache_dir) if cache_dir else default_cache_dir() / "clm"
    shards = build_document_shards(corpus, tok, cache_root, progress=train_cfg.progress_bar)
    train_docs, eval_docs = split_documents(shards.num_documents, eval_fraction, train_cfg.seed)
    train_set = PackedBlocks.from_shards(shards, train_docs, seq_len)
    eval_set = PackedBlocks.from_shards(shards, eval_docs, seq_len, keep_partial=True) if len(eval_docs) else None
    if len(train_set) == 0:
        raise ConfigError(f"the training documents hold {train_set.num_tokens} tokens, fewer than one block")
    log.info(f"blocks of {seq_len} tokens: {len(train_set):,} train ({len(train_docs):,} documents), "
             f"{len(eval_set) if eval_set else 0:,} held-out ({len(eval_docs):,} documents)")

    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id  # inputs at padding: never seen

    def collate(examples):
        return collate_blocks(examples, pad)

    loader = BatchLoader(train_set, batch_size, collate, shuffle=True, seed=train_cfg.seed,
                         drop_last=len(train_set) >= batch_size)
    evaluate = None
    if eval_set is not None:
        def evaluate(model):
            return evaluate_perplexity(model, eval_set, batch_size, eval_batches, collate)
    elif train_cfg.eval_every is not None:
        raise ConfigError("eval_every is set but eval_fraction is 0: there is no held-out split")

    seed_everything(train_cfg.seed)
    model = build_causal_lm(preset, tok, seq_len, dropout, model_overrides)
    log.info(f"model: {preset}, {model.num_parameters() / 1e6:.2f}M parameters, vocabulary {len(tok)}, "
             f"context {seq_len}")
    result = Trainer(model, train_cfg, loader, out, evaluate=evaluate, save_extra=tok.save_pretrained,
                     forward_kwargs={"return_logits": False}).train(resume)  # chunked loss, no logits
    ppl = result.eval_metrics.get("eval_perplexity")
    return ClmResult(result, out, result.model_dir, tokenizer_dir, shards.directory, len(train_set),
                     len(eval_set) if eval_set else 0, ppl)


def _tokenizer(path, corpus: list[str], vocab_size: int | None, seq_len: int, out: Path):
    from plmkit.tokenization import END_OF_TEXT, Tokenizer

    if path is not None:
        tok = Tokenizer.from_pretrained(path)
        if tok.eos_token_id is None:
            raise ConfigError(f"the tokenizer in {path} has no eos token to end documents with")
        if vocab_size is not None and vocab_size != len(tok):
            log.warning(f"vocab_size {vocab_size} is ignored: the tokenizer in {path} is used as it is "
                        f"({len(tok)} tokens); vocab_size only sizes a tokenizer trained here")
        return tok, Path(path)
    directory = out / "tokenizer"
    if (directory / "tokenizer.json").is_file():
        log.info(f"reusing the tokenizer trained earlier in {directory}")
        tok = Tokenizer.from_pretrained(directory)
        if vocab_size is not None and vocab_size != len(tok):
            log.warning(f"vocab_size {vocab_size} is ignored: the tokenizer trained earlier in {directory} is reused "
                        f"({len(tok)} tokens); delete it to train a new one")
        return tok, directory
    vocab_size = vocab_size or 8192
    log.info(f"training a byte-level BPE tokenizer (vocab {vocab_size}) on the corpus -> {directory}")
    tok = Tokenizer.train_bpe(iter_texts(corpus), vocab_size, special_tokens=(END_OF_TEXT, PAD_TOKEN),
                              model_max_length=seq_len)
    tok.pad_token = PAD_TOKEN
    tok.save_pretrained(directory)
    return tok, directory


def build_causal_lm(preset: str, tokenizer, seq_len: int, dropout: float = 0.0,
                    overrides: dict[str, Any] | None = None):
    """A fresh GPT2LMHeadModel or LlamaForCausalLM sized by `preset` for `tokenizer`, context `seq_len`."""
    special = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id,
                   eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if preset.startswith(("llama", "tinyllama")):
        from plmkit.models.llama import LlamaConfig, LlamaForCausalLM
        config = LlamaConfig.from_preset(preset, **{**special, "max_position_embeddings": seq_len,
                                                    "attention_dropout": dropout, **(overrides or {})})
        return LlamaForCausalLM(config)
    from plmkit.models.gpt2 import GPT2Config, GPT2LMHeadModel
    config = GPT2Config.from_preset(preset, **{**special, "n_positions": seq_len, "resid_pdrop": dropout,
                                               "embd_pdrop": dropout, "attn_pdrop": dropout, **(overrides or {})})
    return GPT2LMHeadModel(config)


# `plmkit pretrain` flags (argparse dests) that map onto run_clm_pretraining arguments / TrainConfig fields
_DATA_FLAGS = ("tokenizer", "vocab_size", "preset", "seq_len", "batch_size", "dropout", "eval_fraction",
               "eval_batches", "cache_dir", "resume")
_TRAIN_FLAGS = ("max_steps", "time_budget", "lr", "warmup_steps", "warmup_ratio", "schedule", "weight_decay",
                "grad_accum_steps", "grad_clip", "eval_every", "save_every", "keep_last", "log_every", "seed",
                "device", "precision")
# BERT-only flags: argparse dest -> flag
_BERT_FLAGS = {"mask_rate": "--mask-rate", "whole_word_mask": "--whole-word-mask", "pre_ln": "--pre-ln",
               "lowercase": "--cased", "min_doc_tokens": "--min-doc-tokens", "unigram_bias_init": "--no-unigram-init",
               "sinusoidal_position_init": "--sinusoidal-positions"}


def run_clm_from_flags(given: dict[str, Any]) -> ClmResult:
    """`plmkit pretrain --objective clm ...`: the given CLI flags (``vars(args)``, unset flags absent)
    as a run_clm_pretraining call. The preset defaults to gpt2-tiny (BERT presets are refused)."""
    if given.get("config"):
        raise ConfigError("--config run files are for BERT pretraining; give --objective clm its flags directly")
    bert_only = [flag for dest, flag in _BERT_FLAGS.items() if dest in given]
    if bert_only:
        raise ConfigError(f"{', '.join(bert_only)}: BERT-only option(s), not used by --objective clm")
    if not given.get("corpus") or not given.get("out"):
        raise ConfigError("--objective clm needs --corpus PATH ... and --out DIR")
    kwargs = {k: given[k] for k in _DATA_FLAGS if given.get(k) is not None}
    if str(kwargs.get("preset", "gpt2")).startswith("bert"):
        raise ConfigError(f"--objective clm trains a decoder: use a gpt2-* or llama-* preset, not {kwargs['preset']!r}")
    train = {k: given[k] for k in _TRAIN_FLAGS if given.get(k) is not None}
    if given.get("no_progress"):
        train["progress_bar"] = False
    return run_clm_pretraining(given["corpus"], given["out"], **kwargs, **train)


def format_result(result: ClmResult) -> str:
    r = result.train
    lines = [f"causal-LM pretraining done: {r.step} steps in {format_duration(r.elapsed)}, "
             f"{r.tokens_per_s:,.0f} tokens/s, last train loss {r.train_loss:.4f}" if r.train_loss is not None else
             f"causal-LM pretraining done: {r.step} steps",
             f"  blocks: {result.train_blocks:,} train, {result.eval_blocks:,} held-out"]
    if result.perplexity is not None:
        lines.append(f"  held-out perplexity {result.perplexity:.2f} (loss {r.eval_metrics['eval_loss']:.4f})")
    lines.append(f"  model (HF-loadable): {result.model_dir}")
    return "\n".join(lines)


__all__ = ["CLM_TRAIN_DEFAULTS", "ClmResult", "build_causal_lm", "format_result", "run_clm_from_flags", "run_clm_pretraining"]
