"""Distributed scaling of BERT pretraining on this machine: 1 process x 2 threads against 2 processes x
1 thread (torchrun, gloo), the communication share of a step, and what each rank holds under DDP and FSDP.

1. Throughput: `plmkit pretrain` itself (the real pipeline: Shakespeare from `plmkit data fetch
   shakespeare`, MLM+NSP, a WordPiece trained on the corpus, a bert-mini preset by default) run as
   `python -m plmkit` with 2 threads and as `torchrun --nproc_per_node 2 -m plmkit` (DDP) with one
   thread per process, the same global batch. Tokens/s is the Trainer's (real tokens of the global
   batch over rank 0's step time), the median of the logged intervals after the first (warm-up).
   The runs alternate (`--rounds`), so a shared machine's other work hits both alike. Goal: 2 x 1
   >= 0.9 x of 1 x 2 (on 2 cores the point is that the overhead is small). 1 process x 1 thread is
   printed too: on a shared machine a 2-thread process suffers most from the other work (its
   threads wait for each other), which the 2 x 1 / 1 x 1 ratio does not depend on.
2. Communication share (this script under torchrun, `--worker`): DDP training steps on the same real
   batches, alternately with the gradient all-reduce and without it (`no_sync`): share = (with -
   without) / with, the step time the all-reduce adds (what overlaps backward is not counted).
3. Memory: per rank, the bytes of parameters + AdamW state (exp_avg, exp_avg_sq, step) after a step
   under DDP (whole on every rank) and FSDP (each rank its shards: about half at 2 processes).

    python bench/distributed_scaling.py [--steps 30] [--batch-size 32] [--seq-len 128] [--preset bert-mini]

On a machine with GPUs the method is the same (add --device cuda to the commands; NCCL).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from pretrain_throughput import batches, bench_tokenizer  # noqa: E402  (the real-text batches, the tokenizer)

CACHE = Path(tempfile.gettempdir()) / "plmkit-bench-pretrain"  # (pretrain_throughput's: tokenizer and shards)


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def torchrun(nproc: int, *target: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
            "127.0.0.1", "--master_port", free_port(), *target]


def pretrain_tokens_per_s(args, processes: int, threads: int, out: Path) -> float:
    """`plmkit pretrain` on Shakespeare at `processes` x `threads`: the median logged tokens/s after the
    first interval."""
    from plmkit.datasets import fetch

    corpus = fetch("shakespeare")
    tokenizer = CACHE / "tokenizer"
    bench_tokenizer("corpus", corpus, CACHE)  # (trained once, then reused)
    command = ["pretrain", "--corpus", str(corpus), "--tokenizer", str(tokenizer), "--out", str(out),
               "--preset", args.preset, "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size),
               "--max-steps", str(args.steps), "--log-every", str(args.log_every), "--eval-fraction", "0",
               "--cache-dir", str(CACHE / "cli"), "--device", "cpu", "--no-progress", "--overwrite"]
    launch = torchrun(processes, "-m", "plmkit") if processes > 1 else [sys.executable, "-m", "plmkit"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(launch + command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(launch + command)} failed:\n{done.stderr[-3000:]}")
    rates = [json.loads(line)["tokens_per_s"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(rates[1:] or rates)


def local_bytes(tensors) -> int:
    from torch.distributed.tensor import DTensor
    total = 0
    for t in tensors:
        t = t.to_local() if isinstance(t, DTensor) else t
        total += t.numel() * t.element_size()
    return total


def worker(args) -> None:
    """Under torchrun: the communication share of DDP steps and the bytes each rank holds."""
    from plmkit.models.bert import BertConfig, BertForPreTraining
    from plmkit.training import distributed

    torch.set_num_threads(1)
    with distributed.process_group("cpu"):
        with distributed.main_first():  # (rank 0 tokenizes the corpus into the cache, the other reads it)
            data, vocab = batches(args.comm_steps + 2, args.batch_size, args.seq_len, "corpus")
        cfg = BertConfig.from_preset(args.preset, vocab_size=vocab)
        report = {}
        for strategy in ("ddp", "fsdp"):
            torch.manual_seed(0)
            model = BertForPreTraining(cfg)
            wrapped = distributed.wrap(model, strategy, torch.device("cpu"))
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # (after sharding)
            times: dict[bool, list[float]] = {True: [], False: []}
            for i, batch in enumerate(data):
                sync = strategy == "fsdp" or i % 2 == 0  # DDP: with and without the all-reduce, in turn
                mine, _ = distributed.shard(batch)
                distributed.barrier()
                start = time.perf_counter()
                with distributed.gradient_sync(wrapped, sync):
                    wrapped(**mine).loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if i >= 2:  # (warm-up)
                    times[sync].append(time.perf_counter() - start)
            state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
            report[strategy] = {"step_s": statistics.median(times[True]),
                                "no_sync_step_s": statistics.median(times[False]) if times[False] else None,
                                "param_bytes": local_bytes(model.parameters()), "optim_bytes": local_bytes(state)}
        everyone = distributed.EvalShard().gather([report])  # (every rank's report, on rank 0)
        if distributed.is_main():
            Path(args.worker).write_text(json.dumps(everyone))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="steps of each pretraining run")
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1, help="alternating runs of each configuration")
    parser.add_argument("--comm-steps", type=int, default=16, help="steps of each strategy in the worker")
    parser.add_argument("--batch-size", type=int, default=32, help="the global batch")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--preset", default="bert-mini")
    parser.add_argument("--worker", metavar="OUT.json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    load = os.getloadavg()
    print(f"BERT pretraining ({args.preset}, MLM+NSP, Shakespeare), global batch {args.batch_size} x <= "
          f"{args.seq_len}, fp32, CPU ({os.cpu_count()} cores), load average before {load[0]:.2f}")
    configs = {"1 x 2 threads": (1, 2), "2 x 1 thread (DDP)": (2, 1), "1 x 1 thread (reference)": (1, 1)}
    rates: dict[str, list[float]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for name, (processes, threads) in configs.items():
                rates[name].append(pretrain_tokens_per_s(args, processes, threads, Path(tmp) / "run"))
        best = {name: max(values) for name, values in rates.items()}
        for name, value in best.items():
            print(f"  {name:<24} {value:10.0f} tokens/s   (runs: {', '.join(f'{v:.0f}' for v in rates[name])})")
        one, two, single = best.values()
        print(f"  ratio 2x1 / 1x2: {two / one:.2f}x (goal >= 0.9x: {'meets' if two / one >= 0.9 else 'MISSES'}); "
              f"2x1 / 1x1: {two / single:.2f}x (2 processes against one on one core)")

        out = Path(tmp) / "worker.json"
        done = subprocess.run(torchrun(2, __file__, "--worker", str(out), "--comm-steps", str(args.comm_steps),
                                       "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len),
                                       "--preset", args.preset),
                              env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"the worker failed:\n{done.stderr[-3000:]}")
        ranks = json.loads(out.read_text())
    ddp = ranks[0]["ddp"]
    share = (ddp["step_s"] - ddp["no_sync_step_s"]) / ddp["step_s"]
    print(f"communication (2 processes, DDP, rank 0): step {ddp['step_s'] * 1e3:.0f} ms with the gradient "
          f"all-reduce, {ddp['no_sync_step_s'] * 1e3:.0f} ms without: {share:.1%} of a step; FSDP step "
          f"{ranks[0]['fsdp']['step_s'] * 1e3:.0f} ms (all-gathers and reduce-scatters included)")
    print("bytes held per rank (parameters + AdamW state), 2 processes:")
    for r, report in enumerate(ranks):
        held = {s: report[s]["param_bytes"] + report[s]["optim_bytes"] for s in ("ddp", "fsdp")}
        print(f"  rank {r}: DDP {held['ddp'] / 2**20:7.2f} MiB   FSDP {held['fsdp'] / 2**20:7.2f} MiB   "
              f"FSDP / DDP {held['fsdp'] / held['ddp']:.2f} (goal about 0.5)")
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
