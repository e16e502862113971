"""Feed-forward blocks: SwiGLU (Shazeer, 2020) for decoders, GELU MLP for vision encoders."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from foundry import rng
from foundry.nn import linear


def swiglu_init(key: torch.Tensor, d: int, hidden: int, *, std: float, out_std: float, bias: bool = False) -> dict:
    """`bias=True` adds zero biases to all three projections (Llama's `mlp_bias`)."""
    k1, k2, k3 = rng.split(key, 3)
    return {
        "gate": linear.init(k1, d, hidden, bias=bias, std=std),
        "up": linear.init(k2, d, hidden, bias=bias, std=std),
        "down": linear.init(k3, hidden, d, bias=bias, std=out_std),
    }


def swiglu_apply(params: dict, x: torch.Tensor) -> torch.Tensor:
    """down(silu(gate(x)) * up(x)): (..., d) -> (..., d)."""
    return linear.apply(params["down"], F.silu(linear.apply(params["gate"], x)) * linear.apply(params["up"], x))


def gelu_init(key: torch.Tensor, d: int, hidden: int, *, std: float, out_std: float, bias: bool = True) -> dict:
    k1, k2 = rng.split(key, 2)
    return {
        "fc1": linear.init(k1, d, hidden, std=std, bias=bias),
        "fc2": linear.init(k2, hidden, d, std=out_std, bias=bias),
    }


def gelu_apply(params: dict, x: torch.Tensor, *, approximate: str = "tanh") -> torch.Tensor:
    """fc2(gelu(fc1(x))): (..., d) -> (..., d)."""
    return linear.apply(params["fc2"], F.gelu(linear.apply(params["fc1"], x), approximate=approximate))
