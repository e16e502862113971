"""Image-caption samples (and text-only samples, for co-training) -> VLM batches.

An image sample holds image members (`jpg|jpeg|png|webp`; several images as e.g. `0.jpg`, `1.jpg`,
ordered by extension) and a `txt` caption; a `json` member (metadata) is ignored. Each image is decoded
and resized to the ViT input by `foundry.data.images` (the one image path), with optional augmentation
drawn from the sample's seed (a 90-100% crop and a brightness factor; never a flip: captions say left
and right). The row is

    [bos] + prompt (each "<image>" -> image_tokens x <image> id) + tokens(caption_sep + caption) + [eos] + pad

and is cut to `seq_len + 1` tokens by truncating the caption, never the prefix. A sample without image
members is text (read by `foundry.data.text.TextDecoder`: `json.gz`, `json` or `txt`): its row has no
image and a loss on all its tokens, so one loader mixes caption and text datasets by `window_plan` weight.

Batch (B rows, N = max_images, S = image_size, T = seq_len):
    images      (B, N, 3, S, S) float32 in [-1, 1]; zeros where image_valid is False
    image_valid (B, N) bool
    tokens      (B, T+1) int64; the j-th run of image_tokens <image> ids belongs to images[:, j]
    mask        (B, T+1) bool, True on real tokens
    loss_mask   (B, T+1) bool, True on targets: caption tokens + eos (caption rows), `mask` (text rows)
    prefix_len  (B,) int64, where the caption starts: 1 + len(expanded prompt); 0 for text/empty rows
    _skipped    0-D int64 (added by the loader)
A model reads `tokens[:, :-1]` and weights the next-token loss on `tokens[:, 1:]` with `loss_mask[:, 1:]`.

Usage:

    cfg = CaptionConfig(image_size=224, image_tokens=64, prompt="<image>Caption:", seq_len=96)
    decode, collate = caption_functions(cfg, tokenizer, batch_size=32)
    plan = window_plan([captions_index, text_index], [0.8, 0.2], seed=0, window=0, samples_per_window=S)
    for batch in iterate_batches(plan, batch_size=32, decode=decode, collate=collate, seed=0): ...
    prefix = prefix_ids(cfg, tokenizer)   # the same [bos] + prompt for captioning at inference
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import torch
from tokenizers import Tokenizer

from foundry.data.images import decode_image, preprocess
from foundry.data.manifest import DataError
from foundry.data.text import TextDecoder
from foundry.data.tokenizer import special_ids

IMAGE_TOKEN = "<image>"
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


@dataclasses.dataclass(frozen=True)
class CaptionConfig:
    """How image-caption (and mixed-in text) samples become VLM rows (see the module docstring)."""

    # ViT input side in pixels, and how other aspect ratios get there: center "crop" or "pad" (black).
    image_size: int = 224
    image_mode: Literal["crop", "pad"] = "crop"
    # <image> tokens per image: the model's tokens per image after pixel shuffle, set by the experiment.
    image_tokens: int = 64
    # Text before the caption; each "<image>" is one image of the sample (in member order).
    prompt: str = "<image>Caption:"
    # Prepended to the caption before tokenizing, so its words tokenize as in running text (" a").
    caption_sep: str = " "
    # Row length is seq_len + 1 tokens (inputs row[:-1], targets row[1:]).
    seq_len: int = 128
    # Seeded crop/brightness jitter per sample (never a horizontal flip).
    augment: bool = False
    # Image slots per row (the N of `images`); >= the prompt's <image> count.
    max_images: int = 1

    def __post_init__(self) -> None:
        if self.image_size < 1 or self.image_tokens < 1 or self.seq_len < 1 or self.max_images < 1:
            raise ValueError(
                f"caption: image_size, image_tokens, seq_len, max_images must be >= 1, got {self.image_size}, "
                f"{self.image_tokens}, {self.seq_len}, {self.max_images}"
            )
        if self.image_mode not in ("crop", "pad"):
            raise ValueError(f"caption.image_mode = {self.image_mode!r}: use 'crop' or 'pad'")
        if not 1 <= self.images_per_sample <= self.max_images:
            raise ValueError(
                f"caption.prompt {self.prompt!r} has {self.images_per_sample} {IMAGE_TOKEN} placeholders; "
                f"need between 1 and caption.max_images = {self.max_images}"
            )

    @property
    def images_per_sample(self) -> int:
        """Images each image-caption sample must hold: the prompt's <image> placeholders."""
        return self.prompt.count(IMAGE_TOKEN)

    @property
    def row_len(self) -> int:
        return self.seq_len + 1


def prefix_ids(cfg: CaptionConfig, tokenizer: Tokenizer) -> list[int]:
    """`[bos] + prompt` with each <image> expanded to `image_tokens` <image> ids (the caption follows)."""
    ids = special_ids(tokenizer)
    missing = [t for t in ("<pad>", "<bos>", "<eos>", IMAGE_TOKEN) if t not in ids]
    if missing:
        raise ValueError(f"the tokenizer lacks special tokens {missing}; add them with add_special_tokens")
    out = [ids["<bos>"]]
    for j, text in enumerate(cfg.prompt.split(IMAGE_TOKEN)):
        if j:
            out += [ids[IMAGE_TOKEN]] * cfg.image_tokens
        if text:
            out += _encode(tokenizer, text)
    return out


def _encode(tokenizer: Tokenizer, text: str) -> list[int]:
    """Token ids of `text` with special-token strings encoded as plain text (data injects no controls)."""
    previous = tokenizer.encode_special_tokens
    tokenizer.encode_special_tokens = True
    try:
        return tokenizer.encode(text, add_special_tokens=False).ids
    finally:
        tokenizer.encode_special_tokens = previous


def image_members(sample: dict[str, Any]) -> list[str]:
    """The sample's image member extensions (`jpg`, `0.png`, ...), sorted."""
    return sorted(k for k in sample if not k.startswith("__") and k.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS)


def augment_image(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 -> a random crop of 90-100% of each side, brightness x [0.85, 1.15]. No flip:
    left/right in captions must stay true; a crop keeps the objects' relative positions."""
    h, w = img.shape[:2]
    scale = rng.uniform(0.9, 1.0)
    ch, cw = max(1, round(h * scale)), max(1, round(w * scale))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    img = img[top : top + ch, left : left + cw].astype(np.float32) * rng.uniform(0.85, 1.15)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class CaptionDecoder:
    """`decode(sample, seed) -> {"tokens", "images", "prefix_len"}` for image and text samples alike."""

    text: TextDecoder  # text samples; its tokenizer also encodes captions; max_len is the row length
    prefix: tuple[int, ...]  # prefix_ids(cfg, tokenizer)
    image_id: int
    image_size: int
    image_mode: str = "crop"
    images_per_sample: int = 1
    caption_sep: str = " "
    augment: bool = False

    def __call__(self, sample: dict[str, Any], seed: int) -> dict[str, Any]:
        names = image_members(sample)
        if not names:
            tokens = self.text(sample, seed)["tokens"]
            if (tokens == self.image_id).any():
                raise DataError(f"text sample holds the {IMAGE_TOKEN} id {self.image_id} (pre-tokenized with it?)")
            no_image = np.zeros((0, 3, self.image_size, self.image_size), np.float32)
            return {"tokens": tokens, "images": no_image, "prefix_len": 0}
        if len(names) != self.images_per_sample:
            raise DataError(
                f"{len(names)} image members {names}, the prompt has {self.images_per_sample} {IMAGE_TOKEN}"
            )
        if "txt" not in sample:
            members = sorted(k for k in sample if not k.startswith("__"))
            raise DataError(f"image sample without a 'txt' caption (members {members})")
        try:
            caption = sample["txt"].decode("utf-8").strip()
        except UnicodeDecodeError as e:
            raise DataError(f"member 'txt' is not valid UTF-8 ({e})") from None
        if not caption:
            raise DataError("member 'txt' is an empty caption")
        rng = np.random.default_rng(seed)
        images = np.stack([self._image(sample[name], name, rng) for name in names])
        # The text decoder's per-process tokenizer, which encodes special-token strings as plain text.
        ids = self.text._tokenizer().encode(self.caption_sep + caption, add_special_tokens=False).ids
        body = np.asarray([*ids, self.text.eos_id], np.int64)[: self.text.max_len - len(self.prefix)]
        tokens = np.concatenate([np.asarray(self.prefix, np.int64), body])
        return {"tokens": tokens, "images": images, "prefix_len": len(self.prefix)}

    def _image(self, data: bytes, name: str, rng: np.random.Generator) -> np.ndarray:
        img = decode_image(data, where=f"member {name!r}")
        if self.augment:
            img = augment_image(img, rng)
        return preprocess(img, size=self.image_size, mode=self.image_mode)


@dataclasses.dataclass(frozen=True)
class CaptionCollate:
    """`collate(decoded) -> batch` (module docstring); `None` rows are empty (all masks False)."""

    rows: int
    row_len: int
    max_images: int
    image_size: int
    pad_id: int

    def __call__(self, decoded: list[dict[str, Any] | None]) -> dict[str, torch.Tensor]:
        if len(decoded) != self.rows:
            raise ValueError(f"caption collate got {len(decoded)} samples for {self.rows} rows (one per row)")
        B, N, S = self.rows, self.max_images, self.image_size
        images = torch.zeros((B, N, 3, S, S), dtype=torch.float32)
        image_valid = torch.zeros((B, N), dtype=torch.bool)
        tokens = torch.full((B, self.row_len), self.pad_id, dtype=torch.int64)
        mask = torch.zeros((B, self.row_len), dtype=torch.bool)
        prefix_len = torch.zeros(B, dtype=torch.int64)
        for i, d in enumerate(decoded):
            if d is None:
                continue
            n, k = len(d["tokens"]), len(d["images"])
            tokens[i, :n] = torch.from_numpy(d["tokens"])
            mask[i, :n] = True
            images[i, :k] = torch.from_numpy(d["images"])
            image_valid[i, :k] = True
            prefix_len[i] = d["prefix_len"]
        loss_mask = mask & (torch.arange(self.row_len) >= prefix_len[:, None])
        return {
            "images": images,
            "image_valid": image_valid,
            "tokens": tokens,
            "mask": mask,
            "loss_mask": loss_mask,
            "prefix_len": prefix_len,
        }


def caption_functions(
    cfg: CaptionConfig, tokenizer: Tokenizer, *, batch_size: int, vocab_size: int | None = None
) -> tuple[CaptionDecoder, CaptionCollate]:
    """Decode and collate for batches of `batch_size` rows (one sample per row). Raises `ValueError`
    when the prefix leaves no room for a caption token in `seq_len + 1`."""
    prefix = prefix_ids(cfg, tokenizer)
    if len(prefix) >= cfg.row_len:
        raise ValueError(
            f"the caption prefix is {len(prefix)} tokens (bos + {cfg.images_per_sample} image(s) x "
            f"{cfg.image_tokens} <image> + {len(prefix) - 1 - cfg.images_per_sample * cfg.image_tokens} prompt "
            f"tokens) but a row holds seq_len + 1 = {cfg.row_len}: raise caption.seq_len above {len(prefix)}"
        )
    ids = special_ids(tokenizer)
    text = TextDecoder(
        vocab_size=vocab_size or tokenizer.get_vocab_size(),
        bos_id=ids["<bos>"],
        eos_id=ids["<eos>"],
        max_len=cfg.row_len,
        tokenizer_json=tokenizer.to_str(),
    )
    decode = CaptionDecoder(
        text=text,
        prefix=tuple(prefix),
        image_id=ids[IMAGE_TOKEN],
        image_size=cfg.image_size,
        image_mode=cfg.image_mode,
        images_per_sample=cfg.images_per_sample,
        caption_sep=cfg.caption_sep,
        augment=cfg.augment,
    )
    collate = CaptionCollate(batch_size, cfg.row_len, cfg.max_images, cfg.image_size, ids["<pad>"])
    return decode, collate
