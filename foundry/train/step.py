"""The pure train step: `step(state, batch, hp) -> (state, metrics)`.

State is one pytree `{"step": 0-D int64, "params", "opt_state", "ema"?, "key"}`. The batch holds a leading
micro-batch axis `(accum_steps, micro_batch, ...)`; gradients of the micro-batches are averaged with the
weights their loss functions report (tokens, valid action elements...), so accumulation equals one big
batch. Per-step scalars in `hp` (`lr`, `ema_decay`) are 0-D tensors: new values never recompile.

Randomness: micro-batch i of step s uses `fold_in(fold_in(state.key, s), i)`, so a step's draws depend only on
(seed, step, micro-batch), never on how many steps ran before a resume.

Many processes (`world.size > 1`, see `foundry.train.dist`): each rank holds its share of the global batch
as `accum_steps` micro-batches. The weighted gradient sums, loss, weight and aux sums are summed over the
ranks in one flat all-reduce *before* dividing by the global weight, so the loss weighting stays exact and
every rank applies the same update (replicas stay identical). The all-reduce is a functional collective
inside the compiled graph. Rank r's micro-batch i is the global micro-batch `r * accum_steps + i` and draws
from `fold_in(step_key, r * accum_steps + i)`: ranks draw different noise (the rank is folded in through
the global micro-batch index), one process is unchanged, and R ranks x b rows give the same keys as one
process with R*b rows and the same micro-batch size, so even stochastic losses match up to float rounding.
The non-finite check uses the reduced loss and gradient norm, so all ranks skip (or stop) together.

A non-finite loss or gradient norm leaves params, optimizer state and EMA unchanged (selected with
`torch.where`, no data-dependent branch) and reports `metrics["skipped"] = 1`; the loop then counts it
or stops, as configured.

Usage::

    step = make_step(loss_fn, optimizer, accum_steps=2)
    step = torch.compile(step, fullgraph=True)            # or compile_step(step)
    state, metrics = step(state, batch, {"lr": torch.tensor(3e-4)})
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from foundry import rng, tree
from foundry.train import ema as ema_lib
from foundry.train.dist import World, sum_across
from foundry.train.grads import Backend, value_and_grad
from foundry.train.optim import AdamW, clip_by_global_norm, global_norm

Precision = Literal["fp32", "bf16"]

# Inductor inlines a pointwise producer into every consumer until it has 30 ops; at 16, RoPE's cos/sin tables
# and the Threefry rounds are computed once instead of per element (RoPE kernels 118 -> 13 ms in the 11m
# step; a Threefry-heavy graph compiles in 11 s instead of 66 s; measured in issue 2).
INDUCTOR_OPTIONS = {"realize_opcount_threshold": 16}


def init_state(params: dict, optimizer: AdamW, key: torch.Tensor, *, use_ema: bool = False) -> dict:
    """The train state at step 0."""
    state = {
        "step": torch.zeros((), dtype=torch.int64),
        "params": params,
        "opt_state": optimizer.init(params),
        "key": key,
    }
    if use_ema:
        state["ema"] = ema_lib.init(params)
    return state


def make_step(
    loss_fn: Callable,
    optimizer: AdamW,
    *,
    accum_steps: int = 1,
    backend: Backend = "func",
    precision: Precision = "fp32",
    clip_norm: float | None = None,
    device_type: str = "cpu",
    world: World | None = None,
) -> Callable:
    """Build the step for `loss_fn(params, micro_batch, *, key) -> (loss, aux)`, where `aux["weight"]` is the
    0-D weight of this micro-batch's mean loss (e.g. its token count). Other 0-D entries of aux are reported
    as weighted means. Only parameters the optimizer does not freeze are differentiated. With
    `world.size > 1` the batch is this rank's share and the sums are all-reduced (module docstring)."""
    if accum_steps < 1:
        raise ValueError(f"accum_steps must be >= 1, got {accum_steps}")
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    world = world or World()  # None: a single process
    trainable = optimizer.trainable_mask()

    def split(params):
        leaves = tree.leaves(params)
        return [x for x, m in zip(leaves, trainable) if m], [x for x, m in zip(leaves, trainable) if not m]

    def merge(params, train_leaves, frozen_leaves):
        it_t, it_f = iter(train_leaves), iter(frozen_leaves)
        return tree.unflatten_leaves(params, [next(it_t) if m else next(it_f) for m in trainable])

    def micro_loss(train_leaves, params, frozen_leaves, batch, key):
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            return loss_fn(merge(params, train_leaves, frozen_leaves), batch, key=key)

    grad_fn = value_and_grad(micro_loss, backend=backend)

    def step(state: dict, batch: dict, hp: dict) -> tuple[dict, dict]:
        params = state["params"]
        train_leaves, frozen_leaves = split(params)
        step_key = rng.fold_in(state["key"], state["step"])
        grad_sum, loss_sum, weight_sum, aux_sums = None, 0.0, 0.0, {}
        first_micro = world.rank * accum_steps  # global index of this rank's first micro-batch
        for i in range(accum_steps):
            micro = {k: v[i] for k, v in batch.items()}
            key = rng.fold_in(step_key, first_micro + i)
            (value, aux), grads = grad_fn(train_leaves, params, frozen_leaves, micro, key)
            w = aux["weight"].float()
            scaled = [g.float() * w for g in grads]
            grad_sum = scaled if grad_sum is None else [a + b for a, b in zip(grad_sum, scaled)]
            loss_sum = loss_sum + value.float() * w
            weight_sum = weight_sum + w
            for name, a in aux.items():
                if name != "weight":
                    aux_sums[name] = aux_sums.get(name, 0.0) + a.float() * w
        if world.size > 1:
            names = list(aux_sums)
            summed = sum_across([*grad_sum, loss_sum, weight_sum, *(aux_sums[n] for n in names)], world)
            n = len(grad_sum)
            grad_sum, loss_sum, weight_sum = summed[:n], summed[n], summed[n + 1]
            aux_sums = dict(zip(names, summed[n + 2 :]))
        denom = weight_sum.clamp_min(1e-12)
        grads = [g / denom for g in grad_sum]
        loss = loss_sum / denom
        if clip_norm is not None:
            grads, grad_norm = clip_by_global_norm(grads, clip_norm)
        else:
            grad_norm = global_norm(grads)
        full_grads = merge(params, grads, [None] * len(frozen_leaves))
        new_params, new_opt = optimizer.update(full_grads, state["opt_state"], params, hp)
        finite = torch.isfinite(loss) & torch.isfinite(grad_norm)
        keep = lambda new, old: tree.map(lambda a, b: torch.where(finite, a, b), new, old)
        new_state = {
            "step": state["step"] + 1,
            "params": keep(new_params, params),
            "opt_state": keep(new_opt, state["opt_state"]),
            "key": state["key"],
        }
        if "ema" in state:
            new_state["ema"] = keep(ema_lib.update(state["ema"], new_state["params"], hp["ema_decay"]), state["ema"])
        metrics = {
            "loss": loss,
            "grad_norm": grad_norm,
            "lr": hp["lr"],
            "weight": weight_sum,
            "skipped": (~finite).to(torch.int64),
            **{name: s / denom for name, s in aux_sums.items()},
        }
        return new_state, metrics

    return step


def compile_step(step: Callable, *, enabled: bool = True) -> Callable:
    """`torch.compile(step, fullgraph=True)`; `enabled=False` returns the eager step (for debugging).
    Dynamo traces `torch.autograd.grad` (the autograd backend) only with `trace_autograd_ops`, so the
    compiled call runs under that setting."""
    if not enabled:
        return step
    compiled = torch.compile(step, fullgraph=True, options=INDUCTOR_OPTIONS)

    def run(*args):
        with torch._dynamo.config.patch(trace_autograd_ops=True):
            return compiled(*args)

    return run


def split_micro_batches(batch: dict, accum_steps: int) -> dict:
    """(B, ...) -> (accum_steps, B / accum_steps, ...) for every tensor; keys starting with '_' are dropped."""
    out = {}
    for k, v in batch.items():
        if k.startswith("_"):
            continue
        if v.shape[0] % accum_steps:
            raise ValueError(f"batch field {k!r} has {v.shape[0]} rows, not divisible by accum_steps={accum_steps}")
        out[k] = v.reshape(accum_steps, v.shape[0] // accum_steps, *v.shape[1:])
    return out
