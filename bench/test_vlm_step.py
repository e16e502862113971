"""Throughput of the compiled VLM train step: the `vlm-tiny` shape (vit-tiny 224 px / patch 14 / d 64 / 4
layers, pixel shuffle r=2 -> 64 image tokens, MLP projector, llm `11m` with vocabulary 4096), batch 8 of one
image + 8 prompt + 56 caption tokens (T = 128), fp32 and bf16 autocast. Reports samples/s and MFU with ViT +
projector + LLM training FLOPs against the matmul peak measured in the same process.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/pytest bench/test_vlm_step.py --benchmark-columns=mean,stddev,rounds
"""

import pytest
import torch

from foundry import rng
from foundry.models import vlm

BATCH, SEQ, PROMPT = 8, 128, 8
VOCAB = 4096
CFG = vlm.preset("vlm-tiny", llm_vocab=VOCAB, image_token_id=VOCAB - 1)


def loss_fn(params, batch, *, key):
    return vlm.loss(params, CFG, batch, key=key)


@pytest.fixture(scope="module")
def setup():
    params = vlm.init(rng.key(0), CFG)
    n_img, size = CFG.tokens_per_image, CFG.vit.image_size
    tokens = rng.randint(rng.key(1), (BATCH, SEQ + 1), 0, VOCAB - 1)
    tokens[:, :n_img] = CFG.image_token_id
    loss_mask = torch.zeros_like(tokens, dtype=torch.bool)
    loss_mask[:, n_img + PROMPT :] = True
    batch = {
        "images": rng.uniform(rng.key(2), (BATCH, 1, 3, size, size), low=-1.0, high=1.0),
        "image_valid": torch.ones(BATCH, 1, dtype=torch.bool),
        "tokens": tokens,
        "mask": torch.ones_like(tokens, dtype=torch.bool),
        "loss_mask": loss_mask,
        "prefix_len": torch.full((BATCH,), n_img + PROMPT),
    }
    return params, {k: v[None] for k, v in batch.items()}  # one micro-batch


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_vlm_tiny_train_step(train_step_rate, setup, precision):
    params, batch = setup
    flops = vlm.flops_per_sample(CFG, SEQ, n_images=1)
    samples_per_s, _ = train_step_rate(loss_fn, params, batch, units=BATCH, flops_per_unit=flops, precision=precision)
    print(f"samples/s: {samples_per_s:,.1f}")
