"""Image decoding and preprocessing: the one code path shared by VLM training, robot data and policy
inference (a policy must see exactly what training saw).

Usage::

    img = decode_image(jpeg_bytes, where="shard x.tar, key 0001")   # (H, W, 3) uint8
    x = preprocess(img, size=224, mode="crop")                        # (3, 224, 224) float32 in [-1, 1]
"""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from foundry.data.manifest import DataError

Mode = Literal["crop", "pad"]
# SigLIP-style normalisation: [0, 255] -> [-1, 1].
MEAN, STD = 0.5, 0.5


def decode_image(data: bytes, *, where: str = "image") -> np.ndarray:
    """JPEG/PNG/WebP bytes -> (H, W, 3) uint8 RGB. A truncated, empty or unknown image is a DataError."""
    if not data:
        raise DataError(f"{where}: empty image file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{where}: cannot decode image ({e})") from None


def resize_square(img: np.ndarray, size: int, mode: Mode = "crop") -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8: resize the short side and center-crop ("crop"), or resize
    the long side and pad with black to a square ("pad")."""
    h, w = img.shape[:2]
    if mode not in ("crop", "pad"):
        raise ValueError(f"image mode must be 'crop' or 'pad', got {mode!r}")
    if (h, w) == (size, size):
        return img
    scale = size / min(h, w) if mode == "crop" else size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BICUBIC))
    if mode == "crop":
        top, left = (nh - size) // 2, (nw - size) // 2
        return resized[top : top + size, left : left + size]
    out = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = resized
    return out


def normalize(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [-1, 1]."""
    return ((img.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)


def preprocess(img: np.ndarray, *, size: int, mode: Mode = "crop") -> np.ndarray:
    """Resize to the model's square input and normalise: (H, W, 3) uint8 -> (3, size, size) float32."""
    return normalize(resize_square(img, size, mode))
