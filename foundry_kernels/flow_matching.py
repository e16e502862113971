"""Flow matching for action chunks (Lipman et al., 2023; rectified flow, Liu et al., 2023; pi0, Black et al.,
2024): the training loss, the Euler sampler and the flow-time distribution.

Convention (openpi's pi0): t = 1 is pure noise, t = 0 is the data.

    x_t    = t * noise + (1 - t) * action          # `interpolate`
    target = noise - action                        # d x_t / d t: the velocity the model learns
    loss   = sum(mask * (v - target)^2) / sum(mask)  in fp32, over valid elements only
    sample: x_1 = noise; x_{t - 1/K} = x_t - (1/K) * v(x_t, t) for t = 1, 1 - 1/K, ..., 1/K  (K Euler steps)

`flow_loss_reference` / `euler_sample_reference` are the eager references. `flow_loss` and `euler_sample`
run them under `torch.compile(fullgraph=True)`; inside an already compiled region (the train step) or under
an eager torch.func transform (grad, vmap: PyTorch #128711) they take the reference, so the outer graph
fuses it. Debug with `compiled=False` or the module switch `COMPILED = False`.

The sampler's `velocity_fn(x (B, F, Da), t (B,)) -> (B, F, Da)` is usually a `functools.partial` of the
action head over its params and conditioning: Dynamo guards on its code, not on the tensors it holds, so a
new partial with new params or a new observation does not recompile.

Usage::

    from foundry_kernels.flow_matching import euler_sample, flow_loss, interpolate, sample_time
    t = sample_time(k_t, (B,), "beta")                      # (B,) in [t_min, 1)
    noise = rng.normal(k_n, actions.shape)
    v = model(interpolate(noise, actions, t), t)            # (B, F, Da)
    loss, count = flow_loss(v, noise, actions, mask)        # mask (B, F, Da) bool (or broadcastable)
    chunk = euler_sample(functools.partial(model_fn, params, cond), noise, steps=10, clamp=(-5.0, 5.0))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from foundry import rng

COMPILED = True  # module switch: False makes `flow_loss` and `euler_sample` run the eager references

TimeMode = Literal["uniform", "beta"]


def sample_time(key: torch.Tensor, shape, mode: TimeMode = "beta", *, t_min: float = 1e-3) -> torch.Tensor:
    """Flow times in [t_min, 1) (fp32). "uniform": U(0, 1); "beta": Beta(1.5, 1) as in pi0, which puts more
    weight on noisy times (mean 0.6). Its CDF is t^1.5, so inverse-CDF sampling is t = u^(1/1.5). Both are
    mapped to t_min + (1 - t_min) * t (openpi: 0.001 + 0.999 t) so no time is exactly 0 (no noise)."""
    if key is None:
        raise ValueError("sample_time needs a key (foundry.rng)")
    u = rng.uniform(key, shape)
    if mode == "beta":
        u = u ** (1.0 / 1.5)
    elif mode != "uniform":
        raise ValueError(f"sample_time: mode must be 'uniform' or 'beta', got {mode!r}")
    return t_min + (1.0 - t_min) * u


def interpolate(noise: torch.Tensor, actions: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = t * noise + (1 - t) * actions; noise/actions (B, F, Da), t (B,). Returns noise's dtype."""
    t = t.to(noise.dtype).reshape(-1, *([1] * (noise.dim() - 1)))
    return t * noise + (1 - t) * actions.to(noise.dtype)


def flow_loss_reference(
    velocity: torch.Tensor,  # (B, F, Da) predicted velocity
    noise: torch.Tensor,  # (B, F, Da)
    actions: torch.Tensor,  # (B, F, Da) clean actions
    mask: torch.Tensor,  # bool, broadcastable to (B, F, Da): True on elements that count
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager reference. Returns (masked mean squared error, number of valid elements), both 0-D fp32.
    Invalid elements never count, even if they hold NaN (selected away with `where`, not multiplied)."""
    target = noise.float() - actions.float()
    err = (velocity.float() - target).square()
    mask = mask.expand_as(err)
    count = mask.sum().float()
    total = torch.where(mask, err, torch.zeros_like(err)).sum()
    return total / count.clamp_min(1.0), count


def euler_sample_reference(
    velocity_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: torch.Tensor,  # (B, ...) the sample at t = 1
    steps: int = 10,
    clamp: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Eager reference: `steps` Euler steps of dx/dt = v(x, t) from t = 1 down to t = 0. The times are
    Python constants (1 - i / steps), so a compiled sampler has them baked in. `clamp=(lo, hi)` clips the
    final sample (e.g. to the normalized action range); intermediate states are left alone."""
    if steps < 1:
        raise ValueError(f"euler_sample: steps must be >= 1, got {steps}")
    x, dt = noise, 1.0 / steps
    for i in range(steps):
        t = torch.full((x.shape[0],), 1.0 - i * dt, dtype=torch.float32, device=x.device)  # (B,)
        x = x - dt * velocity_fn(x, t).to(x.dtype)
    if clamp is not None:
        x = x.clamp(clamp[0], clamp[1])
    return x


# dynamic=False: one graph per shape (a policy has one chunk shape)
_compiled_loss = torch.compile(flow_loss_reference, fullgraph=True, dynamic=False)
_compiled_euler = torch.compile(euler_sample_reference, fullgraph=True, dynamic=False)


def _use_reference(compiled: bool | None) -> bool:
    inline = torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active()
    return inline or not (COMPILED if compiled is None else compiled)


def flow_loss(velocity, noise, actions, mask, *, compiled: bool | None = None):
    """Masked flow-matching MSE (see the module docstring); `compiled` None follows the module switch."""
    if velocity.shape != noise.shape or noise.shape != actions.shape:
        raise ValueError(
            f"flow_loss: velocity {tuple(velocity.shape)}, noise {tuple(noise.shape)} and actions "
            f"{tuple(actions.shape)} must have one shape"
        )
    if mask.dtype != torch.bool:
        raise ValueError(f"flow_loss: mask must be bool (True = counts), got {mask.dtype}")
    if _use_reference(compiled):
        return flow_loss_reference(velocity, noise, actions, mask)
    return _compiled_loss(velocity, noise, actions, mask)


def euler_sample(velocity_fn, noise, steps: int = 10, clamp=None, *, compiled: bool | None = None) -> torch.Tensor:
    """K-step Euler sampler from t = 1 to 0 (see the module docstring); `compiled` None follows the switch.
    The compiled path compiles the whole loop including `velocity_fn` (one graph for all steps)."""
    if steps < 1:
        raise ValueError(f"euler_sample: steps must be >= 1, got {steps}")
    if _use_reference(compiled):
        return euler_sample_reference(velocity_fn, noise, steps, clamp)
    return _compiled_euler(velocity_fn, noise, steps, clamp)
