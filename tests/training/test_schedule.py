import math

import pytest
import torch

from plmkit.training import TrainConfig, build_scheduler


def schedule(total_steps=100, **kwargs):
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))]
    optimizer = torch.optim.AdamW([{"params": params[:1], "lr": 1.0}, {"params": params[1:], "lr": 0.1}])
    cfg = TrainConfig(**{"max_steps": total_steps, **kwargs})
    return optimizer, build_scheduler(optimizer, cfg, total_steps)


def test_linear_warmup_peak_and_floor():
    _, s = schedule(warmup_steps=10, min_lr_ratio=0.1)
    assert s.factor(0) == pytest.approx(0.1)
    assert s.factor(9) == 1.0 and s.factor(10) == 1.0  # peak at the end of warmup
    assert s.factor(55) == pytest.approx(1 - 0.9 * 45 / 90)
    assert s.factor(100) == pytest.approx(0.1) and s.factor(500) == pytest.approx(0.1)
    decay = [s.factor(i) for i in range(10, 101)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))


def test_cosine_and_constant():
    _, cosine = schedule(schedule="cosine", min_lr_ratio=0.1)
    assert cosine.factor(0) == 1.0
    assert cosine.factor(50) == pytest.approx(0.55)
    assert cosine.factor(100) == pytest.approx(0.1)
    _, constant = schedule(schedule="constant", warmup_steps=4)
    assert [constant.factor(i) for i in (0, 3, 50, 99)] == [0.25, 1.0, 1.0, 1.0]


def test_warmup_ratio_counts_steps_of_the_run():
    _, s = schedule(total_steps=200, warmup_ratio=0.1)
    assert s.warmup_steps == 20 and s.factor(19) == 1.0 and s.factor(9) == pytest.approx(0.5)


def test_time_budget_drives_progress():
    _, s = schedule(total_steps=None, max_steps=None, time_budget="100s", min_lr_ratio=0.2)
    assert s.factor(0, elapsed=0) == 1.0
    assert s.factor(7, elapsed=50) == pytest.approx(0.6)
    assert s.factor(7, elapsed=100) == pytest.approx(0.2) and s.factor(7, elapsed=1e6) == pytest.approx(0.2)
    _, both = schedule(total_steps=1000, time_budget=100)
    assert both.progress(100, elapsed=50) == 0.5 and both.progress(900, elapsed=50) == 0.9
    _, warm = schedule(total_steps=None, max_steps=None, time_budget=100, warmup_ratio=0.1, schedule="cosine")
    assert warm.factor(3, elapsed=5) == pytest.approx(0.5)
    assert warm.factor(3, elapsed=55) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    # with planned steps and a time budget, warmup counts steps (the decay follows the further of the two)
    _, both_warm = schedule(total_steps=1000, time_budget=100, warmup_ratio=0.1)
    assert both_warm.warmup_steps == 100 and both_warm.factor(49, elapsed=1) == pytest.approx(0.5)


def test_update_scales_every_group_and_state_round_trips():
    optimizer, s = schedule(warmup_steps=10)
    s.update(4)
    assert [g["lr"] for g in optimizer.param_groups] == [pytest.approx(0.5), pytest.approx(0.05)]
    _, other = schedule(warmup_steps=10, lr=3.0)
    other.load_state_dict(s.state_dict())
    assert other.base_lrs == [1.0, 0.1]
