import functools

import pytest
import torch

from foundry import rng
from foundry_kernels import flow_matching as fm


def test_interpolate_endpoints_and_target():
    noise, actions = rng.normal(rng.key(0), (3, 4, 5)), rng.normal(rng.key(1), (3, 4, 5))
    t = torch.tensor([1.0, 0.0, 0.25])
    x = fm.interpolate(noise, actions, t)
    torch.testing.assert_close(x[0], noise[0])
    torch.testing.assert_close(x[1], actions[1])
    torch.testing.assert_close(x[2], 0.25 * noise[2] + 0.75 * actions[2])


def test_loss_equals_hand_computation_and_ignores_invalid():
    v = torch.tensor([[[1.0, 2.0], [3.0, float("nan")]]])  # (1, 2, 2); the NaN sits on an invalid element
    noise = torch.tensor([[[1.0, 1.0], [1.0, 1.0]]])
    actions = torch.tensor([[[0.0, 1.0], [-1.0, 5.0]]])
    mask = torch.tensor([[[True, True], [True, False]]])
    loss, count = fm.flow_loss(v, noise, actions, mask, compiled=False)
    # targets 1, 0, 2 -> errors 0, 4, 1 over 3 valid elements
    assert count.item() == 3
    torch.testing.assert_close(loss, torch.tensor(5.0 / 3))
    # a broadcast mask (B, F, 1) and an all-invalid mask
    loss_b, count_b = fm.flow_loss_reference(v.nan_to_num(), noise, actions, mask[..., :1])
    assert count_b.item() == 4 and loss_b.item() == pytest.approx((0 + 4 + 1 + 16) / 4)  # target -4, v 0
    loss0, count0 = fm.flow_loss_reference(v, noise, actions, torch.zeros_like(mask))
    assert loss0.item() == 0.0 and count0.item() == 0


def test_loss_checks_shapes_and_mask_dtype():
    x = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match="one shape"):
        fm.flow_loss(x, x, torch.zeros(2, 3, 5), torch.ones(2, 3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must be bool"):
        fm.flow_loss(x, x, x, torch.ones(2, 3, 4))


def test_euler_exact_for_constant_velocity_and_clamp():
    noise = rng.normal(rng.key(2), (2, 3, 4))
    c = rng.normal(rng.key(3), (2, 3, 4))
    for steps in (1, 7, 10):
        out = fm.euler_sample(lambda x, t: c, noise, steps, compiled=False)
        torch.testing.assert_close(out, noise - c)  # integral of dx/dt = c from t = 1 to 0
    clamped = fm.euler_sample_reference(lambda x, t: c, noise, 10, (-0.5, 0.5))
    torch.testing.assert_close(clamped, (noise - c).clamp(-0.5, 0.5))
    with pytest.raises(ValueError, match="steps must be >= 1"):
        fm.euler_sample(lambda x, t: c, noise, 0)


def test_euler_recovers_a_single_data_point():
    """The ideal velocity for one data point a is (x_t - a) / t; Euler lands exactly on a at the last step."""
    a = rng.normal(rng.key(4), (3, 5, 2), dtype=torch.float64)
    noise = rng.normal(rng.key(5), (3, 5, 2), dtype=torch.float64)
    seen = []

    def ideal(x, t):
        seen.append(t)
        return (x - a) / t.to(x.dtype)[:, None, None]

    out = fm.euler_sample_reference(ideal, noise, 10)
    torch.testing.assert_close(out, a, rtol=0, atol=1e-6)  # times are fp32: 1 - dt / t ~ 1e-8
    torch.testing.assert_close(torch.stack([s[0] for s in seen]), torch.linspace(1.0, 0.1, 10))


def test_sample_time_distributions():
    n = 200_000
    u = fm.sample_time(rng.key(6), (n,), "uniform")
    b = fm.sample_time(rng.key(7), (n,), "beta")
    for t in (u, b):
        assert t.shape == (n,) and t.dtype == torch.float32 and t.min() >= 1e-3 and t.max() < 1.0
    assert u.mean().item() == pytest.approx(0.5, abs=0.005)
    assert b.mean().item() == pytest.approx(0.6, abs=0.005)  # Beta(1.5, 1): mean 1.5 / 2.5
    assert (b < 0.5).float().mean().item() == pytest.approx(0.5**1.5, abs=0.005)  # CDF t^1.5
    assert torch.equal(fm.sample_time(rng.key(7), (n,), "beta"), b)
    with pytest.raises(ValueError, match="needs a key"):
        fm.sample_time(None, (3,))
    with pytest.raises(ValueError, match="'uniform' or 'beta'"):
        fm.sample_time(rng.key(0), (3,), "logit")


def test_reference_under_functorch_transform():
    """Under torch.func.grad the compiled path cannot run (PyTorch #128711): the reference is taken."""
    noise, actions = rng.normal(rng.key(8), (2, 3, 4)), rng.normal(rng.key(9), (2, 3, 4))
    mask = torch.ones(2, 3, 4, dtype=torch.bool)
    g = torch.func.grad(lambda v: fm.flow_loss(v, noise, actions, mask, compiled=True)[0])(torch.zeros(2, 3, 4))
    torch.testing.assert_close(g, -2 * (noise - actions) / 24)


@pytest.mark.compile
@pytest.mark.parametrize(("dtype", "shape"), [(torch.float32, (3, 5, 7)), (torch.bfloat16, (1, 9, 3))])
def test_compiled_loss_matches_reference_forward_and_backward(dtype, shape):
    k = rng.split(rng.key(len(shape) * shape[1]), 4)
    v, noise, actions = (rng.normal(k[i], shape, dtype=dtype) for i in range(3))
    mask = rng.bernoulli(k[3], 0.7, shape[:2])[..., None] & torch.ones(shape[-1], dtype=torch.bool)  # (B, F, Da)
    va, vb = v.clone().requires_grad_(True), v.clone().requires_grad_(True)
    la, ca = fm.flow_loss(va, noise, actions, mask, compiled=True)
    lb, cb = fm.flow_loss_reference(vb, noise, actions, mask)
    assert la.dtype == torch.float32 and torch.equal(ca, cb)
    torch.testing.assert_close(la, lb, rtol=1e-5, atol=1e-6)
    la.backward()
    lb.backward()
    assert va.grad.dtype == dtype
    torch.testing.assert_close(va.grad, vb.grad)


def _velocity(w, cond, x, t):  # a tiny nonlinear field, module level so partials share code
    return torch.tanh(x @ w + cond[:, None]) * t[:, None, None]


@pytest.mark.compile
def test_compiled_euler_matches_reference():
    noise = rng.normal(rng.key(10), (3, 5, 7))
    for seed in (11, 12):  # new params in a new partial: same graph, no recompile needed
        w, cond = rng.normal(rng.key(seed), (7, 7)) * 0.3, rng.normal(rng.key(seed + 10), (3, 7))
        fn = functools.partial(_velocity, w, cond)
        ref = fm.euler_sample_reference(fn, noise, 10, (-1.0, 1.0))
        torch.testing.assert_close(fm.euler_sample(fn, noise, 10, (-1.0, 1.0), compiled=True), ref)
