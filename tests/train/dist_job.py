"""A job for `tests/train/test_dist.py`, run under torchrun: `python -m torch.distributed.run --standalone
--nproc-per-node 2 tests/train/dist_job.py spec.json`.

spec.json holds `{"timeout_s": s, "runs": [{"config": <LLMExperiment as a dict>, "max_steps": n | null}],
"report": <dir>}` to train LLM runs one after the other in one process group (each rank writes
`<report>/rank<r>.json` with the bytes of its optimizer state per run), or `{"fail_rank": r, "run_dir": d}`
to train a synthetic problem whose batch source raises `DataError` on rank r at its second step (or, with
`"hang": true`, sleeps there for 300 s).
"""

import itertools
import json
import sys
import time
from pathlib import Path

import torch

from experiments import llm as exp
from foundry import rng, tree
from foundry.data.manifest import DataError
from foundry.train import dist, loop, runs
from foundry.train.config import AdamWConfig, ScheduleConfig, TrainConfig
from foundry.train.optim import AdamW
from foundry.train.step import init_state
from foundry.train.tracking import NullTracker


def train_runs(spec: dict, world: dist.World) -> None:
    report = []
    for job in spec["runs"]:
        cfg = runs.config_from_dict(exp.LLMExperiment, job["config"])
        result = exp.train(cfg, max_steps=job["max_steps"])
        opt_bytes = sum(x.numel() * x.element_size() for x in tree.leaves(result.state["opt_state"]))
        report.append({"opt_state_bytes": opt_bytes})
    (Path(spec["report"]) / f"rank{world.rank}.json").write_text(json.dumps(report))


def fail_on(rank: int, run_dir: str, world: dist.World, *, hang: bool) -> None:
    cfg = TrainConfig(
        total_train_samples=64,
        num_checkpoints=2,
        global_batch_size=8,
        compile=False,
        log_every=1,
        schedule=ScheduleConfig(warmup_steps=1),
    )

    def batches(window, start):
        for b in itertools.count(start):
            if world.rank == rank and b == 1 and hang:
                time.sleep(300)  # a stuck reader: the others must time out, not wait for ever
            if world.rank == rank and b == 1:
                raise DataError("shard data/bad-000001.tar: sample 'k7': truncated token ids")
            x = rng.normal(rng.key(b * 7 + world.rank), (cfg.rank_batch_size(world.size), 3))
            yield {"x": x, "y": x.sum(-1)}

    def loss_fn(params, batch, *, key):
        err = (batch["x"] @ params["w"] - batch["y"]) ** 2
        return err.mean(), {"weight": torch.tensor(float(err.numel()))}

    params = {"w": torch.zeros(3)}
    opt = AdamW(AdamWConfig(), params)
    loop.run(cfg, run_dir=run_dir, state=init_state(params, opt, rng.key(0)), optimizer=opt, loss_fn=loss_fn,
             batches=batches, tracker=NullTracker(), config={})  # fmt: skip


def main(spec_path: str) -> None:
    torch.set_num_threads(1)
    spec = json.loads(Path(spec_path).read_text())
    with dist.session(timeout_s=spec["timeout_s"]) as world:
        if "fail_rank" in spec:
            fail_on(spec["fail_rank"], spec["run_dir"], world, hang=spec.get("hang", False))
        else:
            train_runs(spec, world)


if __name__ == "__main__":
    main(sys.argv[1])
