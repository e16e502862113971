"""Vision Transformer encoder (Dosovitskiy et al., 2021; SigLIP, Zhai et al., 2023): patch embedding,
learned or 2-D sin-cos position embedding, pre-norm blocks with bidirectional attention and a GELU MLP,
final norm. No pooling: the VLM consumes every patch token.

Params::

    {"patch": {"w": (D, 3 * p * p), "b": (D,)},        # Conv2d weight (D, 3, p, p) flattened in (c, py, px)
     "pos_emb"?: (N, D),                                # only for pos_emb="learned"
     "blocks": [{"attn_norm", "attn": {"wq", "wk", "wv", "wo": linear with bias}, "mlp_norm",
                 "mlp": {"fc1", "fc2"}}, ...],
     "final_norm": {"scale", "bias"}}

`patch.w` is a Conv2d(3, D, kernel=p, stride=p) weight reshaped to (D, 3 * p * p), so a checkpoint imports
with `conv_w.reshape(D, -1)`. As with that convolution, an image whose side is not a multiple of p loses its
last `side % p` rows and columns (SigLIP-so400m: 384 px, patch 14 -> a 27 x 27 grid).

Attention is built here from `foundry.nn.linear` + `scaled_dot_product_attention` rather than
`foundry.nn.attention`: that one applies RoPE and has no output bias, while ViT/SigLIP attention has no
rotary embedding and biases on q, k, v and o. Passing identity cos/sin tables would work but costs a rotation
per layer and hides the difference.

Usage::

    cfg = vit.preset("vit-debug")
    params = vit.init(rng.key(0), cfg)
    feats = vit.apply(params, cfg, images)     # (B, 3, S, S) -> (B, N, D); (B, I, 3, S, S) -> (B, I, N, D)
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from einops import rearrange

from foundry import rng
from foundry.nn import linear, mlp, norm


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the encoder. `image_size` is the square input side in pixels."""

    image_size: int = 224
    patch_size: int = 16
    d_model: int = 768
    n_layers: int = 12
    n_heads: int = 12
    mlp_hidden: int = 3072
    pos_emb: Literal["learned", "sincos"] = "learned"
    norm: Literal["layer", "rms"] = "layer"
    eps: float = 1e-6
    init_std: float = 0.02
    pool: Literal["none"] = "none"  # the VLM uses every patch token

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


PRESETS: dict[str, Config] = {
    "vit-debug": Config(image_size=32, patch_size=8, d_model=32, n_layers=2, n_heads=2, mlp_hidden=128),
    "vit-tiny": Config(image_size=224, patch_size=14, d_model=64, n_layers=4, n_heads=4, mlp_hidden=256),
    "vit-b16": Config(image_size=224, patch_size=16, d_model=768, n_layers=12, n_heads=12, mlp_hidden=3072),
    "siglip-so400m": Config(image_size=384, patch_size=14, d_model=1152, n_layers=27, n_heads=16, mlp_hidden=4304),
}


_ATTN = ("wq", "wk", "wv", "wo")


def preset(name: str, **overrides) -> Config:
    """A size preset by name, with field overrides (e.g. `pos_emb="sincos"`)."""
    if name not in PRESETS:
        raise KeyError(f"unknown ViT preset {name!r}; choose one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


def _check(cfg: Config) -> None:
    if cfg.d_model % cfg.n_heads:
        raise ValueError(f"vit.Config: d_model ({cfg.d_model}) must be a multiple of n_heads ({cfg.n_heads})")
    if cfg.pos_emb == "sincos" and cfg.d_model % 4:
        raise ValueError(f"vit.Config: pos_emb='sincos' needs d_model divisible by 4, got {cfg.d_model}")
    if cfg.pos_emb not in ("learned", "sincos"):
        raise ValueError(f"vit.Config.pos_emb must be 'learned' or 'sincos', got {cfg.pos_emb!r}")
    if cfg.pool != "none":
        raise ValueError(f"vit.Config.pool: only 'none' is supported, got {cfg.pool!r}")
    if cfg.grid < 1:
        raise ValueError(f"vit.Config: image_size ({cfg.image_size}) is smaller than patch_size ({cfg.patch_size})")


def init(key: torch.Tensor, cfg: Config) -> dict:
    """fp32 params: truncated-normal weights (std `init_std`; the patch embedding uses 1/sqrt(fan_in)),
    zero biases, unit norms."""
    _check(cfg)
    k_patch, k_pos, *k_blocks = rng.split(key, 2 + cfg.n_layers)
    d, std = cfg.d_model, cfg.init_std
    blocks = []
    for kb in k_blocks:
        kq, kk, kv, ko, km = rng.split(kb, 5)
        blocks.append(
            {
                "attn_norm": norm.init(cfg.norm, d),
                "attn": {w: linear.init(k, d, d, bias=True, std=std) for w, k in zip(_ATTN, (kq, kk, kv, ko))},
                "mlp_norm": norm.init(cfg.norm, d),
                "mlp": mlp.gelu_init(km, d, cfg.mlp_hidden, std=std, out_std=std),
            }
        )
    params: dict = {"patch": linear.init(k_patch, 3 * cfg.patch_size**2, d, bias=True)}
    if cfg.pos_emb == "learned":
        params["pos_emb"] = rng.truncated_normal(k_pos, (cfg.num_patches, d)) * std
    params["blocks"] = blocks
    params["final_norm"] = norm.init(cfg.norm, d)
    return params


def init_shapes(cfg: Config) -> dict:
    """The params tree as meta tensors (shapes and dtypes, no memory): for counting and planning."""
    with torch.device("meta"):
        return init(rng.key(0, device="meta"), cfg)


def sincos_2d(grid: int, d: int, device=None) -> torch.Tensor:
    """(grid * grid, d) fixed 2-D sin-cos embedding (MAE, He et al., 2022): the first d/2 channels encode
    the row, the last d/2 the column, each as [sin(pos * w), cos(pos * w)] with w = 10000^(-i / (d/4))."""
    omega = 1.0 / 10000 ** (torch.arange(d // 4, dtype=torch.float64, device=device) / (d // 4))
    pos = torch.arange(grid, dtype=torch.float64, device=device)
    ang = pos[:, None] * omega[None]  # (grid, d/4)
    one_d = torch.cat([ang.sin(), ang.cos()], dim=-1)  # (grid, d/2)
    rows = one_d[:, None, :].expand(grid, grid, d // 2)
    cols = one_d[None, :, :].expand(grid, grid, d // 2)
    return torch.cat([rows, cols], dim=-1).reshape(grid * grid, d).float()


def patchify(cfg: Config, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) -> (B, N, 3 * p * p) in Conv2d weight order (c, py, px); rows/columns past the last
    whole patch are dropped, as a stride-p convolution does."""
    g, p = cfg.grid, cfg.patch_size
    images = images[:, :, : g * p, : g * p]
    return rearrange(images, "b c (gh py) (gw px) -> b (gh gw) (c py px)", py=p, px=p)


def _attention(p: dict, x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Bidirectional multi-head self-attention with biases, no positional rotation: (B, N, D) -> (B, N, D)."""
    q, k, v = (rearrange(linear.apply(p[w], x), "b n (h e) -> b h n e", h=n_heads) for w in ("wq", "wk", "wv"))
    out = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, Dh)
    return linear.apply(p["wo"], rearrange(out, "b h n e -> b n (h e)"))


def _block(p: dict, cfg: Config, x: torch.Tensor) -> torch.Tensor:
    x = x + _attention(p["attn"], norm.apply(p["attn_norm"], x, eps=cfg.eps), cfg.n_heads)
    return x + mlp.gelu_apply(p["mlp"], norm.apply(p["mlp_norm"], x, eps=cfg.eps))


def apply(params: dict, cfg: Config, images: torch.Tensor, *, remat: bool = False) -> torch.Tensor:
    """Images in [-1, 1], (B, 3, S, S) -> (B, N, D), or (B, I, 3, S, S) -> (B, I, N, D) (several cameras or
    time steps per sample go through as one batch of B * I images). Final norm applied. `remat=True`
    recomputes each block in the backward pass (needs the autograd gradient backend)."""
    if images.dim() == 5:
        out = apply(params, cfg, images.flatten(0, 1), remat=remat)
        return out.unflatten(0, images.shape[:2])
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[-2:] != (cfg.image_size, cfg.image_size):
        raise ValueError(
            f"vit.apply: expected images (B, 3, {cfg.image_size}, {cfg.image_size}) or (B, I, 3, ...), "
            f"got {tuple(images.shape)}"
        )
    x = linear.apply(params["patch"], patchify(cfg, images))  # (B, N, D)
    if cfg.pos_emb == "learned":
        x = x + params["pos_emb"]
    else:
        x = x + sincos_2d(cfg.grid, cfg.d_model, device=x.device).to(x.dtype)
    for p in params["blocks"]:
        if remat and torch.is_grad_enabled():
            x = torch.utils.checkpoint.checkpoint(_block, p, cfg, x, use_reentrant=False)
        else:
            x = _block(p, cfg, x)
    return norm.apply(params["final_norm"], x, eps=cfg.eps)


def matmul_params(cfg: Config) -> int:
    """Parameters that take part in matmuls per patch token (patch embedding, attention, MLP)."""
    per_block = 4 * cfg.d_model**2 + 2 * cfg.d_model * cfg.mlp_hidden
    return 3 * cfg.patch_size**2 * cfg.d_model + cfg.n_layers * per_block


def flops_per_image(cfg: Config) -> float:
    """Training FLOPs per image (forward + backward), as `llm.flops_per_token` counts them: 6 x matmul
    params per patch + 12 x n_layers x d_model x N per patch for attention scores and values (no causal
    discount: ViT attention is bidirectional), times N patches."""
    n = cfg.num_patches
    return n * (6.0 * matmul_params(cfg) + 12.0 * cfg.n_layers * cfg.d_model * n)
