"""Text generation for every decoder-only model: greedy, sampling (temperature, top-k, top-p), beam
search, repetition penalty, stop strings, and streaming.

Decoder models inherit ``GenerationMixin``; they provide ``make_cache(batch, max_len)`` and a
forward taking ``input_ids, attention_mask, position_ids, past_key_values, logits_to_keep``.

    ids = model.generate(input_ids, attention_mask=mask, max_new_tokens=50, pad_token_id=tok.pad_token_id)
    for piece in model.stream(tokenizer, "Once upon a time", max_new_tokens=50, do_sample=True, seed=0):
        print(piece, end="", flush=True)

How it runs: the KV cache is allocated once for prompt + max_new_tokens; the prompt is encoded in
one forward pass, then each step feeds one token per sequence. Prompts of a batch are padded on
the left (``tokenizer.padding_side = "left"``); positions come from the attention mask so every
prompt starts at position 0, as in Hugging Face.

This module imports nothing from plmkit's models, training, data or CLI code (only plmkit.nn).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from plmkit.errors import ConfigError, PlmkitError
from plmkit.nn.decoding import decoding_layout, row_major_lm_head
from plmkit.nn.masks import positions_from_mask
from plmkit.utils.constants import MAX_SEED


# -- logits processing --------------------------------------------------------------------------
def repetition_penalty_(scores: Tensor, sequences: Tensor, penalty: float) -> Tensor:
    """CTRL's rule (Keskar et al., 2019), as Hugging Face applies it: every token already in
    ``sequences`` (B, L) (prompt included) gets its score divided by ``penalty`` if positive,
    multiplied by it if negative. scores: (B, V), modified in place and returned."""
    picked = scores.gather(1, sequences)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return scores.scatter_(1, sequences, picked)


def top_k_filter(scores: Tensor, k: int) -> Tensor:
    """Keep the k highest scores of each row (ties with the k-th are kept); the rest become -inf."""
    k = min(k, scores.shape[-1])
    kth = scores.topk(k, dim=-1).values[..., -1:]
    return scores.masked_fill(scores < kth, -math.inf)


def top_p_filter(scores: Tensor, p: float) -> Tensor:
    """Nucleus filter (Holtzman et al., 2020): keep the smallest set of most probable tokens whose
    probability adds up to at least ``p`` (always at least one token); the rest become -inf."""
    sorted_scores, order = scores.sort(dim=-1, descending=True)
    probs = sorted_scores.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
    drop_sorted = mass_before >= p
    drop_sorted[..., 0] = False
    drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
    return scores.masked_fill(drop, -math.inf)


@dataclass
class GenerationSettings:
    max_new_tokens: int = 20
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    num_beams: int = 1
    length_penalty: float = 1.0
    repetition_penalty: float = 1.0
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    stop_strings: tuple[str, ...] = ()

    def check(self) -> None:
        def need(ok: bool, message: str):
            if not ok:
                raise ConfigError(message)
        need(isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1,
             f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        need(0 <= self.min_new_tokens <= self.max_new_tokens, "min_new_tokens must be in [0, max_new_tokens]")
        if self.do_sample:  # greedy and beam search ignore these, as in Hugging Face, which warns
            need(self.temperature > 0, "temperature must be > 0 (use do_sample=False for greedy decoding)")
            need(self.top_k is None or self.top_k >= 1, "top_k must be >= 1")
            need(self.top_p is None or 0 < self.top_p <= 1, "top_p must be in (0, 1]")
        else:
            unused = [f"{name}={value}" for name, value, default in (("temperature", self.temperature, 1.0),
                      ("top_k", self.top_k, None), ("top_p", self.top_p, None)) if value != default]
            if unused:
                warnings.warn(f"{', '.join(unused)} only apply when sampling (do_sample=True): ignored", stacklevel=4)
        need(self.num_beams >= 1, "num_beams must be >= 1")
        need(self.repetition_penalty > 0, "repetition_penalty must be > 0")
        need(not (self.num_beams > 1 and self.do_sample), "beam sampling (num_beams > 1 with do_sample) is not supported")
        need(not (self.num_beams > 1 and self.stop_strings), "stop_strings are not supported with beam search")

    def process(self, scores: Tensor, sequences: Tensor, step: int) -> Tensor:
        """Hugging Face's processor order: repetition penalty, min_new_tokens, then (sampling only)
        temperature, top-k, top-p. scores (B, V) fp32 are modified in place."""
        if self.repetition_penalty != 1.0:
            repetition_penalty_(scores, sequences, self.repetition_penalty)
        if step < self.min_new_tokens and self.eos_token_ids:
            scores[:, list(self.eos_token_ids)] = -math.inf
        if self.do_sample:
            if self.temperature != 1.0:
                scores = scores / self.temperature
            if self.top_k is not None:
                scores = top_k_filter(scores, self.top_k)
            if self.top_p is not None and self.top_p < 1.0:
                scores = top_p_filter(scores, self.top_p)
        return scores


def _as_ids(ids) -> tuple[int, ...]:
    if ids is None:
        return ()
    return (int(ids),) if isinstance(ids, int) else tuple(int(i) for i in ids)


# -- incremental detokenisation -----------------------------------------------------------------
class IncrementalDecoder:
    """Turns a stream of token ids into text pieces, never emitting half a character or a word piece
    whose rendering depends on what follows (byte-level BPE, SentencePiece's leading spaces).

    Each ``push`` decodes a short window of recent tokens and emits only the text added since the
    previous piece, and nothing while the window ends in an incomplete UTF-8 sequence (U+FFFD).
    Works with ``transformers`` tokenizers and ``tokenizers.Tokenizer`` (anything with ``decode``).
    """

    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self.tokenizer, self.skip = tokenizer, skip_special_tokens
        self.ids: list[int] = []
        self.prefix = 0  # start of the decoding window
        self.read = 0  # tokens already turned into emitted text

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip)

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        before = self._decode(self.ids[self.prefix:self.read])
        text = self._decode(self.ids[self.prefix:])
        if len(text) > len(before) and not text.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return text[len(before):]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (e.g. a truncated multi-byte character at the very end)."""
        before = self._decode(self.ids[self.prefix:self.read])
        text = self._decode(self.ids[self.prefix:])
        self.prefix = self.read = len(self.ids)
        return text[len(before):]


def prompt_ids(tokenizer, text: str) -> list[int]:
    """Token ids of a prompt (``tokenizer.encode``); an empty prompt starts from the bos (or eos) token,
    as generating "from nothing" does in Hugging Face."""
    if not isinstance(text, str):
        raise ConfigError(f"a prompt is a string, got {type(text).__name__}")
    enc = tokenizer.encode(text) if text else []
    ids = list(enc.ids) if hasattr(enc, "ids") else list(enc)
    if not ids:
        bos, eos = getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)
        start = bos if bos is not None else eos
        if start is None:
            raise ConfigError("empty prompt, and the tokenizer has no bos or eos token to start from")
        ids = [start]
    return ids


def _check_prompt(input_ids: Tensor) -> None:
    if not isinstance(input_ids, Tensor) or input_ids.dtype in (torch.bool,) or input_ids.is_floating_point() \
            or input_ids.is_complex() or input_ids.dim() not in (1, 2):
        shape = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__
        raise ConfigError(f"input_ids must be a (B, T) or (T,) tensor of token ids (integers), got {shape}"
                          + (f" {input_ids.dtype}" if isinstance(input_ids, Tensor) else ""))
    if input_ids.shape[-1] == 0:
        raise ConfigError("input_ids has no tokens: generation continues a prompt; give at least one token "
                          "(e.g. the tokenizer's bos_token_id to start from nothing)")


# -- the mixin ----------------------------------------------------------------------------------
class GenerationMixin:
    """``generate`` and ``stream`` for decoder-only models (see the module docstring).

    List it before the ``nn.Module`` base so that its ``train`` runs.
    """

    def train(self, mode: bool = True):
        if mode:
            row_major_lm_head(self)  # generate() left the LM head column-major
        return super().train(mode)

    def _settings(self, batch: int, max_new_tokens, min_new_tokens, do_sample, temperature, top_k, top_p, num_beams,
                  length_penalty, repetition_penalty, eos_token_id, pad_token_id, stop_strings,
                  tokenizer) -> GenerationSettings:
        eos = _as_ids(self.config.eos_token_id if eos_token_id is None else eos_token_id)
        pad = self.config.pad_token_id if pad_token_id is None else pad_token_id
        stops = (stop_strings,) if isinstance(stop_strings, str) else tuple(stop_strings or ())
        s = GenerationSettings(max_new_tokens, min_new_tokens, do_sample, temperature, top_k, top_p, num_beams,
                               length_penalty, repetition_penalty, eos, pad, stops)
        s.check()
        vocab = self.config.vocab_size
        bad = [i for i in eos if not (isinstance(i, int) and 0 <= i < vocab)]
        if bad or (pad is not None and not 0 <= pad < vocab):
            raise ConfigError(f"{'eos_token_id ' + str(bad[0]) if bad else f'pad_token_id {pad}'} is not a token id of "
                              f"this model's {vocab}-token vocabulary")
        if stops and tokenizer is None:
            raise ConfigError("stop_strings need the tokenizer: generate(..., stop_strings=[...], tokenizer=tok)")
        if batch > 1 and (eos or stops) and pad is None:
            raise ConfigError("sequences of a batch can end at different steps, so the shorter ones are padded, "
                             "but no pad_token_id is known: pass pad_token_id=... (for GPT-2 style tokenizers "
                             "without a pad token, tokenizer.eos_token_id is the usual choice)")
        return s

    def generate(self, input_ids: Tensor, attention_mask: Tensor | None = None, *, max_new_tokens: int = 20,
                 min_new_tokens: int = 0, do_sample: bool = False, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, num_beams: int = 1,
                 length_penalty: float = 1.0, repetition_penalty: float = 1.0,
                 eos_token_id: int | Sequence[int] | None = None, pad_token_id: int | None = None,
                 stop_strings: str | Sequence[str] | None = None, tokenizer=None, seed: int | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        """Continue each prompt; returns prompt + new ids, (B, T + n), n <= max_new_tokens.

        input_ids (B, T) or (T,); attention_mask (B, T), prompts padded on the left.
        do_sample: sample from softmax(scores / temperature) after top_k / top_p filtering; else greedy.
        num_beams > 1: beam search; hypotheses are ranked by sum(log p) / new_length ** length_penalty.
        repetition_penalty: > 1 discourages tokens already present (Hugging Face's rule).
        eos_token_id: int or list; None = the model config's; [] = never stop early.
        pad_token_id: fills sequences that finished before the others (None = the config's); required
            whenever a batch can finish unevenly (never silently replaced by the EOS id).
        stop_strings: stop a sequence once its new text contains one of them (needs ``tokenizer``).
        seed / generator: make sampling reproducible.
        """
        _check_prompt(input_ids)
        if input_ids.dim() == 1:
            out = self.generate(input_ids[None], None if attention_mask is None else attention_mask[None],
                                max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, do_sample=do_sample,
                                temperature=temperature, top_k=top_k, top_p=top_p, num_beams=num_beams,
                                length_penalty=length_penalty, repetition_penalty=repetition_penalty,
                                eos_token_id=eos_token_id, pad_token_id=pad_token_id, stop_strings=stop_strings,
                                tokenizer=tokenizer, seed=seed, generator=generator)
            return out[0]
        s = self._settings(input_ids.shape[0], max_new_tokens, min_new_tokens, do_sample, temperature, top_k, top_p,
                           num_beams, length_penalty, repetition_penalty, eos_token_id, pad_token_id, stop_strings,
                           tokenizer)
        with decoding_layout(self), torch.inference_mode():
            if s.num_beams > 1:
                out = self._beam_search(input_ids, attention_mask, s)
            else:
                steps = self._decode_steps(input_ids, attention_mask, s, tokenizer, _generator(seed, generator, input_ids))
                for sequences, n in steps:
                    pass
                out = sequences[:, :input_ids.shape[1] + n]
        return out.clone()  # made outside inference mode: an ordinary tensor that autograd may use later

    def stream(self, tokenizer, prompt: str | Tensor, attention_mask: Tensor | None = None, *,
               skip_special_tokens: bool = True, **generate_kwargs) -> Iterator[str]:
        """Yield the text of one continuation piece by piece as tokens are produced.

        prompt: a string (encoded with ``tokenizer``) or input ids (T,) / (1, T). Takes the keyword
        arguments of ``generate`` except num_beams > 1. Pieces joined == the decoded new tokens.
        """
        if isinstance(prompt, str):
            ids = torch.tensor([prompt_ids(tokenizer, prompt)], device=_device(self))
        else:
            _check_prompt(prompt)
            ids = prompt if prompt.dim() == 2 else prompt[None]
        if ids.shape[0] != 1:
            raise ConfigError(f"stream() continues one prompt; got a batch of {ids.shape[0]} (use generate)")
        if generate_kwargs.get("num_beams", 1) != 1:
            raise ConfigError("stream() does not support beam search: beams are only final at the end (use generate)")
        seed, generator = generate_kwargs.pop("seed", None), generate_kwargs.pop("generator", None)
        s = self._settings(1, **{**_STREAM_DEFAULTS, **generate_kwargs, "tokenizer": tokenizer})
        decoder = IncrementalDecoder(tokenizer, skip_special_tokens)
        t = ids.shape[1]
        with decoding_layout(self), torch.inference_mode():
            for sequences, n in self._decode_steps(ids, attention_mask, s, tokenizer, _generator(seed, generator, ids)):
                piece = decoder.push(int(sequences[0, t + n - 1]))
                if piece:
                    yield piece
        rest = decoder.flush()
        if rest:
            yield rest

    # -- greedy and sampling --------------------------------------------------------------------
    def _decode_steps(self, input_ids: Tensor, attention_mask: Tensor | None, s: GenerationSettings, tokenizer,
                      generator: torch.Generator | None) -> Iterator[tuple[Tensor, int]]:
        """Yields (sequences buffer (B, T + max_new), number of new tokens written) after each step."""
        b, t = input_ids.shape
        total = t + s.max_new_tokens
        _check_room(self, total)
        device = input_ids.device
        padded = attention_mask is not None and not bool(attention_mask.all())
        if padded and not bool(attention_mask[:, -1].all()):
            raise PlmkitError("a prompt is padded on the right: generation continues after the last position, so "
                              "pad prompts on the left (tokenizer.padding_side = 'left')")
        mask = torch.ones(b, total, dtype=torch.long, device=device)
        if padded:
            mask[:, :t] = attention_mask
            positions = positions_from_mask(attention_mask)
        else:
            positions = torch.arange(t, device=device).expand(b, t)
        sequences = torch.empty(b, total, dtype=torch.long, device=device)
        sequences[:, :t] = input_ids
        cache = self.make_cache(b, total)
        out = self(input_ids, attention_mask=mask[:, :t] if padded else None, position_ids=positions,
                   past_key_values=cache, logits_to_keep=1)
        next_pos = positions[:, -1:] + 1  # (B, 1)
        eos = torch.tensor(s.eos_token_ids, device=device) if s.eos_token_ids else None
        finished = torch.zeros(b, dtype=torch.bool, device=device)
        for step in range(s.max_new_tokens):
            scores = s.process(out.logits[:, -1].float(), sequences[:, :t + step], step)
            if s.do_sample:
                token = torch.multinomial(scores.softmax(dim=-1), 1, generator=generator).squeeze(1)
            else:
                token = scores.argmax(dim=-1)
            if s.pad_token_id is not None:
                token = token.masked_fill(finished, s.pad_token_id)
            sequences[:, t + step] = token
            if eos is not None:
                finished |= torch.isin(token, eos)
            if s.stop_strings:
                finished |= _hits_stop_string(tokenizer, sequences, t, t + step + 1, s.stop_strings, finished)
            yield sequences, step + 1
            if step + 1 == s.max_new_tokens or bool(finished.all()):
                return
            out = self(token[:, None], attention_mask=mask[:, :t + step + 1] if padded else None,
                       position_ids=next_pos, past_key_values=cache, logits_to_keep=1)
            next_pos = next_pos + 1

    # -- beam search ----------------------------------------------------------------------------
    def _beam_search(self, input_ids: Tensor, attention_mask: Tensor | None, s: GenerationSettings) -> Tensor:
        """Hugging Face's (vectorised, early_stopping=False) beam search, so results agree token for token.

        Each step keeps the ``num_beams`` best unfinished continuations; a continuation that ends in EOS
        (or reaches max length) competes for the finished set with score sum(log p) / new_length ** length_penalty.
        Search stops when no running beam can beat the worst finished one (scored at the current length).
        """
        b, t = input_ids.shape
        nb, device = s.num_beams, input_ids.device
        total = t + s.max_new_tokens
        _check_room(self, total)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if not bool(attention_mask[:, -1].all()):
            raise PlmkitError("a prompt is padded on the right: pad prompts on the left (tokenizer.padding_side = 'left')")
        keep = max(2, 1 + len(s.eos_token_ids)) * nb
        eos = torch.tensor(s.eos_token_ids, device=device) if s.eos_token_ids else None
        fill = s.pad_token_id if s.pad_token_id is not None else (s.eos_token_ids[0] if s.eos_token_ids else 0)
        mask = torch.ones(b * nb, total, dtype=torch.long, device=device)
        mask[:, :t] = attention_mask.repeat_interleave(nb, dim=0)
        padded = not bool(attention_mask.all())
        positions = positions_from_mask(mask[:, :t])

        running = torch.full((b, nb, total), fill, dtype=torch.long, device=device)
        running[:, :, :t] = input_ids[:, None]
        finished_seqs = running.clone()
        running_scores = torch.zeros(b, nb, device=device)
        running_scores[:, 1:] = -1e9  # all beams start identical: only the first one may expand at step 0
        finished_scores = torch.full((b, nb), -1e9, device=device)
        finished_len = torch.zeros(b, nb, dtype=torch.long, device=device)
        is_finished = torch.zeros(b, nb, dtype=torch.bool, device=device)
        improvable = torch.ones(b, 1, dtype=torch.bool, device=device)
        first_nb = torch.arange(keep, device=device) < nb
        offsets = torch.arange(b, device=device)[:, None] * nb

        cache = self.make_cache(b * nb, total)
        out = self(running[:, :, :t].reshape(b * nb, t), attention_mask=mask[:, :t] if padded else None,
                   position_ids=positions, past_key_values=cache, logits_to_keep=1)
        next_pos = positions[:, -1:] + 1
        for step in range(s.max_new_tokens):
            cur = t + step
            log_probs = F.log_softmax(out.logits[:, -1].float(), dim=-1)
            log_probs = s.process(log_probs, running[:, :, :cur].reshape(b * nb, cur), step)
            v = log_probs.shape[-1]
            log_probs = (log_probs.view(b, nb, v) + running_scores[:, :, None]).view(b, nb * v)
            top_scores, top_index = log_probs.topk(keep, dim=-1)  # (b, keep)
            source, token = top_index // v, top_index % v
            candidates = running.gather(1, source[:, :, None].expand(b, keep, total)).clone()
            candidates[:, :, cur] = token
            ends = torch.isin(token, eos) if eos is not None else torch.zeros_like(token, dtype=torch.bool)
            if cur + 1 >= total:
                ends = torch.ones_like(ends)

            # the best continuations that did not end keep running
            alive_scores = top_scores + ends.float() * -1e9
            pick = alive_scores.topk(nb, dim=-1).indices  # (b, nb)
            running = candidates.gather(1, pick[:, :, None].expand(b, nb, total))
            running_scores = alive_scores.gather(1, pick)
            beam_source = source.gather(1, pick)

            # the best continuations that ended compete with the finished hypotheses
            just_ended = ends & first_nb[None]
            scores = top_scores / ((cur + 1 - t) ** s.length_penalty)
            scores = scores + (~improvable).float() * -1e9 + (~just_ended).float() * -1e9
            merged_scores = torch.cat([finished_scores, scores], dim=1)
            best = merged_scores.topk(nb, dim=-1).indices
            finished_scores = merged_scores.gather(1, best)
            finished_seqs = torch.cat([finished_seqs, candidates], 1).gather(1, best[:, :, None].expand(b, nb, total))
            finished_len = torch.cat([finished_len, torch.full_like(token, cur + 1 - t)], 1).gather(1, best)
            is_finished = torch.cat([is_finished, just_ended], 1).gather(1, best)

            best_running = running_scores[:, :1] / ((cur + 1 - t) ** s.length_penalty)
            worst_finished = torch.where(is_finished, finished_scores.min(dim=1, keepdim=True).values,
                                         torch.full_like(finished_scores, -1e9))
            improvable = improvable & (best_running > worst_finished).any(dim=-1, keepdim=True)
            if not bool(improvable.any()) or bool(ends.all()):
                break
            cache.reorder((beam_source + offsets).reshape(-1))
            out = self(running[:, :, cur].reshape(b * nb, 1), attention_mask=mask[:, :cur + 1] if padded else None,
                       position_ids=next_pos, past_key_values=cache, logits_to_keep=1)
            next_pos = next_pos + 1
        n = int(finished_len[:, 0].max())
        return finished_seqs[:, 0, :t + n]


_STREAM_DEFAULTS = dict(max_new_tokens=20, min_new_tokens=0, do_sample=False, temperature=1.0, top_k=None, top_p=None,
                        num_beams=1, length_penalty=1.0, repetition_penalty=1.0, eos_token_id=None,
                        pad_token_id=None, stop_strings=None)


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _check_room(model, total: int) -> None:
    limit, trained = model.config.max_positions, model.config.context_length
    if limit is not None and total > limit:  # learned positions: there are no more
        raise PlmkitError(f"prompt + max_new_tokens = {total} positions, but this model has only {limit}: "
                          "shorten the prompt or lower max_new_tokens")
    if trained is not None and total > trained:  # rotary: runs on, but was never trained there
        warnings.warn(f"prompt + max_new_tokens = {total} positions, beyond the {trained} this model was "
                      "trained on: expect the text to degrade past that point", stacklevel=3)


def _generator(seed: int | None, generator: torch.Generator | None, like: Tensor) -> torch.Generator | None:
    if generator is not None:
        return generator
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    return torch.Generator(device=like.device).manual_seed(seed)


def _hits_stop_string(tokenizer, sequences: Tensor, start: int, end: int, stops: tuple[str, ...],
                      finished: Tensor) -> Tensor:
    """(B,) whether the new text of each unfinished row now contains a stop string (checked on a
    window of recent tokens long enough for the longest stop string)."""
    window = 4 * max(len(x) for x in stops) + 8  # a character is at most 4 byte-level tokens
    hits = torch.zeros_like(finished)
    for row in (~finished).nonzero().flatten().tolist():
        text = tokenizer.decode(sequences[row, max(start, end - window):end].tolist(), skip_special_tokens=False)
        hits[row] = any(x in text for x in stops)
    return hits


__all__ = ["GenerationMixin", "GenerationSettings", "IncrementalDecoder", "decoding_layout", "prompt_ids",
           "repetition_penalty_", "top_k_filter", "top_p_filter"]
