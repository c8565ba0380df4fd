"""`plmkit chat --model DIR [--system TEXT] [sampling options]`: talk to a chat model.

Reads one message per line from stdin and streams each reply (template: plmkit.chat). Commands:
``/reset`` forgets the conversation, ``/exit`` (or end of input) quits. With a terminal, a ``you>``
prompt and notes go to stderr; with piped stdin (``echo hi | plmkit chat ...``) stdout holds only
the replies, one per line (line breaks inside a reply become spaces). The oldest turns are dropped
when the conversation would no longer fit in the model's context window together with
--max-new-tokens of reply (plmkit.chat.truncate_history).
"""
from __future__ import annotations

import argparse
import sys


# chat's sampling defaults, where they differ from SamplingSettings' (generate's); beams cannot stream
SAMPLING_DEFAULTS = {"max_new_tokens": 128, "temperature": 0.7, "top_p": 0.9}


def add_parser(subparsers) -> None:
    from plmkit.cli.generate import add_sampling_args

    p = subparsers.add_parser("chat", help="chat with a model fine-tuned on dialogue (plmkit finetune --task sft)",
                              description="Interactive chat: one message per stdin line, replies streamed. "
                                          "/reset clears the history, /exit quits.")
    p.add_argument("--model", required=True, metavar="DIR", help="model directory (config.json, weights, tokenizer)")
    p.add_argument("--system", default=None, metavar="TEXT", help="system text put before the conversation")
    add_sampling_args(p, SAMPLING_DEFAULTS, skip=("num_beams",))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from plmkit.chat import SYSTEM, USER, StopFilter, truncate_history
    from plmkit.cli.generate import load_causal_lm, sampling_settings
    from plmkit.errors import PlmkitError
    from plmkit.utils.constants import MAX_SEED

    sampling = sampling_settings(args, SAMPLING_DEFAULTS)
    model, tokenizer = load_causal_lm(args.model, args.device)
    kwargs = sampling.generate_kwargs()
    device = next(model.parameters()).device
    window = model.config.context_length or 2048
    budget = window - sampling.max_new_tokens
    if budget < 8:
        raise PlmkitError(f"--max-new-tokens {sampling.max_new_tokens} leaves no room for the conversation in the "
                          f"model's context window of {window} tokens; lower it")
    try:  # a --system text too long for the context: said now, not at every message
        truncate_history(tokenizer, [], "", budget, args.system)
    except PlmkitError as err:
        raise PlmkitError(f"--system is too long: {err}") from None
    tty = sys.stdin.isatty()

    def note(text: str) -> None:
        if tty:
            print(text, file=sys.stderr, flush=True)

    note(f"chatting with {args.model} ({window}-token context); /reset clears the history, /exit quits")
    history: list[tuple[str, str]] = []
    turn = 0
    while True:
        if tty:
            print("you> ", end="", file=sys.stderr, flush=True)
        try:
            line = sys.stdin.readline()
        except KeyboardInterrupt:
            break
        if not line:  # end of input
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            break
        if text == "/reset":
            history = []
            note("(history cleared)")
            continue
        try:
            history, ids = truncate_history(tokenizer, history, text, budget, args.system)
        except PlmkitError as err:
            print(f"plmkit chat: {err}", file=sys.stderr, flush=True)
            continue
        stops = StopFilter([USER, SYSTEM])
        pieces = []
        if tty:
            print("bot> ", end="", file=sys.stderr, flush=True)
        seed = None if sampling.seed is None else (sampling.seed + turn) % MAX_SEED
        try:
            for piece in model.stream(tokenizer, torch.tensor([ids], device=device), seed=seed,
                                      stop_strings=[USER], **kwargs):
                shown = stops.push(piece)
                if not tty:
                    shown = shown.replace("\r", " ").replace("\n", " ")
                if shown:
                    pieces.append(shown)
                    sys.stdout.write(shown)
                    sys.stdout.flush()
                if stops.done:
                    break
        except KeyboardInterrupt:
            note("\n(interrupted)")
        rest = stops.flush()
        if not tty:
            rest = rest.replace("\r", " ").replace("\n", " ")
        pieces.append(rest)
        sys.stdout.write(rest + "\n")
        sys.stdout.flush()
        history.append((text, "".join(pieces).strip()))
        turn += 1
    return 0
