import pytest
import torch
from torch import nn

from plmkit.training import TrainConfig, build_optimizer, param_groups


def by_name(groups):
    return {name: (g["lr"], g["weight_decay"]) for g in groups for name in g["names"]}


def test_no_decay_on_bias_and_norm_weights(toy):
    model = toy.ToyLM()
    groups = param_groups(model, TrainConfig(max_steps=1, lr=1e-3, weight_decay=0.1))
    table = by_name(groups)
    assert set(table) == {n for n, _ in model.named_parameters()}
    for name, (lr, wd) in table.items():
        assert lr == 1e-3
        assert wd == (0.0 if name.endswith("bias") or "norm" in name else 0.1), name
    assert len(groups) == 2


class Classifier(nn.Module):
    def __init__(self, toy_lm):
        super().__init__()
        self.bert = toy_lm
        self.pooler = nn.Linear(16, 16)
        self.classifier = nn.Linear(16, 2)


def test_layer_wise_lr_decay_and_head_lr(toy):
    model = Classifier(toy.ToyLM(n_layers=3))
    cfg = TrainConfig(max_steps=1, lr=1e-3, weight_decay=0.1, layer_lr_decay=0.5, head_lr=5e-3)
    table = by_name(param_groups(model, cfg))
    expected = {
        "bert.embeddings.word_embeddings.weight": (1e-3 * 0.5**4, 0.1),
        "bert.embeddings.norm.weight": (1e-3 * 0.5**4, 0.0),
        "bert.layers.0.dense.weight": (1e-3 * 0.5**3, 0.1),
        "bert.layers.0.norm.bias": (1e-3 * 0.5**3, 0.0),
        "bert.layers.1.dense.bias": (1e-3 * 0.5**2, 0.0),
        "bert.layers.2.dense.weight": (1e-3 * 0.5**1, 0.1),
        "bert.norm.weight": (5e-3, 0.0),
        "bert.head.weight": (5e-3, 0.1),
        "pooler.weight": (5e-3, 0.1),
        "classifier.bias": (5e-3, 0.0),
    }
    for name, (lr, wd) in expected.items():
        assert table[name] == (pytest.approx(lr, rel=1e-12), wd), name
    groups = param_groups(model, cfg)
    assert len({(g["lr"], g["weight_decay"]) for g in groups}) == len(groups)


def test_frozen_parameters_are_left_out(toy):
    model = toy.ToyLM()
    for p in model.embeddings.parameters():
        p.requires_grad_(False)
    names = set(by_name(param_groups(model, TrainConfig(max_steps=1))))
    assert not any(n.startswith("embeddings.") for n in names)
    assert names == {n for n, p in model.named_parameters() if p.requires_grad}


def test_build_optimizer_is_adamw_with_the_groups(toy):
    cfg = TrainConfig(max_steps=1, lr=2e-3, betas=(0.8, 0.9), eps=1e-6, layer_lr_decay=0.9)
    model = toy.ToyLM()
    optimizer = build_optimizer(model, cfg)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [g["lr"] for g in optimizer.param_groups] == [g["lr"] for g in param_groups(model, cfg)]
    assert optimizer.defaults["betas"] == (0.8, 0.9) and optimizer.defaults["eps"] == 1e-6


def test_cpu_optimizer_is_fused_and_steps_like_the_default_loop(toy):
    torch.manual_seed(0)
    model, reference = toy.ToyLM(), toy.ToyLM()
    reference.load_state_dict(model.state_dict())
    cfg = TrainConfig(max_steps=1, lr=1e-2, weight_decay=0.1)
    fused = build_optimizer(model, cfg)
    assert fused.defaults["fused"] is True
    loop = torch.optim.AdamW([{k: v for k, v in g.items() if k != "names"} for g in param_groups(reference, cfg)])
    for _ in range(3):
        for m in (model, reference):
            for p in m.parameters():
                p.grad = torch.ones_like(p) * torch.arange(p.numel()).reshape(p.shape).sin()
        fused.step()
        loop.step()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
