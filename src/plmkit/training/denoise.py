"""BART's denoising pretraining (Lewis et al., 2019) from raw text: the pipeline of
`plmkit.recipes.pretrain` for the objective ``denoise``.

    from plmkit.recipes.pretrain import PretrainRun, run
    result = run(PretrainRun.build({"out": "runs/bart", "model": {"preset": "bart-small"},
                                    "data": {"objective": "denoise", "corpus": ["shakespeare/"]},
                                    "train": {"time_budget": "10m"}}))
    result.eval_loss, result.model_dir

Steps:

* a byte-level BPE tokenizer in BART's style (``<s> <pad> </s> <unk> <mask>``): given, or trained on
  the corpus into OUT/tokenizer;
* the corpus tokenized once into cached token shards (plmkit.data.shards, ``whole_documents``): each
  document encoded whole, so its spaces and line breaks are tokens the decoder learns to write,
  and cut where its sentences start;
* documents: consecutive short documents of a file grouped up to seq_len tokens (``min_doc_tokens``),
  with a paragraph break (``\\n\\n``) between them; a seeded split of whole groups into train and
  held-out; examples of whole sentences up to seq_len tokens, ``<s>`` and ``</s>`` included (a longer
  group is chunked at sentence boundaries, a longer sentence cut);
* noise per batch (`plmkit.data.denoising.DenoisingCollator`): the example's sentences permuted,
  then ``mask_rate`` of its tokens in spans of Poisson(``poisson_lambda``) tokens, each span one
  ``<mask>``; drawn from the global torch RNG, which the Trainer checkpoints, so ``--resume``
  continues exactly;
* `BartForConditionalGeneration` trained to rebuild the original (cross-entropy of every target
  token, the fused chunked loss: no logits), on the shared Trainer;
* the held-out reconstruction loss (per target token; perplexity = its exp), over the same noise at
  every evaluation (a private seeded generator), so the numbers compare across steps and runs.

Defaults (`PretrainRun.variant_defaults["denoise"]`): BART's noise (30% of the tokens, Poisson(3)
spans, sentence permutation on); bart-tiny; examples of 256 tokens, batches of 16; AdamW at lr 1e-3
with BART's betas (0.9, 0.98) and eps 1e-6, 5% warmup, then a linear decay.

Output directory: as a decoder's (plmkit.training.clm); ``model/`` loads in transformers'
BartForConditionalGeneration and AutoTokenizer.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from plmkit.data.corpus import iter_texts
from plmkit.data.denoising import DenoisingCollator, DenoisingDataset
from plmkit.data.loader import BatchLoader
from plmkit.data.nsp import packed_instances, split_examples
from plmkit.data.shards import TokenShards, build_token_shards
from plmkit.errors import ConfigError
from plmkit.evaluation.perplexity import evaluate_perplexity
from plmkit.training.clm import TOKENIZER_FIELDS as DECODER_TOKENIZER_FIELDS
from plmkit.training.config import check_field_types
from plmkit.training import distributed
from plmkit.training.fingerprint import with_tokenizer
from plmkit.training.rng import seed_everything
from plmkit.training.pretrain import PretrainResult
from plmkit.training.trainer import Trainer, format_duration
from plmkit.training.vocab import run_tokenizer
from plmkit.utils.paths import default_cache_dir

log = logging.getLogger(__name__)

PARAGRAPH_BREAK = "\n\n"  # between two documents of one example
EVAL_NOISE_SEED = 12345  # added to the run's seed: the held-out noise
NEEDED_TOKENS = ("bos", "eos", "pad", "mask")
# the config fields that `build_model` takes from the tokenizer
TOKENIZER_FIELDS = (*DECODER_TOKENIZER_FIELDS, "decoder_start_token_id", "forced_eos_token_id")


@dataclass
class DenoiseResult(PretrainResult):
    eval_loss: float | None = None  # held-out reconstruction loss at the end of training


def check(config) -> None:
    """Refuse, before any work, a preset that is not BART's, a model section its config cannot take
    (a field BartConfig does not have, a value of the wrong type), and a seq_len past its positions."""
    from plmkit.models.registry import family_of_preset

    try:
        family_of_preset(config.model.preset, task="seq2seq-lm", model_type="bart")
    except ConfigError as err:
        raise ConfigError(f"--objective denoise trains a BART model: {err}") from None
    bart = bart_config(config.model)
    check_field_types(bart, "model")
    if bart.max_position_embeddings < config.data.seq_len:
        raise ConfigError(f"seq_len={config.data.seq_len} exceeds the model's max_position_embeddings="
                          f"{bart.max_position_embeddings}; lower --seq-len or raise max_position_embeddings")


def bart_config(model, **fields):
    """The BartConfig of a `PretrainModel`: its preset, `dropout` for every dropout rate, then its own
    config fields, then `fields` (the more specific win)."""
    from plmkit.models.registry import config_from_preset

    return config_from_preset(model.preset, dropout=model.dropout, model_type="bart", **{**fields, **model.config})


def tokenizer_settings(config) -> dict[str, Any]:
    """What shapes the tokenizer this pipeline trains, besides the corpus and its size (the recipe records it):
    its model_max_length, the model's positions."""
    return {"model_max_length": bart_config(config.model).max_position_embeddings}


def model_fields(model) -> dict[str, Any]:
    """What a fresh model gets from a `PretrainModel` (its preset resolved into every BartConfig field;
    the vocabulary and the special ids come from the tokenizer), for the checks that a resumed run
    keeps its model."""
    fields = bart_config(model).to_dict()
    return {"preset": model.preset, **{k: v for k, v in fields.items() if k not in TOKENIZER_FIELDS}}


def pretrain(config, resume: bool | str = False, accept_changes: bool = False, **trainer_options) -> DenoiseResult:
    """Pretrain a BART model by denoising in `config.out`; see the module docstring."""
    data, train_cfg, out = config.data, config.train, Path(config.out)
    with distributed.main_first():  # rank 0 trains the tokenizer and fills the cache, the others read them
        tok, tokenizer_dir = _tokenizer(data, tokenizer_settings(config)["model_max_length"], out)
        cache_root = Path(data.cache_dir) if data.cache_dir else default_cache_dir() / "pretraining"
        shards = build_token_shards(data.corpus, tok, cache_root, whole_documents=True,
                                    progress=train_cfg.progress_bar and distributed.is_main())
    train_set, eval_set = build_datasets(shards, tok, data, train_cfg.seed)
    log.info(f"examples of at most {data.seq_len} tokens: {len(train_set):,} train, "
             f"{len(eval_set) if eval_set else 0:,} held-out")

    def collator(generator=None) -> DenoisingCollator:
        return DenoisingCollator(tok, data.mask_rate, data.poisson_lambda, data.permute_sentences, generator,
                                 max_length=data.seq_len)

    loader = BatchLoader(train_set, data.batch_size, collator(), shuffle=True, seed=train_cfg.seed,
                         drop_last=len(train_set) >= data.batch_size)
    evaluate = None
    if eval_set is not None:
        evaluate = make_evaluator(eval_set, collator, data, train_cfg.seed)
    elif train_cfg.eval_every is not None:
        raise ConfigError("eval_every is set but eval_fraction is 0: there is no held-out split")

    seed_everything(train_cfg.seed)
    model = build_model(config.model, tok)
    log.info(f"model: {config.model.preset}, {model.num_parameters() / 1e6:.2f}M parameters, vocabulary {len(tok)}")
    result = Trainer(model, train_cfg, loader, out, evaluate=evaluate, save_extra=tok.save_pretrained,
                     forward_kwargs={"return_logits": False},  # the fused loss, no logits
                     **with_tokenizer(trainer_options, tokenizer_dir)).train(resume, accept_changes)
    return DenoiseResult(result, out, result.model_dir, tokenizer_dir, shards.directory, len(train_set),
                         len(eval_set) if eval_set else 0, result.eval_metrics.get("eval_loss"))


def _tokenizer(data, max_length: int, out: Path):
    from plmkit.tokenization import Tokenizer
    from plmkit.tokenization.specials import STYLES

    def train(size: int):
        return Tokenizer.train(iter_texts(data.corpus), size, model="byte-bpe", style="bart",
                               model_max_length=max_length)

    def check(tok, where: str) -> None:
        missing = [STYLES["bart"].tokens[name] for name in NEEDED_TOKENS if getattr(tok, f"{name}_token_id") is None]
        if missing:
            raise ConfigError(f"the tokenizer in {where} has no {', '.join(missing)} token(s), which denoising "
                              "needs; give a BART-style one (plmkit tokenizer train --model byte-bpe --style bart) "
                              "or leave --tokenizer out to train one")

    return run_tokenizer(data.tokenizer, out, data.vocab_size, "a byte-level BPE tokenizer in BART's style", train,
                         check)


def build_datasets(shards: TokenShards, tok, data, seed: int) -> tuple[DenoisingDataset, DenoisingDataset | None]:
    """(train, held-out or None) documents: groups split first, then chunked per split (module docstring)."""
    separator = tok.encode(PARAGRAPH_BREAK, add_special_tokens=False)

    def instances(groups, split_seed, held_out):
        return packed_instances(shards, groups, data.seq_len, doc_gap=len(separator))

    train, held_out = split_examples(shards, data.group_tokens, data.eval_fraction, seed, instances)
    return (DenoisingDataset(shards, train, separator),
            None if held_out is None else DenoisingDataset(shards, held_out, separator))


def make_evaluator(dataset: DenoisingDataset, collator, data, seed: int):
    """`evaluate(model)`: the reconstruction loss (per target token), its perplexity and the token count
    on at most `eval_batches` held-out batches, noised the same way every time (`collator(generator)`
    gets a private generator seeded from `seed`; the global RNG is left alone)."""
    @distributed.sharded_evaluation
    def evaluate(model) -> dict[str, float]:  # (each rank its rows of every batch, the sums added up)
        noise = torch.Generator().manual_seed(seed + EVAL_NOISE_SEED)
        return evaluate_perplexity(model, dataset, data.batch_size, data.eval_batches, collator(noise), shifted=False,
                                   part=distributed.EvalShard())

    return evaluate


def build_model(model, tok):
    """A fresh BartForConditionalGeneration of the `model` section for `tok` (BART's special ids:
    the decoder starts with ``</s>``)."""
    from plmkit.models.bart import BartForConditionalGeneration

    eos = tok.eos_token_id
    config = bart_config(model, vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                         eos_token_id=eos, decoder_start_token_id=eos, forced_eos_token_id=eos)
    return BartForConditionalGeneration(config)


def format_result(result: DenoiseResult) -> str:
    r = result.train
    lines = [f"denoising pretraining done: {r.step} steps in {format_duration(r.elapsed)}, "
             f"{r.tokens_per_s:,.0f} tokens/s" + (f", last train loss {r.train_loss:.4f}" if r.train_loss is not None
                                                   else ""),
             f"  examples: {result.train_examples:,} train, {result.eval_examples:,} held-out"]
    if result.eval_loss is not None:
        lines.append(f"  held-out reconstruction loss {result.eval_loss:.4f} "
                     f"(perplexity {r.eval_metrics['eval_perplexity']:.2f})")
    lines.append(f"  model (HF-loadable): {result.model_dir}")
    return "\n".join(lines)


__all__ = ["DenoiseResult", "bart_config", "build_datasets", "build_model", "check", "format_result",
           "make_evaluator", "model_fields", "pretrain", "tokenizer_settings"]
