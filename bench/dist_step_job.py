"""Times the LLM train step on this process's share of a batch; run by bench/test_dist_step.py as
`python bench/dist_step_job.py OUT.json` (1 process) or under `torchrun --nproc-per-node 2` (2 processes).
Rank 0 writes {"world_size", "step_s", "samples_per_s", "samples_per_s_per_process"} to OUT.json."""

import json
import sys
import time

import torch

from foundry import rng
from foundry.models import llm
from foundry.train import dist
from foundry.train.config import AdamWConfig
from foundry.train.optim import AdamW
from foundry.train.step import compile_step, init_state, make_step

ROWS, SEQ, WARMUP, STEPS = 8, 256, 2, 6  # rows per process: weak scaling, the global batch grows with W
CFG = llm.preset("11m", vocab_size=4096)


def main(out: str) -> None:
    torch.set_num_threads(1)  # one core per process on this 2-core machine
    with dist.session(timeout_s=600) as world:
        params = llm.init(rng.key(0), CFG)  # the same key on every rank: identical replicas
        optimizer = AdamW(AdamWConfig(), params)
        loss_fn = lambda p, b, *, key: llm.loss(p, CFG, b, key=key)
        step = compile_step(make_step(loss_fn, optimizer, clip_norm=1.0, world=world), enabled=False)
        tokens = rng.randint(rng.fold_in(rng.key(1), world.rank), (1, ROWS, SEQ + 1), 0, CFG.vocab_size)
        batch = {"tokens": tokens, "mask": torch.ones_like(tokens, dtype=torch.bool)}
        state, hp = init_state(params, optimizer, rng.key(2)), {"lr": torch.tensor(1e-4)}
        for i in range(WARMUP + STEPS):
            if i == WARMUP:
                dist.barrier(world)
                start = time.perf_counter()
            state, metrics = step(state, batch, hp)
            float(metrics["loss"])
        step_s = (time.perf_counter() - start) / STEPS
        if world.is_main:
            result = {"world_size": world.size, "step_s": step_s, "samples_per_s": ROWS * world.size / step_s,
                      "samples_per_s_per_process": ROWS / step_s}  # fmt: skip
            with open(out, "w") as f:
                json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1])
