"""Vision-language model: ViT -> pixel shuffle -> projector -> image embeddings placed at the `<image>`
placeholder tokens of the LLM input (LLaVA, Liu et al., 2023; Idefics3 / nanoVLM pixel shuffle).

Params: `{"vit": vit params, "projector": {...}, "llm": llm params}`, so a stage starts from a loaded LLM
or ViT by placing its subtree. Projector: "linear" = `{"proj": (D_llm, r^2 D_vit)}` without bias (nanoVLM);
"mlp" = `{"fc1", "fc2"}` with GELU between and biases (LLaVA-1.5's mlp2x_gelu).

Batch (the image-caption pipeline)::

    {"images": (B, I, 3, S, S) float in [-1, 1], "image_valid": (B, I) bool,
     "tokens": (B, T+1) int64 with tokens_per_image <image> ids per valid image, "mask": (B, T+1) bool,
     "loss_mask": (B, T+1) bool (caption tokens), "prefix_len": (B,) int64 (image + prompt length)}

The k-th placeholder of a row receives the k-th image token of that row's valid images, in image order.
Shapes are static and the merge has no data-dependent branch, so `loss` compiles with `fullgraph=True`;
the placeholder count is checked in eager mode only.

Usage::

    cfg = vlm.preset("vlm-debug", llm_vocab=512, image_token_id=511)
    params = vlm.init(rng.key(0), cfg)
    out = vlm.apply(params, cfg, {"tokens": tokens[:, :-1], "images": images}, hidden_layers=(-1,))
    loss, aux = vlm.loss(params, cfg, batch)
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F

from foundry import rng
from foundry.models import llm, vit
from foundry.nn import linear
from foundry_kernels.pixel_shuffle import pixel_shuffle


@dataclasses.dataclass(frozen=True)
class Config:
    """A ViT and an LLM joined by pixel shuffle (factor `shuffle_factor`) and a projector.
    `image_token_id=-1` means "take it from the tokenizer" (resolved by the experiment)."""

    vit: vit.Config = dataclasses.field(default_factory=lambda: vit.PRESETS["vit-debug"])
    llm: llm.Config = dataclasses.field(default_factory=lambda: llm.PRESETS["debug"])
    shuffle_factor: int = 2
    projector: Literal["linear", "mlp"] = "mlp"
    image_token_id: int = -1
    prefix_lm: bool = True  # bidirectional attention over image + prompt (PaliGemma); False: causal

    @property
    def tokens_per_image(self) -> int:
        return self.vit.num_patches // self.shuffle_factor**2

    @property
    def image_feature_dim(self) -> int:
        """Width of a pixel-shuffled image token (the projector's input)."""
        return self.vit.d_model * self.shuffle_factor**2


PRESETS: dict[str, Config] = {
    "vlm-debug": Config(vit=vit.PRESETS["vit-debug"], llm=llm.PRESETS["debug"]),
    "vlm-tiny": Config(vit=vit.PRESETS["vit-tiny"], llm=llm.PRESETS["11m"]),
}


def preset(name: str, *, llm_vocab: int = 0, **overrides) -> Config:
    """A preset by name; `llm_vocab` sets `llm.vocab_size`, other keywords replace fields of vlm.Config."""
    if name not in PRESETS:
        raise KeyError(f"unknown VLM preset {name!r}; choose one of {sorted(PRESETS)}")
    cfg = PRESETS[name]
    if llm_vocab:
        cfg = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, vocab_size=llm_vocab))
    return dataclasses.replace(cfg, **overrides)


def _check(cfg: Config) -> None:
    if cfg.vit.grid % cfg.shuffle_factor:
        raise ValueError(
            f"vlm.Config.shuffle_factor={cfg.shuffle_factor} does not divide the ViT grid side {cfg.vit.grid} "
            f"(image_size {cfg.vit.image_size} / patch_size {cfg.vit.patch_size})"
        )
    if not 0 <= cfg.image_token_id < cfg.llm.vocab_size:
        raise ValueError(
            f"vlm.Config.image_token_id={cfg.image_token_id} is not a token of the LLM vocabulary "
            f"(vocab_size {cfg.llm.vocab_size}); set it to the tokenizer's <image> id"
        )
    if cfg.projector not in ("linear", "mlp"):
        raise ValueError(f"vlm.Config.projector must be 'linear' or 'mlp', got {cfg.projector!r}")


def init(key: torch.Tensor, cfg: Config) -> dict:
    """fp32 params for all three parts."""
    _check(cfg)
    k_vit, k_proj, k_llm = rng.split(key, 3)
    d_in, d = cfg.image_feature_dim, cfg.llm.d_model
    if cfg.projector == "linear":
        projector = {"proj": linear.init(k_proj, d_in, d)}
    else:
        k1, k2 = rng.split(k_proj, 2)
        projector = {"fc1": linear.init(k1, d_in, d, bias=True), "fc2": linear.init(k2, d, d, bias=True)}
    return {"vit": vit.init(k_vit, cfg.vit), "projector": projector, "llm": llm.init(k_llm, cfg.llm)}


def init_shapes(cfg: Config) -> dict:
    """The params tree as meta tensors (no memory): for counting and planning."""
    with torch.device("meta"):
        return init(rng.key(0, device="meta"), cfg)


def project(params: dict, cfg: Config, feats: torch.Tensor) -> torch.Tensor:
    """Projector: (..., r^2 D_vit) -> (..., D_llm)."""
    p = params["projector"]
    if cfg.projector == "linear":
        return linear.apply(p["proj"], feats)
    return linear.apply(p["fc2"], F.gelu(linear.apply(p["fc1"], feats), approximate="tanh"))


def encode_images(params: dict, cfg: Config, images: torch.Tensor, *, remat: bool = False) -> torch.Tensor:
    """(B, I, 3, S, S) -> (B, I, tokens_per_image, D_llm) image embeddings."""
    feats = vit.apply(params["vit"], cfg.vit, images, remat=remat)  # (B, I, N, D_vit)
    return project(params, cfg, pixel_shuffle(feats, cfg.shuffle_factor))


def _check_counts(is_image: torch.Tensor, image_valid: torch.Tensor | None, per_image: int) -> None:
    """Eager only: each row has exactly (valid images x tokens_per_image) placeholders."""
    found = is_image.sum(1).tolist()
    wanted = [0] * len(found) if image_valid is None else (image_valid.sum(1) * per_image).tolist()
    for row, (f, w) in enumerate(zip(found, wanted)):
        if f != w:
            raise ValueError(
                f"vlm: row {row} has {f} <image> placeholder tokens but its valid images give {w} image tokens "
                f"({w // per_image} images x {per_image} tokens_per_image)"
            )


def merge_image_embeds(
    text: torch.Tensor,  # (B, T, D) token embeddings
    is_image: torch.Tensor,  # (B, T) bool: placeholder positions
    image_embeds: torch.Tensor,  # (B, I, P, D)
    image_valid: torch.Tensor,  # (B, I) bool
) -> torch.Tensor:
    """Put the k-th valid image token of each row at the row's k-th placeholder: (B, T, D). Static shapes:
    valid images are moved first (stable sort), then `cumsum(is_image) - 1` indexes the flattened tokens."""
    b, i, p, d = image_embeds.shape
    order = torch.argsort((~image_valid).to(torch.int32), dim=1, stable=True)  # (B, I) valid images first
    ordered = image_embeds.gather(1, order[:, :, None, None].expand(b, i, p, d)).reshape(b, i * p, d)
    idx = (torch.cumsum(is_image.to(torch.int64), dim=1) - 1).clamp(0, i * p - 1)  # (B, T)
    gathered = ordered.gather(1, idx[:, :, None].expand(-1, -1, d))  # (B, T, D)
    return torch.where(is_image[..., None], gathered.to(text.dtype), text)


def embed(
    params: dict,
    cfg: Config,
    tokens: torch.Tensor,  # (B, T) int with <image> placeholders
    images: torch.Tensor | None = None,  # (B, I, 3, S, S) or None for text only
    image_valid: torch.Tensor | None = None,  # (B, I) bool; default all valid
    *,
    remat: bool = False,
) -> torch.Tensor:
    """LLM input embeddings (B, T, D) with image embeddings at the placeholders. Text only skips the ViT."""
    x = llm.embed(params["llm"], tokens)
    is_image = tokens == cfg.image_token_id
    if images is not None and images.dim() == 4:
        images = images[:, None]  # one image per sample
    if images is not None and image_valid is None:
        image_valid = torch.ones(images.shape[:2], dtype=torch.bool, device=images.device)
    if not torch.compiler.is_compiling():
        _check_counts(is_image, image_valid, cfg.tokens_per_image)
    if images is None:
        return x
    return merge_image_embeds(x, is_image, encode_images(params, cfg, images, remat=remat), image_valid)


def apply(
    params: dict, cfg: Config, batch: dict, *, hidden_layers: tuple[int, ...] = (), remat: bool = False, key=None
) -> dict:
    """batch `{"tokens": (B, T), "images"?, "image_valid"?, "mask"? (B, T) real tokens, "prefix_len"? (B,)}`
    -> `{"logits": (B, T, V), "hidden": block outputs (B, T, D) for `hidden_layers`, "x": final hidden}`.
    `prefix_len` is used only when `cfg.prefix_lm`; padding keys are masked when `mask` is given."""
    del key  # deterministic model: no dropout
    tokens = batch["tokens"]
    x = embed(params, cfg, tokens, batch.get("images"), batch.get("image_valid"), remat=remat)
    prefix_len = batch.get("prefix_len") if cfg.prefix_lm else None
    out = llm.forward(
        params["llm"],
        cfg.llm,
        x,
        key_valid=batch.get("mask"),
        prefix_len=prefix_len,
        hidden_layers=hidden_layers,
        remat=remat,
    )
    return {"logits": llm.logits(params["llm"], cfg.llm, out["x"]), "hidden": out["hidden"], "x": out["x"]}


def loss(params: dict, cfg: Config, batch: dict, *, key: torch.Tensor | None = None, remat: bool = False):
    """Next-token loss on caption tokens: a position counts when its target is in `loss_mask` (and `mask`,
    and not an <image> id); text-only batches without `loss_mask` count every real target, as `llm.loss`.
    Returns (mean loss, {"weight": targets counted})."""
    tokens, mask = batch["tokens"], batch["mask"]
    inputs = {k: v for k, v in batch.items() if k in ("images", "image_valid", "prefix_len")}
    inputs.update(tokens=tokens[:, :-1], mask=mask[:, :-1])
    out = apply(params, cfg, inputs, remat=remat, key=key)
    targets = tokens[:, 1:]
    weights = mask[:, 1:] & (targets != cfg.image_token_id)
    if "loss_mask" in batch:
        weights = weights & batch["loss_mask"][:, 1:]
    value, count = llm.token_loss(out["logits"], targets, weights)
    return value, {"weight": count}


def flops_per_sample(cfg: Config, seq_len: int, n_images: int) -> float:
    """Training FLOPs of one sample: ViT per image + projector per image token + LLM per token."""
    d_in, d = cfg.image_feature_dim, cfg.llm.d_model
    proj = d_in * d if cfg.projector == "linear" else d_in * d + d * d
    per_image = vit.flops_per_image(cfg.vit) + 6.0 * proj * cfg.tokens_per_image
    return n_images * per_image + seq_len * llm.flops_per_token(cfg.llm, seq_len)
