"""Text generation for every model with an LM head, decoder-only or encoder-decoder: greedy, sampling
(temperature, top-k, top-p), beam search (length penalty, early stopping, several sequences per
input), repetition penalty, n-gram blocking, banned words, forced first and last tokens, minimum
lengths, stop strings, and streaming. One `generate`, the same token for token as Hugging Face's.

    ids = model.generate(input_ids, attention_mask=mask, max_new_tokens=50, pad_token_id=tok.pad_token_id)
    for piece in model.stream(tokenizer, "Once upon a time", max_new_tokens=50, do_sample=True, seed=0):
        print(piece, end="", flush=True)

Decoder-only models provide ``make_cache(batch, max_len)`` and a forward taking ``input_ids,
attention_mask, position_ids, past_key_values, logits_to_keep``. Prompts of a batch are padded on the
left (``tokenizer.padding_side = "left"``); positions come from the attention mask so every prompt
starts at position 0, as in Hugging Face. The KV cache is allocated once for prompt + max_new_tokens;
the prompt runs in one forward pass, then each step feeds one token per sequence.

Encoder-decoders (``is_encoder_decoder``) provide ``encode(input_ids, attention_mask)``, ``make_cache(rows,
max_len, encoder_states, encoder_mask)`` and a forward taking ``decoder_input_ids, past_key_values,
logits_to_keep``. The encoder runs once; the cross-attention keys and values are computed once per
source and every beam (or sample) of it reads them in place: they are never copied per beam nor
reordered per step. `generate` returns the decoder's ids, starting with the decoder start token.

Defaults: a setting not given comes from generate's ``generation_config=``, else the model's ``generation_config``
(generation_config.json, or the decoding keys older checkpoints keep in config.json), else from the config (eos,
pad, decoder start, forced BOS / EOS ids), else from `GenerationSettings` but for top_k, which is 50 when sampling
(`HF_TOP_K`), as in Hugging Face.

This module imports nothing from plmkit's models, training, data or CLI code (only plmkit.nn).
"""
from __future__ import annotations

import inspect
import json
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from plmkit.errors import CheckpointError, ConfigError, PlmkitError
from plmkit.nn.decoding import decoding_layout, row_major_lm_head
from plmkit.nn.masks import positions_from_mask
from plmkit.utils.constants import GENERATION_KEYS, MAX_SEED
from plmkit.utils.settings import check_field_types, is_int, out_of_range, setting
from plmkit.utils.text import describe, read_json_object


# -- logits processing --------------------------------------------------------------------------
def repetition_penalty_(scores: Tensor, sequences: Tensor, penalty: float, ignore: Tensor | None = None) -> Tensor:
    """CTRL's rule (Keskar et al., 2019), as Hugging Face applies it: every token already in
    ``sequences`` (B, L) (prompt included) gets its score divided by ``penalty`` if positive,
    multiplied by it if negative. ``ignore`` (B, T <= L) bool: positions that do not count (a prompt's
    left padding, as Hugging Face's prompt_ignore_length). scores: (B, V), modified in place and returned."""
    if ignore is not None:  # ignored positions point at a spare column, dropped after
        v = scores.shape[1]
        ids = sequences.masked_fill(F.pad(ignore, (0, sequences.shape[1] - ignore.shape[1])), v)
        return scores.copy_(repetition_penalty_(F.pad(scores, (0, 1)), ids, penalty)[:, :v])
    picked = scores.gather(1, sequences)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return scores.scatter_(1, sequences, picked)


def presence_frequency_penalty_(scores: Tensor, generated: Tensor, presence: float, frequency: float) -> Tensor:
    """OpenAI's penalties, as vLLM applies them: every token's score is lowered by ``frequency`` times the
    number of times the row has generated it so far, and by ``presence`` once if it has at all (negative
    values encourage repeats). generated (B, n): the new tokens only (the prompt does not count);
    scores (B, V), modified in place and returned."""
    ones = torch.ones_like(generated, dtype=scores.dtype)
    counts = torch.zeros_like(scores).scatter_add_(1, generated, ones)  # (B, V) times each token was generated
    return scores.sub_(frequency * counts + presence * (counts > 0).to(scores.dtype))


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


def no_repeat_ngram_(scores: Tensor, sequences: Tensor, n: int) -> Tensor:
    """Ban every token that would complete an n-gram already in the row (Paulus et al., 2018), for all
    rows at once: the rows' last n - 1 tokens are compared with the first n - 1 of every n-token window,
    and a matching window bans its last token. sequences (B, L); scores (B, V), in place. A window ending in
    an id the scores have no column for (a prompt's id past the LM head's V columns, when the embeddings have
    more rows) bans nothing."""
    if sequences.shape[1] < n:
        return scores
    windows = sequences.unfold(1, n, 1)  # (B, L - n + 1, n)
    prefix = sequences[:, sequences.shape[1] - n + 1:]  # (B, n - 1)
    banned = windows[:, :, -1]  # (B, W)
    hit = (windows[:, :, :-1] == prefix[:, None]).all(-1) & (banned < scores.shape[1])  # (B, W)
    rows = torch.arange(sequences.shape[0], device=sequences.device)[:, None].expand_as(hit)
    scores[rows[hit], banned[hit]] = -math.inf
    return scores


def bad_words_(scores: Tensor, sequences: Tensor, bad_words: tuple[tuple[int, ...], ...]) -> Tensor:
    """Ban the last token of every banned sequence whose other tokens end the row (a one-token
    sequence is always banned). scores (B, V), in place."""
    for word in bad_words:
        *prefix, last = word
        if not prefix:
            scores[:, last] = -math.inf
        elif len(prefix) <= sequences.shape[1]:
            ends = (sequences[:, -len(prefix):] == sequences.new_tensor(prefix)).all(-1)  # (B,)
            scores[ends, last] = -math.inf
    return scores


def force_(scores: Tensor, tokens: tuple[int, ...]) -> Tensor:
    """Only ``tokens`` remain possible (score 0, log-probability 1); scores (B, V), in place."""
    scores.fill_(-math.inf)
    scores[:, list(tokens)] = 0.0
    return scores


@dataclass
class GenerationSettings:
    """How `generate` decodes (Hugging Face's names; see `GenerationMixin.generate`)."""

    # each value's type and range (`check_values`); what depends on other settings: `check`
    max_new_tokens: int = setting(20, at_least=1)
    min_new_tokens: int = setting(0, at_least=0)
    min_length: int = setting(0, at_least=0)  # of the whole sequence (prompt, or decoder start, included), as HF
    do_sample: bool = False
    temperature: float = setting(1.0, at_least=0)  # > 0 when sampling
    top_k: int | None = setting(None, at_least=0)  # 0 or None: off (generate's default when sampling: HF_TOP_K)
    top_p: float | None = setting(None, at_least=0, at_most=1)  # > 0 when sampling
    num_beams: int = setting(1, at_least=1)
    length_penalty: float = 1.0
    early_stopping: bool | str = False  # True, False (a heuristic) or "never", as Hugging Face
    num_return_sequences: int = setting(1, at_least=1)
    repetition_penalty: float = setting(1.0, above=0)
    presence_penalty: float = setting(0.0, at_least=-2, at_most=2)  # OpenAI's (and vLLM's): new tokens only
    frequency_penalty: float = setting(0.0, at_least=-2, at_most=2)
    no_repeat_ngram_size: int = setting(0, at_least=0)
    bad_words_ids: tuple[tuple[int, ...], ...] = ()
    forced_bos_token_id: int | None = setting(None, at_least=0)  # the first new token (when the sequence holds one)
    forced_eos_token_ids: tuple[int, ...] = setting((), at_least=0)  # the last possible token (at max_new_tokens)
    eos_token_ids: tuple[int, ...] = setting((), at_least=0)
    pad_token_id: int | None = setting(None, at_least=0)
    decoder_start_token_id: int | None = setting(None, at_least=0)  # encoder-decoders: the decoder's first token
    bos_token_id: int | None = setting(None, at_least=0)  # generation_config.json's, checked only: there is a prompt
    stop_strings: tuple[str, ...] = ()
    # what generate returns (not which tokens): a GenerateOutput, with the per-step scores and logits asked for
    return_dict_in_generate: bool = False
    output_scores: bool = False
    output_logits: bool = False
    use_cache: bool = True  # taken for transformers' code: plmkit always decodes with its KV cache (the same tokens)

    def check_values(self, vocab: int | None = None) -> None:
        """Each setting by type and range, and its token ids within the `vocab` ids the LM head scores;
        a ConfigError names the setting (by Hugging Face's name)."""
        check_field_types(self, "generate", _hf_name)
        for f in fields(self):
            value = getattr(self, f.name)
            problem = out_of_range(value, f.metadata.get("bounds"))
            if problem is None and vocab is not None and f.name.endswith(("token_id", "token_ids")):
                problem = out_of_range(value, {"below": vocab})
                problem = problem and f"a token id of this model's {vocab}-token vocabulary ({problem})"
            if problem:
                raise ConfigError(f"generate: {_hf_name(f.name)} must be {problem}, got {value!r}")

    def check(self) -> None:
        """What the settings ask together (each one alone: `check_values`)."""
        def need(ok: bool, message: str):
            if not ok:
                raise ConfigError(message)

        need(self.min_new_tokens <= self.max_new_tokens, "min_new_tokens must be in [0, max_new_tokens]")
        if self.do_sample:  # greedy and beam search ignore these, as in Hugging Face, which warns
            need(self.temperature > 0, "temperature must be > 0 (use do_sample=False for greedy decoding)")
            need(self.top_p is None or self.top_p > 0, "top_p must be in (0, 1]")
        else:
            unused = [f"{name}={value}" for name, value, off in (("temperature", self.temperature, (1.0,)),
                      ("top_k", self.top_k, (None, 0)), ("top_p", self.top_p, (None, 1.0))) if value not in off]
            if unused:
                warnings.warn(f"{', '.join(unused)} only apply when sampling (do_sample=True): ignored", stacklevel=4)
        if (self.output_scores or self.output_logits) and not self.return_dict_in_generate:
            warnings.warn("output_scores / output_logits only apply with return_dict_in_generate=True: ignored",
                          stacklevel=4)
        need(self.early_stopping in (True, False, "never"), f"early_stopping must be true, false or 'never', "
                                                            f"got {self.early_stopping!r}")
        need(not (self.num_beams > 1 and self.do_sample), "beam sampling (num_beams > 1 with do_sample) is not supported")
        need(not (self.num_beams > 1 and self.stop_strings), "stop_strings are not supported with beam search")
        if self.num_beams > 1:
            need(self.num_return_sequences <= self.num_beams,
                 f"num_return_sequences={self.num_return_sequences} is more than num_beams={self.num_beams}")
        else:
            need(self.do_sample or self.num_return_sequences == 1,
                 "greedy decoding gives one sequence per input: num_return_sequences > 1 needs do_sample or beams")

    def process(self, scores: Tensor, sequences: Tensor, step: int, ignore: Tensor | None = None) -> Tensor:
        """Hugging Face's processor order: repetition penalty (then OpenAI's presence and frequency
        penalties, as vLLM), n-gram blocking, banned words, minimum lengths, forced BOS / EOS, then
        (sampling only) temperature, top-k, top-p.

        scores (B, V) fp32 are modified in place; sequences (B, L) every token so far (the prompt, or the
        decoder start, included); ``step`` counts the new tokens so far; ``ignore`` (B, T) bool: the prompts'
        padding, which the repetition penalty skips (the other processors see it, as Hugging Face's do).
        """
        if self.repetition_penalty != 1.0:
            repetition_penalty_(scores, sequences, self.repetition_penalty, ignore)
        if (self.presence_penalty or self.frequency_penalty) and step:
            presence_frequency_penalty_(scores, sequences[:, sequences.shape[1] - step:], self.presence_penalty,
                                        self.frequency_penalty)
        if self.no_repeat_ngram_size:
            no_repeat_ngram_(scores, sequences, self.no_repeat_ngram_size)
        if self.bad_words_ids:
            bad_words_(scores, sequences, self.bad_words_ids)
        if self.eos_token_ids and (sequences.shape[1] < self.min_length or step < self.min_new_tokens):
            scores[:, list(self.eos_token_ids)] = -math.inf
        if self.forced_bos_token_id is not None and sequences.shape[1] == 1:
            force_(scores, (self.forced_bos_token_id,))
        if self.forced_eos_token_ids and step == self.max_new_tokens - 1:
            force_(scores, self.forced_eos_token_ids)
        if self.do_sample:
            if self.temperature != 1.0:
                scores = scores / self.temperature
            if self.top_k:
                scores = top_k_filter(scores, self.top_k)
            if self.top_p is not None and self.top_p < 1.0:
                scores = top_p_filter(scores, self.top_p)
        return scores


def next_tokens(s: GenerationSettings, logits: Tensor, sequences: Tensor, step: int,
                generator: torch.Generator | None = None, ignore: Tensor | None = None) -> Tensor:
    """The next token of each row, (B,): the scores of ``logits`` (B, V) processed (`GenerationSettings.process`;
    ``sequences`` (B, L) every token so far, ``step`` new tokens so far, ``ignore`` the prompts' padding),
    then sampled or the most likely."""
    return pick(s, s.process(logits.float(), sequences, step, ignore), generator)


def pick(s: GenerationSettings, scores: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """The next token of each row of processed ``scores`` (B, V): sampled, or the most likely."""
    if s.do_sample:
        return torch.multinomial(scores.softmax(dim=-1), 1, generator=generator).squeeze(1)
    return scores.argmax(dim=-1)


# what generate() takes besides the inputs: the settings above by Hugging Face's names
SETTING_NAMES = frozenset({f.name for f in fields(GenerationSettings)} - {"eos_token_ids", "forced_eos_token_ids",
                                                                          "bos_token_id"}
                          | {"eos_token_id", "forced_eos_token_id", "max_length"})
CONFIG_DEFAULTS = ("eos_token_id", "pad_token_id", "decoder_start_token_id", "forced_bos_token_id",
                   "forced_eos_token_id")
# a call of 2+ rows per step packs its weights for oneDNN when it may run this many steps: packing costs
# about what 15 steps gain (plmkit.nn.decoding)
PACK_FROM_STEPS = 24


def _hf_name(name: str) -> str:
    """A setting as Hugging Face (and generate's keywords) name it: eos_token_ids -> eos_token_id."""
    return name.removesuffix("s") if name.endswith("_token_ids") else name


def _as_ids(ids) -> tuple:
    """An id or a list of ids as a tuple (`check_values` checks the items)."""
    if ids is None:
        return ()
    return tuple(ids) if isinstance(ids, (list, tuple)) else (ids,)


def lm_vocab(config) -> int | None:
    """How many ids the LM head of a model of `config` scores (an encoder-decoder's target vocabulary)."""
    return getattr(config, "target_vocab_size", None) or getattr(config, "vocab_size", None)


# Tokens the model would produce (bos: a prompt's first): beyond the vocabulary (a tiny test config keeping
# GPT-2's 50256, which transformers loads) the token can never be generated, so the id is kept in the config,
# and written back as read, but left out of generate()'s defaults (`without_ids_outside`).
PRODUCED_IDS = ("bos_token_id", "eos_token_id", "forced_bos_token_id", "forced_eos_token_id")


def ids_outside(values: dict, vocab: int | None) -> dict[str, list[int]]:
    """The ids of PRODUCED_IDS in `values` (a config's fields, generation_config.json's settings) that are
    no token of a `vocab`-token vocabulary, by name (an eos list: those of its ids)."""
    found = {}
    for name in PRODUCED_IDS:
        ids = values.get(name)
        outside = [i for i in (ids if isinstance(ids, list) else [ids]) if is_int(i) and i >= (vocab or float("inf"))]
        if outside:
            found[name] = outside
    return found


def without_ids_outside(values: dict, vocab: int | None) -> dict:
    """`values` without the ids that `ids_outside` finds: an eos list keeps its other ids; a name left
    with none goes."""
    out = dict(values)
    for name, outside in ids_outside(values, vocab).items():
        ids = values[name]
        kept = [i for i in ids if i not in outside] if isinstance(ids, list) else []
        if kept:
            out[name] = kept
        else:
            del out[name]
    return out


def as_settings(values: dict, prompt_length: int) -> GenerationSettings:
    """generate()'s keywords (Hugging Face's names, None for not given) as settings, unchecked; a
    max_length (prompt included) counts the new tokens when max_new_tokens is not given, and a
    min_new_tokens replaces min_length (as in Hugging Face, whichever was the default)."""
    values = {k: v for k, v in values.items() if v is not None}
    if "min_new_tokens" in values:
        values.pop("min_length", None)
    if "max_length" in values and "max_new_tokens" not in values:
        if not is_int(values["max_length"]):
            raise ConfigError(f"generate: max_length must be an integer >= 1, got {describe(values['max_length'])}")
        values["max_new_tokens"] = values["max_length"] - prompt_length
    values.pop("max_length", None)
    eos, forced_eos = _as_ids(values.pop("eos_token_id", None)), _as_ids(values.pop("forced_eos_token_id", None))
    stops = values.pop("stop_strings", None) or ()
    return GenerationSettings(**{**values, "eos_token_ids": eos, "forced_eos_token_ids": forced_eos,
                                 "bad_words_ids": _bad_words(values.get("bad_words_ids"), eos),
                                 "stop_strings": (stops,) if isinstance(stops, str) else tuple(stops)})


def check_generation_values(values: dict, where, vocab: int | None) -> dict:
    """`values` (the decoding defaults of generation_config.json, or of an older config.json) checked
    one by one as `generate` checks its keywords (not together: generate's keywords may override some);
    a CheckpointError naming `where` and the key otherwise."""
    try:
        as_settings({k: v for k, v in values.items() if k in SETTING_NAMES | {"bos_token_id"}}, 0).check_values(vocab)
    except ConfigError as err:
        raise CheckpointError(f"{where}: {str(err).removeprefix('generate: ')}") from None
    return values


def _bad_words(words, eos: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Hugging Face's bad_words_ids check; one-token EOS entries are dropped (EOS stays possible)."""
    if words is None or words == []:
        return ()
    if not (isinstance(words, (list, tuple)) and all(isinstance(w, (list, tuple)) and w for w in words)
            and all(is_int(i) and i >= 0 for w in words for i in w)):
        raise ConfigError(f"bad_words_ids must be a list of non-empty lists of token ids, got {words!r}")
    return tuple(tuple(w) for w in words if not (len(w) == 1 and w[0] in eos))


def read_generation_config(directory: str | Path, vocab: int | None = None) -> dict:
    """The decoding defaults of a model directory's generation_config.json ({} without one), each
    checked (`check_generation_values`; token ids against a `vocab`-token vocabulary)."""
    path, d = _generation_file(directory)
    return check_generation_values({k: v for k, v in d.items() if k in GENERATION_KEYS and v is not None}, path, vocab)


# transformers' settings that choose what its generate returns, not which tokens (every generation_config.json has some)
OUTPUT_SETTINGS = frozenset({"use_cache", "output_attentions", "output_hidden_states", "output_scores", "output_logits",
                             "return_dict_in_generate"})
NOT_RETURNED = ("output_attentions", "output_hidden_states")  # the OUTPUT_SETTINGS generate has no answer for
HF_TOP_K = 50  # transformers' GenerationConfig default: generate samples among the 50 likeliest unless told otherwise


def set_values(settings: dict) -> dict:
    """The settings a generation config sets: those not None, less transformers' bookkeeping (transformers_version,
    _from_model_config)."""
    return {k: v for k, v in settings.items()
            if v is not None and k != "transformers_version" and not k.startswith("_")}


def other_generation_settings(directory: str | Path) -> dict:
    """The settings of a model directory's generation_config.json that are no decoding default (min_p,
    suppress_tokens, OUTPUT_SETTINGS ...; {} without one), for save_pretrained to write back, so that
    transformers decodes the directory it writes as the original (generate reads OUTPUT_SETTINGS of them)."""
    return {k: v for k, v in set_values(_generation_file(directory)[1]).items() if k not in GENERATION_KEYS}


def _generation_file(directory: str | Path) -> tuple[Path, dict]:
    path = Path(directory) / "generation_config.json"
    return path, read_json_object(path, CheckpointError) if path.exists() else {}


def write_generation_config(directory: str | Path, settings: dict) -> None:
    from plmkit.utils.files import atomic_write_text
    atomic_write_text(Path(directory) / "generation_config.json", json.dumps(settings, indent=2, sort_keys=True) + "\n")


class GenerationConfig(dict):
    """A model's decoding defaults (``model.generation_config``: generation_config.json's settings), read and set
    as attributes, as transformers' GenerationConfig (``model.generation_config.max_new_tokens = 5``), or as dict
    items; a setting not set reads None, and setting None unsets it. save_pretrained writes it back."""

    KNOWN = GENERATION_KEYS | OUTPUT_SETTINGS | SETTING_NAMES

    def __getattr__(self, name: str):
        if name in self or name in self.KNOWN:
            return self.get(name)
        raise AttributeError(f"GenerationConfig has no attribute {name!r}")

    def __setattr__(self, name: str, value) -> None:
        if name not in self.KNOWN:
            raise ConfigError(f"generation_config.{name}: not a setting plmkit's generate() takes; known: "
                              f"{', '.join(sorted(self.KNOWN))}")
        if value is None:
            self.pop(name, None)
        else:
            self[name] = value

    def __delattr__(self, name: str) -> None:
        self.pop(name, None)

    def to_dict(self) -> dict:
        return dict(self)

    @classmethod
    def of(cls, config) -> GenerationConfig:
        """``config`` (a dict, None, or anything with transformers' ``to_dict()``: a transformers GenerationConfig)
        as a GenerationConfig of the settings it sets (`set_values`); a GenerationConfig is kept as it is."""
        if isinstance(config, cls):
            return config
        values = config.to_dict() if callable(getattr(config, "to_dict", None)) else config
        if not isinstance(values, dict | None):
            raise ConfigError(f"generation_config must be a dict or a transformers GenerationConfig, got "
                              f"{describe(config)}")
        return cls(set_values(values or {}))


class GenerateOutput(dict):
    """What ``generate(..., return_dict_in_generate=True)`` returns, as transformers' GenerateDecoderOnlyOutput (and
    its beam search and encoder-decoder twins): ``sequences``; with output_scores the processed scores of each
    step, ``scores``, a tuple of (rows, V) fp32 tensors (beam search: log-probabilities, and ``sequences_scores``
    (rows,)); with output_logits the raw ``logits`` alike; beam search: ``beam_indices`` (rows, new tokens),
    int32, -1 past a sequence's end. Attributes (a field not asked for is None), ``out["scores"]``, or ``out[0]``
    over the fields set, as transformers' ModelOutput."""

    FIELDS = ("sequences", "sequences_scores", "scores", "logits", "beam_indices")

    def __init__(self, **values):
        super().__init__((k, values[k]) for k in self.FIELDS if values.get(k) is not None)

    def __getattr__(self, name: str):
        if name in self.FIELDS:
            return self.get(name)
        raise AttributeError(f"GenerateOutput has no attribute {name!r}")

    def __getitem__(self, key):
        return tuple(self.values())[key] if isinstance(key, int | slice) else super().__getitem__(key)

    def to_tuple(self) -> tuple:
        return tuple(self.values())


class _Trace:
    """What return_dict_in_generate returns besides the sequences, collected while generate runs: each step's raw
    logits and processed scores where asked (none without return_dict_in_generate)."""

    def __init__(self, s: GenerationSettings | None = None):
        asked = s is not None and s.return_dict_in_generate
        self.scores = [] if asked and s.output_scores else None
        self.logits = [] if asked and s.output_logits else None
        self.beam: dict[str, Tensor] = {}  # beam search's sequences_scores (with output_scores) and beam_indices

    def process(self, s: GenerationSettings, logits: Tensor, sequences: Tensor, step: int, ignore: Tensor | None,
                log_softmax: bool = False) -> Tensor:
        """`GenerationSettings.process` of the fp32 ``logits`` (beam search: of their log-softmax), kept as asked."""
        scores = logits.float()
        if self.logits is not None:
            self.logits.append(scores.clone())
        scores = s.process(F.log_softmax(scores, dim=-1) if log_softmax else scores, sequences, step, ignore)
        if self.scores is not None:
            self.scores.append(scores)
        return scores

    def output(self, sequences: Tensor) -> GenerateOutput:
        """The GenerateOutput, of ordinary tensors (not inference ones)."""
        def plain(x):
            return tuple(t.clone() for t in x) if isinstance(x, list) else None if x is None else x.clone()
        return GenerateOutput(sequences=sequences.clone(), scores=plain(self.scores), logits=plain(self.logits),
                              **{k: plain(v) for k, v in self.beam.items()})


# -- incremental detokenisation -----------------------------------------------------------------
# transformers' clean_up_tokenization patterns (decode's clean_up_tokenization_spaces), and what could still grow into
# one: the streamed text holds back a tail that ends in these
_CLEAN_UP_PATTERNS = (" .", " ?", " !", " ,", " ' ", " n't", " 'm", " 's", " 've", " 're")
_CLEAN_UP_STARTS = frozenset(p[:n] for p in _CLEAN_UP_PATTERNS for n in range(1, len(p)))


class IncrementalDecoder:
    """Turns a stream of token ids into text pieces, never emitting half a character or a word piece
    whose rendering depends on what follows (byte-level BPE, SentencePiece's leading spaces).

    Each ``push`` decodes a short window of recent tokens and emits only the text added since the
    previous piece, and nothing while the window ends in an incomplete UTF-8 sequence (U+FFFD), so a
    character spelled in byte-fallback tokens (``<0xNN>``: CJK text in Llama's vocabulary) shows once its
    bytes are complete. One difference with ``decode`` remains, by choice: a run of byte tokens that turns
    out not to be UTF-8 decodes as U+FFFD for every byte of it, the valid ones already shown included;
    holding every run back until it ends would delay such text by whole runs. Works with ``transformers``
    tokenizers and ``tokenizers.Tokenizer`` (anything with ``decode``).

    A tokenizer that cleans up tokenization spaces (``clean_up_tokenization_spaces``: "it ' s" -> "it's")
    has its windows decoded without, and the clean-up applied to the text they add up to, holding back a
    tail that could still start a pattern (a trailing space, " '", " n"): the pieces join to ``decode``'s text.
    """

    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self.tokenizer, self.skip = tokenizer, skip_special_tokens
        self.ids: list[int] = []
        self.prefix = 0  # start of the decoding window
        self.read = 0  # tokens already turned into text (emitted, or held in `pending`)
        self.clean_up = _clean_up_of(tokenizer)  # None: decode cleans nothing up
        self.pending = ""  # text not yet cleaned up and emitted: it may still start a clean-up pattern

    def _decode(self, ids: list[int]) -> str:
        if self.clean_up is None:
            return self.tokenizer.decode(ids, skip_special_tokens=self.skip)
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip, clean_up_tokenization_spaces=False)

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        before = self._decode(self.ids[self.prefix:self.read])
        text = self._decode(self.ids[self.prefix:])
        if len(text) > len(before) and not text.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return self._release(text[len(before):])
        return ""

    def flush(self) -> str:
        """Whatever is still held back (e.g. a truncated multi-byte character at the very end)."""
        before = self._decode(self.ids[self.prefix:self.read])
        text = self._decode(self.ids[self.prefix:])
        self.prefix = self.read = len(self.ids)
        return self._release(text[len(before):], final=True)

    def _release(self, piece: str, final: bool = False) -> str:
        """The cleaned-up text that `piece` completes: all that is pending but a tail that could still start a
        clean-up pattern (none when `final`). Patterns only delete their leading space, so text cut where no
        pattern can span the cut cleans up alike in parts and whole."""
        if self.clean_up is None:
            return piece
        text = self.pending + piece
        cut = len(text)
        while not final and cut and any(text[:cut].endswith(start) for start in _CLEAN_UP_STARTS):
            cut -= 1
        self.pending = text[cut:]
        return self.clean_up(text[:cut])


def _clean_up_of(tokenizer):
    """The tokenizer's ``clean_up_tokenization`` (plmkit's and transformers'), where its decode cleans up spaces
    (``clean_up_tokenization_spaces``) and the clean-up changes anything (plmkit's does not for BPE models);
    else None."""
    clean_up = getattr(tokenizer, "clean_up_tokenization", None)
    if not getattr(tokenizer, "clean_up_tokenization_spaces", False) or not callable(clean_up):
        return None
    return clean_up if clean_up(" ,") != " ," else None


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


def _check_prompt(input_ids: Tensor, attention_mask: Tensor | None = None) -> None:
    """input_ids (B, T) or (T,) of integer ids, at least one; attention_mask of their shape, of 0 / 1."""
    if not isinstance(input_ids, Tensor) or input_ids.dtype in (torch.bool,) or input_ids.is_floating_point() \
            or input_ids.is_complex() or input_ids.dim() not in (1, 2):
        shape = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__
        raise ConfigError(f"input_ids must be a (B, T) or (T,) tensor of token ids (integers), got {shape}"
                          + (f" {input_ids.dtype}" if isinstance(input_ids, Tensor) else ""))
    if input_ids.shape[-1] == 0:
        raise ConfigError("input_ids has no tokens: generation continues a prompt; give at least one token "
                          "(e.g. the tokenizer's bos_token_id to start from nothing)")
    if attention_mask is not None:
        from plmkit.models.inputs import check_ids  # (not at the top: plmkit.models imports this module)
        check_ids("attention_mask", attention_mask, 2, tuple(input_ids.shape))


def mask_of_padding(input_ids: Tensor, s: GenerationSettings) -> Tensor | None:
    """transformers' attention mask for inputs given without one: ``input_ids != pad_token_id`` where the pad id is
    known, among the inputs and no EOS id; else None (every position a token). A mask that is no left padding (a
    prompt that ends with the pad id, or holds nothing else) is not used, with a warning: the pad id is a token
    of those prompts (transformers warns of right padding and masks them all the same)."""
    pad = s.pad_token_id
    if pad is None or pad in s.eos_token_ids or not bool((input_ids == pad).any()):
        return None
    mask = (input_ids != pad).long()  # (B, T)
    if not bool(mask[:, -1].all()):
        warnings.warn(f"a prompt ends with pad_token_id={pad}, so no attention mask is made of the pad ids: every "
                      "position is a token; pass attention_mask (prompts padded on the left) to say which are not",
                      stacklevel=4)
        return None
    return mask


def _check_left_padding(attention_mask: Tensor) -> None:
    """Every prompt of a padded batch holds a token and ends at the last position; the rows that do not are named."""
    empty = (~attention_mask.bool().any(1)).nonzero().flatten().tolist()
    if empty:
        raise PlmkitError(f"prompt row(s) {empty} of the batch have no tokens (attention_mask all 0): give each "
                          "prompt at least one token, e.g. the tokenizer's bos_token_id (where stream() and "
                          "`plmkit generate` start an empty prompt: generation.prompt_ids)")
    right = (attention_mask[:, -1] == 0).nonzero().flatten().tolist()
    if right:
        raise PlmkitError(f"prompt row(s) {right} of the batch are padded on the right: generation continues after "
                          "the last position, so pad prompts on the left (tokenizer.padding_side = 'left')")


# -- how a model is stepped ---------------------------------------------------------------------
class CausalRun:
    """A decoder-only model under `generate`: the prompts in one forward, then one token per row
    (``rows`` rows per prompt: beams or samples, consecutive)."""

    ignore: Tensor | None = None  # (N, t) bool: each row's left padding, which the repetition penalty skips

    def __init__(self, model, input_ids: Tensor, attention_mask: Tensor | None, rows: int, max_new_tokens: int):
        b, t = input_ids.shape
        total = t + max_new_tokens
        _check_room(model, total)
        self.padded = attention_mask is not None and not bool(attention_mask.all())
        if self.padded:
            _check_left_padding(attention_mask)
        self.model, self.length = model, t
        self.prompt = input_ids.repeat_interleave(rows, 0) if rows > 1 else input_ids  # (N, t)
        self.mask = torch.ones(b * rows, total, dtype=torch.long, device=input_ids.device)
        if self.padded:
            self.mask[:, :t] = attention_mask.repeat_interleave(rows, 0)
            self.positions = positions_from_mask(self.mask[:, :t])
            self.ignore = self.mask[:, :t].cumsum(1) == 0  # (as Hugging Face: the positions before the first token)
        else:
            self.positions = torch.arange(t, device=input_ids.device).expand(b * rows, t)
        self.cache = model.make_cache(b * rows, total)

    def first(self) -> Tensor:
        """(N, V) logits of the next token after the prompts."""
        out = self.model(self.prompt, attention_mask=self.mask[:, :self.length] if self.padded else None,
                         position_ids=self.positions, past_key_values=self.cache, logits_to_keep=1)
        self.next_pos = self.positions[:, -1:] + 1  # (N, 1)
        return out.logits[:, -1]

    def step(self, token: Tensor) -> Tensor:
        """token (N,) appended; (N, V) logits of the next one."""
        self.length += 1
        out = self.model(token[:, None], attention_mask=self.mask[:, :self.length] if self.padded else None,
                         position_ids=self.next_pos, past_key_values=self.cache, logits_to_keep=1)
        self.next_pos = self.next_pos + 1
        return out.logits[:, -1]

    def reorder(self, index: Tensor) -> None:
        self.cache.reorder(index)


class Seq2SeqRun(CausalRun):
    """An encoder-decoder under `generate` (or a server's batch of sources): the encoder once, the
    cross-attention keys and values once per source, then the decoder one token per row (``rows`` rows
    per source, consecutive); ``cache.keep`` drops finished rows when each row has its own source."""

    def __init__(self, model, input_ids: Tensor, attention_mask: Tensor | None, rows: int, s: GenerationSettings,
                 decoder_input_ids: Tensor | None = None, token_type_ids: Tensor | None = None):
        if decoder_input_ids is None:
            if s.decoder_start_token_id is None:
                raise ConfigError("the decoder needs its first token: pass decoder_start_token_id=... (or "
                                  "decoder_input_ids), or set config.decoder_start_token_id")
            decoder_input_ids = input_ids.new_full((input_ids.shape[0], 1), s.decoder_start_token_id)
        _check_room(model, decoder_input_ids.shape[1] + s.max_new_tokens)
        self.model = model
        self.prompt = decoder_input_ids.repeat_interleave(rows, 0)  # (N, t)
        states = _encode(model, input_ids, attention_mask, token_type_ids)  # (B, S, D), once
        self.cache = model.make_cache(self.prompt.shape[0], self.prompt.shape[1] + s.max_new_tokens, states,
                                      attention_mask)

    def first(self) -> Tensor:
        return self.model(decoder_input_ids=self.prompt, past_key_values=self.cache, logits_to_keep=1).logits[:, -1]

    def step(self, token: Tensor) -> Tensor:
        return self.model(decoder_input_ids=token[:, None], past_key_values=self.cache,
                          logits_to_keep=1).logits[:, -1]


def _encode(model, input_ids: Tensor, attention_mask: Tensor | None, token_type_ids: Tensor | None) -> Tensor:
    """``model.encode`` of the sources, the encoder also given ``token_type_ids`` where there are some (a BERT
    encoder's: bert2bert, as transformers passes them on)."""
    if token_type_ids is None:
        return model.encode(input_ids, attention_mask)
    encoder = model.get_encoder() if hasattr(model, "get_encoder") else None
    if encoder is None or "token_type_ids" not in inspect.signature(encoder.forward).parameters:
        raise ConfigError(f"token_type_ids: the encoder of {type(model).__name__} takes none (transformers refuses "
                          "them too); leave them out")
    if not isinstance(token_type_ids, Tensor) or token_type_ids.shape != input_ids.shape:
        got = tuple(token_type_ids.shape) if isinstance(token_type_ids, Tensor) else describe(token_type_ids)
        raise ConfigError(f"token_type_ids must be a tensor of the input ids' shape {tuple(input_ids.shape)}, "
                          f"got {got}")
    return model.encode(input_ids, attention_mask, token_type_ids=token_type_ids)


# -- the mixin ----------------------------------------------------------------------------------
class GenerationMixin:
    """``generate`` and ``stream`` (see the module docstring). List it before the ``nn.Module`` base so
    that its ``train`` runs."""

    is_encoder_decoder = False

    def train(self, mode: bool = True):
        if mode:
            row_major_lm_head(self)  # generate() left the LM head column-major
        return super().train(mode)

    @property
    def generation_config(self) -> GenerationConfig:
        """generate()'s defaults (`GenerationConfig`): generation_config.json's, empty unless loaded or set; set it
        to a GenerationConfig, a dict, a transformers GenerationConfig or None (empty)."""
        config = self.__dict__.get("_generation_config")
        if config is None:
            config = self.__dict__["_generation_config"] = GenerationConfig()
        return config

    @generation_config.setter
    def generation_config(self, config) -> None:
        self.__dict__["_generation_config"] = GenerationConfig.of(config)

    def generation_defaults(self) -> dict:
        """generate()'s defaults for this model: its config's special tokens, then what generation_config.json says
        generate returns (`OUTPUT_SETTINGS`), then its generation_config, but the special ids beyond the vocabulary
        (`without_ids_outside`)."""
        from_config = {k: getattr(self.config, k) for k in CONFIG_DEFAULTS if getattr(self.config, k, None) is not None}
        outputs = {k: v for k, v in (getattr(self, "generation_config_others", None) or {}).items()
                   if k in OUTPUT_SETTINGS}
        # (a special id beyond the LM head's vocabulary, which a config may keep, names no token: left out)
        return without_ids_outside({**from_config, **outputs, **self.generation_config}, lm_vocab(self.config))

    def generation_settings(self, prompt_length: int, tokenizer=None, **given) -> GenerationSettings:
        """The checked settings one prompt of ``prompt_length`` tokens is generated with: ``given`` (generate's
        keywords) over this model's defaults, as `generate` decides them (a server steps its rows itself)."""
        return self._settings(given, 1, prompt_length, tokenizer)

    def _settings(self, given: dict, batch: int, prompt_length: int, tokenizer=None,
                  generation_config=None) -> GenerationSettings:
        """``given`` (generate's keywords) over ``generation_config`` (the settings it sets) over this model's
        `generation_defaults`, as transformers merges them; sampling without a top_k samples among the HF_TOP_K
        likeliest, as transformers' default (a top_k of None given: off)."""
        given = {**GenerationConfig.of(generation_config), **given}
        if "top_k" in given and given["top_k"] is None:
            given["top_k"] = 0
        for name in NOT_RETURNED:
            if given.pop(name, None):
                raise ConfigError(f"generate does not return attentions or hidden states ({name}): run the model's "
                                  "forward on the sequences it returns")
        given.pop("bos_token_id", None)  # (a generation config's: there is a prompt)
        unknown = sorted(set(given) - SETTING_NAMES)
        if unknown:
            raise ConfigError(f"unknown generation setting(s) {', '.join(unknown)}; known: {', '.join(sorted(SETTING_NAMES))}")
        given = {k: v for k, v in given.items() if v is not None}
        defaults = {k: v for k, v in self.generation_defaults().items() if k in SETTING_NAMES}
        if "max_new_tokens" in given or "max_length" in given:  # a length given wins over either default
            defaults = {k: v for k, v in defaults.items() if k not in ("max_new_tokens", "max_length")}
        values = {**defaults, **given}
        s = as_settings(values, prompt_length)
        if s.do_sample is True and "top_k" not in values:
            s.top_k = HF_TOP_K
        s.check_values(lm_vocab(self.config))
        s.check()
        if s.stop_strings and tokenizer is None:
            raise ConfigError("stop_strings need the tokenizer: generate(..., stop_strings=[...], tokenizer=tok)")
        rows = batch * (s.num_return_sequences if s.num_beams == 1 else 1)  # (beam search fills its own rows)
        # rows that end unevenly are padded: with the pad id, or one prompt's samples with the EOS id (as
        # Hugging Face fills them); the rows of several prompts need a pad id
        uneven = rows > 1 and (s.eos_token_ids or s.stop_strings)
        if uneven and s.pad_token_id is None and (batch > 1 or not s.eos_token_ids):
            raise ConfigError("sequences of a batch can end at different steps, so the shorter ones are padded, "
                              "but no pad_token_id is known: pass pad_token_id=... (for GPT-2 style tokenizers "
                              "without a pad token, tokenizer.eos_token_id is the usual choice)")
        return s

    def _run(self, input_ids: Tensor, attention_mask: Tensor | None, rows: int, s: GenerationSettings,
             decoder_input_ids: Tensor | None = None, token_type_ids: Tensor | None = None) -> CausalRun:
        """How the model is stepped; a decoder-only model's prompts without ``attention_mask`` get one made of the
        pad ids, as transformers makes it (`mask_of_padding`; not for an encoder's source, as transformers)."""
        if self.is_encoder_decoder:
            return Seq2SeqRun(self, input_ids, attention_mask, rows, s, decoder_input_ids, token_type_ids)
        if decoder_input_ids is not None:
            raise ConfigError("decoder_input_ids are for encoder-decoder models; a decoder-only model continues input_ids")
        if token_type_ids is not None:
            raise ConfigError("token_type_ids are an encoder's input (bert2bert's); a decoder-only model takes none")
        if attention_mask is None:
            attention_mask = mask_of_padding(input_ids, s)
        return CausalRun(self, input_ids, attention_mask, rows, s.max_new_tokens)

    def generate(self, input_ids: Tensor, attention_mask: Tensor | None = None, *,
                 decoder_input_ids: Tensor | None = None, token_type_ids: Tensor | None = None, tokenizer=None,
                 seed: int | None = None, generator: torch.Generator | None = None, generation_config=None,
                 **settings) -> Tensor | GenerateOutput:
        """Decoder-only: continue each prompt; returns prompt + new ids, (B, T + n), n <= max_new_tokens.
        Encoder-decoder: translate / summarise each source; returns the decoder's ids (B, 1 + n), from
        the decoder start token (or ``decoder_input_ids``) on.

        input_ids (B, T) or (T,); attention_mask (B, T): prompts padded on the left, sources on the right;
        prompts without it: the positions holding pad_token_id are padding where it is known, among the prompts
        and no EOS id (as transformers; sources: none is). token_type_ids (B, T): an encoder-decoder's encoder
        takes them (bert2bert's BERT, as transformers; ``generate(**tokenizer(texts, return_tensors="pt"))``).
        Settings (Hugging Face's names; those not given: ``generation_config`` (a transformers GenerationConfig or
        a dict: what it sets), then see the module docstring):
        max_new_tokens (or max_length, prompt included); min_new_tokens, min_length: EOS is banned before
            (min_new_tokens, when given or a default, replaces min_length, as in Hugging Face).
        do_sample: sample from softmax(scores / temperature) after top_k / top_p filtering; else greedy.
            top_k not given: the model's, else 50 (transformers' default); 0 or None: off.
        num_beams > 1: beam search; hypotheses are ranked by sum(log p) / new_length ** length_penalty;
            early_stopping: True, False or "never" (as Hugging Face); num_return_sequences: the best n
            of each input (or n samples each), consecutive rows.
        repetition_penalty: > 1 discourages tokens already present (Hugging Face's rule).
        presence_penalty, frequency_penalty (-2 to 2): OpenAI's, on the tokens generated so far (not the
            prompt): a token's score minus frequency_penalty x its count, minus presence_penalty if it is there.
        no_repeat_ngram_size: no n-gram appears twice; bad_words_ids: token sequences never produced.
        forced_bos_token_id: the first new token; forced_eos_token_id: the token at max length.
        eos_token_id: int or list; [] = never stop early. decoder_start_token_id: encoder-decoders.
        pad_token_id: fills sequences that finished before the others; required whenever a batch of
            prompts can finish unevenly (never silently replaced by the EOS id). One prompt's samples
            (or beams) without it are filled with the EOS id, as in Hugging Face.
        stop_strings: stop a sequence once its new text contains one of them (needs ``tokenizer``).
        seed / generator: make sampling reproducible.
        return_dict_in_generate: a `GenerateOutput` (sequences, and the scores and logits of each step with
            output_scores and output_logits, as transformers) instead of the ids; input_ids (T,) then count as (1, T).
        use_cache: taken as transformers does; plmkit always decodes with its KV cache (the same tokens either way).
        """
        _check_prompt(input_ids, attention_mask)
        if input_ids.dim() == 1:
            mask = None if attention_mask is None else attention_mask[None]
            types = None if token_type_ids is None else token_type_ids[None]
            out = self.generate(input_ids[None], mask, decoder_input_ids=decoder_input_ids, token_type_ids=types,
                                tokenizer=tokenizer, seed=seed, generator=generator,
                                generation_config=generation_config, **settings)
            return out[0] if isinstance(out, Tensor) else out
        prompt = decoder_input_ids if decoder_input_ids is not None else input_ids
        s = self._settings(settings, input_ids.shape[0], 1 if self.is_encoder_decoder and decoder_input_ids is None
                           else prompt.shape[1], tokenizer, generation_config)
        rows = input_ids.shape[0] * max(s.num_beams, s.num_return_sequences)
        trace = _Trace(s)
        with decoding_layout(self, pack=rows > 1 and s.max_new_tokens >= PACK_FROM_STEPS), torch.inference_mode():
            if s.num_beams > 1:
                out = self._beam_search(input_ids, attention_mask, s, decoder_input_ids, token_type_ids, trace)
            else:
                run = self._run(input_ids, attention_mask, s.num_return_sequences, s, decoder_input_ids,
                                token_type_ids)
                for sequences, end in self._decode_steps(run, s, tokenizer, _generator(seed, generator, input_ids),
                                                         trace):
                    pass
                out = sequences[:, :end]
        # (made outside inference mode: ordinary tensors that autograd may use later)
        return trace.output(out) if s.return_dict_in_generate else out.clone()

    def stream(self, tokenizer, prompt: str | Tensor, attention_mask: Tensor | None = None, *,
               skip_special_tokens: bool = True, seed: int | None = None, generator: torch.Generator | None = None,
               **settings) -> Iterator[str]:
        """Yield the text of one continuation (or translation: the source of an encoder-decoder) piece
        by piece as tokens are produced.

        prompt: a string (encoded with ``tokenizer``) or input ids (T,) / (1, T). Takes the settings of
        ``generate`` but beams (a model whose defaults say beams streams greedily). Pieces joined ==
        the decoded new tokens.
        """
        if isinstance(prompt, str):
            ids = torch.tensor([prompt_ids(tokenizer, prompt)], device=_device(self))
        else:
            _check_prompt(prompt, attention_mask)
            ids = prompt if prompt.dim() == 2 else prompt[None]
        if ids.shape[0] != 1:
            raise ConfigError(f"stream() continues one prompt; got a batch of {ids.shape[0]} (use generate)")
        if settings.get("num_beams", 1) not in (None, 1):
            raise ConfigError("stream() does not support beam search: beams are only final at the end (use generate)")
        s = self._settings({**settings, "num_beams": 1, "return_dict_in_generate": False}, 1,
                           1 if self.is_encoder_decoder else ids.shape[1], tokenizer)
        decoder = IncrementalDecoder(tokenizer, skip_special_tokens)
        with decoding_layout(self), torch.inference_mode():
            run = self._run(ids, attention_mask, 1, s)
            for sequences, end in self._decode_steps(run, s, tokenizer, _generator(seed, generator, ids)):
                piece = decoder.push(int(sequences[0, end - 1]))
                if piece:
                    yield piece
        rest = decoder.flush()
        if rest:
            yield rest

    # -- greedy and sampling --------------------------------------------------------------------
    def _decode_steps(self, run: CausalRun, s: GenerationSettings, tokenizer, generator: torch.Generator | None,
                      trace: _Trace | None = None) -> Iterator[tuple[Tensor, int]]:
        """Yields (sequences buffer (N, t + max_new), length written) after each step; ``trace`` keeps each step's
        logits and scores as asked."""
        trace = trace or _Trace()
        n, t = run.prompt.shape
        device = run.prompt.device
        sequences = torch.empty(n, t + s.max_new_tokens, dtype=torch.long, device=device)
        sequences[:, :t] = run.prompt
        logits = run.first()
        eos = torch.tensor(s.eos_token_ids, device=device) if s.eos_token_ids else None
        finished = torch.zeros(n, dtype=torch.bool, device=device)
        # the finished rows' token: the pad id, else (one prompt's samples, `_settings`) the EOS id
        fill = s.pad_token_id if s.pad_token_id is not None else (s.eos_token_ids or (None,))[0]
        for step in range(s.max_new_tokens):
            token = pick(s, trace.process(s, logits, sequences[:, :t + step], step, run.ignore), generator)
            if fill is not None:
                token = token.masked_fill(finished, fill)
            sequences[:, t + step] = token
            if eos is not None:
                finished |= torch.isin(token, eos)
            if s.stop_strings:
                finished |= _hits_stop_string(tokenizer, sequences, t, t + step + 1, s.stop_strings, finished)
            yield sequences, t + step + 1
            if step + 1 == s.max_new_tokens or bool(finished.all()):
                return
            logits = run.step(token)

    # -- beam search ----------------------------------------------------------------------------
    def _beam_search(self, input_ids: Tensor, attention_mask: Tensor | None, s: GenerationSettings,
                     decoder_input_ids: Tensor | None = None, token_type_ids: Tensor | None = None,
                     trace: _Trace | None = None) -> Tensor:
        """Hugging Face's vectorised beam search, so results agree token for token: the best sequences (B * k, t + n);
        ``trace`` keeps each step's logits and scores, and the sequences' scores and beam indices.

        Each step keeps the ``num_beams`` best unfinished continuations; a continuation that ends in EOS
        (or reaches max length) competes for the finished set with score sum(log p) / new_length ** length_penalty.
        Search stops when no running beam can beat the worst finished one (early_stopping False: scored
        at the current length; "never": at the longest possible, when length_penalty > 0), or, with
        early_stopping True, as soon as every input has num_beams finished hypotheses.
        """
        b, nb, trace = input_ids.shape[0], s.num_beams, trace or _Trace()
        run = self._run(input_ids, attention_mask, nb, s, decoder_input_ids, token_type_ids)
        t = run.prompt.shape[1]
        total, device = t + s.max_new_tokens, input_ids.device
        keep = max(2, 1 + len(s.eos_token_ids)) * nb
        eos = torch.tensor(s.eos_token_ids, device=device) if s.eos_token_ids else None
        # Hugging Face fills with the pad id unless it is 0 (falsy there), else with the first EOS
        fill = s.pad_token_id if s.pad_token_id else (s.eos_token_ids[0] if s.eos_token_ids else 0)

        # each beam's tokens, then (columns total:) the row each of its new tokens was chosen from (transformers'
        # beam_indices; -1: none yet), gathered along with them
        width = total + s.max_new_tokens
        running = torch.full((b, nb, width), fill, dtype=torch.long, device=device)
        running[:, :, :t] = run.prompt.view(b, nb, t)
        running[:, :, total:] = -1
        finished_seqs = running.clone()
        running_scores = torch.zeros(b, nb, device=device)
        running_scores[:, 1:] = -1e9  # all beams start identical: only the first one may expand at step 0
        finished_scores = torch.full((b, nb), -1e9, device=device)
        finished_len = torch.zeros(b, nb, dtype=torch.long, device=device)
        is_finished = torch.zeros(b, nb, dtype=torch.bool, device=device)
        improvable = torch.ones(b, 1, dtype=torch.bool, device=device)
        first_nb = torch.arange(keep, device=device) < nb
        offsets = torch.arange(b, device=device)[:, None] * nb

        logits = run.first()
        for step in range(s.max_new_tokens):
            cur = t + step
            log_probs = trace.process(s, logits, running[:, :, :cur].reshape(b * nb, cur), step, run.ignore, True)
            v = log_probs.shape[-1]
            log_probs = (log_probs.view(b, nb, v) + running_scores[:, :, None]).view(b, nb * v)
            top_scores, top_index = log_probs.topk(keep, dim=-1)  # (b, keep)
            source, token = top_index // v, top_index % v
            candidates = running.gather(1, source[:, :, None].expand(b, keep, width)).clone()
            candidates[:, :, cur] = token
            candidates[:, :, total + step] = source + offsets
            ends = torch.isin(token, eos) if eos is not None else torch.zeros_like(token, dtype=torch.bool)
            if cur + 1 >= total:
                ends = torch.ones_like(ends)

            # the best continuations that did not end keep running
            alive_scores = top_scores + ends.float() * -1e9
            alive = alive_scores.topk(nb, dim=-1).indices  # (b, nb)
            running = candidates.gather(1, alive[:, :, None].expand(b, nb, width))
            running_scores = alive_scores.gather(1, alive)
            beam_source = source.gather(1, alive)

            # the best continuations that ended compete with the finished hypotheses
            just_ended = ends & first_nb[None]
            scores = top_scores / ((cur + 1 - t) ** s.length_penalty)
            if s.early_stopping is True:  # an input with num_beams finished hypotheses takes no more
                scores = scores + is_finished.all(dim=1, keepdim=True).float() * -1e9
            scores = scores + (~improvable).float() * -1e9
            scores = scores + (~just_ended).float() * -1e9
            merged_scores = torch.cat([finished_scores, scores], dim=1)
            best = merged_scores.topk(nb, dim=-1).indices
            finished_scores = merged_scores.gather(1, best)
            finished_seqs = torch.cat([finished_seqs, candidates], 1).gather(1, best[:, :, None].expand(b, nb, width))
            finished_len = torch.cat([finished_len, torch.full_like(token, cur + 1 - t)], 1).gather(1, best)
            is_finished = torch.cat([is_finished, just_ended], 1).gather(1, best)

            longest = total - t if s.early_stopping == "never" and s.length_penalty > 0 else cur + 1 - t
            best_running = running_scores[:, :1] / (longest ** s.length_penalty)
            worst_finished = torch.where(is_finished, finished_scores.min(dim=1, keepdim=True).values,
                                         torch.full_like(finished_scores, -1e9))
            improvable = improvable & (best_running > worst_finished).any(dim=-1, keepdim=True)
            if (not bool(improvable.any()) or bool(ends.all())
                    or (s.early_stopping is True and bool(is_finished.all()))):
                break
            run.reorder((beam_source + offsets).reshape(-1))
            logits = run.step(running[:, :, cur].reshape(b * nb))
        k = s.num_return_sequences
        n = int(finished_len[:, :k].max())
        chosen = finished_seqs[:, :k].reshape(b * k, width)
        trace.beam["beam_indices"] = chosen[:, total:total + n].int()
        if s.output_scores:
            trace.beam["sequences_scores"] = finished_scores[:, :k].reshape(b * k)
        return chosen[:, :t + n]


def _device(model) -> torch.device:
    """Where the model's inputs go: its parameters' device (the CPU for a model without any: onnxruntime's)."""
    return next(model.parameters(), torch.empty(0)).device


def _check_room(model, total: int) -> None:
    limit, trained = model.config.max_positions, model.config.context_length
    if limit is not None and total > limit:  # learned positions: there are no more
        raise PlmkitError(f"prompt + max_new_tokens = {total} positions, but this model has only {limit}: "
                          "shorten the prompt or lower max_new_tokens")
    if trained is not None and total > trained:  # rotary: runs on, but was never trained there
        warnings.warn(f"prompt + max_new_tokens = {total} positions, beyond the {trained} this model was "
                      "trained on: expect the text to degrade past that point", stacklevel=4)


def _generator(seed: int | None, generator: torch.Generator | None, like: Tensor) -> torch.Generator | None:
    if generator is not None:
        return generator
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed must be an integer in [0, 2**63), got {seed!r}")
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


__all__ = ["CausalRun", "GenerateOutput", "GenerationConfig", "GenerationMixin", "GenerationSettings",
           "IncrementalDecoder", "bad_words_", "decoding_layout", "mask_of_padding", "next_tokens", "no_repeat_ngram_",
           "other_generation_settings", "pick", "presence_frequency_penalty_", "prompt_ids", "read_generation_config",
           "repetition_penalty_", "Seq2SeqRun", "top_k_filter", "top_p_filter", "write_generation_config"]
