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
    """A corpus, a WordPiece tokenizer trained once (for all the launches) and a
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
             timeout: int = TIMEOUT, **env: str) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node nproc [launcher] -m plmkit args` (or a script), on a free port, one
    thread each, with `env` added to the environment, ended after `timeout` seconds."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = [script] if script else ["-m", "plmkit"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **env}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                           "--master_addr", "127.0.0.1", "--master_port", str(port), *launcher, *target, *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


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


def resumed_copy(run, name: str, step: int = 5):
    """A copy of a finished run whose continuation from its checkpoint of `step` replays the later steps."""
    out = run.parent / name
    shutil.copytree(run, out)
    return out, ["--resume-from", str(out / "checkpoints" / f"step-{step:06d}")]


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


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_fine_tuning_ner_at_two_processes_equals_one(files, tiny_bert, strategy):
    """Token classification over sentences of different lengths: each rank's loss is weighted by its share
    of the labelled tokens, so the steps and the saved model are those of one process. (At lr 1e-2 the runs
    drifted up to 9.4e-5 apart in about one run in five: Adam turns the rounding noise of gradients that are
    zero or nearly, such as the attention key biases', which the softmax cancels, into steps of up to its
    learning rate, and the tokenizer, trained anew each run, decides which are; at 1e-3, 7e-8 at most.)"""
    conll = files / "ner.conll"
    if not conll.exists():
        sentences = [s.rstrip(".").split() for s in EN * 3]
        conll.write_text("\n\n".join("\n".join(f"{w} {'B-CAP' if w[0].isupper() else 'O'}" for w in words)
                                     for words in sentences) + "\n", encoding="utf-8")
    args = ["finetune", "--task", "ner", "--model", str(tiny_bert), "--train", str(conll), "--batch-size", "4",
            "--max-steps", "6", "--lr", "1e-3", "--schedule", "constant", "--warmup-ratio", "0", "--dropout", "0",
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


def bert2bert_args(files, tiny_bert, steps: int) -> list[str]:
    """Translation by an encoder-decoder warm-started from `tiny_bert`, for `steps` steps."""
    mt = files / "b2b.jsonl"
    if not mt.exists():
        mt.write_text("".join(json.dumps({"source": s, "target": " ".join(reversed(s.lower().split()))}) + "\n"
                              for s in EN), encoding="utf-8")
    return ["finetune", "--task", "translation", "--init", "bert2bert", "--model", str(tiny_bert), "--train", str(mt),
            "--batch-size", "4", "--max-steps", str(steps), "--lr", "1e-3", "--schedule", "constant",
            "--warmup-ratio", "0", "--dropout", "0", "--log-every", "1", "--device", "cpu", "--no-progress"]


def test_bert2bert_under_ddp_at_two_processes_equals_one(files, tiny_bert):
    """An encoder-decoder warm-started from a BERT: its encoder's pooler, which no seq2seq loss reads, is left
    out of DDP (which stopped at the second step, waiting for its gradient); the run is that of one process."""
    args = bert2bert_args(files, tiny_bert, 3)
    assert main([*args, "--out", str(files / "b2b-one")]) == 0
    done = torchrun(*args, "--out", str(files / "b2b-two"))  # (--strategy ddp, the default)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = losses(files / "b2b-one"), losses(files / "b2b-two")
    assert sorted(a) == sorted(b) == [1, 2, 3] and max(abs(a[s] - b[s]) for s in a) < 1e-5, (a, b)
    x, y = (load_file(files / run / "model" / "model.safetensors") for run in ("b2b-one", "b2b-two"))
    assert x.keys() == y.keys() and max((x[k] - y[k]).abs().max().item() for k in x) < 1e-5


def test_bert2bert_resumes_exactly_under_fsdp_ddp_and_one_process(files, tiny_bert):
    """The pooler of a bert2bert encoder never gets a gradient, so its checkpoints hold no optimizer state for it:
    they resume all the same (at step 2 of 4), sharded or not, at 2 processes (fsdp, ddp) and at one, with the
    uninterrupted run's losses and weights, and the pooler without optimizer state still (no placeholder saved)."""
    from plmkit.training.checkpoint import _read_dcp_metadata
    args = [*bert2bert_args(files, tiny_bert, 4), "--save-every", "2"]
    one, fsdp = files / "b2b-save-one", files / "b2b-save-fsdp"
    assert main([*args, "--out", str(one)]) == 0
    done = torchrun(*args, "--out", str(fsdp), "--strategy", "fsdp")
    assert done.returncode == 0, done.stderr[-3000:]
    sources = {"fsdp-from-fsdp": fsdp, "fsdp-from-one": one, "ddp-from-one": one, "one-from-fsdp": fsdp}
    runs = {name: resumed_copy(run, f"b2b-{name}", 2) for name, run in sources.items()}
    commands = [[*args, "--out", str(out), *resume, "--strategy", name.split("-")[0]]
                for name, (out, resume) in runs.items() if name != "one-from-fsdp"]
    (files / "b2b-commands.json").write_text(json.dumps(commands), encoding="utf-8")
    done = torchrun(str(files / "b2b-commands.json"), script=os.path.join(os.path.dirname(__file__),
                                                                          "dist_train_worker.py"))
    assert done.returncode == 0, done.stderr[-3000:]
    out, resume = runs["one-from-fsdp"]
    assert main([*args, "--out", str(out), *resume]) == 0

    def optimizer_keys(run):
        return {k for k in _read_dcp_metadata(run / "checkpoints" / "step-000004" / "sharded" / ".metadata")
                .state_dict_metadata if k.startswith("optimizer.")}

    assert not any("pooler" in k for k in optimizer_keys(fsdp))
    for name, (out, _) in runs.items():
        a, b = losses(one), losses(out)
        assert sorted(a) == sorted(b) == [1, 2, 3, 4] and max(abs(a[s] - b[s]) for s in a) < 1e-5, (name, a, b)
        x, y = load_file(one / "model" / "model.safetensors"), load_file(out / "model" / "model.safetensors")
        assert x.keys() == y.keys() and max((x[k] - y[k]).abs().max().item() for k in x) < 1e-5, name
        if name.startswith("fsdp"):
            assert optimizer_keys(out) == optimizer_keys(fsdp), name


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


def test_leaving_the_process_group_ends_it_and_gloos_threads(tmp_path):
    """After the block the group is gone, and gloo's worker threads with it, even when torch.distributed.fsdp
    was first imported inside it (as `wrap` and a sharded seq2seq evaluation do): a group kept alive into the
    interpreter's exit aborted rank 0 now and then ("terminate called without an active exception": a gloo
    thread releasing a tensor took the GIL during finalization)."""
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent("""
        import os, sys, weakref
        import torch.distributed as dist
        from plmkit.training import distributed
        with distributed.process_group("cpu"):
            import torch.distributed.fsdp  # noqa: F401
            group = weakref.ref(dist.group.WORLD)
            distributed.EvalShard().sums([1.0])
        names = [open(f"/proc/self/task/{t}/comm").read() for t in os.listdir("/proc/self/task")]
        gloo = sum("gloo" in name for name in names)
        sys.stdout.write(f"rank {distributed.rank()}: group {'alive' if group() else 'gone'}, {gloo} gloo threads\\n")
    """))
    done = torchrun(script=str(script))
    assert done.returncode == 0, done.stderr[-3000:]
    for r in (0, 1):
        assert f"rank {r}: group gone, 0 gloo threads" in done.stdout, done.stdout


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
    part = distributed.EvalShard()  # a list shared as a batch's rows; examples owned in turn
    assert part.share([7, 8, 9]) == [7] and part.share([7]) == [] and [part.owns(k) for k in range(3)] == [1, 0, 1]
    monkeypatch.setenv("RANK", "1")
    assert part.share([7, 8, 9]) == [8, 9] and part.share([7]) == [7] and [part.owns(k) for k in range(3)] == [0, 1, 0]


def test_fsdp_policies_on_gpus_and_none_on_the_cpu():
    """Written for GPUs (not run here): bf16 compute copies with fp32 shards and gradient reduction, and
    CPU offload; on the CPU no policy, and offloading to where the run already is is refused."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy
    from plmkit.errors import ConfigError
    from plmkit.training.distributed import fsdp_policies
    gpu = torch.device("cuda", 0)
    assert fsdp_policies(gpu, None, False) == {} and fsdp_policies(torch.device("cpu"), torch.bfloat16, False) == {}
    policies = fsdp_policies(gpu, torch.bfloat16, True)
    assert policies["mp_policy"] == MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    assert isinstance(policies["offload_policy"], CPUOffloadPolicy) and policies["offload_policy"].pin_memory
    with pytest.raises(ConfigError, match="--fsdp-cpu-offload moves FSDP's shards from the GPUs"):
        fsdp_policies(torch.device("cpu"), None, True)


# ---------------------------------------------------------------- every training command at 2 processes
@pytest.fixture(scope="module")
def inputs(files, tiny_bert):
    """What the other training commands read: a byte-BPE tokenizer per style (GPT-2 with <|pad|>, BART),
    a random 2-layer GPT-2 with the first, and small SFT, classification, QA, relation and translation files."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
    import finetune_helpers as h
    from clm_helpers import PAIRS, tiny_tokenizer
    from plmkit.models.gpt2 import GPT2Config, GPT2LMHeadModel
    from plmkit.tokenization import Tokenizer
    corpus = (files / "en.txt").read_text(encoding="utf-8")
    tiny_tokenizer([corpus, "<|user|>\nhello\n<|assistant|>\nhi there"], 300).save_pretrained(files / "gpt-tok")
    Tokenizer.train([corpus], 300, model="byte-bpe", style="bart").save_pretrained(files / "bart-tok")
    gpt = files / "tiny-gpt"
    tok = Tokenizer.from_pretrained(files / "gpt-tok")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_positions=64, n_embd=32, n_layer=2, n_head=2, **GPT2Config.tokenizer_fields(tok))) \
        .save_pretrained(gpt)
    tok.save_pretrained(gpt)

    def jsonl(path, rows):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    jsonl(files / "sft.jsonl", [{"prompt": p, "response": r} for p, r in PAIRS * 2])
    jsonl(files / "sft-dev.jsonl", [{"prompt": p, "response": r} for p, r in PAIRS])
    jsonl(files / "cls.jsonl", [{"text": s, "label": "long" if len(s.split()) > 7 else "short"} for s in EN * 2])
    jsonl(files / "mt.jsonl", [{"source": s, "target": " ".join(reversed(s.lower().split()))} for s in EN * 2])
    jsonl(files / "mt-dev.jsonl", [{"source": s, "target": " ".join(reversed(s.lower().split()))} for s in EN])
    h.squad_file(files / "squad.json")
    h.relation_file(files / "relations.jsonl")
    cls_teacher(files, files / "cls-teacher")
    return files


def cls_teacher(files, out) -> None:
    """A random 2-layer BERT classifier (long / short) with the corpus's tokenizer: a distillation's teacher."""
    from plmkit.models.bert import BertConfig, BertForSequenceClassification
    from plmkit.tasks.classification import ClassificationTask
    from plmkit.tokenization import Tokenizer
    torch.manual_seed(1)
    BertForSequenceClassification(BertConfig(vocab_size=300, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                             intermediate_size=32, id2label={0: "long", 1: "short"})).save_pretrained(out)
    Tokenizer.from_pretrained(files / "tok").save_pretrained(out)
    ClassificationTask.of(problem_type="single_label_classification", sentence_pairs=False).save(out)


# AdamW's eps at 1e-4: a gradient that is zero but for rounding (a key bias, QA's start/end bias: softmax does
# not see them) would otherwise be turned into a full learning-rate step of a sign that rounding decides
STEPS = ["--batch-size", "4", "--schedule", "constant", "--warmup-ratio", "0", "--eps", "1e-4"]
PRETRAIN = ["--corpus", "{root}/en.txt", "--cache-dir", "{root}/cache", *STEPS, "--eval-fraction", "0.2",
            "--eval-batches", "2"]
FINETUNE = [*STEPS, "--lr", "1e-2", "--dropout", "0"]
COMMANDS = {  # each with evaluation data: every evaluation is sharded and must give the metrics of one process
    "clm": ["pretrain", "--objective", "clm", *PRETRAIN, "--tokenizer", "{root}/gpt-tok", "--preset", "gpt2-tiny",
            "--seq-len", "32"],
    "denoise": ["pretrain", "--objective", "denoise", *PRETRAIN, "--tokenizer", "{root}/bart-tok",
                "--preset", "bart-tiny", "--seq-len", "48"],
    "sft": ["finetune", "--task", "sft", *FINETUNE, "--model", "{root}/tiny-gpt", "--train", "{root}/sft.jsonl",
            "--eval", "{root}/sft-dev.jsonl"],
    "classification": ["finetune", "--task", "classification", *FINETUNE, "--model", "{root}/tiny-bert", "--train",
                       "{root}/cls.jsonl", "--eval", "{root}/cls.jsonl"],
    "qa": ["finetune", "--task", "qa", *FINETUNE, "--model", "{root}/tiny-bert", "--train", "{root}/squad.json",
           "--eval", "{root}/squad.json", "--max-length", "48"],
    "relation": ["finetune", "--task", "relation", *FINETUNE, "--model", "{root}/tiny-bert",
                 "--train", "{root}/relations.jsonl", "--eval", "{root}/relations.jsonl"],
    "translation": ["finetune", "--task", "translation", *FINETUNE, "--preset", "bart-tiny", "--tokenizer",
                    "{root}/bart-tok", "--train", "{root}/mt.jsonl", "--eval", "{root}/mt-dev.jsonl",
                    "--num-beams", "2", "--max-target-length", "12"],
    # the teacher frozen outside the wrapper (whole on every rank), the student and the hidden states' projection trained
    "distill": ["distill", "--task", "classification", *FINETUNE, "--teacher", "{root}/cls-teacher", "--student-preset",
                "bert-tiny", "--hidden-weight", "1", "--train", "{root}/cls.jsonl", "--eval", "{root}/cls.jsonl",
                "--no-report"],
    # LoRA adapters on q and v, and the relation markers' new embedding rows (the matrix is frozen)
    "lora": ["finetune", "--task", "relation", *FINETUNE, "--model", "{root}/tiny-bert", "--train",
             "{root}/relations.jsonl", "--eval", "{root}/relations.jsonl", "--lora-rank", "4", "--lora-dropout", "0"],
}


def eval_file(root, name: str) -> str:
    args = COMMANDS[name]
    return args[args.index("--eval") + 1].format(root=root)


def command(root, name: str, out) -> list[str]:
    """Command `name` for 6 steps, evaluated at steps 3 and 6, on the CPU, into `out`."""
    return [a.format(root=root) for a in COMMANDS[name]] + [
        "--max-steps", "6", "--eval-every", "3", "--log-every", "1", "--device", "cpu", "--no-progress",
        "--out", str(out)]


TWO_PROCESS_RUNS = [(name, strategy) for name in COMMANDS for strategy in ("ddp", "fsdp")]
EVALUATED = ("qa", "translation")  # models of the 2-process runs that `torchrun ... plmkit evaluate` scores


@pytest.fixture(scope="module")
def two_process_runs(inputs):
    """Every run of TWO_PROCESS_RUNS at 2 processes, then `plmkit evaluate --json` of the EVALUATED models
    (sharded: QA's spans routed to the process that scores each question; generated translations scored
    from summed statistics), in one torchrun launch: its stdout."""
    commands = [[*command(inputs, name, inputs / f"{name}-two-{strategy}"), "--strategy", strategy]
                for name, strategy in TWO_PROCESS_RUNS]
    commands += [["evaluate", "--model", str(inputs / f"{name}-two-fsdp" / "model"), "--data", eval_file(inputs, name),
                  "--device", "cpu", "--json"] for name in EVALUATED]
    (inputs / "commands.json").write_text(json.dumps(commands), encoding="utf-8")
    worker = os.path.join(os.path.dirname(__file__), "dist_train_worker.py")
    done = torchrun(str(inputs / "commands.json"), script=worker,
                    timeout=len(commands) * TIMEOUT // 4)  # (a busy machine: 2 shared cores)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("name,strategy", TWO_PROCESS_RUNS)
def test_every_training_command_at_two_processes_equals_one(inputs, two_process_runs, name, strategy):
    """Causal-LM and denoising pretraining, SFT, classification, QA, relations, translation, distillation and
    LoRA: the losses, gradient norms, held-out metrics (sharded evaluation: perplexity, accuracy, EM/F1, relation
    F1, generated BLEU/chrF/ROUGE) and saved weights (LoRA: merged into them; under fsdp gathered from the
    shards; distillation: the student alone) of one process."""
    one, two = inputs / f"{name}-one", inputs / f"{name}-two-{strategy}"
    if not one.exists():
        assert main(command(inputs, name, one)) == 0
    records = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    keys = sorted({k for r in records for k in r if k == "loss" or k == "grad_norm" or k.startswith("eval_")})
    assert "loss" in keys and any(k.startswith("eval_") for k in keys), keys
    for key in keys:  # (within 1e-5, relative beyond 1: perplexities)
        a, b = losses(one, key), losses(two, key)
        assert sorted(a) == sorted(b) and all(abs(a[s] - b[s]) < 1e-5 * max(1, abs(a[s])) for s in a), (key, a, b)
    x, y = load_file(one / "model" / "model.safetensors"), load_file(two / "model" / "model.safetensors")
    assert x.keys() == y.keys() and not any("lora" in k or "trainable_rows" in k for k in x)
    assert max((x[k] - y[k]).abs().max().item() for k in x) < 1e-5
    config = [json.loads((run / "model" / "config.json").read_text()) for run in (one, two)]
    assert config[0] == config[1]  # (under fsdp too: the architecture is the model's, not FSDP's subclass)


def test_plmkit_evaluate_under_torchrun_gives_the_metrics_of_one_process(inputs, two_process_runs, capsys):
    """Rank 0 alone prints; its metrics are those of one process on the whole data."""
    printed = [json.loads(line) for line in two_process_runs.splitlines() if line.startswith("{")]
    assert len(printed) == len(EVALUATED)
    for name, two in zip(EVALUATED, printed):
        model = inputs / f"{name}-two-fsdp" / "model"
        assert main(["evaluate", "--model", str(model), "--data", eval_file(inputs, name), "--device", "cpu",
                     "--json"]) == 0
        one = json.loads(capsys.readouterr().out)
        assert one.keys() == two.keys() and one["n"] > 1
        assert all(abs(one[k] - two[k]) < 1e-6 for k in one), (name, one, two)


def test_sharded_evaluation_gives_the_metrics_of_one_process(inputs, tmp_path):
    """Each rank evaluates its rows: classification's and relations' confusion matrices and losses are
    added up, NER's windows merged per rank and its sentences gathered to rank 0 for seqeval, QA's spans
    routed to the rank that scores each question, translations generated per rank and scored from summed
    BLEU/chrF statistics and ROUGE sums, SFT's losses summed: the metrics of one process (within 1e-6,
    relative beyond 1).
    Pretraining's held-out metrics: `assert_same_run` and the training tests above."""
    sys.path.insert(0, os.path.dirname(__file__))
    from dist_eval_worker import evaluations
    worker = os.path.join(os.path.dirname(__file__), "dist_eval_worker.py")
    done = torchrun(str(inputs), str(tmp_path / "two.json"), script=worker)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = evaluations(str(inputs)), json.loads((tmp_path / "two.json").read_text())
    assert one.keys() == two.keys() and {"cls_accuracy", "ner_f1", "qa_f1", "qa_best_f1", "rel_f1", "mt_bleu",
                                         "mt_chrf", "mt_rougeL", "mt_loss", "sft_perplexity"} <= one.keys()
    assert (one["ner_n"], one["cls_n"], one["qa_n"], one["rel_n"], one["mt_n"]) == (9, 23, 6, 12, 11)
    assert 0 < one["mt_bleu"] < 100 and 0 < one["mt_rougeL"] < 100 and one["qa_f1"] <= one["qa_best_f1"]
    assert {k: v for k, v in one.items() if abs(v - two[k]) >= 1e-6 * max(1, abs(v))} == {}, two  # (perplexity)


@pytest.mark.parametrize("rank,bars", [(0, True), (1, False)])
def test_only_rank_0_shows_progress_bars(monkeypatch, rank, bars):
    """Whatever imported tqdm before the group: rank 0's bars only (the group's calls stubbed here)."""
    import io

    from plmkit.training import distributed
    from plmkit.utils.progress import progress_bar
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", str(rank))
    for name in ("init_process_group", "barrier", "destroy_process_group"):
        monkeypatch.setattr(distributed.dist, name, lambda *a, **k: None)
    monkeypatch.setattr(distributed, "_attempt_store", lambda: None)
    with distributed.process_group("cpu"):
        assert progress_bar(range(2), file=io.StringIO()).disable != bars
    assert not progress_bar(range(2), file=io.StringIO()).disable
