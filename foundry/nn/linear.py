"""Linear layer: `{"w": (d_out, d_in), "b"?: (d_out,)}`, torch's weight layout (so imports map 1:1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from foundry import rng


def init(key: torch.Tensor, d_in: int, d_out: int, *, bias: bool = False, std: float | None = None) -> dict:
    """Truncated-normal weights with `std` (default 1/sqrt(d_in)), zero bias."""
    std = d_in**-0.5 if std is None else std
    params = {"w": rng.truncated_normal(key, (d_out, d_in)) * std}
    if bias:
        params["b"] = torch.zeros(d_out)
    return params


def apply(params: dict, x: torch.Tensor) -> torch.Tensor:
    """`x @ w.T + b`: (..., d_in) -> (..., d_out)."""
    return F.linear(x, params["w"], params.get("b"))
