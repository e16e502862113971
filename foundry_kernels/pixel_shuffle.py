"""Pixel shuffle (space-to-depth) over the square grid of ViT patch tokens (Idefics3, nanoVLM): every
r x r block of neighbouring tokens becomes one token r^2 times as wide, so the LLM sees N / r^2 image
tokens per image.

    (B, N, D) -> (B, N / r^2, r^2 * D);  (B, I, N, D) -> (B, I, N / r^2, r^2 * D)

Tokens are the row-major grid (index = row * side + col). Output token (i, j) of the (side / r)^2 grid
holds, in this order, the channels of input tokens (i*r + a, j*r + b) for a, b in range(r) (a outer).

`pixel_shuffle_reference` is the eager einops version. `pixel_shuffle` runs it under
`torch.compile(fullgraph=True)`; inside an already compiled region (the train step) it traces the reference
inline, so the outer graph fuses it. Debug with `compiled=False` or the module switch `COMPILED = False`.

Usage::

    from foundry_kernels.pixel_shuffle import pixel_shuffle
    y = pixel_shuffle(vit_tokens, 2)      # (B, 256, 64) -> (B, 64, 256)
"""

from __future__ import annotations

import math

import torch
from einops import rearrange

COMPILED = True  # module switch: False makes `pixel_shuffle` run the eager reference


def grid_side(n: int, r: int) -> int:
    """The side of the square grid of `n` tokens; a clear error if it is not square or not divisible by r."""
    if r < 1:
        raise ValueError(f"pixel_shuffle: factor r must be >= 1, got {r}")
    side = round(math.sqrt(n))  # not math.isqrt: Dynamo traces math.sqrt on symbolic sizes, not isqrt
    if side * side != n:
        raise ValueError(f"pixel_shuffle: N={n} tokens do not form a square grid (side {math.sqrt(n):.3g}, r={r})")
    if side % r:
        raise ValueError(f"pixel_shuffle: grid side {side} (N={n}) is not divisible by r={r}")
    return side


def pixel_shuffle_reference(x: torch.Tensor, r: int) -> torch.Tensor:
    """Eager reference. x (B, N, D) or (B, I, N, D)."""
    if x.dim() not in (3, 4):
        raise ValueError(f"pixel_shuffle: expected (B, N, D) or (B, I, N, D), got shape {tuple(x.shape)}")
    side = grid_side(x.shape[-2], r)
    return rearrange(x, "... (h a w b) d -> ... (h w) (a b d)", a=r, b=r, w=side // r)


# dynamic=False: one graph per shape (a model has one grid), never symbolic grid arithmetic
_compiled = torch.compile(pixel_shuffle_reference, fullgraph=True, dynamic=False)


def pixel_shuffle(x: torch.Tensor, r: int, *, compiled: bool | None = None) -> torch.Tensor:
    """Space-to-depth of x (B, N, D) or (B, I, N, D) by r; `compiled` None follows the module switch."""
    if r == 1:
        return x
    # Inside a compiled region the outer graph fuses the reference; under an eager torch.func transform
    # (grad, vmap) a compiled function cannot be called (PyTorch #128711): both take the reference.
    inline = torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active()
    if inline or not (COMPILED if compiled is None else compiled):
        return pixel_shuffle_reference(x, r)
    if x.dim() in (3, 4):
        grid_side(x.shape[-2], r)  # eager check: a clear error before compiling
    return _compiled(x, r)
