"""Rotary position embedding (Su et al., 2021) in the "rotate half" layout used by Llama/Qwen checkpoints.

Cos/sin tables are computed from explicit positions on every call (cheap next to attention), so cached
decoding, left padding and prefix layouts need no special cases.
"""

from __future__ import annotations

import math

import torch


def inv_frequencies(head_dim: int, theta: float) -> torch.Tensor:
    """(head_dim / 2,) fp32 inverse frequencies theta^(-2i / head_dim)."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)).float()


def linear_scaled(inv_freq: torch.Tensor, factor: float) -> torch.Tensor:
    """Position interpolation (Chen et al., 2023): every frequency divided by `factor`, as if positions were
    `factor` times closer (Hugging Face rope_type 'linear')."""
    return inv_freq / factor


def llama3_scaled(
    inv_freq: torch.Tensor,
    *,
    factor: float,
    low_freq_factor: float,
    high_freq_factor: float,
    original_max_len: int,
) -> torch.Tensor:
    """Llama 3.1 frequency scaling (Hugging Face rope_type 'llama3'): wavelengths longer than
    original_max_len / low_freq_factor are divided by `factor`, those shorter than
    original_max_len / high_freq_factor are kept, and the band between is interpolated linearly in
    original_max_len / wavelength."""
    if high_freq_factor <= low_freq_factor:
        raise ValueError(f"llama3 RoPE scaling needs high_freq_factor > low_freq_factor, got {high_freq_factor} "
                         f"<= {low_freq_factor}")  # fmt: skip
    wavelen = 2 * math.pi / inv_freq
    low_wavelen, high_wavelen = original_max_len / low_freq_factor, original_max_len / high_freq_factor
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (original_max_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, smoothed, scaled)


def cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """positions (..., T) int -> cos, sin of shape (..., T, head_dim), fp32."""
    angles = positions.float().unsqueeze(-1) * inv_freq.to(positions.device)  # (..., T, head_dim/2)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, Dh); cos/sin (B, T, Dh) or (T, Dh). Rotation in fp32, result in x's dtype."""
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]
    x32 = x.float()
    half = x.shape[-1] // 2
    rotated = torch.cat([-x32[..., half:], x32[..., :half]], dim=-1)
    return (x32 * cos + rotated * sin).to(x.dtype)
