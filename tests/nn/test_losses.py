import pytest
import torch
import torch.nn.functional as F

import plmkit.nn.losses as losses
from plmkit.nn.losses import linear_cross_entropy

TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 3 rows for a vocabulary of 50: several chunks, the last one partial."""
    monkeypatch.setattr(losses, "CHUNK_BYTES", 3 * 4 * 50)


def _grads(loss_fn, h, w):
    h, w = h.clone().requires_grad_(), w.clone().requires_grad_()
    loss = loss_fn(h, w)
    loss.backward()
    return loss.detach(), h.grad, w.grad


def _inputs(n=11, d=8, v=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(v, d, generator=g), torch.randint(0, v, (n,), generator=g)


def _unfused(targets):
    return lambda h, w: F.cross_entropy(h @ w.T, targets, ignore_index=-100)


def _fused(targets):
    return lambda h, w: linear_cross_entropy(h, w, targets)


@pytest.mark.parametrize("ignored", [[], [0, 4, 5, 10]])
def test_loss_and_gradients_equal_unfused_cross_entropy(small_chunks, ignored):
    h, w, targets = _inputs()
    targets[ignored] = -100
    for ours, ref in zip(_grads(_fused(targets), h, w), _grads(_unfused(targets), h, w)):
        torch.testing.assert_close(ours, ref, **TOL)


def test_batched_hidden_states_and_targets_with_gradients(small_chunks):
    """h (B, T, D) with targets (B, T): flattened first (the gradients came through index_select on (B, T))."""
    h, w, targets = _inputs(n=12)
    targets[[1, 7]] = -100
    h, targets = h.view(3, 4, 8), targets.view(3, 4)
    fused = _grads(lambda h, w: linear_cross_entropy(h, w, targets), h, w)
    unfused = _grads(lambda h, w: F.cross_entropy((h @ w.T).flatten(0, 1), targets.flatten(), ignore_index=-100), h, w)
    for ours, ref in zip(fused, unfused):
        torch.testing.assert_close(ours, ref, **TOL)
    assert fused[1].shape == (3, 4, 8)
    with pytest.raises(ValueError, match=r"targets have shape \(12,\), expected \(3, 4\)"):
        linear_cross_entropy(h, w, targets.flatten())


def test_one_chunk_and_scaled_upstream_gradient():
    h, w, targets = _inputs()
    ours = _grads(lambda h, w: 3 * linear_cross_entropy(h, w, targets), h, w)
    ref = _grads(lambda h, w: 3 * F.cross_entropy(h @ w.T, targets), h, w)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, **TOL)


def test_all_targets_ignored_gives_nan_loss_and_zero_gradients(small_chunks):
    h, w, _ = _inputs()
    targets = torch.full((h.shape[0],), -100)
    loss, grad_h, grad_w = _grads(_fused(targets), h, w)
    ref_loss = F.cross_entropy(h @ w.T, targets)
    assert loss.isnan() and ref_loss.isnan()
    assert not grad_h.any() and not grad_w.any()
    with torch.no_grad():
        assert linear_cross_entropy(h, w, targets).isnan()


def test_without_grad_only_the_loss(small_chunks):
    h, w, targets = _inputs()
    targets[2] = -100
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(h, w, targets), F.cross_entropy(h @ w.T, targets), **TOL)


def test_frozen_weight_gets_no_gradient(small_chunks):
    h, w, targets = _inputs()
    h.requires_grad_()
    linear_cross_entropy(h, w, targets).backward()
    h_ref = h.detach().clone().requires_grad_()
    F.cross_entropy(h_ref @ w.T, targets).backward()
    assert w.grad is None
    torch.testing.assert_close(h.grad, h_ref.grad, **TOL)


def test_second_backward_is_refused():
    h, w, targets = _inputs()
    loss = linear_cross_entropy(h, w.requires_grad_(), targets)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="only be backpropagated once"):
        loss.backward()


def test_autocast_bf16_close_to_unfused(small_chunks):
    h, w, targets = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = _grads(_fused(targets), h, w)
        ref = _grads(lambda h, w: F.cross_entropy(F.linear(h, w).float(), targets), h, w)
    assert ours[0].dtype == torch.float32 and ours[2].dtype == torch.float32
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, atol=2e-2, rtol=2e-2)
