"""Flow-matching action head: a small transformer that maps a noisy action chunk, the flow time, the
proprioception and a conditioning vector (the VLA's `<obs>` features) to a velocity (pi0's action expert,
Black et al., 2024, without the shared attention; GR00T N1's DiT-style head conditioned on VLM features).

Token sequence (T = C + n_time + P + Pa + F)::

    [cond (C) | time (1, time_mode="token" only) | proprio (P) | past actions (Pa) | noisy actions (F)]

- cond: `linear(cond)` per conditioning token (C = `cond_tokens`: 1 for a VLA's `<obs>` features, the prompt
  length when the head reads every VLM token); `cond_mask` masks padding tokens as keys. With time_mode="add"
  the time embedding is added to every cond token, with "token" it is its own token.
- time: sinusoidal embedding of t in [0, 1] (periods 4e-3 .. 4, as openpi) -> linear -> SiLU -> linear.
- proprio: `linear(proprio)` per step (past + current); padding steps (proprio_mask False) are masked as keys.
- past actions (optional, `past_steps > 0`): clean, `linear(past_actions)`; never noised, never predicted.
- noisy actions: `linear(x_t)` per chunk step; the velocity is `linear(final_norm(h))` on these positions.

The blocks are the LLM's (`llm.init` / `llm.forward` on a vocabulary-free `llm.Config`: same init, RoPE over
token index, SwiGLU, pre-norm), bidirectional or causal by `causal`. Reusing `llm.forward` keeps one
transformer implementation; `llm.init` also makes a 1-row embedding and head, which are dropped.

Params::

    {"blocks": [...llm blocks...], "final_norm", "cond_in", "proprio_in", "past_in"?, "action_in",
     "time_mlp": {"fc1", "fc2"}, "action_out"}

Usage::

    cfg = action_head.Config(d_model=32, n_layers=2, n_heads=2, action_dim=7, proprio_dim=8, cond_dim=128,
                             horizon=4, proprio_steps=1)
    params = action_head.init(rng.key(0), cfg)
    v = action_head.apply(params, cfg, cond, proprio, proprio_mask, x_t, t)   # cond (B, cond_dim) -> (B, F, Da)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
import torch.nn.functional as F

from foundry import rng
from foundry.models import llm
from foundry.nn import linear, norm


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the head. `cond_dim` is the conditioning width (VLA: cond_layers x VLM d_model)."""

    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    action_dim: int = 10  # Da
    proprio_dim: int = 10  # Dp
    cond_dim: int = 384
    cond_tokens: int = 1  # C: conditioning tokens (cond is (B, C, cond_dim), or (B, cond_dim) when C = 1)
    horizon: int = 10  # F: action steps per chunk
    proprio_steps: int = 1  # P: past + current proprio steps
    past_steps: int = 0  # Pa: clean past actions given as tokens (0: none)
    causal: bool = False  # False: bidirectional over all tokens; True: each token sees the ones before it
    time_mode: Literal["add", "token"] = "add"
    init_std: float = 0.02

    @property
    def num_cond_tokens(self) -> int:
        return self.cond_tokens + (self.time_mode == "token")

    @property
    def num_tokens(self) -> int:
        return self.num_cond_tokens + self.proprio_steps + self.past_steps + self.horizon

    @property
    def blocks(self) -> llm.Config:
        """The llm.Config of the blocks (vocabulary unused: the head passes embeddings)."""
        return llm.Config(
            d_model=self.d_model,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            vocab_size=1,
            max_seq_len=self.num_tokens,
            init_std=self.init_std,
        )


def _check(cfg: Config) -> None:
    if cfg.time_mode not in ("add", "token"):
        raise ValueError(f"action_head.Config.time_mode must be 'add' or 'token', got {cfg.time_mode!r}")
    if cfg.d_model % cfg.n_heads or (cfg.d_model // cfg.n_heads) % 2:
        raise ValueError(
            f"action_head.Config: d_model={cfg.d_model} / n_heads={cfg.n_heads} must be an even integer head size"
        )
    if (
        min(cfg.action_dim, cfg.proprio_dim, cfg.cond_dim, cfg.cond_tokens, cfg.horizon, cfg.proprio_steps) < 1
        or cfg.past_steps < 0
    ):
        raise ValueError(f"action_head.Config: sizes must be >= 1 (past_steps >= 0), got {cfg}")


def init(key: torch.Tensor, cfg: Config) -> dict:
    """fp32 params; blocks exactly as `llm.init` makes them."""
    _check(cfg)
    k_blocks, k_cond, k_prop, k_past, k_act, k_t1, k_t2, k_out = rng.split(key, 8)
    d = cfg.d_model
    body = llm.init(k_blocks, cfg.blocks)
    params = {
        "blocks": body["blocks"],
        "final_norm": body["final_norm"],
        "cond_in": linear.init(k_cond, cfg.cond_dim, d, bias=True),
        "proprio_in": linear.init(k_prop, cfg.proprio_dim, d, bias=True),
        "action_in": linear.init(k_act, cfg.action_dim, d, bias=True),
        # fc2 has no bias: with time_mode="add" it would duplicate cond_in's bias, and two biases receiving the
        # same gradient make inductor (torch 2.13, CPU, bf16) emit a duplicate C++ declaration (CppCompileError).
        "time_mlp": {"fc1": linear.init(k_t1, d, d, bias=True), "fc2": linear.init(k_t2, d, d)},
        # small, not zero: a zero output layer would block every gradient below it at the first step
        "action_out": linear.init(k_out, d, cfg.action_dim, bias=True, std=cfg.init_std),
    }
    if cfg.past_steps:
        params["past_in"] = linear.init(k_past, cfg.action_dim, d, bias=True)
    return params


def time_embedding(t: torch.Tensor, d: int, *, min_period: float = 4e-3, max_period: float = 4.0) -> torch.Tensor:
    """Sinusoidal embedding of flow times t (B,) in [0, 1] -> (B, d) fp32 (openpi `posemb_sincos`)."""
    fraction = torch.linspace(0.0, 1.0, d // 2, dtype=torch.float32, device=t.device)
    period = min_period * (max_period / min_period) ** fraction  # (d/2,)
    angle = t.float()[:, None] * (2 * math.pi / period)[None]  # (B, d/2)
    return torch.cat([angle.sin(), angle.cos()], dim=-1)


def apply(
    params: dict,
    cfg: Config,
    cond: torch.Tensor,  # (B, C, cond_dim), or (B, cond_dim) when cfg.cond_tokens == 1
    proprio: torch.Tensor,  # (B, P, Dp)
    proprio_mask: torch.Tensor | None,  # (B, P) bool, False on padding steps; None: all valid
    noisy_actions: torch.Tensor,  # (B, F, Da) x_t
    t: torch.Tensor,  # (B,) flow time
    past_actions: torch.Tensor | None = None,  # (B, Pa, Da) clean, only when cfg.past_steps > 0
    past_mask: torch.Tensor | None = None,  # (B, Pa) bool
    cond_mask: torch.Tensor | None = None,  # (B, C) bool, False on padding cond tokens; None: all valid
) -> torch.Tensor:
    """The velocity (B, F, Da) at the action positions, in the dtype of the computation."""
    b = noisy_actions.shape[0]
    cond = cond[:, None] if cond.dim() == 2 else cond
    want = {"cond": (cfg.cond_tokens, cfg.cond_dim), "proprio": (cfg.proprio_steps, cfg.proprio_dim),
            "noisy_actions": (cfg.horizon, cfg.action_dim)}  # fmt: skip
    for name, x in (("cond", cond), ("proprio", proprio), ("noisy_actions", noisy_actions)):
        if tuple(x.shape[1:]) != want[name]:
            raise ValueError(f"action_head.apply: {name} has shape {tuple(x.shape)}, expected (B, *{want[name]})")
    tm = params["time_mlp"]
    temb = linear.apply(tm["fc2"], F.silu(linear.apply(tm["fc1"], time_embedding(t, cfg.d_model))))  # (B, d)
    c = linear.apply(params["cond_in"], cond)  # (B, C, d)
    prefix = [c + temb[:, None]] if cfg.time_mode == "add" else [c, temb[:, None].to(c.dtype)]
    ones = lambda n: torch.ones(b, n, dtype=torch.bool, device=cond.device)
    parts = [*prefix, linear.apply(params["proprio_in"], proprio)]  # (B, C (+1), d), (B, P, d)
    valid = [ones(cfg.cond_tokens) if cond_mask is None else cond_mask, ones(cfg.num_cond_tokens - cfg.cond_tokens),
             ones(cfg.proprio_steps) if proprio_mask is None else proprio_mask]  # fmt: skip
    if cfg.past_steps:
        if past_actions is None:
            raise ValueError(f"action_head.apply: cfg.past_steps={cfg.past_steps} needs past_actions (B, Pa, Da)")
        parts.append(linear.apply(params["past_in"], past_actions))  # (B, Pa, d)
        valid.append(ones(cfg.past_steps) if past_mask is None else past_mask)
    parts.append(linear.apply(params["action_in"], noisy_actions))  # (B, F, d)
    valid.append(ones(cfg.horizon))
    x = torch.cat([p.to(parts[-1].dtype) for p in parts], dim=1)  # (B, T, d)
    masks = (cond_mask, proprio_mask, past_mask)
    key_valid = None if all(m is None for m in masks) else torch.cat(valid, dim=1)  # (B, T)
    out = llm.forward(params, cfg.blocks, x, key_valid=key_valid, causal=cfg.causal)
    h = norm.apply(params["final_norm"], out["x"][:, -cfg.horizon :], eps=cfg.blocks.norm_eps)  # (B, F, d)
    return linear.apply(params["action_out"], h)


def flops_per_sample(cfg: Config) -> float:
    """Training FLOPs (forward + backward) of one head pass: 6 x the input/output matmuls + the blocks
    (`llm.flops_per_token` over the T tokens, less its 1-row vocabulary head)."""
    d, t, blocks = cfg.d_model, cfg.num_tokens, cfg.blocks
    io = cfg.cond_tokens * cfg.cond_dim * d + 2 * d * d + cfg.proprio_steps * cfg.proprio_dim * d
    io += (cfg.past_steps + 2 * cfg.horizon) * cfg.action_dim * d
    return 6.0 * io + t * (llm.flops_per_token(blocks, t) - 6.0 * d * blocks.vocab_size)
