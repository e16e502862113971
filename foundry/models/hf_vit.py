"""Hugging Face SigLIP vision towers -> `foundry.models.vit`, without `transformers`.

Supported: `SiglipVisionModel` directories (model_type 'siglip_vision_model') and full `SiglipModel`
directories (model_type 'siglip', e.g. google/siglip-so400m-patch14-384), whose vision tower is read from
`vision_config` and the `vision_model.` tensors. SigLIP's tower is our ViT exactly: a valid-padding patch
convolution with bias, a learned position embedding per patch (no CLS token), pre-LayerNorm blocks with
biased q/k/v/o and a GELU-tanh MLP, and a final LayerNorm; `vit.apply` returns SigLIP's `last_hidden_state`.

Left out by design (and listed in the import notes, not silently dropped): the attention-pooling head
(`head.*`; the VLM consumes every patch token) and, in a full SiglipModel, the text tower and the
contrastive `logit_scale` / `logit_bias`.

Usage::

    imported = hf_vit.load("path/to/siglip")          # imported.cfg: vit.Config, imported.params
    feats = vit.apply(imported.params, imported.cfg, images)     # images in [-1, 1] (SigLIP's normalisation)
"""

from __future__ import annotations

import dataclasses
import os

import torch

from foundry import tree
from foundry.models import hf_io, vit

ARCHITECTURES = ("SiglipVisionModel", "SiglipModel")
# SiglipVisionConfig's defaults: a SiglipModel config.json lists only the fields that differ from them.
_DEFAULTS = {
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
    "num_channels": 3, "image_size": 224, "patch_size": 16, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6,
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Imported:
    cfg: vit.Config
    params: dict
    notes: list[str]


def vision_config(hf: dict, *, source: str) -> dict:
    """The vision tower's config dict (with SigLIP's defaults filled in) of either supported model type."""
    model_type = hf.get("model_type")
    if model_type == "siglip_vision_model":
        fields = hf
    elif model_type == "siglip":
        fields = hf.get("vision_config") or {}
    else:
        raise ValueError(
            f"{source}: model_type {model_type!r} (architectures {hf.get('architectures')!r}) is not supported; "
            f"supported: 'siglip_vision_model' and 'siglip' ({list(ARCHITECTURES)})"
        )
    return {k: fields.get(k, default) for k, default in _DEFAULTS.items()}


def config_from_hf(hf: dict, *, source: str = hf_io.CONFIG) -> vit.Config:
    """Our `vit.Config` from a SigLIP `config.json` dict."""
    v = vision_config(hf, source=source)
    if v["hidden_act"] != "gelu_pytorch_tanh":
        raise ValueError(f"{source}: hidden_act {v['hidden_act']!r} is not supported (the ViT MLP is GELU-tanh)")
    if v["num_channels"] != 3:
        raise ValueError(f"{source}: num_channels={v['num_channels']} is not supported (RGB images only)")
    for key in ("image_size", "patch_size"):
        if not isinstance(v[key], int):
            raise ValueError(f"{source}: {key}={v[key]!r} is not supported (square images: one int)")
    return vit.Config(
        image_size=v["image_size"],
        patch_size=v["patch_size"],
        d_model=v["hidden_size"],
        n_layers=v["num_hidden_layers"],
        n_heads=v["num_attention_heads"],
        mlp_hidden=v["intermediate_size"],
        pos_emb="learned",
        norm="layer",
        eps=float(v["layer_norm_eps"]),
    )


def hf_names(cfg: vit.Config, prefix: str = "") -> dict[str, str]:
    """`{our dotted param path: SigLIP tensor name}` for every param of `vit.init(cfg)`; `prefix` is
    'vision_model.' inside a SiglipModel (and in SiglipVisionModel files written by transformers 4.x)."""
    names = {
        "patch.w": "embeddings.patch_embedding.weight",  # (D, 3, p, p) reshaped to (D, 3 p p)
        "patch.b": "embeddings.patch_embedding.bias",
        "pos_emb": "embeddings.position_embedding.weight",
        "final_norm.scale": "post_layernorm.weight",
        "final_norm.bias": "post_layernorm.bias",
    }
    parts = {"attn_norm": "layer_norm1", "mlp_norm": "layer_norm2", "attn.wq": "self_attn.q_proj",
             "attn.wk": "self_attn.k_proj", "attn.wv": "self_attn.v_proj", "attn.wo": "self_attn.out_proj",
             "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}  # fmt: skip
    for i in range(cfg.n_layers):
        for ours, theirs in parts.items():
            w, b = ("scale", "bias") if ours.endswith("norm") else ("w", "b")
            names[f"blocks.{i}.{ours}.{w}"] = f"encoder.layers.{i}.{theirs}.weight"
            names[f"blocks.{i}.{ours}.{b}"] = f"encoder.layers.{i}.{theirs}.bias"
    return {k: prefix + v for k, v in names.items()}


def _unused(names: list[str], prefix: str) -> dict[str, str]:
    """Checkpoint tensors that are not part of the patch-token tower, with the reason."""
    out = {}
    for name in names:
        if name.startswith(prefix + "head."):
            out[name] = "the attention-pooling head (the VLM uses every patch token)"
        elif prefix and (name.startswith("text_model.") or name in ("logit_scale", "logit_bias")):
            out[name] = "the text tower and contrastive logit scale/bias of SiglipModel"
    return out


def load(path: str | os.PathLike, *, dtype: torch.dtype = torch.float32) -> Imported:
    """Import a SigLIP vision tower: config, params in `dtype` (conversions listed in `notes`). Strict: see
    `hf_io.take`; only the tensors named in the module docstring are left out, and the notes say so."""
    ckpt = hf_io.read(path)
    cfg = config_from_hf(ckpt.config, source=str(ckpt.path / hf_io.CONFIG))
    prefix = "vision_model." if any(n.startswith("vision_model.") for n in ckpt.tensors) else ""
    template = vit.init_shapes(cfg)
    flat, notes = hf_io.take(
        ckpt, hf_names(cfg, prefix), tree.flatten(template), dtype=dtype, reshape=frozenset({"patch.w"}),
        unused=_unused(list(ckpt.tensors), prefix),
    )  # fmt: skip
    return Imported(cfg=cfg, params=hf_io.params_from(flat, template), notes=notes)
