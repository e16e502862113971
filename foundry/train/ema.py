"""Exponential moving average of parameter trees, kept in fp32 in the train state and checkpointed.

`decay_at` is evaluated outside the compiled step (a Python float); the step receives it as a 0-D tensor,
so a changing decay never recompiles.

Usage:
    from foundry.train import ema
    from foundry.train.config import EMAConfig

    cfg = EMAConfig(enabled=True, decay=0.999)
    ema_params = ema.init(params)
    # outside the step: hp["ema_decay"] = torch.tensor(ema.decay_at(cfg, step))
    # inside the train step, after the optimizer update:
    ema_params = ema.update(ema_params, params, hp["ema_decay"])
"""

from __future__ import annotations

import torch
from torch import Tensor

from foundry import tree
from foundry.train.config import EMAConfig

Tree = tree.Tree


def decay_at(cfg: EMAConfig, step: int) -> float:
    """The EMA decay at `step`: `cfg.decay`, or with warmup `min(cfg.decay, (1 + step) / (10 + step))`
    (the TensorFlow `ExponentialMovingAverage(num_updates=...)` rule), so the early average follows the
    params instead of remembering their random initialisation."""
    if not 0.0 <= cfg.decay <= 1.0:
        raise ValueError(f"EMAConfig.decay={cfg.decay} must be in [0, 1]")
    if step < 0:
        raise ValueError(f"ema.decay_at: step must be >= 0, got {step}")
    if cfg.warmup:
        return min(cfg.decay, (1 + step) / (10 + step))
    return cfg.decay


def init(params: Tree) -> Tree:
    """An fp32 copy of `params` (never aliasing them); non-float leaves are copied as they are."""

    def leaf(p: Tensor) -> Tensor:
        return p.detach().to(torch.float32 if p.is_floating_point() else p.dtype, copy=True)

    return tree.map(leaf, params)


def update(ema: Tree, params: Tree, decay: Tensor) -> Tree:
    """`ema * decay + (1 - decay) * params` leaf by leaf, out of place. `decay`: 0-D fp32 tensor.
    Non-float leaves (counters, ids) take the params' value."""

    def leaf(e: Tensor, p: Tensor) -> Tensor:
        if not e.is_floating_point():
            return p.detach().clone()
        return e * decay + (1 - decay) * p.to(e.dtype)

    return tree.map(leaf, ema, params)
