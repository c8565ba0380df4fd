"""Encoder-decoder generation on plmkit fp32 vs onnxruntime fp32 vs onnxruntime int8, one generate.

A small Marian model (--preset, default marian-small: 4 + 4 layers, d 256, 4 heads; random weights,
seed 0) with a BPE vocabulary (--vocab, Marian style) trained here on the sentences of the German-English
set (`plmkit data fetch de-en`), saved by plmkit and exported by `plmkit export --int8` (encoder_model.onnx,
decoder_model.onnx and their model.int8 copies: onnxruntime's dynamic int8). The three run the same
`generate` (plmkit.generation; the exports through plmkit.models.onnx.load_ort) on real German sources:

- a batch of --batch sources of mixed length, greedy;
- the same batch, 4 beams;
- one source, greedy.

Every row generates --new tokens (the end-of-text token is ignored, so each side does the same work:
random weights would otherwise stop at arbitrary points), with no 3-gram repeated (--no-repeat-ngram-size,
as BART's summarizers decode; a random model's greedy output otherwise loops on two or three tokens, and
token identity would say little). Timed in this process, the sides interleaved,
best of --repeats after a warm-up call each, with --threads threads for torch and for onnxruntime
(default 1: on a shared machine, process CPU time is the time the call really ran; wall time is printed
too). Tokens/s counts the new tokens of the sequences returned. "same" says whether a side's tokens equal
plmkit fp32's exactly (int8 is lossy: the share of identical rows), and how many distinct tokens plmkit's
output holds (a random model that repeats one token would make "same" say little).

    nice .venv/bin/python bench/seq2seq_onnx.py [--preset marian-small] [--batch 8] [--new 32] [--repeats 3]
"""
from __future__ import annotations

import argparse
import atexit
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import timed  # noqa: E402

SIDES = ("plmkit fp32", "onnxruntime fp32", "onnxruntime int8")


def sentences(n: int) -> tuple[list[str], list[str]]:
    """The German sources and English targets of the de-en training set (its first n pairs)."""
    from plmkit.datasets import fetch
    rows = [json.loads(line) for line in (Path(fetch("de-en")) / "sentences.train.jsonl").read_text(
        encoding="utf-8").splitlines()[:n]]
    return [r["source"] for r in rows], [r["target"] for r in rows]


def build(directory: Path, preset: str, vocab: int, texts: list[str]) -> None:
    """The tokenizer and the random model, saved as a plmkit model directory."""
    from plmkit import MarianConfig, MarianMTModel
    from plmkit.tokenization import Tokenizer
    tokenizer = Tokenizer.train(texts, vocab, model="bpe", style="marian")
    torch.manual_seed(0)
    MarianMTModel(MarianConfig.from_preset(preset, **MarianConfig.tokenizer_fields(tokenizer))).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def batch_of(tokenizer, sources: list[str], n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n sources spread over the lengths available (10 to 60 tokens), padded on the right."""
    from plmkit.data.collate import pad_sequences
    encoded = sorted((ids for ids in (tokenizer(s)["input_ids"] for s in sources) if 10 <= len(ids) <= 60), key=len)
    rows = [encoded[round(i * (len(encoded) - 1) / max(1, n - 1))] for i in range(n)]
    return pad_sequences(rows, tokenizer.pad_token_id, "right")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="marian-small", help="a Marian (or BART) preset of plmkit")
    ap.add_argument("--vocab", type=int, default=8000, help="BPE vocabulary size")
    ap.add_argument("--batch", type=int, default=8, help="sources in the batched cases")
    ap.add_argument("--new", type=int, default=32, help="new tokens per sequence")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads (default 1)")
    ap.add_argument("--no-repeat-ngram-size", type=int, default=3, help="no n-gram twice in a row's output (0: off)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from plmkit.cli import main as cli
    from plmkit.models.auto import load_any
    from plmkit.models.onnx import load_ort
    from plmkit.tokenization import Tokenizer

    work = Path(tempfile.mkdtemp(prefix="plmkit-bench-s2s-onnx-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    sources, targets = sentences(20000)
    build(work / "model", args.preset, args.vocab, sources + targets)
    start = time.perf_counter()
    if cli(["--quiet", "export", "--model", str(work / "model"), "--out", str(work / "onnx"), "--int8"]) != 0:
        raise SystemExit("plmkit export failed")
    exported = time.perf_counter() - start
    info = json.loads((work / "onnx" / "plmkit_onnx.json").read_text())
    models = {"plmkit fp32": load_any(work / "model").eval(),
              "onnxruntime fp32": load_ort(work / "onnx", "fp32", threads=args.threads),
              "onnxruntime int8": load_ort(work / "onnx", "int8", threads=args.threads)}
    tokenizer = Tokenizer.from_pretrained(work / "model")
    sizes = {"plmkit fp32": ["model.safetensors"], "onnxruntime fp32": ["encoder_model.onnx", "decoder_model.onnx"],
             "onnxruntime int8": ["encoder_model.int8.onnx", "decoder_model.int8.onnx"]}
    print(f"torch {torch.__version__}, threads {args.threads}; {args.preset}, random weights, vocabulary "
          f"{len(tokenizer):,}, {models['plmkit fp32'].num_parameters() / 1e6:.1f}M parameters; exported in "
          f"{exported:.0f} s (check: max |onnxruntime - PyTorch| {info['check']['max_abs_diff']:.1e}); best of "
          f"{args.repeats}")
    print("size on disk: " + ", ".join(
        f"{side} {sum((work / ('model' if side == 'plmkit fp32' else 'onnx') / f).stat().st_size for f in files) / 2**20:.1f} MB"
        for side, files in sizes.items()))
    batch, single = batch_of(tokenizer, sources, args.batch), batch_of(tokenizer, sources[:2000], 1)
    cases = ((f"batch {args.batch}, greedy", batch, 1), (f"batch {args.batch}, 4 beams", batch, 4), ("1 source, greedy", single, 1))
    header = f"{'case':<22}" + "".join(f"{side + ' tok/s':>24}" for side in SIDES) + "  same tokens as plmkit fp32"
    print(header)
    for name, (ids, mask), beams in cases:
        def call(side, ids=ids, mask=mask, beams=beams):
            return models[side].generate(ids, attention_mask=mask, num_beams=beams, max_new_tokens=args.new,
                                         eos_token_id=[], no_repeat_ngram_size=args.no_repeat_ngram_size)
        wall, out, cpu = timed({side: (lambda s=side: call(s)) for side in SIDES}, args.repeats, cpu=True)
        new = out["plmkit fp32"].shape[0] * (out["plmkit fp32"].shape[1] - 1)  # (after the decoder's start token)
        want = out["plmkit fp32"]
        same = [("yes" if torch.equal(out[side], want) else "NO") if side != "onnxruntime int8" else
                f"{float((out[side] == want).all(1).float().mean()) if out[side].shape == want.shape else 0.0:.0%} rows"
                for side in SIDES[1:]]
        cells = "".join(f"{new / cpu[side]:>12.0f} ({new / wall[side]:>5.0f} wall)" for side in SIDES)
        distinct = want[:, 1:].unique().numel()
        print(f"{name:<22}{cells}  fp32 {same[0]}, int8 {same[1]} ({distinct} distinct tokens)")
    print("tok/s: new tokens per second of process CPU time (in brackets: of wall time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
