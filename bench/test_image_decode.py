"""Image decode + preprocess throughput per data worker (one thread): the path every VLM/VLA sample takes
(`foundry.data.images.decode_image` -> `preprocess`), for a photo-sized JPEG resized to the ViT's 224 px
and for shapes-dataset images at their own size (224 px as made by default, 64 px for fast presets).
Reports images/s in `extra_info`; a training step needs batch_size / step_time images/s from the workers.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/pytest bench/test_image_decode.py --benchmark-columns=mean,ops,rounds
"""

import io

import numpy as np
import pytest
from PIL import Image

from foundry.data.captions import augment_image
from foundry.data.images import decode_image, preprocess
from foundry.data.make_shapes import shape_sample

N = 32  # images per round


def photo_jpeg(width: int = 640, height: int = 480) -> bytes:
    """A smooth gradient with noise: compresses like a photo (~30-60 KB at quality 90), no download."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 / width, yy * 255 / height, (xx + yy) * 127 / (width + height)], -1)
    img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def shapes_image(size: int, fmt: str) -> bytes:
    return shape_sample(0, "train", 0, size=size, fmt=fmt)[fmt]


CASES = {
    "photo640x480-jpg->224": (lambda: photo_jpeg(), 224),
    "shapes224-png->224": (lambda: shapes_image(224, "png"), 224),
    "shapes224-jpg->224": (lambda: shapes_image(224, "jpg"), 224),
    "shapes64-png->64": (lambda: shapes_image(64, "png"), 64),
}


@pytest.mark.parametrize("augment", [False, True], ids=["plain", "augment"])
@pytest.mark.parametrize("case", list(CASES))
def test_decode_preprocess(benchmark, case, augment):
    make, size = CASES[case]
    data = make()
    rng = np.random.default_rng(0)

    def run():
        for _ in range(N):
            img = decode_image(data)
            if augment:
                img = augment_image(img, rng)
            x = preprocess(img, size=size, mode="crop")
        return x

    x = benchmark.pedantic(run, rounds=10, warmup_rounds=1)
    assert x.shape == (3, size, size) and x.dtype == np.float32
    benchmark.extra_info["images_per_s"] = round(N / benchmark.stats.stats.mean)
    benchmark.extra_info["bytes_per_image"] = len(data)
