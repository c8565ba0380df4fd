"""Training under torchrun: 2 CPU processes (gloo) against 1, launched as a user would
(`python -m torch.distributed.run --nproc_per_node 2 -m plmkit ...`), every launch time-bound."""
from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from plmkit.cli import main

EN = [
    "The river ran quietly past the old mill.", "Children played in the fields until dusk.",
    "A storm rolled in from the west, and the farmers hurried home.", "The baker opened his shop before sunrise.",
    "Letters arrived from the city every Tuesday.", "Nobody remembered who had planted the oak tree.",
    "The teacher read a story about a clever fox.", "Lanterns were lit along the narrow streets.",
]
TIMEOUT = 120  # seconds any launch may take: a hang fails the test instead of blocking the suite


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A corpus, a WordPiece tokenizer trained once (its training is not reproducible run to run) and a
    1-process MLM run of 10 steps with gradient accumulation: the baseline."""
    from plmkit.tokenization import Tokenizer
    root = tmp_path_factory.mktemp("dist")
    rng = random.Random(0)
    docs = [" ".join(rng.choice(EN) for _ in range(rng.randint(2, 6))) for _ in range(40)]
    (root / "en.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    Tokenizer.train_wordpiece(docs, 300).save_pretrained(root / "tok")
    assert main(pretrain_args(root, root / "one", "--max-steps", "10")) == 0
    return root


def pretrain_args(root, out, *extra) -> list[str]:
    return ["pretrain", "--corpus", str(root / "en.txt"), "--tokenizer", str(root / "tok"), "--out", str(out),
            "--objective", "mlm", "--preset", "bert-tiny", "--seq-len", "48", "--batch-size", "8",
            "--grad-accum-steps", "2", "--schedule", "constant", "--warmup-ratio", "0", "--eval-fraction", "0.2",
            "--eval-batches", "2", "--eval-every", "5", "--cache-dir", str(root / "cache"), "--device", "cpu",
            "--no-progress", "--log-every", "1", *extra]


def torchrun(*args: str, nproc: int = 2, script: str | None = None, launcher: tuple[str, ...] = (),
             **env: str) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node nproc [launcher] -m plmkit args` (or a script), on a free port, one
    thread each, with `env` added to the environment."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = [script] if script else ["-m", "plmkit"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **env}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                           "--master_addr", "127.0.0.1", "--master_port", str(port), *launcher, *target, *args],
                          capture_output=True, text=True, timeout=TIMEOUT, env=env)


def losses(out, key: str = "loss") -> dict[int, float]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in records if key in r}


def assert_same_run(a, b, steps: int = 10, keys=("loss", "grad_norm")) -> None:
    """Runs `a` and `b` logged the same values for every step (within 1e-5), the same held-out metrics
    at steps 5 and 10 (evaluated sharded at 2 processes) and saved the same weights."""
    for key in keys:
        one, two = losses(a, key), losses(b, key)
        assert sorted(two) == sorted(one) == list(range(1, steps + 1)), key
        assert max(abs(one[s] - two[s]) for s in one) < 1e-5, (key, one, two)
    for key in ("eval_mlm_loss", "eval_mlm_accuracy"):
        one, two = losses(a, key), losses(b, key)
        assert sorted(two) == sorted(one) == [5, 10] and max(abs(one[s] - two[s]) for s in one) < 1e-5, (key, one, two)
    x, y = load_file(a / "model" / "model.safetensors"), load_file(b / "model" / "model.safetensors")
    assert x.keys() == y.keys() and max((x[k] - y[k]).abs().max().item() for k in x) < 1e-5


def two_processes(files, strategy: str):
    """A 2-process run of 10 steps with `strategy`, checkpointed at steps 5 and 10 (launched once per
    strategy for the tests that share it)."""
    out = files / f"two-{strategy}"
    if not out.exists():
        done = torchrun(*pretrain_args(files, out, "--max-steps", "10", "--strategy", strategy, "--save-every", "5"))
        assert done.returncode == 0, done.stderr[-3000:]
    return out


def resumed_copy(run, name: str):
    """A copy of a finished run whose continuation from its step-5 checkpoint replays steps 6-10."""
    out = run.parent / name
    shutil.copytree(run, out)
    return out, ["--resume-from", str(out / "checkpoints" / "step-000005")]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_train_as_one_with_the_same_global_batch(files, strategy):
    """The same losses, gradient norms (under fsdp: the norm of the whole gradient, from its shards)
    and final weights (under fsdp: gathered from the shards onto rank 0) as one process."""
    assert_same_run(files / "one", two_processes(files, strategy))


def test_a_sharded_checkpoint_resumes_at_one_process_and_at_two_exactly(files):
    """FSDP's checkpoints are DCP shards (tensors only: the metadata is read without running code);
    a run saved at 2 processes resumes at 1 (unsharded, DCP reshards on load) and at 2 (sharded again)
    with the uninterrupted run's losses and final weights."""
    from plmkit.training.checkpoint import damage
    run = two_processes(files, "fsdp")
    step5 = run / "checkpoints" / "step-000005"
    assert sorted(p.name for p in (step5 / "sharded").iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert not (step5 / "model_state.safetensors").exists() and damage(step5) is None
    out, resume = resumed_copy(run, "fsdp-at-one")
    assert main(pretrain_args(files, out, "--max-steps", "10", *resume)) == 0
    assert_same_run(files / "one", out)
    out, resume = resumed_copy(run, "fsdp-at-two")
    done = torchrun(*pretrain_args(files, out, "--max-steps", "10", "--strategy", "fsdp", *resume))
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_run(files / "one", out)
    # rank 0 alone writes: one line per logged step and per evaluation, one summary printed
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == list(range(1, 11))
    assert [r["step"] for r in lines if "eval_mlm_loss" in r] == [5, 10]
    assert done.stdout.count("pretraining done") == 1


def test_a_run_saved_at_two_processes_resumes_at_one_exactly(files):
    out = files / "resumed"
    done = torchrun(*pretrain_args(files, out, "--max-steps", "5", "--save-every", "5"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert main(pretrain_args(files, out, "--max-steps", "10", "--resume-with-changes")) == 0
    one, resumed = losses(files / "one"), losses(out)
    assert sorted(resumed) == list(range(1, 11)) and max(abs(one[s] - resumed[s]) for s in one) < 1e-5


def test_an_elastic_restart_resumes_from_the_latest_checkpoint(files):
    """Rank 1 fails once after step 6; torchrun --max-restarts 1 starts the workers again, which resume
    from the step-5 checkpoint by themselves and end as the uninterrupted run."""
    out = files / "restarted"
    done = torchrun(*pretrain_args(files, out, "--max-steps", "10", "--strategy", "fsdp", "--save-every", "5"),
                    launcher=("--max-restarts", "1"), PLMKIT_TEST_FAIL_AT_STEP="6")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fails after step 6" in done.stderr and "resuming from the latest checkpoint" in done.stderr
    assert_same_run(files / "one", out)


def test_a_batch_size_the_world_size_does_not_divide_is_refused_by_name(files):
    done = torchrun(*pretrain_args(files, files / "odd", "--max-steps", "2", "--batch-size", "7"))
    assert done.returncode != 0
    assert "--batch-size 7 is the global batch, shared by the 2 processes" in done.stderr


@pytest.fixture(scope="module")
def tiny_bert(files):
    """A random 1-layer BERT with the corpus's tokenizer."""
    from plmkit.models.bert import BertConfig, BertModel
    model = files / "tiny-bert"
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=300, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(model)
    for f in (files / "tok").iterdir():
        (model / f.name).write_bytes(f.read_bytes())
    return model


def test_sharded_evaluation_gives_the_metrics_of_one_process(files, tiny_bert, tmp_path):
    """Each rank evaluates its rows: classification's sums (confusion matrix, loss) are added up across
    ranks, NER's windows merged per rank and its sentences gathered to rank 0 for seqeval: the metrics
    of one process (within 1e-6). Pretraining's held-out MLM metrics: `assert_same_run`."""
    sys.path.insert(0, os.path.dirname(__file__))
    from dist_eval_worker import evaluations
    done = torchrun(str(tiny_bert), str(tmp_path / "two.json"), script=os.path.join(os.path.dirname(__file__),
                                                                                     "dist_eval_worker.py"))
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = evaluations(str(tiny_bert)), json.loads((tmp_path / "two.json").read_text())
    assert one.keys() == two.keys() and {"cls_accuracy", "cls_loss", "ner_f1", "ner_loss", "ner_n"} <= one.keys()
    assert one["ner_n"] == 9 and one["cls_n"] == 23
    assert {k: v for k, v in one.items() if abs(v - two[k]) >= 1e-6} == {}, two


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_fine_tuning_ner_at_two_processes_equals_one(files, tiny_bert, strategy):
    """Token classification over sentences of different lengths: each rank's loss is weighted by its share
    of the labelled tokens, so the steps and the saved model are those of one process."""
    conll = files / "ner.conll"
    if not conll.exists():
        sentences = [s.rstrip(".").split() for s in EN * 3]
        conll.write_text("\n\n".join("\n".join(f"{w} {'B-CAP' if w[0].isupper() else 'O'}" for w in words)
                                     for words in sentences) + "\n", encoding="utf-8")
    args = ["finetune", "--task", "ner", "--model", str(tiny_bert), "--train", str(conll), "--batch-size", "4",
            "--max-steps", "6", "--lr", "1e-2", "--schedule", "constant", "--warmup-ratio", "0", "--dropout", "0",
            "--log-every", "1", "--device", "cpu", "--no-progress"]
    one = files / "ner-one"
    if not one.exists():
        assert main([*args, "--out", str(one)]) == 0
    two = files / f"ner-two-{strategy}"
    done = torchrun(*args, "--out", str(two), "--strategy", strategy)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = losses(one), losses(two)
    assert sorted(a) == sorted(b) == list(range(1, 7)) and max(abs(a[s] - b[s]) for s in a) < 1e-5, (a, b)
    x, y = load_file(one / "model" / "model.safetensors"), load_file(two / "model" / "model.safetensors")
    assert x.keys() == y.keys() and max((x[k] - y[k]).abs().max().item() for k in x) < 1e-5


def test_a_bad_record_ends_every_process_with_the_message(files, tiny_bert):
    model = tiny_bert
    bad = files / "bad.jsonl"
    bad.write_text('{"text": "ok", "label": "a"}\n{"text": 3, "label": "b"}\n', encoding="utf-8")
    done = torchrun("finetune", "--task", "classification", "--model", str(model), "--train", str(bad),
                    "--batch-size", "2", "--out", str(files / "ft"), "--device", "cpu", "--no-progress")
    assert done.returncode != 0
    assert done.stderr.count("bad.jsonl:2") >= 2  # each rank read the data and said so


def test_one_rank_failing_alone_ends_the_job_instead_of_hanging(tmp_path):
    """Rank 1 fails while rank 0 waits for it at a barrier: torchrun stops rank 0 and the job ends
    with rank 1's message (within the launch's time bound)."""
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent("""
        from plmkit.errors import DataError
        from plmkit.training import distributed
        with distributed.process_group("cpu"):
            if distributed.rank() == 1:
                raise DataError("rank 1 found a bad record")
            distributed.barrier()
    """))
    done = torchrun(script=str(script))
    assert done.returncode != 0 and "rank 1 found a bad record" in done.stderr


def test_one_process_runs_as_before_and_ranks_take_their_rows(monkeypatch):
    from plmkit.training import distributed
    assert distributed.world_size() == 1 and distributed.is_main() and not distributed.active()
    batch = {"input_ids": torch.arange(6).view(3, 2), "labels": torch.arange(6).view(3, 2), "n": 5}
    assert distributed.shard(batch)[0] is batch
    distributed.check_batch_size(7)
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, rows in ((0, [[0, 1]]), (1, [[2, 3], [4, 5]])):
        monkeypatch.setenv("RANK", str(rank))
        mine, own = distributed.shard(batch)
        assert own and mine["input_ids"].tolist() == rows == mine["labels"].tolist() and mine["n"] == 5
    single = {"input_ids": torch.ones(1, 2)}
    mine, own = distributed.shard(single)
    assert own and len(mine["input_ids"]) == 1  # rank 1 has the one row...
    monkeypatch.setenv("RANK", "0")
    mine, own = distributed.shard(single)
    assert mine is single and not own  # ... rank 0 none: it computes on the batch, weighted by zero
