"""Supervised fine-tuning (SFT) of a causal LM on prompt -> response pairs, with the chat template
of plmkit.chat and the loss on the responses only.

    plmkit finetune --task sft --model runs/gpt/model --train dialogue/english.jsonl --out runs/chat
    plmkit chat --model runs/chat/model

Examples (`SFTDataset`, `SFTCollator`): the prompt part (``<|user|>\\n...<|assistant|>\\n``) and the
reply are tokenized separately, exactly as at inference time (the prompt is encoded, the reply
generated), then concatenated: ``input_ids = prompt + reply + [eos]``; ``labels`` are -100 on the
prompt, so the loss covers the reply and its EOS only. Batches are right-padded to their longest
example with the tokenizer's pad token; `ensure_pad_token` adds a dedicated ``<|pad|>`` special
token when there is none and grows the model's embeddings (and an untied lm_head) to match (EOS is
never used as padding in training: a model trained with EOS masked as padding can learn never to
stop). Without an eval file a seeded fraction of the pairs is held out (``--eval-fraction``); the
evaluation is the loss and perplexity of the held-out responses.

A fine-tuned chat model is used with ``plmkit chat`` or ``plmkit generate`` (`plmkit predict` does
not take it). JSONL input: one object per line with string fields "prompt" and "response" (and optionally
"system"; the format of ``plmkit data fetch dialogue``); a malformed line is a DataError naming file:line.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch

from plmkit.chat import encode_prompt, encode_text, format_prompt, format_system, format_user
from plmkit.data.collate import pad_collate
from plmkit.errors import ConfigError, DataError
from plmkit.generation import SETTING_NAMES
from plmkit.tasks.base import Task, TaskSettings
from plmkit.utils.constants import IGNORE_INDEX, PAD_TOKEN
from plmkit.utils.device import model_device
from plmkit.utils.settings import setting
from plmkit.tasks.fields import STRING, TEXT, field
from plmkit.utils.text import jsonl_rows
from plmkit.utils.progress import progress_bar

log = logging.getLogger("plmkit")

# the text-generation pipeline's defaults where neither the call nor the model's generation config sets them (HF's),
# the sampling ones only when sampling
PIPELINE_GENERATION = {"max_new_tokens": 256, "do_sample": True, "temperature": 0.7}
SAMPLING_ONLY = frozenset({"temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff"})
SFT_TRAIN_DEFAULTS = {"lr": 3e-4, "weight_decay": 0.0, "warmup_ratio": 0.03, "schedule": "cosine", "log_every": 10}


def ensure_pad_token(tokenizer, model=None) -> int:
    """The tokenizer's pad id; adds ``<|pad|>`` as pad token first if it has none (and then grows
    `model`'s embeddings and sets its config.pad_token_id)."""
    if tokenizer.pad_token_id is None:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    if model is not None:
        if model.get_input_embeddings().num_embeddings < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
        model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer.pad_token_id


def prompt_pad_id(tokenizer, model) -> int:
    """The id `model`'s prompts are padded with while it generates: the tokenizer's pad token where the
    model's embeddings hold it, else (none, or one added after the model was made) its eos token: the
    padding is masked, and generate's padding only fills rows that ended. The tokenizer is not changed."""
    pad = tokenizer.pad_token_id
    if pad is None or pad >= model.get_input_embeddings().num_embeddings:
        return tokenizer.eos_token_id
    return pad


def reply_batches(lengths: list[int], batch_size: int, spread: int | None) -> list[list[int]]:
    """The indices of prompts of `lengths` in batches of at most `batch_size`, shortest first, the prompts of a
    batch at most `spread` tokens apart (None: any): the batch, padded to its longest prompt, must hold the
    new tokens its shortest prompt has room for within the model's positions."""
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        last = batches[-1] if batches else None
        if last and len(last) < batch_size and (spread is None or lengths[i] - lengths[last[0]] <= spread):
            last.append(i)
        else:
            batches.append([i])
    return batches


def read_pairs(path: str | Path, labelled: bool = True) -> Iterator[tuple[dict, str]]:
    """(record, "file:line") for every non-blank line of a prompt/response JSONL file: a non-empty
    "prompt" and "response" (chat never sends an empty message, and an empty reply teaches only EOS),
    and an optional string "system"; without `labelled` the response is optional (a teacher writes it)."""
    for number, record in jsonl_rows(path):
        where = f"{path}:{number}"
        for key in ("prompt", "response") if labelled else ("prompt",):
            field(record, key, where, TEXT)
        field(record, "system", where, STRING, required=False)
        yield record, where


class SFTDataset:
    """Tokenized prompt -> response examples: {"input_ids", "labels"} lists (labels -100 on the prompt).

    pairs: (prompt, response) tuples or {"prompt", "response"[, "system"]} dicts; `from_jsonl` reads files.
    Longer than `max_length` tokens: the reply is cut (its EOS with it) and counted in ``truncated``;
    an example whose prompt leaves no room for a reply token is skipped and counted in ``skipped``.
    """

    def __init__(self, pairs: Iterable, tokenizer, max_length: int, system: str | None = None):
        if tokenizer.eos_token_id is None:
            raise ConfigError("the tokenizer has no eos token to end replies with")
        self.examples: list[dict[str, list[int]]] = []
        self.skipped = self.truncated = 0
        eos = tokenizer.eos_token_id
        for pair in pairs:
            if isinstance(pair, dict):
                prompt, response, sys_text = pair["prompt"], pair["response"], pair.get("system", system)
            else:
                (prompt, response), sys_text = pair, system
            prompt_ids = encode_text(tokenizer, format_system(sys_text) + format_user(prompt))
            reply_ids = encode_text(tokenizer, response) + [eos]
            room = max_length - len(prompt_ids)
            if room < 1:
                self.skipped += 1
                continue
            self.truncated += len(reply_ids) > room
            reply_ids = reply_ids[:room]
            self.examples.append({"input_ids": prompt_ids + reply_ids,
                                  "labels": [IGNORE_INDEX] * len(prompt_ids) + reply_ids})

    @classmethod
    def from_jsonl(cls, paths: str | Path | Sequence[str | Path], tokenizer, max_length: int,
                   system: str | None = None) -> "SFTDataset":
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        records = [record for p in paths for record, _ in read_pairs(p)]
        if not records:
            raise DataError(f"no prompt/response pairs in {', '.join(map(str, paths))}")
        return cls(records, tokenizer, max_length, system)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.examples[i]

    def lengths(self) -> list[int]:
        return [len(e["input_ids"]) for e in self.examples]


class SFTCollator:
    """Right-pad a list of SFT examples to the longest: input_ids (pad id), attention_mask, labels (-100)."""

    def __init__(self, pad_token_id: int):
        if pad_token_id is None:
            raise ConfigError("SFT batches need a pad token id: call ensure_pad_token(tokenizer, model) first")
        self.pad_token_id = int(pad_token_id)
        self._collate = pad_collate(self.pad_token_id)

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        return self._collate([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples])


@dataclass
class SFTSettings(TaskSettings):
    section = "sft"
    max_length: int | None = setting(None, "tokens per example (default: the model's context window)", metavar="N",
                                     at_least=2)
    system: str | None = setting(None, "system text put before every prompt without its own", metavar="TEXT")
    eval_batches: int = setting(20, "held-out batches the perplexity is measured on", metavar="N", at_least=1,
                                shapes_run=False)


class SFTTask(Task):
    name = "sft"
    model_task = "causal-lm"
    settings_class = SFTSettings
    run_defaults = {"data": {"batch_size": 8, "eval_batch_size": 8, "group_by_length": True, "eval_fraction": 0.1},
                    "train": SFT_TRAIN_DEFAULTS}
    forward_kwargs = {"return_logits": False}  # the chunked loss: no (B, T, V) logits
    description = "JSONL with prompt and response"
    pipelines = ("text-generation",)
    pipeline_arguments = ("return_full_text", "return_tensors", "skip_special_tokens", "clean_up_tokenization_spaces",
                          "stop_sequence", "continue_final_message", *sorted(SETTING_NAMES))

    def read(self, path, labelled: bool | None = True) -> list[dict]:
        records = [record for record, _ in read_pairs(path, bool(labelled))]
        if not records:
            raise DataError(f"no prompt/response pairs in {path}")
        return records

    def adapt(self, model, tokenizer) -> None:
        ensure_pad_token(tokenizer, model)

    def check_model(self, model, where) -> None:
        """max_length: at most the context window, which is its default."""
        window = model.config.context_length
        if self.settings.max_length is None:
            self.settings.max_length = window or 512
        if window is not None and self.settings.max_length > window:
            raise ConfigError(f"max_length={self.settings.max_length} exceeds the model's context window of "
                              f"{window} tokens")

    def encode(self, tokenizer, examples, label2id, path="data", training: bool = False) -> SFTDataset:
        data = SFTDataset(examples, tokenizer, self.settings.max_length, self.settings.system)
        limit = self.settings.max_length
        if data.skipped or data.truncated:
            log.info("plmkit: %s: %s", path, ", ".join(
                text for n, text in ((data.skipped, f"{data.skipped} skipped (prompt longer than {limit} tokens)"),
                                     (data.truncated, f"{data.truncated} with the reply cut at {limit} tokens")) if n))
        if len(data) == 0:
            raise DataError(f"{path}: every {'training' if training else 'held-out'} prompt is longer than "
                            f"max_length={limit} tokens; nothing to {'train' if training else 'evaluate'} on")
        return data

    def teacher_targets(self, teacher, tokenizer, examples, batch_size: int = 32) -> list[dict]:
        """The records with the replies `teacher` writes to their prompts: greedy whatever its
        generation_config says (sampling, beams), each reply up to max_length tokens with its own prompt,
        whatever prompts share its batch."""
        from plmkit.data.collate import pad_sequences
        eos, pad, limit = tokenizer.eos_token_id, prompt_pad_id(tokenizer, teacher), self.settings.max_length
        prompts = [encode_text(tokenizer, format_system(r.get("system", self.settings.system))
                               + format_user(r["prompt"])) for r in examples]
        longest = max(map(len, prompts), default=0)
        if longest >= limit:
            raise DataError(f"a prompt of {longest} tokens leaves no room for a reply within max_length={limit}")
        replies = [""] * len(examples)
        device = next(teacher.parameters()).device
        window = teacher.config.max_positions  # (the padded batch and its new tokens must fit in it)
        batches = reply_batches([len(p) for p in prompts], batch_size, None if window is None else window - limit)
        for idx in progress_bar(batches, desc="teacher: replies", unit="batch", leave=False, disable=not self.progress):
            ids, mask = pad_sequences([prompts[i] for i in idx], pad, side="left")
            # as many new tokens as the shortest prompt leaves room for; each row is then cut at its own room
            # (greedy rows are independent: a row's tokens are those it would get alone)
            out = teacher.generate(ids.to(device), attention_mask=mask.to(device),
                                   max_new_tokens=limit - len(prompts[idx[0]]), eos_token_id=eos, pad_token_id=pad,
                                   do_sample=False, num_beams=1, return_dict_in_generate=False)
            for row, i in enumerate(idx):
                reply = out[row, ids.shape[1]:ids.shape[1] + limit - len(prompts[i])]
                replies[i] = tokenizer.decode(reply.tolist(), skip_special_tokens=True).strip()
        return [{**r, "response": reply} for r, reply in zip(examples, replies) if reply]

    def collate(self, tokenizer) -> SFTCollator:
        return SFTCollator(tokenizer.pad_token_id)

    def main_metric(self) -> None:
        return None  # the best checkpoint only when asked for (--metric perplexity)

    sharded_evaluation = True

    def evaluate(self, model, tokenizer, examples, features, batch_size: int = 8, part=None) -> dict[str, float]:
        """Loss and perplexity of the held-out responses (at most `eval_batches` batches); shared by
        several processes (`part`), each its rows of every batch, the losses and token counts summed."""
        from plmkit.evaluation.perplexity import evaluate_perplexity
        return evaluate_perplexity(model, features, batch_size, self.settings.eval_batches, self.collate(tokenizer),
                                   part=part)

    def predict(self, model, tokenizer, records, batch_size: int = 32, where: str = "input", lines=None,
                align_to_words: bool = True):
        raise ConfigError("plmkit predict takes the task models (classification, ner, relation, qa); a causal LM "
                          "answers with plmkit generate --input FILE, or plmkit chat")

    def pipeline(self, name, model, tokenizer, inputs, batch_size: int, return_full_text: bool = True,
                 return_tensors: bool = False, skip_special_tokens: bool = True, clean_up_tokenization_spaces=None,
                 stop_sequence=None, continue_final_message: bool | None = None, **settings):
        """Hugging Face's TextGenerationPipeline: a prompt, a chat (a list of {"role", "content"} messages, in
        plmkit's chat template), or a list of them, each generated alone with `generate`'s settings (HF's
        names; `PIPELINE_GENERATION` where neither they nor the model's generation config decide). Per prompt a
        list of {"generated_text"} (the prompt + the new text; the new text alone without `return_full_text`; a
        chat: its messages with the reply), or of {"generated_token_ids"} with `return_tensors`."""
        prompts, single = _generation_prompts(inputs, name)
        chosen = {**model.generation_defaults(), **{k: v for k, v in settings.items() if v is not None}}
        added = {k: v for k, v in PIPELINE_GENERATION.items()
                 if k not in chosen and not (k == "max_new_tokens" and "max_length" in chosen)}
        added = {k: v for k, v in added.items() if {**chosen, **added}.get("do_sample") or k not in SAMPLING_ONLY}
        settings = {"pad_token_id": prompt_pad_id(tokenizer, model), **settings, **added,
                    "return_dict_in_generate": False}  # (ids, whatever the model's generation config says)
        if stop_sequence is not None:
            settings.update(stop_strings=[stop_sequence] if isinstance(stop_sequence, str) else list(stop_sequence),
                            tokenizer=tokenizer)
        out = []
        for prompt in prompts:
            chat = not isinstance(prompt, str)
            extend = chat and (prompt[-1]["role"] == "assistant" if continue_final_message is None
                               else continue_final_message)
            ids = encode_prompt(tokenizer, _chat_text(prompt, extend) if chat else prompt)
            rows = model.generate(torch.tensor([ids], device=model_device(model)), **settings).tolist()
            texts = [tokenizer.decode(row[len(ids):], skip_special_tokens=skip_special_tokens,
                                      clean_up_tokenization_spaces=clean_up_tokenization_spaces) for row in rows]
            out.append([{"generated_token_ids": row} if return_tensors else
                        {"generated_text": _with_prompt(prompt, text, extend) if return_full_text else text}
                        for row, text in zip(rows, texts)])
        return out[0] if single else out

    def finished(self, result) -> str:
        ppl = result.eval_metrics.get("eval_perplexity")
        ppl = f", held-out perplexity {ppl:.2f}" if ppl is not None else ""
        return f"SFT done: {result.train_examples} examples{ppl}; chat with: plmkit chat --model {result.model_dir}"


def _is_message(m) -> bool:
    return isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m


def _generation_prompts(inputs, pipeline: str) -> tuple[list, bool]:
    """(prompts: texts or chats, whether one was given) of a text-generation call, read as HF reads them."""
    if isinstance(inputs, str) or isinstance(inputs, (list, tuple)) and inputs and all(map(_is_message, inputs)):
        return [inputs], True
    if isinstance(inputs, (list, tuple)) and all(
            isinstance(p, str) or isinstance(p, (list, tuple)) and p and all(map(_is_message, p)) for p in inputs):
        return list(inputs), False
    raise DataError(f"{pipeline} pipeline: inputs must be a prompt, a chat (a list of {{'role', 'content'}} messages) "
                    f"or a list of them, got {type(inputs).__name__}")


def _chat_text(messages: list[dict], extend: bool) -> str:
    """The text a model continues for a chat: plmkit's template up to the assistant's reply, or (`extend`) with
    the last message, the assistant's, begun."""
    if len(messages) < 1 + extend or messages[-1 - extend]["role"] != "user":
        raise ConfigError(f"a chat must end with a user message{' and the reply begun' if extend else ''}; got "
                          f"roles {[m['role'] for m in messages]}")
    head, asked = messages[:-1 - extend], messages[-1 - extend]["content"]
    return format_prompt(head, asked) + (messages[-1]["content"] if extend else "")


def _with_prompt(prompt, text: str, extend: bool):
    """HF's full text: the prompt + `text`; a chat's messages with the reply (`extend`: the last one extended)."""
    if isinstance(prompt, str):
        return prompt + text
    if extend:
        return [*prompt[:-1], {**prompt[-1], "content": prompt[-1]["content"] + text}]
    return [*prompt, {"role": "assistant", "content": text}]


__all__ = ["PAD_TOKEN", "SFTCollator", "SFTDataset", "SFTSettings", "SFTTask", "SFT_TRAIN_DEFAULTS",
           "ensure_pad_token", "prompt_pad_id", "read_pairs", "reply_batches"]
