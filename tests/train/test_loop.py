"""The generic loop on a synthetic regression problem: budget and windows, non-finite policy, resume."""

import dataclasses
import itertools

import pytest
import torch

from foundry import rng, tree
from foundry.train import checkpoint, loop
from foundry.train.config import AdamWConfig, ScheduleConfig, TrainConfig
from foundry.train.optim import AdamW
from foundry.train.step import init_state
from foundry.train.tracking import NullTracker

CFG = TrainConfig(
    total_train_samples=64, num_checkpoints=2, global_batch_size=8, micro_batch_size=4, compile=False, log_every=2,
    schedule=ScheduleConfig(peak_lr=0.4, warmup_steps=1, floor_fraction=0.5), optimizer=AdamWConfig(weight_decay=0.0),
)  # fmt: skip


def loss_fn(params, batch, *, key):
    pred = batch["x"] @ params["w"]
    err = (pred - batch["y"]) ** 2
    return err.mean(), {"weight": torch.tensor(float(err.numel()))}


def batches_with(poison_step=None):
    def batches(window, start):
        for b in itertools.count(start):
            step = window * CFG.steps_per_window + b
            x = rng.normal(rng.key(step), (8, 3))
            y = x @ torch.tensor([1.0, -2.0, 0.5])
            if step == poison_step:
                y = y * float("nan")
            yield {"x": x, "y": y}

    return batches


def run(tmp_path, cfg=CFG, poison_step=None, **kw):
    params = {"w": torch.zeros(3)}
    opt = AdamW(cfg.optimizer, params)
    return loop.run(
        cfg, run_dir=tmp_path, state=init_state(params, opt, rng.key(0)), optimizer=opt, loss_fn=loss_fn,
        batches=batches_with(poison_step), tracker=NullTracker(), config={}, **kw,
    )  # fmt: skip


def test_budget_windows_and_learning(tmp_path):
    result = run(tmp_path)
    assert int(result.state["step"]) == CFG.total_steps == 8
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step_00000004", "step_00000008"]
    assert result.metrics["train_loss"] < 1.0


def test_non_finite_step_stops_the_run_before_any_checkpoint(tmp_path):
    with pytest.raises(loop.NonFiniteError, match="non-finite loss or gradient"):
        run(tmp_path, poison_step=2)
    assert checkpoint.latest(tmp_path) is None


def test_non_finite_step_is_skipped_and_counted(tmp_path):
    skip = dataclasses.replace(CFG, nonfinite="skip")
    result = run(tmp_path, cfg=skip, poison_step=2)
    assert result.metrics["train_skipped_steps"] == 1
    assert all(torch.isfinite(p).all() for p in tree.leaves(result.state["params"]))


def test_max_steps_interrupts_and_the_run_resumes_exactly(tmp_path):
    reference = run(tmp_path / "a").state
    run(tmp_path / "b", max_steps=5)
    resumed = run(tmp_path / "b")
    assert resumed.resumed_from.name == "step_00000004"
    assert tree.equal(resumed.state, reference)
