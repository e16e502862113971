"""VLA throughput and latency on the `vla-tabletop` shape (the vlm-shapes VLM: vit-tiny widths at 112 px /
patch 14, 16 tokens per image after pixel shuffle; llm `11m`, vocabulary 4096): 2 cameras x 2 time offsets =
4 images (64 image tokens) + 16 instruction tokens + <obs>; action head d 128 / 4 layers, chunk 10 x 10-D
actions, 1 proprio step.

- train step: compiled, bf16 autocast, batch 8, for R = 1 and R = 8 head repeats per VLM forward (samples/s
  and MFU against the bf16 matmul peak measured in the same process);
- action-chunk latency at batch 1 (10 Euler steps): all eager; eager VLM prefix + compiled Euler loop (the
  kernel's compiled path); and `sample_actions` compiled whole.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/pytest bench/test_vla.py --benchmark-columns=mean,stddev,rounds -s
"""

import dataclasses
import functools

import pytest
import torch

from foundry import rng
from foundry.models import vla
from foundry.train.step import INDUCTOR_OPTIONS
from foundry_kernels import pixel_shuffle

BATCH, N_IMG, INSTR = 8, 4, 16
VOCAB = 4096
CFG = vla.preset("vla-tabletop", llm_vocab=VOCAB, image_token_id=VOCAB - 2, obs_token_id=VOCAB - 1)
SEQ = vla.prompt_length(CFG, N_IMG, INSTR)


def make_batch(b: int) -> dict:
    k = rng.split(rng.key(1), 4)
    h, size = CFG.head, CFG.vlm.vit.image_size
    return {
        "images": rng.uniform(k[0], (b, N_IMG, 3, size, size), low=-1.0, high=1.0),
        "instruction_ids": rng.randint(k[1], (b, INSTR), 5, VOCAB - 2),
        "instruction_mask": torch.ones(b, INSTR, dtype=torch.bool),
        "proprio": rng.normal(k[2], (b, h.proprio_steps, h.proprio_dim)),
        "proprio_mask": torch.ones(b, h.proprio_steps, dtype=torch.bool),
        "actions": rng.normal(k[3], (b, h.horizon, h.action_dim)),
        "action_mask": torch.ones(b, h.horizon, dtype=torch.bool),
        "action_dim_mask": torch.ones(b, h.action_dim, dtype=torch.bool),
    }


@pytest.fixture(scope="module")
def params():
    return vla.init(rng.key(0), CFG)


@pytest.mark.parametrize("repeats", [1, 8])
def test_vla_train_step(train_step_rate, params, repeats):
    cfg = dataclasses.replace(CFG, num_action_head_repeats=repeats)
    loss_fn = lambda p, b, *, key: vla.loss(p, cfg, b, key=key)
    batch = {k: v[None] for k, v in make_batch(BATCH).items()}
    flops = vla.flops_per_sample(cfg, SEQ, N_IMG)
    samples_per_s, _ = train_step_rate(loss_fn, params, batch, units=BATCH, flops_per_unit=flops, precision="bf16")
    print(f"R={repeats}: {samples_per_s:,.1f} samples/s")


@pytest.mark.parametrize("mode", ["eager", "compiled-euler", "compiled-all"])
def test_action_chunk_latency(benchmark, params, mode, monkeypatch):
    monkeypatch.setattr(pixel_shuffle, "COMPILED", mode != "eager")
    batch = make_batch(1)
    sample = functools.partial(vla.sample_actions, cfg=CFG, steps=10, compiled=mode == "compiled-euler")
    if mode == "compiled-all":
        sample = torch.compile(sample, fullgraph=True, dynamic=False, options=INDUCTOR_OPTIONS)
    key = rng.key(4)
    benchmark.pedantic(lambda: sample(params, batch=batch, key=key), rounds=10, iterations=1, warmup_rounds=2)
    ms = benchmark.stats.stats.mean * 1e3
    benchmark.extra_info.update(latency_ms=round(ms, 2))
    print(f"\naction chunk (batch 1, 10 Euler steps), {mode}: {ms:.1f} ms")
