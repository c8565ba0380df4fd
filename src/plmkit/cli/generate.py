"""`plmkit generate --model DIR --prompt TEXT | --input FILE [sampling options]`: continue text.

One prompt (--prompt): the continuation is streamed to stdout as it is produced (flushed piece
by piece), after the prompt itself unless --only-new. Many prompts (--input FILE: one prompt per
line, a blank line being an empty prompt, or a .jsonl/.json file with a "prompt" field per line):
generated in left-padded batches, one JSON line {"prompt", "completion"} per prompt, to stdout or
--output (written whole or not at all).

A causal LM (GPT-2, Llama) continues each prompt; an encoder-decoder (BART, Marian, BERT-to-BERT)
takes it as its source (encoded as its task encodes one, right-padded in a batch) and writes its
output alone (the translation, the summary). --backend onnxruntime (or onnxruntime-int8) runs a
directory `plmkit export` wrote, on the CPU, through the same generation code (plmkit.generation):
greedy decoding gives the PyTorch model's tokens.

Sampling is the default (the flags and their defaults: plmkit.sampling.SamplingSettings); --greedy
(or --temperature 0) picks the most likely token; --num-beams N > 1 runs beam search (not streamed:
beams are only final at the end).
Generation stops at the model's end-of-text token or after --max-new-tokens.

Padding a batch of prompts needs a pad id: the tokenizer's pad token, else its EOS (inference
only: padded positions are masked out, so the id is never seen).
"""
from __future__ import annotations

import argparse
import json
import sys


def add_parser(subparsers) -> None:
    from plmkit.cli.flags import add_settings_flags
    from plmkit.tasks.inference import InferenceSettings

    p = subparsers.add_parser("generate", help="generate text with a causal LM or an encoder-decoder",
                              description="Continue a prompt (streamed) or every prompt of a file (JSONL out) with "
                                          "a GPT-2 / Llama model directory (plmkit or Hugging Face), or translate / "
                                          "summarise it with an encoder-decoder (BART, Marian, BERT-to-BERT); "
                                          "--backend onnxruntime: a directory plmkit export wrote.")
    p.add_argument("--model", required=True, metavar="DIR", help="model directory with config.json, weights, tokenizer")
    add_settings_flags(p, InferenceSettings, skip=BACKEND_ONLY)  # --backend
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", metavar="TEXT", help="one prompt; the continuation is streamed")
    src.add_argument("--input", metavar="FILE", help="prompts, one per line, or .jsonl with a \"prompt\" field")
    p.add_argument("--output", metavar="FILE", help="with --input: write the JSONL here instead of stdout")
    add_sampling_args(p)
    p.add_argument("--batch-size", type=int, default=None, metavar="N", help="prompts per batch with --input (default 8)")
    p.add_argument("--only-new", action="store_true", help="with --prompt: print only the generated text")
    p.set_defaults(func=run)


BACKEND_ONLY = ("model", "batch_size", "device", "null_score_diff_threshold")  # InferenceSettings' flags not taken


def add_sampling_args(p: argparse.ArgumentParser, defaults: dict | None = None, skip: tuple[str, ...] = ()) -> None:
    """The sampling flags (plmkit.sampling.SamplingSettings, with this command's `defaults`) and --device."""
    from plmkit.cli.flags import add_settings_flags
    from plmkit.sampling import SamplingSettings

    add_settings_flags(p.add_argument_group("sampling settings"), SamplingSettings, defaults, skip)
    p.add_argument("--device", default="auto", metavar="DEV", help="auto (default: GPU if any), cpu, cuda, cuda:N")


def sampling_settings(args: argparse.Namespace, defaults: dict | None = None):
    """The SamplingSettings of the sampling flags given (over `defaults`)."""
    from plmkit.cli.flags import settings_from_args
    from plmkit.sampling import SamplingSettings

    return settings_from_args(args, SamplingSettings, defaults)


def load_causal_lm(path: str, device: str = "auto", seq2seq: bool = False):
    """(model in eval mode on `device`, tokenizer) from a model directory (`seq2seq`: an encoder-decoder's)."""
    from plmkit.models.auto import AutoModelForCausalLM, AutoModelForSeq2SeqLM
    from plmkit.tokenization import Tokenizer
    from plmkit.utils.device import resolve_device

    model = (AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM).from_pretrained(path)
    model = model.to(resolve_device(device, model.cpu_only)).eval()
    model.check_complete(path)  # an lm_head the weights lack would be random
    tokenizer = Tokenizer.from_pretrained(path)
    model.check_vocabulary(tokenizer, path)
    return model, tokenizer


def load_generator(path: str, device: str = "auto", backend: str = "torch"):
    """(model, tokenizer) of a causal LM or encoder-decoder directory: on PyTorch (`device`), or on
    onnxruntime (`backend`: plmkit.tasks.inference.ONNX_BACKENDS) from a directory `plmkit export` wrote."""
    from plmkit.errors import ConfigError
    from plmkit.models.auto import read_model_type
    from plmkit.models.registry import family

    if backend == "torch":
        return load_causal_lm(path, device, seq2seq="seq2seq-lm" in family(read_model_type(path)[0]).tasks)
    from plmkit.models.onnx import load_ort
    from plmkit.tasks.inference import ONNX_BACKENDS
    from plmkit.tokenization import Tokenizer

    model = load_ort(path, ONNX_BACKENDS[backend])
    if not hasattr(model, "generate"):
        raise ConfigError(f"{path}: an export of a {model.info['model_task']} model, which does not generate; "
                          "plmkit generate takes an exported causal LM or encoder-decoder")
    return model, Tokenizer.from_pretrained(path)


def prompt_ids(tokenizer, text: str) -> list[int]:
    """Token ids of a prompt (UTF-8 checked; after the tokenizer's BOS where it puts one: `chat.encode_prompt`);
    an empty prompt starts from the bos (or eos) token."""
    from plmkit.chat import encode_text, leading_bos
    from plmkit.generation import prompt_ids as ids_of

    ids = encode_text(tokenizer, text)
    return leading_bos(tokenizer) + ids if ids else ids_of(tokenizer, "")


def input_ids(model, tokenizer, text: str) -> list[int]:
    """A prompt's ids, or an encoder-decoder's source ids (its tokenizer's special tokens added, as its task
    encodes a source)."""
    from plmkit.chat import encode_text

    if not model.is_encoder_decoder:
        return prompt_ids(tokenizer, text)
    encode_text(tokenizer, text)  # (the UTF-8 check)
    return tokenizer(text)["input_ids"]


def output_start(model, ids) -> int:
    """Where the new tokens begin in `generate`'s output for inputs `ids` (B, T): after the decoder's start
    token (an encoder-decoder), or after the prompts."""
    return 1 if model.is_encoder_decoder else ids.shape[1]


def read_prompts(path: str) -> list[tuple[int, str]]:
    """(line, prompt) pairs: one prompt per line (a blank line is an empty prompt, so the outputs line
    up with the input), or the "prompt" field of each line of a .jsonl / .json file."""
    from plmkit.utils.text import jsonl_rows, read_lines
    from plmkit.errors import DataError

    if not path.endswith((".jsonl", ".json")):
        lines = read_lines(path)
        while lines and not lines[-1].strip():
            lines.pop()  # the blank lines ending a file are not prompts
        prompts = list(enumerate(lines, 1))
    else:
        prompts = []
        for number, record in jsonl_rows(path):
            if not isinstance(record.get("prompt"), str):
                raise DataError(f"{path}:{number}: each line needs a string field \"prompt\"")
            prompts.append((number, record["prompt"]))
    if not prompts:
        raise DataError(f"{path}: no prompts")
    return prompts


def check_room(model, n_tokens: int, max_new_tokens: int, where: str) -> None:
    """A prompt that leaves no room for its continuation in a model with learned positions (an
    encoder-decoder: a source longer than its positions): an error naming where it is, before anything
    is written."""
    from plmkit.errors import DataError

    limit = model.config.max_positions
    if limit is not None and model.is_encoder_decoder:
        if n_tokens > limit:
            raise DataError(f"{where}: the source has {n_tokens} tokens, more than the model's {limit} positions: "
                            "shorten it")
    elif limit is not None and n_tokens + max_new_tokens > limit:
        raise DataError(f"{where}: the prompt has {n_tokens} tokens; with --max-new-tokens {max_new_tokens} that is "
                        f"more than the model's {limit} positions: shorten it or lower --max-new-tokens")


def run(args: argparse.Namespace) -> int:
    from plmkit.cli.flags import settings_from_args
    from plmkit.errors import ConfigError
    from plmkit.tasks.inference import InferenceSettings
    from plmkit.utils.files import refuse_overwriting_inputs

    if args.prompt is not None:
        for flag, given in (("--output", args.output is not None), ("--batch-size", args.batch_size is not None)):
            if given:
                raise ConfigError(f"{flag} is for --input FILE; with --prompt the continuation streams to stdout")
    elif args.only_new:
        raise ConfigError("--only-new is for --prompt; with --input each JSON line holds the completion alone")
    if args.output is not None:
        if not args.output:
            raise ConfigError("--output is empty: give a file path (or leave it out for stdout)")
        refuse_overwriting_inputs(args.output, "--output", [("--input", args.input), ("--model", args.model)])
    batch_size = 8 if args.batch_size is None else args.batch_size
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    sampling = sampling_settings(args)
    inference = settings_from_args(args, InferenceSettings, {"model": args.model, "device": args.device})
    model, tokenizer = load_generator(args.model, inference.device, inference.backend)
    if args.prompt is not None:
        return _one_prompt(args, model, tokenizer, sampling)
    prompts = read_prompts(args.input)
    if args.output is None:
        _many_prompts(args, model, tokenizer, sampling, prompts, batch_size, sys.stdout)
        return 0
    from plmkit.utils.files import atomic_open
    with atomic_open(args.output) as out:
        _many_prompts(args, model, tokenizer, sampling, prompts, batch_size, out)
    return 0


def _one_prompt(args, model, tokenizer, sampling) -> int:
    """The prompt and its continuation (an encoder-decoder's output alone), streamed to stdout (nothing
    written before a too-long prompt is refused)."""
    import torch

    from plmkit.utils.device import model_device

    kwargs = sampling.generate_kwargs()
    ids = torch.tensor([input_ids(model, tokenizer, args.prompt)], device=model_device(model))
    check_room(model, ids.shape[1], sampling.max_new_tokens, "--prompt")
    if not (args.only_new or model.is_encoder_decoder):
        sys.stdout.write(args.prompt)
        sys.stdout.flush()
    if sampling.num_beams > 1:
        out = model.generate(ids, **kwargs)
        sys.stdout.write(tokenizer.decode(out[0, output_start(model, ids):].tolist(), skip_special_tokens=True))
    else:
        for piece in model.stream(tokenizer, ids, seed=sampling.seed, **kwargs):
            sys.stdout.write(piece)
            sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    return 0


def _many_prompts(args, model, tokenizer, sampling, prompts: list[tuple[int, str]], batch_size: int, out) -> None:
    """Every prompt of the --input file, in batches (prompts padded on the left, sources on the right):
    one JSON line each to `out`."""
    from plmkit.data.collate import pad_sequences
    from plmkit.utils.device import model_device
    from plmkit.utils.constants import MAX_SEED

    kwargs = sampling.generate_kwargs()
    device = model_device(model)
    encoded = [input_ids(model, tokenizer, prompt) for _, prompt in prompts]
    for (line, _), ids in zip(prompts, encoded):  # every prompt checked before the first is generated
        check_room(model, len(ids), sampling.max_new_tokens, f"{args.input}:{line}")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for start in range(0, len(prompts), batch_size):
        # prompts padded on the left: generation continues after each row's last position
        ids, mask = pad_sequences(encoded[start:start + batch_size], pad if pad is not None else 0,
                                  "right" if model.is_encoder_decoder else "left")
        width = output_start(model, ids)
        generated = model.generate(ids.to(device), mask.to(device), pad_token_id=pad,
                                   seed=None if sampling.seed is None else (sampling.seed + start) % MAX_SEED, **kwargs)
        for (_, prompt), row in zip(prompts[start:start + batch_size], generated[:, width:].tolist()):
            text = tokenizer.decode(row, skip_special_tokens=True)
            out.write(json.dumps({"prompt": prompt, "completion": text}, ensure_ascii=False) + "\n")
        out.flush()
