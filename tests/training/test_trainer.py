import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from plmkit.data.loader import BatchLoader
from plmkit.errors import ConfigError, TrainingError
from plmkit.training import TrainConfig, Trainer
from plmkit.training.checkpoint import latest_checkpoint, list_checkpoints, load_trainer_state, load_weights

BASE = dict(lr=3e-3, warmup_steps=3, log_every=1, device="cpu", progress_bar=False, seed=7)


class Crash(Exception):
    pass


def crashing(collate, at_call):
    calls = {"n": 0}

    def collate_fn(examples):
        calls["n"] += 1
        if calls["n"] == at_call:
            raise Crash(f"simulated crash at batch {at_call}")
        return collate(examples)

    return collate_fn


def losses(path, toy):
    return [(r["step"], r["loss"]) for r in toy.read_jsonl(path / "metrics.jsonl") if "loss" in r]


@pytest.mark.parametrize("accum, grouped", [(1, False), (2, True)])
def test_resume_gives_identical_losses(tmp_path, toy, accum, grouped):
    cfg = TrainConfig(**BASE, max_steps=20, save_every=10, grad_accum_steps=accum)
    group = (lambda e: len(e["input_ids"])) if grouped else None

    def loader(collate=toy.masking_collate):
        return BatchLoader(toy.make_dataset(22), 4, collate, seed=1, group_by_length=group)  # 6 batches / epoch

    torch.manual_seed(0)
    Trainer(toy.ToyLM(), cfg, loader(), tmp_path / "straight").train()
    straight = losses(tmp_path / "straight", toy)
    assert [s for s, _ in straight] == list(range(1, 21))

    torch.manual_seed(0)
    crash_batch = 12 * accum + 1  # inside step 13, after steps 11-12 were logged
    with pytest.raises(Crash):
        Trainer(toy.ToyLM(), cfg, loader(crashing(toy.masking_collate, crash_batch)), tmp_path / "resumed").train()
    saved = load_trainer_state(latest_checkpoint(tmp_path / "resumed" / "checkpoints"))
    assert saved["run"]["step"] == 10 and 0 < saved["loader"]["position"] < 6  # stopped mid-epoch

    torch.manual_seed(99)  # a different init: the weights must come from the checkpoint
    result = Trainer(toy.ToyLM(), cfg, loader(), tmp_path / "resumed").train(resume=True)
    assert result.step == 20
    assert losses(tmp_path / "resumed", toy) == straight


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path, toy):
    cfg = TrainConfig(**BASE, max_steps=10, save_every=2)
    model = toy.ToyLM(nan_at_call=3)
    with pytest.raises(TrainingError, match=r"non-finite loss .* at step 3.*lower lr.*grad_clip.*bf16"):
        Trainer(model, cfg, toy.make_loader(), tmp_path).train()
    root = tmp_path / "checkpoints"
    assert latest_checkpoint(root).name == "step-000002"
    assert [p.name for p in list_checkpoints(root)] == ["step-000002"]
    assert load_trainer_state(root / "step-000002")["run"]["step"] == 2
    fresh = toy.ToyLM()
    load_weights(fresh, root / "step-000002")
    assert all(torch.isfinite(p).all() for p in fresh.parameters())
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("grad_clip", [0, 1.0])
def test_non_finite_gradient_with_a_finite_loss_stops_before_the_step(tmp_path, toy, grad_clip):
    """Clipping off (0) or on, a NaN gradient is caught before the optimizer steps with it: the step
    whose checkpoint would hold NaN weights is never saved."""
    cfg = TrainConfig(**{**BASE, "grad_clip": grad_clip}, max_steps=10, save_every=3)
    with pytest.raises(TrainingError, match=r"non-finite gradient norm \(nan\) at step 3; .*no checkpoint was written"):
        Trainer(toy.ToyLM(nan_grad_at_call=3), cfg, toy.make_loader(), tmp_path).train()
    assert list_checkpoints(tmp_path / "checkpoints") == []
    logged = [r for r in toy.read_jsonl(tmp_path / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in logged] == [1, 2] and all(r["grad_norm"] > 0 for r in logged)  # (measured unclipped too)


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(4, 1)

    def forward(self, x, y):
        return {"loss": nn.functional.mse_loss(self.head(x), y)}


def stack_collate(examples):
    return {"x": torch.stack([e[0] for e in examples]), "y": torch.stack([e[1] for e in examples])}


def test_grad_accumulation_matches_full_batch(tmp_path):
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(4, generator=g), torch.randn(1, generator=g)) for _ in range(8)]
    finals = []
    for batch_size, accum in [(8, 1), (4, 2)]:
        torch.manual_seed(0)
        model = Linear()
        cfg = TrainConfig(lr=0.05, max_steps=4, grad_accum_steps=accum, device="cpu", progress_bar=False, grad_clip=0.5)
        loader = BatchLoader(data, batch_size, stack_collate, shuffle=False)
        Trainer(model, cfg, loader, tmp_path / f"bs{batch_size}").train()
        finals.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(finals[0], finals[1], atol=1e-6)


def test_the_last_step_of_an_epoch_run_takes_the_batches_left(tmp_path):
    """10 batches of 1 accumulated by 4 over one epoch: steps of 4, 4 and the 2 left, each the mean over its
    batches (the same updates as batches of 4, 4 and 2), and no batch left out; resumed inside the last step,
    the same run."""
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(4, generator=g), torch.randn(1, generator=g)) for _ in range(10)]
    finals, calls = [], []
    for batch_size, accum in [(4, 1), (1, 4)]:
        torch.manual_seed(0)
        model = Linear()
        cfg = TrainConfig(lr=0.05, epochs=1, grad_accum_steps=accum, device="cpu", progress_bar=False, log_every=1)
        loader = BatchLoader(data, batch_size, crashing(stack_collate, at_call=0), shuffle=False)
        result = Trainer(model, cfg, loader, tmp_path / f"bs{batch_size}").train()
        assert (result.step, result.epoch, result.stop_reason) == (3, 1.0, "epochs")
        finals.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(finals[0], finals[1], atol=1e-6)

    cfg = TrainConfig(lr=0.05, epochs=1, grad_accum_steps=4, device="cpu", progress_bar=False, save_every=1)
    torch.manual_seed(0)
    with pytest.raises(Crash):  # batch 10: in step 3, after the checkpoint of step 2
        Trainer(Linear(), cfg, BatchLoader(data, 1, crashing(stack_collate, 10), shuffle=False), tmp_path / "r").train()
    resumed = Linear()
    Trainer(resumed, cfg, BatchLoader(data, 1, stack_collate, shuffle=False), tmp_path / "r").train(resume=True)
    assert torch.allclose(torch.cat([p.detach().flatten() for p in resumed.parameters()]), finals[1], atol=1e-6)


def test_eval_each_epoch_evaluates_after_the_step_in_which_each_epoch_ends(tmp_path, toy):
    """10 batches accumulated by 4 over 3 epochs: 8 steps; the epochs end in steps 3 (batches 9-12), 5 (17-20)
    and 8 (the last, 2 batches), whatever the accumulation makes of them; resumed, the same steps."""
    data = [(torch.randn(4), torch.randn(1)) for _ in range(10)]

    def train(out, crash_at=0, resume=False, **cfg):
        cfg = TrainConfig(lr=0.05, epochs=3, grad_accum_steps=4, device="cpu", progress_bar=False, **cfg)
        loader = BatchLoader(data, 1, crashing(stack_collate, crash_at), shuffle=False)
        Trainer(Linear(), cfg, loader, out, evaluate=lambda m: {"n": 0}, eval_each_epoch=True).train(resume=resume)
        return [r["step"] for r in toy.read_jsonl(out / "metrics.jsonl") if "eval_n" in r]

    assert train(tmp_path / "a") == [3, 5, 8]
    with pytest.raises(Crash):  # batch 22: in step 6, after the checkpoint of step 5
        train(tmp_path / "b", crash_at=22, save_every=1)
    assert train(tmp_path / "b", resume=True, save_every=1) == [3, 5, 8]
    with pytest.raises(ConfigError, match="eval_each_epoch is on but the Trainer got no evaluate function"):
        Trainer(Linear(), TrainConfig(epochs=1), BatchLoader(data, 1, stack_collate), tmp_path / "c",
                eval_each_epoch=True)


def test_early_stopping_keeps_best_model(tmp_path, toy):
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.9])
    seen, snapshots = [], {}
    model = toy.ToyLM()

    def evaluate(m):
        seen.append((m.training, torch.is_grad_enabled()))
        snapshots[len(seen)] = {k: v.clone() for k, v in m.state_dict().items()}
        return {"accuracy": next(scores), "loss": 1.0}

    cfg = TrainConfig(**BASE, max_steps=20, eval_every=2, metric_for_best="accuracy", early_stopping_patience=2)
    result = Trainer(model, cfg, toy.make_loader(), tmp_path, evaluate=evaluate).train()
    assert result.stop_reason == "early_stopping" and result.step == 8
    assert (result.best_step, result.best_metric) == (4, 0.7)
    assert result.eval_metrics == {"eval_accuracy": 0.65, "eval_loss": 1.0}
    assert seen == [(False, False)] * 4 and model.training
    assert toy.read_jsonl(result.best_dir / "best.json") == [{"step": 4, "metric": "eval_accuracy", "value": 0.7}]
    best = load_file(result.best_dir / "model.safetensors")
    assert all(torch.equal(best[k], snapshots[2][k]) for k in best)
    assert not torch.equal(best["head.weight"], model.head.weight.detach())


def test_metrics_png_model_and_summary(tmp_path, toy, caplog):
    extras = []
    cfg = TrainConfig(**{**BASE, "log_every": 3}, max_steps=10, eval_every=5)
    loader = toy.make_loader()
    with caplog.at_level("INFO", logger="plmkit"):
        result = Trainer(
            toy.ToyLM(), cfg, loader, tmp_path, evaluate=lambda m: {"accuracy": 0.5}, save_extra=extras.append
        ).train()
    records = toy.read_jsonl(tmp_path / "metrics.jsonl")
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == [3, 6, 9, 10]
    assert all({"step", "loss", "lr", "tokens_per_s", "elapsed"} <= set(r) for r in train)
    assert [(r["step"], r["eval_accuracy"]) for r in records if "eval_accuracy" in r] == [(5, 0.5), (10, 0.5)]
    assert (tmp_path / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "model" / "config.json").is_file() and (tmp_path / "model" / "model.safetensors").is_file()
    assert (tmp_path / "train_config.json").is_file()
    assert len(extras) == 1 and extras[0].parent == tmp_path  # called on the model dir before its rename
    assert result.stop_reason == "max_steps" and result.epoch == pytest.approx(10 / 6)
    data = toy.make_dataset()
    second_epoch = [i for batch in loader.epoch_batches(1)[:4] for i in batch]
    assert result.tokens == sum(len(e["input_ids"]) for e in data) + sum(len(data[i]["input_ids"]) for i in second_epoch)
    assert "step 5: eval_accuracy=0.5" in caplog.messages
    assert "training done: 10 steps" in caplog.messages[-1] and "tokens/s" in caplog.messages[-1]


def test_epochs_and_time_budget_stop_the_run(tmp_path, toy):
    result = Trainer(toy.ToyLM(), TrainConfig(**BASE, epochs=2), toy.make_loader(), tmp_path / "e").train()
    assert (result.step, result.stop_reason, result.epoch) == (12, "epochs", 2.0)

    now = [0.0]

    def slow_collate(examples):  # every batch "takes" 0.125 s of a fake clock
        now[0] += 0.125
        return toy.masking_collate(examples)

    cfg = TrainConfig(**BASE, time_budget=1.0, max_steps=100_000)
    trainer = Trainer(toy.ToyLM(), cfg, BatchLoader(toy.make_dataset(), 4, slow_collate), tmp_path / "t")
    trainer.clock = lambda: now[0]
    result = trainer.train()
    assert (result.stop_reason, result.step) == ("time_budget", 8)
    lrs = [r["lr"] for r in toy.read_jsonl(tmp_path / "t" / "metrics.jsonl") if "lr" in r]
    assert lrs[2:] == pytest.approx([cfg.lr * (1 - s / 8) for s in range(2, 8)], rel=1e-4)  # warmup 3 steps, then time decides


def test_refuses_to_mix_runs_and_bad_setups(tmp_path, toy):
    cfg = TrainConfig(**BASE, max_steps=2, save_every=1)
    Trainer(toy.ToyLM(), cfg, toy.make_loader(), tmp_path).train()
    with pytest.raises(TrainingError, match="resume=True"):
        Trainer(toy.ToyLM(), cfg, toy.make_loader(), tmp_path).train()
    with pytest.raises(ConfigError, match="evaluate"):
        Trainer(toy.ToyLM(), TrainConfig(max_steps=1, eval_every=1), toy.make_loader(), tmp_path)
    with pytest.raises(ConfigError, match="no CUDA") if not torch.cuda.is_available() else _nothing():
        Trainer(toy.ToyLM(), TrainConfig(max_steps=1, device="cuda"), toy.make_loader(), tmp_path)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_missing_loss_is_explained(tmp_path, toy):
    loader = BatchLoader(toy.make_dataset(), 4, lambda ex: {k: v for k, v in toy.masking_collate(ex).items() if k != "labels"})
    with pytest.raises(TrainingError, match="no loss"):
        Trainer(toy.ToyLM(), TrainConfig(**BASE, max_steps=1), loader, tmp_path).train()


def test_forward_kwargs_reach_every_training_call(tmp_path, toy):
    seen = []

    class Recording(toy.ToyLM):
        def forward(self, input_ids, attention_mask=None, labels=None, flag=None):
            seen.append(flag)
            return super().forward(input_ids, attention_mask, labels)

    loader = BatchLoader(toy.make_dataset(), 4, toy.masking_collate)
    Trainer(Recording(), TrainConfig(**BASE, max_steps=2), loader, tmp_path, forward_kwargs={"flag": 1}).train()
    assert seen == [1, 1]


def test_compile_trains_the_compiled_model_to_the_same_losses(tmp_path, toy):
    torch._dynamo.utils.counters.clear()

    def model():
        torch.manual_seed(0)
        return toy.ToyLM(dropout=0.0)  # (compiled dropout draws its masks otherwise)

    Trainer(model(), TrainConfig(**BASE, max_steps=3), toy.make_loader(), tmp_path / "plain").train()
    compiled = Trainer(model(), TrainConfig(**BASE, max_steps=3, compile=True), toy.make_loader(),
                       tmp_path / "compiled").train()
    assert compiled.step == 3
    one, two = losses(tmp_path / "plain", toy), losses(tmp_path / "compiled", toy)
    assert [s for s, _ in one] == [s for s, _ in two] and max(abs(a - b) for (_, a), (_, b) in zip(one, two)) < 1e-4
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # it did compile


def test_bf16_autocast(tmp_path, toy):
    cfg = TrainConfig(**{**BASE, "precision": "bf16"}, max_steps=3)
    result = Trainer(toy.ToyLM(), cfg, toy.make_loader(), tmp_path).train()
    assert result.step == 3 and result.train_loss is not None and result.train_loss == result.train_loss


def test_resume_keeps_the_log_interval_open_at_the_checkpoint(tmp_path, toy):
    cfg = TrainConfig(**{**BASE, "log_every": 3}, max_steps=9, save_every=4)  # checkpoint inside a log interval
    loader = lambda collate=toy.masking_collate: BatchLoader(toy.make_dataset(22), 4, collate, seed=1)  # noqa: E731
    torch.manual_seed(0)
    Trainer(toy.ToyLM(), cfg, loader(), tmp_path / "straight").train()
    torch.manual_seed(0)
    with pytest.raises(Crash):
        Trainer(toy.ToyLM(), cfg, loader(crashing(toy.masking_collate, 5)), tmp_path / "resumed").train()
    Trainer(toy.ToyLM(), cfg, loader(), tmp_path / "resumed").train(resume=True)
    straight = losses(tmp_path / "straight", toy)
    assert [s for s, _ in straight] == [3, 6, 9]
    assert losses(tmp_path / "resumed", toy) == straight  # step 4's loss still counts in the step-6 line


def test_resuming_an_early_stopped_run_trains_no_further(tmp_path, toy):
    cfg = TrainConfig(**BASE, max_steps=20, eval_every=2, save_every=2, metric_for_best="accuracy", early_stopping_patience=2)

    def evaluate_with(scores):
        scores = iter(scores)
        return lambda m: {"accuracy": next(scores)}

    first = Trainer(toy.ToyLM(), cfg, toy.make_loader(), tmp_path, evaluate=evaluate_with([0.5, 0.7, 0.6, 0.65])).train()
    assert (first.stop_reason, first.step) == ("early_stopping", 8)
    again = Trainer(toy.ToyLM(), cfg, toy.make_loader(), tmp_path, evaluate=evaluate_with([0.99])).train(resume=True)
    assert (again.stop_reason, again.step, again.best_step) == ("early_stopping", 8, 4)


def scored(scores):
    scores = iter(scores)
    return lambda m: {"accuracy": next(scores)}


def test_resuming_an_older_checkpoint_sets_the_abandoned_best_aside(tmp_path, toy, caplog):
    """Resumed from step 4, OUT/best is not step 6's model of the steps the resume replaces: that one is
    set aside (abandoned-best/), and the restored best step's model comes back from its checkpoint."""
    cfg = TrainConfig(**BASE, max_steps=8, eval_every=2, save_every=2, keep_last=4, metric_for_best="accuracy")
    Trainer(toy.ToyLM(), cfg, toy.make_loader(), tmp_path, evaluate=scored([0.5, 0.6, 0.9, 0.7])).train()
    step4 = tmp_path / "checkpoints" / "step-000004"
    result = Trainer(toy.ToyLM(), cfg, toy.make_loader(), tmp_path, evaluate=scored([0.1] * 4)).train(resume=step4)
    assert (result.best_step, result.best_metric, result.best_dir) == (4, 0.6, tmp_path / "best")
    assert toy.read_jsonl(tmp_path / "best" / "best.json") == [{"step": 4, "metric": "eval_accuracy", "value": 0.6}]
    best, saved = (load_file(d / "model.safetensors") for d in (tmp_path / "best", step4 / "model"))
    assert best.keys() == saved.keys() and all(torch.equal(best[k], saved[k]) for k in best)
    assert toy.read_jsonl(tmp_path / "abandoned-best" / "best.json")[0]["step"] == 6
    assert "held the best model of step 6, not the best of this run, resumed from step 4" in caplog.text


def test_a_best_model_no_longer_on_disk_is_forgotten_at_resume(tmp_path, toy):
    """Step 2's best model, overwritten by the abandoned step 6 and without a checkpoint of its own: the
    resumed run's next evaluation becomes OUT/best, not a best/ of another trajectory."""
    cfg = TrainConfig(**BASE, max_steps=8, eval_every=2, save_every=4, metric_for_best="accuracy")
    Trainer(toy.ToyLM(), cfg, toy.make_loader(), tmp_path, evaluate=scored([0.6, 0.5, 0.9, 0.7])).train()
    resume = tmp_path / "checkpoints" / "step-000004"
    result = Trainer(toy.ToyLM(), cfg, toy.make_loader(), tmp_path, evaluate=scored([0.2, 0.1])).train(resume=resume)
    assert (result.best_step, result.best_metric) == (6, 0.2)
    assert toy.read_jsonl(tmp_path / "best" / "best.json") == [{"step": 6, "metric": "eval_accuracy", "value": 0.2}]


def test_resuming_a_finished_run_logs_nothing_twice(tmp_path, toy):
    cfg = TrainConfig(**{**BASE, "log_every": 3}, max_steps=10, save_every=5, eval_every=3)  # step 10: log + eval in _finish
    for resume in (False, True):
        Trainer(toy.ToyLM(), cfg, toy.make_loader(), tmp_path, evaluate=lambda m: {"accuracy": 0.5}).train(resume=resume)
        records = toy.read_jsonl(tmp_path / "metrics.jsonl")
        assert [(r["step"], "loss" in r) for r in records] == [(s, kind) for s in (3, 6, 9, 10) for kind in (True, False)]


def test_a_metric_for_best_that_no_evaluation_gives_is_said_after_the_model_is_saved(tmp_path, toy):
    from plmkit.errors import TrainingError
    cfg = TrainConfig(lr=3e-3, log_every=1, device="cpu", progress_bar=False, max_steps=2, metric_for_best="bleu")
    with pytest.raises(TrainingError, match=r"metric_for_best='bleu' is not among the evaluation results \['eval_loss'\]"
                                            r".*the model is saved in"):
        Trainer(toy.ToyLM(), cfg, toy.make_loader(), tmp_path, evaluate=lambda m: {"loss": 1.0}).train()
    assert (tmp_path / "model" / "model.safetensors").is_file()
