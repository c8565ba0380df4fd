"""A resume continues the run it resumes: fingerprints of settings and data, changes refused by name or
accepted (the schedule goes on), damaged checkpoints pointing to the newest intact one."""
import json

import pytest

import finetune_helpers as h
from plmkit.errors import CheckpointError, ConfigError
from plmkit.recipes.finetune import finetune
from plmkit.training import TrainConfig, Trainer
from plmkit.training.checkpoint import latest_checkpoint, list_checkpoints
from plmkit.training.fingerprint import data_digests, differences, fingerprint, settings_of
from plmkit.training.schedule import LRSchedule

QUICK = dict(batch_size=4, lr=1e-3, log_every=1, save_every=2, device="cpu", precision="fp32", progress_bar=False)
ROWS = [("a fine film", "pos"), ("dull and slow", "neg"), ("warm and funny", "pos"), ("a waste", "neg")] * 4


def write_rows(path, rows):
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    return path


def tune(tmp_path, train, steps, **extra):
    return finetune("classification", h.tiny_model_dir(), train, tmp_path / "out", max_steps=steps, **{**QUICK, **extra})


def lrs(out):
    return {r["step"]: r["lr"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "lr" in r}


def test_a_resume_with_other_data_or_settings_is_refused_naming_the_change(tmp_path):
    train = write_rows(tmp_path / "t.jsonl", ROWS)
    tune(tmp_path, train, 4)
    checkpoint = latest_checkpoint(tmp_path / "out" / "checkpoints")
    assert json.loads((checkpoint / "fingerprint.json").read_text())["settings"]["train.lr"] == 1e-3
    renamed = write_rows(tmp_path / "renamed.jsonl", [(t, {"pos": "good", "neg": "bad"}[y]) for t, y in ROWS])
    with pytest.raises(ConfigError, match=r"--train: renamed.jsonl is not the file the run started with"):
        tune(tmp_path, renamed, 4, resume=True)
    with pytest.raises(ConfigError, match=r"train.lr 0.001 -> 0.0005.*--resume-with-changes"):
        tune(tmp_path, train, 4, resume=True, lr=5e-4)
    with pytest.raises(ConfigError, match=r"train.max_steps 4 -> 8"):
        tune(tmp_path, train, 8, resume=True)
    copy = tmp_path / "copy" / "t.jsonl"
    copy.parent.mkdir()
    copy.write_bytes(train.read_bytes())
    assert tune(tmp_path, copy, 4, resume=True, log_every=2, device="cpu").step == 4  # same data elsewhere, logging


def test_resume_with_changes_continues_the_schedule_instead_of_rebuilding_it(tmp_path, caplog):
    train = write_rows(tmp_path / "t.jsonl", ROWS)
    tune(tmp_path, train, 4, warmup_ratio=0.0)
    before = lrs(tmp_path / "out")
    result = tune(tmp_path, train, 8, warmup_ratio=0.0, resume_with_changes=True)
    assert result.step == 8 and "resuming with changes: train.max_steps 4 -> 8" in caplog.text
    after = lrs(tmp_path / "out")
    assert [after[s] for s in (1, 2, 3, 4)] == [before[s] for s in (1, 2, 3, 4)]
    rebuilt = 1e-3 * (1 - 4 / 8)  # what a schedule rebuilt for 8 steps would jump to at step 5
    assert after[5] <= before[4] < rebuilt  # no jump: from where it was, down to 0 by step 8
    assert all(after[s] > after[s + 1] for s in range(5, 8)) and after[8] < 1e-4
    saved = json.loads((latest_checkpoint(tmp_path / "out" / "checkpoints") / "fingerprint.json").read_text())
    assert saved["settings"]["train.max_steps"] == 8  # later resumes compare with the changed run
    assert tune(tmp_path, train, 8, warmup_ratio=0.0, resume=True).step == 8


def test_a_damaged_checkpoint_names_the_newest_intact_one_which_resumes(tmp_path):
    train = write_rows(tmp_path / "t.jsonl", ROWS)
    tune(tmp_path, train, 4)
    root = tmp_path / "out" / "checkpoints"
    older, newest = list_checkpoints(root)
    state = newest / "model_state.safetensors"
    state.write_bytes(state.read_bytes()[:-100])  # a truncated copy
    with pytest.raises(CheckpointError, match=rf"{newest}.*damaged model_state.safetensors.*newest intact checkpoint "
                                              rf"is {older}: resume from it with --resume-from {older}"):
        tune(tmp_path, train, 4, resume=True)
    (older / "trainer_state.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"damaged trainer_state.pt.*No intact checkpoint is left"):
        tune(tmp_path, train, 4, resume_from=str(older))


def test_resume_from_an_older_checkpoint_runs_on_from_there(tmp_path):
    train = write_rows(tmp_path / "t.jsonl", ROWS)
    straight = tune(tmp_path, train, 4)
    losses = lrs(tmp_path / "out")
    older = list_checkpoints(tmp_path / "out" / "checkpoints")[0]
    again = tune(tmp_path, train, 4, resume_from=str(older))
    assert again.step == 4 and again.train_loss == straight.train_loss and lrs(tmp_path / "out") == losses


def test_settings_fingerprint_leaves_out_what_does_not_shape_the_run():
    from plmkit.recipes.finetune import run_type
    run = run_type("classification").build({"task": "classification", "out": "o", "model": {"path": "m"},
                                            "data": {"train": "t"}, "train": {"max_steps": 3}})
    settings, fixed = settings_of(run)
    assert {"task", "model.lora_rank", "model.freeze_layers"} <= set(fixed) and "train.lr" not in fixed
    assert {"task", "train.lr", "train.max_steps", "data.batch_size", "model.lora_rank", "classification.max_length"} \
        <= set(settings)
    for left_out in ("out", "resume", "model.path", "data.train", "train.device", "train.log_every",
                     "train.save_every", "train.progress_bar", "data.eval_batch_size"):
        assert left_out not in settings


def test_data_digests_name_what_changed_in_a_directory(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in "abc":
        (corpus / f"{name}.txt").write_text(name * 100)
    before = {"data": {"--corpus": data_digests([corpus])}}
    (corpus / "a.txt").write_text("changed")
    (corpus / "c.txt").unlink()
    (corpus / "d.txt").write_text("new")
    now = {"data": {"--corpus": data_digests([corpus])}}
    assert differences(before, now) == ["--corpus: changed corpus/a.txt; added corpus/d.txt; removed corpus/c.txt"]
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * (40 << 10))  # 10 MiB: sampled blocks
    first = data_digests([big])
    with open(big, "r+b") as f:
        f.seek(0)
        f.write(b"x")
    assert data_digests([big]) != first


def test_a_trainer_keeps_its_fingerprint_and_refuses_another(tmp_path, toy):
    cfg = TrainConfig(lr=3e-3, log_every=1, device="cpu", progress_bar=False, max_steps=4, save_every=2)
    mine = {"settings": {"train.lr": 3e-3}, "data": {}}
    Trainer(toy.ToyLM(), cfg, toy.make_loader(), tmp_path, fingerprint=mine).train()
    other = {"settings": {"train.lr": 1e-3}, "data": {}}
    with pytest.raises(ConfigError, match=r"train.lr 0.003 -> 0.001"):
        Trainer(toy.ToyLM(), cfg, toy.make_loader(), tmp_path, fingerprint=other).train(resume=True)
    assert Trainer(toy.ToyLM(), cfg, toy.make_loader(), tmp_path, fingerprint=other).train(
        resume=True, accept_changes=True).step == 4


def test_continue_from_joins_the_new_schedule_by_its_end():
    import torch
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = LRSchedule(opt, TrainConfig(max_steps=10, schedule="cosine", min_lr_ratio=0.1), 10)
    schedule.continue_from(4, 0.0, 0.3)  # 0.3: the factor of update 3, the last that ran
    values = [schedule.factor(s) for s in range(3, 11)]
    assert values[0] == pytest.approx(0.3) and values[1] < 0.3 and values[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_resume_with_changes_keeps_the_learning_rate_of_every_step(tmp_path, toy):
    """Resumed at step 2 (during warmup) with a change that leaves the schedule alone: every later step has
    the uninterrupted run's learning rate; with a longer run, each step the new schedule's, joined to the
    last update that ran (none repeated)."""
    import shutil
    cfg = dict(lr=1e-3, warmup_steps=4, max_steps=8, log_every=1, save_every=2, keep_last=10, device="cpu",
               progress_bar=False)

    def fp(**settings):
        return {"settings": {"train.grad_clip": 1.0, "train.max_steps": 8, **settings}, "data": {}}

    Trainer(toy.ToyLM(), TrainConfig(**cfg), toy.make_loader(), tmp_path / "straight", fingerprint=fp()).train()
    straight = lrs(tmp_path / "straight")
    shutil.copytree(tmp_path / "straight", tmp_path / "clip")
    Trainer(toy.ToyLM(), TrainConfig(**cfg, grad_clip=0.5), toy.make_loader(), tmp_path / "clip",
            fingerprint=fp(**{"train.grad_clip": 0.5})).train(
        resume=tmp_path / "clip" / "checkpoints" / "step-000002", accept_changes=True)
    assert lrs(tmp_path / "clip") == pytest.approx(straight, rel=1e-12)
    cfg["warmup_steps"] = 0
    Trainer(toy.ToyLM(), TrainConfig(**cfg), toy.make_loader(), tmp_path / "long", fingerprint=fp()).train()
    Trainer(toy.ToyLM(), TrainConfig(**{**cfg, "max_steps": 12}), toy.make_loader(), tmp_path / "long",
            fingerprint=fp(**{"train.max_steps": 12})).train(
        resume=tmp_path / "long" / "checkpoints" / "step-000004", accept_changes=True)
    after = lrs(tmp_path / "long")
    # linear to 0: update u ran at 1 - u/8; the new run's 1 - u/12, scaled to meet 5/8 at update 3 (step 4)
    assert after[4] == pytest.approx(1e-3 * 5 / 8)
    assert [after[s] for s in range(5, 13)] == pytest.approx([1e-3 * 5 / 8 * (12 - u) / 9 for u in range(4, 12)])


def test_changes_that_regroup_the_parameters_keep_every_parameter_state_by_name(toy):
    """Another weight decay, head_lr or layer_lr_decay groups the parameters otherwise: each keeps its
    AdamW state, found by name, in the new groups with their settings."""
    import torch
    from plmkit.training.checkpoint import regrouped
    from plmkit.training.optim import build_optimizer
    model = toy.ToyLM()
    before = build_optimizer(model, TrainConfig(max_steps=1, weight_decay=0.01))
    model(**toy.masking_collate(toy.make_dataset(4))).loss.backward()
    before.step()
    saved = before.state_dict()
    after = build_optimizer(model, TrainConfig(max_steps=1, lr=1e-3, weight_decay=0.0, layer_lr_decay=0.5,
                                               head_lr=1e-2))
    assert len(after.param_groups) != len(saved["param_groups"])
    after.load_state_dict(regrouped(saved, after))
    old = {n: before.state[p] for g in before.param_groups for n, p in zip(g["names"], g["params"])}
    for group in after.param_groups:
        for name, p in zip(group["names"], group["params"]):
            assert torch.equal(after.state[p]["exp_avg"], old[name]["exp_avg"]), name
    lr = {n: (g["lr"], g["weight_decay"]) for g in after.param_groups for n in g["names"]}
    assert lr["head.weight"] == (1e-2, 0.0) and lr["layers.1.dense.weight"] == (pytest.approx(5e-4), 0.0)
    model.head.weight.requires_grad_(False)
    with pytest.raises(ValueError, match=r"head.weight trained then only"):
        regrouped(saved, build_optimizer(model, TrainConfig(max_steps=1)))


def test_resume_with_changes_to_the_parameter_groups(tmp_path, caplog):
    train = write_rows(tmp_path / "t.jsonl", ROWS)
    tune(tmp_path, train, 4)
    result = tune(tmp_path, train, 6, resume_with_changes=True, weight_decay=0.0, layer_lr_decay=0.9, head_lr=1e-2)
    assert result.step == 6 and "train.weight_decay 0.01 -> 0.0" in caplog.text


def test_what_cannot_change_on_a_resume_is_refused_even_when_changes_are_accepted(tmp_path):
    train = write_rows(tmp_path / "t.jsonl", ROWS)
    tune(tmp_path, train, 4)
    run_file = (tmp_path / "out" / "run.yaml").read_text()
    with pytest.raises(ConfigError, match=r"model.lora_rank None -> 4 \(cannot change on a resume"):
        tune(tmp_path, train, 6, resume_with_changes=True, lora_rank=4)
    assert (tmp_path / "out" / "run.yaml").read_text() == run_file  # a refused resume leaves the run file
    assert "resume" not in run_file and "overwrite" not in run_file  # what one command did is not replayed


def test_a_fingerprint_deleted_or_edited_is_no_way_around_the_check(tmp_path):
    import torch
    train = write_rows(tmp_path / "t.jsonl", ROWS)
    tune(tmp_path, train, 4)
    root = tmp_path / "out" / "checkpoints"
    newest = latest_checkpoint(root)
    (newest / "fingerprint.json").unlink()  # the copy in trainer_state.pt is compared
    with pytest.raises(ConfigError, match=r"train.lr 0.001 -> 0.0005"):
        tune(tmp_path, train, 4, resume=True, lr=5e-4)
    (newest / "fingerprint.json").write_text('{"settings": []}')
    with pytest.raises(CheckpointError, match=r"fingerprint.json is damaged .*newest intact checkpoint is"):
        tune(tmp_path, train, 4, resume=True)
    older = list_checkpoints(root)[0]
    state = torch.load(older / "trainer_state.pt", weights_only=True)
    state["run"]["step"] = -3
    torch.save(state, older / "trainer_state.pt")
    with pytest.raises(CheckpointError, match=r"trainer_state.pt is damaged"):
        tune(tmp_path, train, 4, resume_from=str(older))
    (root / "latest").write_text("../../elsewhere\n")
    with pytest.raises(CheckpointError, match=r"latest is damaged \(it holds '../../elsewhere'"):
        tune(tmp_path, train, 4, resume=True)


def test_changes_that_leave_no_run_to_continue_are_said(tmp_path):
    train = write_rows(tmp_path / "t.jsonl", ROWS)
    tune(tmp_path, train, 4)
    with pytest.raises(ConfigError, match=r"the run ends at step 2 \(max_steps\), but .* is at step 4"):
        tune(tmp_path, train, 2, resume_with_changes=True)
