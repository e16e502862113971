"""Caption evaluation on held-out rendered scenes: does the VLM describe what it sees?

Greedy captions for the first N validation scenes are parsed back into attributes (colour, shape, size,
relation) and compared with the scene's metadata. The blind baseline runs the same model on blank images
(all zeros after normalisation, a uniform grey): the gap between the two is what the model reads from the
image rather than guesses from the caption statistics.

Usage::

    acc = caption_accuracy(params, cfg, tok, caption_cfg, "data/shapes/val", num_samples=64)
    blind = caption_accuracy(params, cfg, tok, caption_cfg, "data/shapes/val", num_samples=64, blind=True)
"""

from __future__ import annotations

import json

import numpy as np
import torch
from tokenizers import Tokenizer

from foundry.data.captions import CaptionConfig, image_members, prefix_ids
from foundry.data.images import decode_image, preprocess
from foundry.data.plan import sequential_plan
from foundry.data.shapes import attribute_accuracy
from foundry.data.shards import ShardFiles, index_dataset, read_sample
from foundry.data.tokenizer import special_ids
from foundry.infer.caption import caption
from foundry.models import vlm


def load_scenes(manifest: str, caption_cfg: CaptionConfig, num_samples: int) -> tuple[torch.Tensor, list[dict]]:
    """The first `num_samples` scenes: images (N, 1, 3, S, S) preprocessed as in training, and metadata."""
    plan = sequential_plan(index_dataset(manifest), num_samples=num_samples)
    images, metas = [], []
    with ShardFiles() as files:
        for ref in plan.refs():
            shard = plan.datasets[ref.dataset].shards[ref.shard]
            sample = read_sample(shard, ref.sample, files)
            member = image_members(sample)[0]
            img = decode_image(sample[member], where=f"{shard.path}: {sample['__key__']}")
            images.append(preprocess(img, size=caption_cfg.image_size, mode=caption_cfg.image_mode))
            metas.append(json.loads(sample["json"]))
    return torch.from_numpy(np.stack(images))[:, None], metas


@torch.no_grad()
def generate_captions(
    params: dict, cfg: vlm.Config, tok: Tokenizer, caption_cfg: CaptionConfig, images: torch.Tensor,
    *, max_new_tokens: int = 24, batch_size: int = 32,
) -> list[str]:  # fmt: skip
    """Greedy captions for images (N, 1, 3, S, S), prompted exactly as in training."""
    ids = special_ids(tok)
    prompt = torch.tensor(prefix_ids(caption_cfg, tok))
    texts = []
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start : start + batch_size]
        out = caption(
            params, cfg, chunk, prompt.expand(chunk.shape[0], -1), max_new_tokens=max_new_tokens,
            stop_tokens=(ids["<eos>"],), pad_id=ids["<pad>"],
        )  # fmt: skip
        for row, n in zip(out.tokens.tolist(), out.lengths.tolist()):
            texts.append(tok.decode([t for t in row[:n] if t != ids["<eos>"]]).strip())
    return texts


def caption_accuracy(
    params: dict, cfg: vlm.Config, tok: Tokenizer, caption_cfg: CaptionConfig, manifest: str,
    *, num_samples: int = 64, blind: bool = False, scenes: tuple[torch.Tensor, list[dict]] | None = None,
) -> tuple[dict[str, float], list[str]]:  # fmt: skip
    """Attribute accuracy of greedy captions (see `foundry.data.shapes.attribute_accuracy`) and the
    captions. `blind=True` replaces every image with a blank one. `scenes` reuses `load_scenes` output."""
    images, metas = scenes if scenes is not None else load_scenes(manifest, caption_cfg, num_samples)
    if blind:
        images = torch.zeros_like(images)
    texts = generate_captions(params, cfg, tok, caption_cfg, images)
    return attribute_accuracy(texts, metas), texts
