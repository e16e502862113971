"""RMSNorm (Zhang & Sennrich, 2019) and LayerNorm. Statistics in fp32 whatever the input dtype."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Kind = Literal["rms", "layer"]


def init(kind: Kind, d: int) -> dict:
    """`{"scale": ones}` for RMSNorm, plus `"bias": zeros` for LayerNorm."""
    if kind == "rms":
        return {"scale": torch.ones(d)}
    if kind == "layer":
        return {"scale": torch.ones(d), "bias": torch.zeros(d)}
    raise ValueError(f"unknown norm kind {kind!r}; expected 'rms' or 'layer'")


def apply(params: dict, x: torch.Tensor, *, eps: float) -> torch.Tensor:
    """Normalise over the last dim; the kind is read from the params (a bias means LayerNorm)."""
    x32 = x.float()
    if "bias" in params:
        y = F.layer_norm(x32, x32.shape[-1:], params["scale"].float(), params["bias"].float(), eps)
        return y.to(x.dtype)
    y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    # Cast back before the scale, as Llama/Qwen do, so imported checkpoints match bit for bit in fp32.
    return params["scale"].to(x.dtype) * y.to(x.dtype)
