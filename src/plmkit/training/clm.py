"""Causal-LM pretraining of a GPT-2 or Llama style decoder from raw text (nanoGPT-style, on the
shared Trainer): the pipeline of `plmkit.recipes.pretrain` for the objective ``clm``.

    from plmkit.recipes.pretrain import PretrainRun, run
    result = run(PretrainRun.build({"out": "runs/gpt", "model": {"preset": "gpt2-mini"},
                                    "data": {"objective": "clm", "corpus": ["shakespeare/"], "seq_len": 256},
                                    "train": {"time_budget": "10m"}}))
    result.perplexity, result.model_dir

Steps: a byte-level BPE tokenizer (given, or trained on the corpus with ``<|endoftext|>`` and a
``<|pad|>`` pad token), the corpus tokenized once per document into a cached memory-mapped array
(plmkit.data.clm), a seeded split of whole documents into train / held-out, blocks of ``seq_len``
tokens packed with block-diagonal attention, the Trainer, and perplexity on the held-out blocks (a
seeded random sample of them when there are more than ``eval_batches`` batches).
The context window (n_positions / max_position_embeddings) is ``seq_len``.

Output directory::

    tokenizer/            the tokenizer (trained here when none was given; reused on a resume, or by a
                          rerun after a failed start on the same corpus and settings)
    run.yaml              the effective run file (written by the recipe)
    model/                final model: config.json, model.safetensors, tokenizer files (HF-loadable:
                          transformers' AutoModelForCausalLM / AutoTokenizer read it)
    metrics.jsonl, training_curves.png, checkpoints/, train_config.json   (see Trainer)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plmkit.data.clm import PackedBlocks, build_document_shards, collate_blocks
from plmkit.data.corpus import iter_texts
from plmkit.data.loader import BatchLoader
from plmkit.data.splits import split_documents
from plmkit.errors import ConfigError
from plmkit.evaluation.perplexity import evaluate_perplexity
from plmkit.training import distributed
from plmkit.training.config import check_field_types
from plmkit.training.fingerprint import with_tokenizer
from plmkit.training.rng import seed_everything
from plmkit.training.trainer import Trainer, TrainResult, format_duration
from plmkit.training.vocab import run_tokenizer
from plmkit.utils.constants import PAD_TOKEN
from plmkit.utils.paths import default_cache_dir

log = logging.getLogger(__name__)


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


def check(config) -> None:
    """Refuse, before any work, a preset that is not a decoder's and a model section its config
    cannot take (a field its family does not have, a value of the wrong type)."""
    from plmkit.models.registry import family_of_preset

    model = config.model
    try:
        family_of_preset(model.preset, task="causal-lm")
    except ConfigError as err:
        raise ConfigError(f"--objective clm trains a decoder: {err}") from None
    check_field_types(causal_lm_config(model.preset, config.data.seq_len, model.dropout, model.config), "model")


TOKENIZER_FIELDS = ("model_type", "vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")


def tokenizer_settings(config) -> dict[str, Any]:
    """What shapes the tokenizer this pipeline trains, besides the corpus and its size (the recipe records it):
    its model_max_length, the context."""
    return {"model_max_length": config.data.seq_len}


def model_fields(model) -> dict[str, Any]:
    """What a fresh model gets from a `PretrainModel` (its preset resolved into every config field of
    its family; the vocabulary, the special ids and the context (data.seq_len) come from elsewhere),
    for the checks that a resumed run keeps its model."""
    config = causal_lm_config(model.preset, None, model.dropout, model.config)
    return {"preset": model.preset, **{k: v for k, v in config.to_dict().items() if k not in TOKENIZER_FIELDS}}


def pretrain(config, resume: bool | str = False, accept_changes: bool = False, **trainer_options) -> ClmResult:
    """Pretrain a decoder with next-token prediction in `config.out`; see the module docstring."""
    data, train_cfg, out = config.data, config.train, Path(config.out)
    corpus, seq_len, batch_size = data.corpus, data.seq_len, data.batch_size
    with distributed.main_first():  # rank 0 trains the tokenizer and fills the cache, the others read them
        tok, tokenizer_dir = _tokenizer(data.tokenizer, corpus, data.vocab_size,
                                        tokenizer_settings(config)["model_max_length"], out)
        cache_root = Path(data.cache_dir) if data.cache_dir else default_cache_dir() / "clm"
        shards = build_document_shards(corpus, tok, cache_root,
                                       progress=train_cfg.progress_bar and distributed.is_main())
    train_docs, eval_docs = split_documents(shards.num_documents, data.eval_fraction, train_cfg.seed)
    train_set = PackedBlocks.from_shards(shards, train_docs, seq_len)
    eval_set = PackedBlocks.from_shards(shards, eval_docs, seq_len, keep_partial=True) if len(eval_docs) else None
    if len(train_set) == 0:
        raise ConfigError(f"the training documents hold {train_set.num_tokens} tokens, fewer than one block")
    eval_sample = None if eval_set is None else BlockSample(eval_set, data.eval_batches * batch_size, train_cfg.seed)
    sampled = f", {len(eval_sample):,} blocks evaluated" if eval_sample and len(eval_sample) < len(eval_set) else ""
    log.info(f"blocks of {seq_len} tokens: {len(train_set):,} train ({len(train_docs):,} documents), "
             f"{len(eval_set) if eval_set else 0:,} held-out ({len(eval_docs):,} documents{sampled})")

    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id  # inputs at padding: never seen

    def collate(examples):
        return collate_blocks(examples, pad)

    loader = BatchLoader(train_set, batch_size, collate, shuffle=True, seed=train_cfg.seed,
                         drop_last=len(train_set) >= batch_size)
    evaluate = None
    if eval_set is not None:
        @distributed.sharded_evaluation
        def evaluate(model):  # (each rank its rows of every batch, the sums added up)
            return evaluate_perplexity(model, eval_sample, batch_size, data.eval_batches, collate,
                                       part=distributed.EvalShard())
    elif train_cfg.eval_every is not None:
        raise ConfigError("eval_every is set but eval_fraction is 0: there is no held-out split")

    seed_everything(train_cfg.seed)
    preset = config.model.preset
    model = build_causal_lm(preset, tok, seq_len, config.model.dropout, config.model.config)
    log.info(f"model: {preset}, {model.num_parameters() / 1e6:.2f}M parameters, vocabulary {len(tok)}, "
             f"context {seq_len}")
    result = Trainer(model, train_cfg, loader, out, evaluate=evaluate, save_extra=tok.save_pretrained,
                     forward_kwargs={"return_logits": False},  # chunked loss, no logits
                     **with_tokenizer(trainer_options, tokenizer_dir)).train(resume, accept_changes)
    ppl = result.eval_metrics.get("eval_perplexity")
    return ClmResult(result, out, result.model_dir, tokenizer_dir, shards.directory, len(train_set),
                     len(eval_set) if eval_set else 0, ppl)


class BlockSample:
    """At most `count` blocks of `blocks` drawn at random (seeded by `seed`): an evaluation of a few
    batches measures the whole held-out split, not its first documents in corpus order (as BERT's and
    BART's evaluations shuffle their held-out rows); the same blocks in every run, resume and rank."""

    def __init__(self, blocks: PackedBlocks, count: int, seed: int):
        self.blocks = blocks
        self.indices = np.random.default_rng(seed + 2).permutation(len(blocks))[:count]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return self.blocks[int(self.indices[i])]


def _tokenizer(path, corpus: list[str], vocab_size: int | None, max_length: int, out: Path):
    from plmkit.tokenization import END_OF_TEXT, Tokenizer

    def train(size: int):
        tok = Tokenizer.train_bpe(iter_texts(corpus), size, special_tokens=(END_OF_TEXT, PAD_TOKEN),
                                  model_max_length=max_length)
        tok.pad_token = PAD_TOKEN
        return tok

    def check(tok, where: str) -> None:
        if tok.eos_token_id is None:
            raise ConfigError(f"the tokenizer in {where} has no eos token to end documents with")

    return run_tokenizer(path, out, vocab_size, "a byte-level BPE tokenizer", train, check)


def build_causal_lm(preset: str, tokenizer, seq_len: int, dropout: float = 0.0,
                    overrides: dict[str, Any] | None = None):
    """A fresh causal LM (GPT2LMHeadModel, LlamaForCausalLM, ...) sized by `preset` for `tokenizer`, context `seq_len`."""
    from plmkit.models.auto import model_class

    special = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id,
                   eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config = causal_lm_config(preset, seq_len, dropout, {**special, **(overrides or {})})
    return model_class(config.model_type, "causal-lm")(config)


def causal_lm_config(preset: str, seq_len: int | None, dropout: float = 0.0, fields: dict[str, Any] | None = None):
    """The config of a fresh decoder: `preset` (of a family with a causal-LM model), context `seq_len`,
    every dropout rate `dropout`, then `fields` of its family (the more specific: they win), checked
    like config.json's."""
    from plmkit.models.registry import config_from_preset, family_of_preset

    family_of_preset(preset, task="causal-lm")
    return config_from_preset(preset, context_length=seq_len, dropout=dropout, **(fields or {}))


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


__all__ = ["BlockSample", "ClmResult", "build_causal_lm", "causal_lm_config", "check", "format_result", "model_fields",
           "pretrain", "tokenizer_settings"]
