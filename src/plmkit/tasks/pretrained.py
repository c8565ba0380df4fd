"""Pipelines over a pre-trained model's own outputs, which no fine-tuning task makes: ``fill-mask`` (the masked-LM
head's guesses) and ``feature-extraction`` (the last hidden states). Each loads its model class from any directory
whose weights hold it (`Task.any_directory`): a pretraining run's, a Hugging Face model's, a fine-tuned one's body.

Their call conventions and outputs are Hugging Face's FillMaskPipeline and FeatureExtractionPipeline.
"""
from __future__ import annotations

import logging

from plmkit.errors import ConfigError, DataError
from plmkit.tasks.base import Task
from plmkit.tasks.common import forward_batches, pipeline_texts
from plmkit.utils.settings import is_int
from plmkit.utils.text import describe

log = logging.getLogger("plmkit")


def _features(tokenizer, texts: list[str], **encoding) -> list[dict]:
    """One model-input feature per text (the tokenizer's special tokens around it)."""
    enc = tokenizer(texts, **encoding)
    return [{k: enc[k][i] for k in ("input_ids", "token_type_ids") if k in enc} for i in range(len(texts))]


class FillMaskTask(Task):
    name = "fill-mask"
    model_task = "masked-lm"
    any_directory = True
    pipelines = ("fill-mask",)
    pipeline_arguments = ("top_k", "targets")

    def pipeline(self, name, model, tokenizer, inputs, batch_size: int, top_k: int = 5, targets=None):
        """Per mask token of each text, the `top_k` likeliest tokens (among `targets` when given): {"score",
        "token", "token_str", "sequence"}; a list of them for a text with one mask, a list of such lists for
        several; a list per text for several texts (one text, or a list of one: its result alone)."""
        mask = tokenizer.mask_token_id
        if mask is None:
            raise ConfigError(f"{name} pipeline: the tokenizer has no mask token")
        if not (is_int(top_k) and top_k >= 1):
            raise ConfigError(f"{name} pipeline: top_k must be a positive integer, got {top_k!r}")
        texts, _ = pipeline_texts(inputs, name)
        features = _features(tokenizer, texts)
        for k, f in enumerate(features, 1):
            if mask not in f["input_ids"]:
                raise DataError(f"inputs:{k}: no mask token ({tokenizer.mask_token}) in the text")
        target_ids = None if targets is None else _target_ids(tokenizer, targets, name)
        top_k = top_k if target_ids is None else min(top_k, len(target_ids))
        out: list = [None] * len(texts)
        for idx, _, output in forward_batches(model, features, batch_size, tokenizer.pad_token_id):
            for row, i in enumerate(idx):
                ids = features[i]["input_ids"]
                masked = [p for p, t in enumerate(ids) if t == mask]
                probs = output.logits[row, masked].float().softmax(-1)
                if target_ids is not None:
                    probs = probs[:, target_ids]
                best = [_guesses(tokenizer, ids, p, values, tokens, target_ids, len(masked) == 1)
                        for p, values, tokens in zip(masked, *probs.topk(top_k))]
                out[i] = best[0] if len(masked) == 1 else best
        return out[0] if len(out) == 1 else out


def _guesses(tokenizer, ids: list[int], position: int, values, tokens, target_ids, one_mask: bool) -> list[dict]:
    """HF's dicts for the guesses `tokens` (indices into `target_ids` when given) at the mask at `position`."""
    out = []
    for value, token in zip(values.tolist(), tokens.tolist()):
        token = target_ids[token] if target_ids is not None else token
        filled = [token if p == position else t for p, t in enumerate(ids) if t != tokenizer.pad_token_id]
        out.append({"score": value, "token": token, "token_str": tokenizer.decode([token]),
                    "sequence": tokenizer.decode(filled, skip_special_tokens=one_mask)})
    return out


def _target_ids(tokenizer, targets, pipeline: str) -> list[int]:
    """Ids of `targets` (a token or a list of them); one not in the vocabulary is its first piece, as in HF."""
    targets = [targets] if isinstance(targets, str) else targets
    if not isinstance(targets, (list, tuple)) or not all(isinstance(t, str) for t in targets):
        raise ConfigError(f"{pipeline} pipeline: targets must be a token or a list of tokens, got {describe(targets)}")
    vocab, ids = tokenizer.get_vocab(), []
    for target in targets:
        if target in vocab:
            ids.append(vocab[target])
            continue
        pieces = tokenizer(target, add_special_tokens=False)["input_ids"]
        if pieces:
            log.warning("plmkit: fill-mask target %r is not in the vocabulary; using its first piece %r", target,
                        tokenizer.convert_ids_to_tokens(pieces[0]))
            ids.append(pieces[0])
    if not ids:
        raise ConfigError(f"{pipeline} pipeline: no target is a token of the vocabulary")
    return sorted(set(ids))


class FeatureExtractionTask(Task):
    name = "feature-extraction"
    model_task = "base"
    any_directory = True
    unread_weights = ("pooler.",)  # (a masked LM's body has none)
    pipelines = ("feature-extraction",)
    pipeline_arguments = ("return_tensors", "truncation")

    def pipeline(self, name, model, tokenizer, inputs, batch_size: int, return_tensors: bool = False,
                 truncation: bool = False):
        """Each text's last hidden states, (1, tokens, hidden) as nested lists, or a tensor with
        `return_tensors`; a list of them for a list of texts. (Not a sentence embedding: no pooling.)"""
        texts, single = pipeline_texts(inputs, name)
        features = _features(tokenizer, texts, truncation=bool(truncation))
        out: list = [None] * len(texts)
        for idx, _, output in forward_batches(model, features, batch_size, tokenizer.pad_token_id):
            for row, i in enumerate(idx):
                states = output.last_hidden_state[row:row + 1, :len(features[i]["input_ids"])].cpu()
                out[i] = states if return_tensors else states.tolist()
        return out[0] if single else out


__all__ = ["FeatureExtractionTask", "FillMaskTask"]
