import subprocess
import sys

import pytest
import torch

import plmkit.training.checkpoint as checkpoint
from plmkit.errors import CheckpointError, WriteError
from plmkit.training import TrainConfig, Trainer
from plmkit.training.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_trainer_state,
    load_weights,
    prune_checkpoints,
    resume_checkpoint,
    save_checkpoint,
)

BASE = dict(lr=3e-3, log_every=1, device="cpu", progress_bar=False)


def test_keep_last_and_layout(tmp_path, toy):
    cfg = TrainConfig(**BASE, max_steps=10, save_every=2, keep_last=2)
    Trainer(toy.ToyLM(), cfg, toy.make_loader(), tmp_path, save_extra=lambda d: (d / "tokenizer.json").write_text("{}")).train()
    root = tmp_path / "checkpoints"
    assert [p.name for p in list_checkpoints(root)] == ["step-000008", "step-000010"]
    assert (root / "latest").read_text().strip() == "step-000010"
    latest = latest_checkpoint(root)
    assert sorted(p.name for p in latest.iterdir()) == ["model", "model_state.safetensors", "trainer_state.pt"]
    # (a Trainer given a fingerprint keeps it there too: tests/training/test_resume_checks.py)
    assert {p.name for p in (latest / "model").iterdir()} == {"config.json", "model.safetensors", "tokenizer.json"}
    state = load_trainer_state(latest)  # weights_only=True: every entry is plain data
    assert state["run"]["step"] == 10 and isinstance(state["rng"]["python"], tuple)
    assert not list(root.glob(".*tmp*"))


def test_failure_while_writing_keeps_previous_checkpoint(tmp_path, toy, monkeypatch):
    real_write = checkpoint.write_torch
    calls = []

    def flaky_write(path, state):
        calls.append(path)
        if len(calls) == 2:
            path.write_bytes(b"half a checkpoi")
            raise OSError("disk full (simulated)")
        real_write(path, state)

    monkeypatch.setattr(checkpoint, "write_torch", flaky_write)
    cfg = TrainConfig(**BASE, max_steps=10, save_every=5)
    model = toy.ToyLM()
    with pytest.raises(WriteError, match=r"step-000010: disk full.*stopped at step 10.*checkpoint .*step-000005"):
        Trainer(model, cfg, toy.make_loader(), tmp_path).train()
    root = tmp_path / "checkpoints"
    assert latest_checkpoint(root).name == "step-000005"
    assert [p.name for p in root.iterdir() if p.is_dir()] == ["step-000005"]  # no partial or temp dir left
    assert load_trainer_state(root / "step-000005")["run"]["step"] == 5
    load_weights(toy.ToyLM(), root / "step-000005")

    monkeypatch.setattr(checkpoint, "write_torch", real_write)
    result = Trainer(toy.ToyLM(), cfg, toy.make_loader(), tmp_path).train(resume=True)
    assert result.step == 10 and latest_checkpoint(root).name == "step-000010"


def test_checkpoint_functions(tmp_path, toy):
    model = toy.ToyLM()
    model.head.weight = model.embeddings["word_embeddings"].weight  # tied weights survive the round trip
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, {"step": step})
    prune_checkpoints(tmp_path, keep_last=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000003"]
    other = toy.ToyLM()
    other.head.weight = other.embeddings["word_embeddings"].weight
    load_weights(other, tmp_path / "step-000003")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_weights(toy.ToyLM(n_layers=3), tmp_path / "step-000003")
    (tmp_path / "latest").write_text("step-000099\n")
    with pytest.raises(CheckpointError, match=r"names .*step-000099, which is missing. The newest intact checkpoint "
                                              r"is .*step-000003: resume from it with --resume-from"):
        latest_checkpoint(tmp_path)
    assert latest_checkpoint(tmp_path / "nowhere") is None
    # a --resume-from mistyped: said so, and the run's intact checkpoint named, not "none is left"
    for typo in (tmp_path / "step-00003", tmp_path / "elsewhere" / "step-000003", "step-000003"):
        with pytest.raises(CheckpointError, match=r"--resume-from .*step-0+3: no such checkpoint directory; the newest "
                                                  r"intact checkpoint of this run is .*step-000003"):
            resume_checkpoint(tmp_path, typo)
    with pytest.raises(CheckpointError, match="holds no intact checkpoint"):
        resume_checkpoint(tmp_path / "empty", tmp_path / "nowhere")


def test_a_save_removes_what_a_killed_save_of_any_step_left(tmp_path, toy):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pid whose process is gone, as a SIGKILLed trainer's
    (tmp_path / f".step-000003.{child.pid}-0123abcd.tmp" / "model").mkdir(parents=True)
    (tmp_path / f".latest.{child.pid}-89abcdef.tmp").write_text("step-000003\n")
    save_checkpoint(tmp_path, 5, toy.ToyLM(), {"step": 5})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-000005"]


class _Code:
    """A pickle that would run a command when unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (subprocess.call, (["touch", str(self.marker)],))


def test_a_dcp_checkpoint_holds_tensors_only_and_its_damage_is_found(tmp_path, toy):
    """The DCP layout of sharded runs (written here by one process): model and optimizer state read
    back whole; a truncated shard file and a metadata file that would run code are damage, and the
    code never runs."""
    import pickle

    from plmkit.training.checkpoint import load_sharded_state, load_trainer_state
    torch.manual_seed(0)
    model = toy.ToyLM()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(**toy.masking_collate(toy.make_dataset(4))).loss.backward()
    optimizer.step()
    path = save_checkpoint(tmp_path, 3, model, {"run": 1}, optimizer=optimizer)
    assert (path / "sharded" / ".metadata").is_file() and not (path / "model_state.safetensors").exists()
    assert checkpoint.damage(path) is None
    other = toy.ToyLM()
    again = torch.optim.AdamW(other.parameters(), lr=0.1)
    load_sharded_state(other, again, path, load_trainer_state(path)["optimizer"]["param_groups"])
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    assert all(torch.equal(optimizer.state[p]["exp_avg"], again.state[q]["exp_avg"])
               for p, q in zip(model.parameters(), other.parameters()))
    shard = next((path / "sharded").glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:-8])
    assert "has a truncated sharded/" in checkpoint.damage(path)
    marker = tmp_path / "ran"
    (path / "sharded" / ".metadata").write_bytes(pickle.dumps(_Code(marker)))
    assert "is not part of a checkpoint's metadata" in checkpoint.damage(path) and not marker.exists()
