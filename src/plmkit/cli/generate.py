"""`plmkit generate --model DIR --prompt TEXT | --input FILE [sampling options]`: continue text.

One prompt (--prompt): the continuation is streamed to stdout as it is produced (flushed piece
by piece), after the prompt itself unless --only-new. Many prompts (--input FILE: one prompt per
line, or a .jsonl file with a "prompt" field per line): generated in left-padded batches, one JSON
line {"prompt", "completion"} per prompt, to stdout or --output.

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
    p = subparsers.add_parser("generate", help="generate text with a causal language model",
                              description="Continue a prompt (streamed) or every prompt of a file (JSONL out) with "
                                          "a GPT-2 / Llama model directory (plmkit or Hugging Face).")
    p.add_argument("--model", required=True, metavar="DIR", help="model directory with config.json, weights, tokenizer")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", metavar="TEXT", help="one prompt; the continuation is streamed")
    src.add_argument("--input", metavar="FILE", help="prompts, one per line, or .jsonl with a \"prompt\" field")
    p.add_argument("--output", metavar="FILE", help="with --input: write the JSONL here instead of stdout")
    add_sampling_args(p)
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="prompts per batch with --input (default 8)")
    p.add_argument("--only-new", action="store_true", help="with --prompt: print only the generated text")
    p.set_defaults(func=run)


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


def load_causal_lm(path: str, device: str = "auto"):
    """(model in eval mode on `device`, tokenizer) from a model directory."""
    from plmkit.models.auto import AutoModelForCausalLM
    from plmkit.tokenization import Tokenizer
    from plmkit.utils.device import resolve_device

    model = AutoModelForCausalLM.from_pretrained(path).to(resolve_device(device)).eval()
    tokenizer = Tokenizer.from_pretrained(path)
    model.check_vocabulary(tokenizer, path)
    return model, tokenizer


def prompt_ids(tokenizer, text: str) -> list[int]:
    """Token ids of a prompt (UTF-8 checked); an empty prompt starts from the bos (or eos) token."""
    from plmkit.chat import encode_text
    from plmkit.generation import prompt_ids as ids_of

    return encode_text(tokenizer, text) or ids_of(tokenizer, "")


def read_prompts(path: str) -> list[str]:
    """One prompt per line, or the "prompt" field of each JSONL line."""
    from plmkit.utils.text import jsonl_rows, read_lines
    from plmkit.errors import DataError

    if not path.endswith(".jsonl"):
        return [line for line in read_lines(path) if line.strip()]
    prompts = []
    for number, record in jsonl_rows(path):
        if not isinstance(record.get("prompt"), str):
            raise DataError(f"{path}:{number}: each line needs a string field \"prompt\"")
        prompts.append(record["prompt"])
    if not prompts:
        raise DataError(f"{path}: no prompts")
    return prompts


def run(args: argparse.Namespace) -> int:
    import torch

    from plmkit.data.collate import pad_sequences
    from plmkit.errors import ConfigError
    from plmkit.utils.files import refuse_overwriting_inputs

    if args.output:
        refuse_overwriting_inputs(args.output, "--output", [("--input", args.input), ("--model", args.model)])
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    sampling = sampling_settings(args)
    model, tokenizer = load_causal_lm(args.model, args.device)
    kwargs = sampling.generate_kwargs()
    device = next(model.parameters()).device
    if args.prompt is not None:
        ids = torch.tensor([prompt_ids(tokenizer, args.prompt)], device=device)
        if not args.only_new:
            sys.stdout.write(args.prompt)
            sys.stdout.flush()
        if sampling.num_beams > 1:
            out = model.generate(ids, **kwargs)
            sys.stdout.write(tokenizer.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True))
        else:
            for piece in model.stream(tokenizer, ids, seed=sampling.seed, **kwargs):
                sys.stdout.write(piece)
                sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
        return 0

    prompts = read_prompts(args.input)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out_file = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        for start in range(0, len(prompts), args.batch_size):
            batch = prompts[start:start + args.batch_size]
            # left padding: generation continues after each row's last position
            ids, mask = pad_sequences([prompt_ids(tokenizer, p) for p in batch], pad if pad is not None else 0, "left")
            width = ids.shape[1]
            out = model.generate(ids.to(device), mask.to(device), pad_token_id=pad,
                                 seed=None if sampling.seed is None else sampling.seed + start, **kwargs)
            for prompt, row in zip(batch, out[:, width:].tolist()):
                text = tokenizer.decode(row, skip_special_tokens=True)
                out_file.write(json.dumps({"prompt": prompt, "completion": text}, ensure_ascii=False) + "\n")
            out_file.flush()
    finally:
        if out_file is not sys.stdout:
            out_file.close()
    return 0
