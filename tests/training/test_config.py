import pytest

from plmkit.errors import ConfigError
from plmkit.training import TrainConfig, parse_duration


@pytest.mark.parametrize(
    "text, seconds",
    [("90s", 90), ("10m", 600), ("1h", 3600), ("1h30m", 5400), ("1.5h", 5400), ("2d", 172800), (42, 42), ("42", 42)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["ten minutes", "10x", "", "m", -5, "0s", True])
def test_parse_duration_rejects_garbage(bad):
    with pytest.raises(ConfigError, match="duration"):
        parse_duration(bad)


def test_from_dict_names_unknown_keys():
    with pytest.raises(ConfigError, match=r"'max_step'.*did you mean 'max_steps'"):
        TrainConfig.from_dict({"lr": 1e-3, "max_step": 10})


def test_round_trip_and_normalisation():
    cfg = TrainConfig.from_dict({"max_steps": 5, "time_budget": "10m", "betas": [0.9, 0.98], "grad_clip": 0})
    assert cfg.time_budget == 600 and cfg.betas == (0.9, 0.98) and cfg.grad_clip is None
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_greater_is_better_follows_metric_name():
    assert TrainConfig(max_steps=1, metric_for_best="accuracy").greater_is_better is True
    assert TrainConfig(max_steps=1, metric_for_best="eval_loss").greater_is_better is False
    assert TrainConfig(max_steps=1, metric_for_best="perplexity").greater_is_better is False
    assert TrainConfig(max_steps=1, metric_for_best="loss", greater_is_better=True).greater_is_better is True


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "how long"),
        ({"max_steps": 1, "warmup_steps": 5, "warmup_ratio": 0.1}, "not both"),
        ({"max_steps": 1, "schedule": "step"}, "schedule"),
        ({"max_steps": 1, "precision": "fp16"}, "precision"),
        ({"max_steps": 1, "early_stopping_patience": 3}, "metric_for_best"),
        ({"max_steps": 0}, "max_steps"),
        ({"max_steps": 1, "device": "tpu"}, "device"),
        ({"max_steps": 1, "layer_lr_decay": 1.5}, "layer_lr_decay"),
    ],
)
def test_invalid_values_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"max_steps": 1, "lr": "5e-4"}, r"lr \(--lr\) must be float, got '5e-4' \(str\)"),
    ({"max_steps": 2.0}, r"max_steps \(--max-steps\) must be int or None"),
    ({"max_steps": 1, "grad_clip": "1"}, r"grad_clip \(--grad-clip\) must be float or None"),
    ({"max_steps": 1, "progress_bar": "no"}, r"progress_bar \(--progress-bar\) must be bool"),
    ({"max_steps": 1, "seed": True}, r"seed \(--seed\) must be int"),
])
def test_wrongly_typed_values_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kwargs)


def test_an_int_is_a_float_and_a_duration_may_be_text():
    cfg = TrainConfig(lr=1, warmup_ratio=0, time_budget="10m")
    assert cfg.lr == 1 and cfg.time_budget == 600


def test_min_lr_ratio_with_a_constant_schedule_is_refused():
    from plmkit.training.config import TrainConfig
    with pytest.raises(ConfigError, match=r"min_lr_ratio \(--min-lr-ratio\) is where a decaying schedule ends"):
        TrainConfig.with_defaults({}, {"max_steps": 1, "schedule": "constant", "min_lr_ratio": 0.1})


def test_cpu_offload_needs_the_fsdp_strategy():
    from plmkit.training.config import TrainConfig
    with pytest.raises(ConfigError, match=r"fsdp_cpu_offload \(--fsdp-cpu-offload\) offloads FSDP's shards: give "
                                          r"--strategy fsdp"):
        TrainConfig.with_defaults({}, {"max_steps": 1, "fsdp_cpu_offload": True})
    given = {"max_steps": 1, "fsdp_cpu_offload": True, "strategy": "fsdp"}
    assert TrainConfig.with_defaults({}, given).fsdp_cpu_offload


def test_errors_are_lower_is_better_by_default():
    """A regression's mse (and mae, rmse) is an error, as a loss or perplexity is: greater_is_better=True would keep
    the worst checkpoint as the best. Given, it wins."""
    for name in ("mse", "eval_mse", "rmse", "eval_mae", "mlm_loss", "eval_perplexity"):
        assert TrainConfig(max_steps=1, metric_for_best=name).greater_is_better is False, name
    for name in ("accuracy", "pearson", "f1", "bleu", "rougeL"):
        assert TrainConfig(max_steps=1, metric_for_best=name).greater_is_better is True, name
    assert TrainConfig(max_steps=1, metric_for_best="mse", greater_is_better=True).greater_is_better is True
