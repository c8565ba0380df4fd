"""Supervised fine-tuning (SFT) of a causal LM on prompt -> response pairs, with the chat template
of plmkit.chat and the loss on the responses only.

    result = run_sft("runs/gpt/model", "dialogue/english.jsonl", "runs/chat", epochs=3)
    # then: plmkit chat --model runs/chat/model

The tokenizer (loaded from the model directory) gets a ``<|pad|>`` pad token if it has none, and
the model's embeddings grow to match. A seeded `eval_fraction` of the pairs is held out; the
Trainer reports their loss and perplexity (response tokens only).

Output directory: ``model/`` (HF-loadable, tokenizer included), ``sft_config.json``, and the
Trainer's metrics.jsonl, training_curves.png, checkpoints/.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from plmkit.chat import SFTCollator, SFTDataset, ensure_pad_token, read_pairs
from plmkit.data.clm import evaluate_perplexity
from plmkit.data.loader import BatchLoader
from plmkit.errors import ConfigError, DataError
from plmkit.training.config import TrainConfig
from plmkit.training.rng import seed_everything
from plmkit.training.trainer import Trainer, TrainResult

SFT_TRAIN_DEFAULTS = {"lr": 3e-4, "weight_decay": 0.0, "warmup_ratio": 0.03, "schedule": "cosine", "log_every": 10}


@dataclass
class SFTResult:
    train: TrainResult
    out_dir: Path
    model_dir: Path
    train_examples: int
    eval_examples: int
    skipped: int  # pairs whose prompt alone fills max_length
    perplexity: float | None  # on the held-out responses


def context_window(config) -> int | None:
    """Positions a decoder can take: n_positions (GPT-2) or max_position_embeddings (Llama)."""
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def run_sft(model_dir: str | Path, data: str | Path | Sequence, out: str | Path, *, eval_data=None,
            max_length: int | None = None,
            batch_size: int = 8, eval_fraction: float = 0.1, eval_batches: int = 20, system: str | None = None,
            resume: bool = False, log=print, **train: Any) -> SFTResult:
    """Fine-tune the causal LM in `model_dir` on `data` (JSONL file(s) with prompt/response, or a list of
    (prompt, response) pairs / dicts) into `out`. eval_data: held-out pairs in the same forms (default: a
    seeded `eval_fraction` of `data`). max_length: tokens per example (default: the context
    window). ``**train``: TrainConfig fields (default SFT_TRAIN_DEFAULTS, and epochs=3 when no length is given)."""
    from plmkit.models.auto import AutoModelForCausalLM
    from plmkit.tokenization import Tokenizer

    if not 0 <= eval_fraction < 1:
        raise ConfigError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    if not any(train.get(k) is not None for k in ("max_steps", "epochs", "time_budget")):
        train["epochs"] = 3
    train_cfg = TrainConfig.with_defaults(SFT_TRAIN_DEFAULTS, train)
    records = _records(data)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = Tokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    pad = ensure_pad_token(tokenizer, model)
    window = context_window(model.config)
    max_length = max_length or window or 512
    if window is not None and max_length > window:
        raise ConfigError(f"max_length={max_length} exceeds the model's context window of {window} tokens")

    if eval_data is not None:
        train_records, eval_records = records, _records(eval_data)
    else:
        order = list(range(len(records)))
        random.Random(train_cfg.seed).shuffle(order)
        n_eval = 0 if eval_fraction == 0 else max(1, round(eval_fraction * len(records)))
        if len(records) - n_eval < 1:
            raise DataError(f"{len(records)} pair(s): too few to hold out {n_eval} for evaluation; lower eval_fraction")
        train_records = [records[i] for i in sorted(order[n_eval:])]
        eval_records = [records[i] for i in sorted(order[:n_eval])]
    train_set = SFTDataset(train_records, tokenizer, max_length, system)
    eval_set = SFTDataset(eval_records, tokenizer, max_length, system) if eval_records else None
    skipped = train_set.skipped + (eval_set.skipped if eval_set else 0)
    if len(train_set) == 0:
        raise DataError(f"every training prompt is longer than max_length={max_length} tokens")
    truncated = train_set.truncated + (eval_set.truncated if eval_set else 0)
    log(f"SFT examples: {len(train_set):,} train, {len(eval_set) if eval_set else 0:,} held-out"
        + (f", {skipped} skipped (prompt longer than {max_length} tokens)" if skipped else "")
        + (f", {truncated} with the reply cut at {max_length} tokens" if truncated else ""))
    (out / "sft_config.json").write_text(json.dumps(
        dict(model=str(model_dir), data=[str(d) for d in _paths(data)], max_length=max_length, batch_size=batch_size,
             eval_fraction=eval_fraction, system=system, pad_token=tokenizer.pad_token, train=train_cfg.to_dict()),
        indent=2) + "\n")

    collate = SFTCollator(pad)
    loader = BatchLoader(train_set, batch_size, collate, shuffle=True, seed=train_cfg.seed,
                         group_by_length=train_set.lengths())
    evaluate = None
    if eval_set is not None and len(eval_set):
        def evaluate(m):
            return evaluate_perplexity(m, eval_set, batch_size, eval_batches, collate)
    elif train_cfg.eval_every is not None:
        raise ConfigError("eval_every is set but nothing is held out (eval_fraction=0)")
    seed_everything(train_cfg.seed)
    result = Trainer(model, train_cfg, loader, out, evaluate=evaluate, save_extra=tokenizer.save_pretrained,
                     forward_kwargs={"return_logits": False}).train(resume)  # chunked loss, no logits
    return SFTResult(result, out, result.model_dir, len(train_set), len(eval_set) if eval_set else 0, skipped,
                     result.eval_metrics.get("eval_perplexity"))


def _paths(data) -> list:
    if isinstance(data, (str, Path)):
        return [data]
    if data and isinstance(data[0], (str, Path)):
        return list(data)
    return []


def _records(data) -> list:
    paths = _paths(data)
    if paths:
        records = [record for p in paths for record, _ in read_pairs(p)]
    else:
        records = list(data)
    if not records:
        raise DataError(f"no prompt/response pairs in {', '.join(map(str, paths)) or 'the data given'}")
    return records


__all__ = ["SFTResult", "SFT_TRAIN_DEFAULTS", "context_window", "run_sft"]
