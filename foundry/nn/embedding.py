"""Token embedding: `{"w": (vocab, d)}`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from foundry import rng


def init(key: torch.Tensor, vocab: int, d: int, *, std: float = 0.02) -> dict:
    return {"w": rng.truncated_normal(key, (vocab, d)) * std}


def apply(params: dict, ids: torch.Tensor) -> torch.Tensor:
    """(...,) int -> (..., d). `F.embedding`, not `w[ids]`: its backward is deterministic (PLATFORM.md)."""
    return F.embedding(ids, params["w"])


def attend(params: dict, x: torch.Tensor) -> torch.Tensor:
    """Tied output head: (..., d) -> (..., vocab) logits against the embedding rows."""
    return F.linear(x, params["w"])
