"""Vision-language-action policy: a VLM reads the camera images, the instruction and a learned `<obs>` token;
the `<obs>` hidden states of the LLM's last `cond_layers` blocks, concatenated, condition a flow-matching
action head (`foundry.models.action_head`) that turns noise into an action chunk (pi0, Black et al., 2024;
GR00T N1 for conditioning on several VLM layers).

Params: `{"vlm": vlm params, "obs_embedding": (D,), "action_head": head params}`.

Prompt (`prompt`): `[<image> x tokens_per_image per image | instruction | <obs> | padding]`, with the `<obs>`
right after the real instruction tokens, so padding only ever follows it (plain positions, causal or prefix-LM
attention both work). The `<obs>` token's input embedding is the learned vector `obs_embedding`, not the
vocabulary row of `obs_token_id` (that id only marks the position): it stays trainable when the VLM is frozen.
A batch may instead carry a ready `tokens` (B, T) / `mask` prompt with exactly one `<obs>` per row.

Conditioning (`encode`): the hidden states of the last k blocks (before the final norm), RMS-normalized per
layer without parameters (deeper layers have larger norms), concatenated per token -> (B, C, k * D), of
- `cond_source="obs"`: the `<obs>` token alone (C = 1);
- `cond_source="prefix"`: every prompt token (images, instruction, `<obs>`), right-padded to C =
  `head.cond_tokens` and masked, so the head attends to the image tokens directly, at fixed positions (GR00T
  N1's action head reads all VLM tokens too), at the cost of a head sequence of C + P + F tokens.

Batch (the robot pipeline, `foundry.data.robot`)::

    images (B, N_img, 3, S, S), image_valid? (B, N_img), instruction_ids? / instruction_mask? (B, L) right-padded,
    proprio (B, P, Dp), proprio_mask? (B, P), proprio_dim_mask? (B, Dp),
    actions (B, F, Da) (the chunk includes the anchor step), action_mask? (B, F), action_dim_mask? (B, Da),
    past_actions? / past_action_mask? (only used when head.past_steps > 0: clean tokens), valid? (B,)

Flow convention (`foundry_kernels.flow_matching`): t = 1 is noise, x_t = t * noise + (1 - t) * action.
The loss runs the VLM once and the head on R = `num_action_head_repeats` independent (noise, t) draws of the
whole batch (cond/proprio/actions repeated along the batch): more flow samples per expensive prefix.
Freezing or a separate lr for the VLM is the optimizer's job: `AdamWConfig(frozen=(r"^vlm\\.",))`,
`lr_scales=((r"^vlm\\.vit\\.", 0.1),)`.

Usage::

    cfg = vla.preset("vla-debug", llm_vocab=512, image_token_id=510, obs_token_id=511)
    params = vla.init(rng.key(0), cfg)
    loss, aux = vla.loss(params, cfg, batch, key=k)                 # aux["weight"]: valid action elements
    chunk = vla.sample_actions(params, cfg, batch, key=k, steps=10)   # (B, F, Da)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import torch
import torch.nn.functional as F

from foundry import rng
from foundry.models import action_head, llm, vit, vlm
from foundry_kernels.flow_matching import TimeMode, euler_sample, flow_loss, interpolate, sample_time


@dataclasses.dataclass(frozen=True)
class Config:
    """A VLM, an action head and how they meet. Token ids of -1 are resolved from the tokenizer."""

    vlm: vlm.Config = dataclasses.field(default_factory=lambda: vlm.PRESETS["vlm-debug"])
    head: action_head.Config = dataclasses.field(default_factory=action_head.Config)
    cond_layers: int = 4  # k: hidden states of the last k LLM blocks
    cond_source: Literal["obs", "prefix"] = "obs"  # the <obs> token's features, or every prompt token's
    obs_token_id: int = -1
    num_action_head_repeats: int = 1  # R: (noise, t) draws per VLM forward in the loss
    time_sampling: TimeMode = "beta"  # Beta(1.5, 1) as pi0, or "uniform"
    clamp: tuple[float, float] | None = None  # clip sampled (normalized) actions to this range

    @property
    def cond_dim(self) -> int:
        return self.cond_layers * self.vlm.llm.d_model


def _head(d: int, n_layers: int, horizon: int, cond_dim: int = 1) -> action_head.Config:
    return action_head.Config(d_model=d, n_layers=n_layers, n_heads=4, horizon=horizon, cond_dim=cond_dim)


# vla-tabletop: the VLM has exactly the vlm-shapes shape (experiments/vlm.py: vit-tiny widths at 112 px, patch 14
# -> 8 x 8 = 64 patches -> 16 tokens per image after pixel shuffle r=2; llm 11m), so a trained vlm-shapes run
# loads as params["vlm"] unchanged. The tabletop cameras render at 64 px: the robot loader resizes them to 112
# (RobotConfig.image_size=112). A 64 px / patch 8 ViT gives the same 16 tokens at the same cost but could not
# load the vlm-shapes patch embedding.
_TABLETOP_VIT = dataclasses.replace(vit.PRESETS["vit-tiny"], image_size=112)
PRESETS: dict[str, Config] = {
    "vla-debug": Config(vlm=vlm.PRESETS["vlm-debug"], head=_head(32, 2, 4), cond_layers=2),
    "vla-tabletop": Config(
        vlm=vlm.Config(vit=_TABLETOP_VIT, llm=llm.PRESETS["11m"]), head=_head(128, 4, 10), clamp=(-1.5, 1.5)
    ),
}


def preset(name: str, *, llm_vocab: int = 0, image_token_id: int = -1, obs_token_id: int = -1, **overrides) -> Config:
    """A preset by name with the tokenizer's sizes; other keywords replace fields of vla.Config. The head's
    `cond_dim` is set to `cond_layers x d_model` of the (possibly replaced) VLM."""
    if name not in PRESETS:
        raise KeyError(f"unknown VLA preset {name!r}; choose one of {sorted(PRESETS)}")
    cfg = dataclasses.replace(PRESETS[name], obs_token_id=obs_token_id, **overrides)
    m = cfg.vlm
    if llm_vocab:
        m = dataclasses.replace(m, llm=dataclasses.replace(m.llm, vocab_size=llm_vocab))
    m = dataclasses.replace(m, image_token_id=image_token_id) if image_token_id >= 0 else m
    return dataclasses.replace(cfg, vlm=m, head=dataclasses.replace(cfg.head, cond_dim=cfg.cond_dim))


def _check(cfg: Config) -> None:
    if not 1 <= cfg.cond_layers <= cfg.vlm.llm.n_layers:
        raise ValueError(
            f"vla.Config.cond_layers={cfg.cond_layers} must be in [1, {cfg.vlm.llm.n_layers}] (LLM blocks)"
        )
    if cfg.head.cond_dim != cfg.cond_dim:
        raise ValueError(
            f"vla.Config.head.cond_dim={cfg.head.cond_dim} must be cond_layers x d_model = {cfg.cond_layers} x "
            f"{cfg.vlm.llm.d_model} = {cfg.cond_dim} (vla.preset sets it)"
        )
    if not 0 <= cfg.obs_token_id < cfg.vlm.llm.vocab_size or cfg.obs_token_id == cfg.vlm.image_token_id:
        raise ValueError(
            f"vla.Config.obs_token_id={cfg.obs_token_id} must be a token of the LLM vocabulary (vocab_size "
            f"{cfg.vlm.llm.vocab_size}) other than <image>; set it to the tokenizer's <obs> id"
        )
    if cfg.cond_source not in ("obs", "prefix") or (cfg.cond_source == "obs" and cfg.head.cond_tokens != 1):
        raise ValueError(
            f"vla.Config: cond_source={cfg.cond_source!r} (head.cond_tokens={cfg.head.cond_tokens}) must be 'obs' "
            "(cond_tokens 1) or 'prefix' (cond_tokens >= the prompt length, see `prompt_length`)"
        )
    if cfg.num_action_head_repeats < 1 or cfg.time_sampling not in ("uniform", "beta"):
        raise ValueError("vla.Config: num_action_head_repeats must be >= 1, time_sampling 'uniform' or 'beta'")


def init(key: torch.Tensor, cfg: Config) -> dict:
    """fp32 params. `obs_embedding` ~ N(0, init_std) like an embedding row."""
    _check(cfg)
    k_vlm, k_obs, k_head = rng.split(key, 3)
    d = cfg.vlm.llm.d_model
    return {
        "vlm": vlm.init(k_vlm, cfg.vlm),
        "obs_embedding": rng.truncated_normal(k_obs, (d,)) * cfg.vlm.llm.init_std,
        "action_head": action_head.init(k_head, cfg.head),
    }


def prompt(cfg: Config, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, mask), both (B, N_img * tokens_per_image + L + 1): images, instruction, <obs>, padding.
    A batch with `tokens` (and `mask`) is returned as it is."""
    if "tokens" in batch:
        return batch["tokens"], batch.get("mask", torch.ones_like(batch["tokens"], dtype=torch.bool))
    images = batch["images"]
    b, device = images.shape[0], images.device
    n_img = images.shape[1] * cfg.vlm.tokens_per_image
    ids = batch.get("instruction_ids", torch.zeros(b, 0, dtype=torch.int64, device=device))  # (B, L)
    instr_mask = batch.get("instruction_mask", torch.ones_like(ids, dtype=torch.bool))
    image_ids = torch.full((b, n_img), cfg.vlm.image_token_id, dtype=ids.dtype, device=device)
    tokens = torch.cat([image_ids, ids, torch.zeros_like(ids[:, :1])], dim=1)  # (B, T)
    obs_at = n_img + instr_mask.sum(1)  # (B,): right after the real instruction tokens
    tokens = tokens.scatter(1, obs_at[:, None], cfg.obs_token_id)
    mask = torch.arange(tokens.shape[1], device=device)[None] <= obs_at[:, None]
    return tokens, mask


def prompt_length(cfg: Config, n_images: int, max_instruction_tokens: int) -> int:
    """Tokens of a padded prompt: the `head.cond_tokens` that `cond_source="prefix"` needs."""
    return n_images * cfg.vlm.tokens_per_image + max_instruction_tokens + 1


def encode(params: dict, cfg: Config, batch: dict, *, remat: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The VLM prefix: batch -> (cond (B, C, cond_layers * D) fp32, cond_mask (B, C) bool or None for all
    valid); see the module docstring."""
    tokens, mask = prompt(cfg, batch)
    is_obs = tokens == cfg.obs_token_id  # (B, T)
    if not torch.compiler.is_compiling() and not bool((is_obs.sum(1) == 1).all()):
        raise ValueError(
            f"vla.encode: every prompt row needs exactly one <obs> ({cfg.obs_token_id}); got {is_obs.sum(1)}"
        )
    x = vlm.embed(params["vlm"], cfg.vlm, tokens, batch.get("images"), batch.get("image_valid"), remat=remat)
    x = torch.where(is_obs[..., None], params["obs_embedding"].to(x.dtype), x)  # (B, T, D)
    prefix_len = torch.full_like(tokens[:, 0], tokens.shape[1]) if cfg.vlm.prefix_lm else None
    layers = tuple(range(-cfg.cond_layers, 0))
    out = llm.forward(
        params["vlm"]["llm"], cfg.vlm.llm, x, key_valid=mask, prefix_len=prefix_len, hidden_layers=layers, remat=remat
    )
    eps, d = cfg.vlm.llm.norm_eps, x.shape[-1]
    if cfg.cond_source == "obs":
        at = is_obs.to(torch.int32).argmax(1)[:, None, None].expand(-1, 1, d)  # (B, 1, D)
        return torch.cat([F.rms_norm(h.gather(1, at).float(), (d,), eps=eps) for h in out["hidden"]], dim=-1), None
    pad = cfg.head.cond_tokens - tokens.shape[1]
    if pad < 0:
        raise ValueError(
            f"vla.encode: the prompt has {tokens.shape[1]} tokens > head.cond_tokens={cfg.head.cond_tokens}; "
            "set it to vla.prompt_length(cfg, images, max_instruction_tokens)"
        )
    feats = torch.cat([F.rms_norm(h.float(), (d,), eps=eps) for h in out["hidden"]], dim=-1)  # (B, T, k D)
    return F.pad(feats, (0, 0, 0, pad)), F.pad(mask, (0, pad))  # (B, C, k D), (B, C)


def _head_inputs(batch: dict) -> tuple:
    """(proprio with padded columns zeroed, proprio_mask, past_actions, past_action_mask) from the batch."""
    proprio = batch["proprio"]  # (B, P, Dp)
    if "proprio_dim_mask" in batch:
        proprio = torch.where(batch["proprio_dim_mask"][:, None, :], proprio, torch.zeros_like(proprio))
    return proprio, batch.get("proprio_mask"), batch.get("past_actions"), batch.get("past_action_mask")


def _velocity(head_params, head_cfg, cond, cond_mask, proprio, proprio_mask, past, past_mask, x_t, t):
    """Action head with the argument order `functools.partial` + Euler sampler need: (x_t, t) last."""
    return action_head.apply(head_params, head_cfg, cond, proprio, proprio_mask, x_t, t, past, past_mask, cond_mask)


def loss_mask(batch: dict) -> torch.Tensor:
    """(B, F, Da) bool: action_mask x action_dim_mask x valid (each optional)."""
    actions = batch["actions"]
    b, f, da = actions.shape
    mask = torch.ones(b, f, da, dtype=torch.bool, device=actions.device)
    if "action_mask" in batch:
        mask = mask & batch["action_mask"][:, :, None]
    if "action_dim_mask" in batch:
        mask = mask & batch["action_dim_mask"][:, None, :]
    if "valid" in batch:
        mask = mask & batch["valid"][:, None, None]
    return mask


def loss(
    params: dict, cfg: Config, batch: dict, *, key: torch.Tensor | None = None, remat: bool = False,
    compiled: bool | None = None,  # the flow-loss kernel's switch (None: its module default)
):  # fmt: skip
    """Masked flow-matching loss over R repeats of the head on one VLM forward. Returns (mean over valid
    elements of all repeats, {"weight": valid elements of the batch (not times R)})."""
    if key is None:
        raise ValueError("vla.loss needs key= (noise and flow times are drawn from it)")
    cond, cond_mask = encode(params, cfg, batch, remat=remat)  # (B, C, k D), (B, C) | None
    actions, mask = batch["actions"], loss_mask(batch)  # (B, F, Da)
    r, (b, f, da) = cfg.num_action_head_repeats, actions.shape
    rep = lambda x: None if x is None else x.repeat(r, *([1] * (x.dim() - 1)))  # (R B, ...), repeat-major
    k_t, k_noise = rng.split(key)
    t = sample_time(k_t, (r * b,), cfg.time_sampling)  # (R B,)
    noise = rng.normal(k_noise, (r * b, f, da))
    # Invalid elements become 0 before noising: their values (padding, NaN) cannot reach valid positions.
    actions_r = rep(torch.where(mask, actions.float(), torch.zeros((), device=actions.device)))
    x_t = interpolate(noise, actions_r, t)
    v = _velocity(params["action_head"], cfg.head, rep(cond), rep(cond_mask), *map(rep, _head_inputs(batch)), x_t, t)
    value, _ = flow_loss(v, noise, actions_r, rep(mask), compiled=compiled)
    return value, {"weight": mask.sum().float()}


@torch.no_grad()
def sample_actions(
    params: dict,
    cfg: Config,
    batch: dict,
    *,
    key: torch.Tensor | None = None,
    steps: int = 10,
    cond: tuple | None = None,  # a precomputed `encode(...)` (cond, cond_mask): the VLM is then skipped
    compiled: bool | None = None,  # the Euler kernel's switch (None: its module default)
    noise_scale: float = 1.0,  # the initial noise's scale: < 1 trades diversity for the typical chunk
) -> torch.Tensor:
    """An action chunk (B, F, Da): the VLM prefix once, then `steps` Euler steps of the head from noise
    (t = 1) to actions (t = 0), clipped to `cfg.clamp`. Only `proprio` (and masks) is needed with `cond`.
    `noise_scale` 0 integrates from the noise's mean: one deterministic chunk per observation."""
    if key is None:
        raise ValueError("vla.sample_actions needs key= (the initial noise is drawn from it)")
    if cond is None:
        cond = encode(params, cfg, batch)
    noise = rng.normal(key, (cond[0].shape[0], cfg.head.horizon, cfg.head.action_dim)) * noise_scale
    fn = functools.partial(_velocity, params["action_head"], cfg.head, *cond, *_head_inputs(batch))
    return euler_sample(fn, noise, steps, cfg.clamp, compiled=compiled)


def flops_per_sample(cfg: Config, seq_len: int, n_images: int) -> float:
    """Training FLOPs of one sample: the VLM prefix (no vocabulary head) + R head passes."""
    prefix = (
        vlm.flops_per_sample(cfg.vlm, seq_len, n_images) - 6.0 * seq_len * cfg.vlm.llm.vocab_size * cfg.vlm.llm.d_model
    )
    return prefix + cfg.num_action_head_repeats * action_head.flops_per_sample(cfg.head)
