"""The training loop shared by every stage: windows, resume, logging, validation, checkpoints.

The loop knows nothing about models or modalities. A stage hands it a fresh train state, a loss
function, a batch source `batches(window, start_batch) -> iterator of batches` and an `evaluate(state)`
callback. The run directory holds `checkpoints/step_N/` (see `foundry.train.checkpoint`); running the same
command again resumes from the newest complete checkpoint with the exact next batch, since the data
position (window, batch) is saved with the state.

Under torchrun (`foundry.train.dist`) every rank runs this loop on its share of each global batch (the
batch source yields `cfg.rank_batch_size(world.size)` rows); the step all-reduces, so all ranks hold the
same state. Only rank 0 logs to the tracker, draws the progress bar and writes checkpoints (the state is
identical on every rank, or gathered first when the optimizer state is sharded); the others wait for the
write at a barrier. Every rank reads the checkpoint on resume, whatever the world size that wrote it.
With `train.shard_optimizer` (and more than one process) the returned `Result.state["opt_state"]` is this
rank's ZeRO-1 slice (`foundry.train.zero`).

Usage::

    result = loop.run(cfg.train, run_dir=run_dir, state=state, optimizer=opt, loss_fn=loss_fn,
                      batches=batches, evaluate=evaluate, tracker=tracker, config=asdict(cfg))
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from foundry import tree
from foundry.train import checkpoint, dist
from foundry.train import ema as ema_lib
from foundry.train.config import TrainConfig
from foundry.train.optim import AdamW
from foundry.train.progress import NullStream, Progress, format_duration
from foundry.train.schedules import learning_rate
from foundry.train.step import compile_step, make_step, split_micro_batches
from foundry.train.tracking import Tracker
from foundry.train.zero import ShardedAdamW


class NonFiniteError(RuntimeError):
    """Raised when a step's loss or gradient is not finite and `train.nonfinite == "stop"`."""


@dataclasses.dataclass
class Result:
    state: dict
    metrics: dict[str, float]  # last train metrics and the final validation metrics
    resumed_from: Path | None
    wall_s: float


def set_determinism() -> None:
    """Bitwise-reproducible kernels (the compiled embedding backward uses atomics otherwise; PLATFORM.md)."""
    torch.use_deterministic_algorithms(True)


def run(
    cfg: TrainConfig,
    *,
    run_dir: str | Path,
    state: dict,
    optimizer: AdamW,
    loss_fn: Callable,
    batches: Callable[[int, int], Iterator[dict]],
    evaluate: Callable[[dict], dict[str, float]] | None = None,
    tracker: Tracker,
    config: dict,
    assets: dict[str, Any] | None = None,
    flops_per_sample: float | None = None,
    peak_flops: float | None = None,
    tokens_key: str | None = "weight",
    desc: str = "train",
    device: torch.device | str = "cpu",
    max_steps: int | None = None,
) -> Result:
    """Train `state` for the whole budget of `cfg` (or resume it from `run_dir`).

    `flops_per_sample` and `peak_flops` give MFU; `tokens_key` names the step metric that counts tokens
    (the loss weight) for tokens/s. `max_steps` stops early after that many steps in this call (for tests
    of interruption; the run resumes from its last checkpoint)."""
    world = dist.current()
    cfg.check(world.size)
    accum_steps, rank_rows = cfg.accum_steps_for(world.size), cfg.rank_batch_size(world.size)
    set_determinism()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    latest = checkpoint.latest(run_dir)
    cursor = {"window": 0, "batch": 0}
    skipped = {"nonfinite": 0, "data": 0}
    if latest is not None:
        state, extra = checkpoint.restore(latest, state)
        cursor, skipped = extra["cursor"], extra.get("skipped", skipped)
    if world.is_main:
        tracker.log_params(config)
    # ZeRO-1: this rank keeps a slice of the AdamW moments; checkpoints still hold the full tree.
    sharded = ShardedAdamW(optimizer, state["params"], world) if cfg.shard_optimizer and world.size > 1 else None
    if sharded is not None:
        state = {**state, "opt_state": sharded.from_saved(state["opt_state"])}

    device_type = torch.device(device).type
    step_fn = compile_step(
        make_step(
            loss_fn,
            optimizer if sharded is None else sharded,
            accum_steps=accum_steps,
            backend=cfg.grad_backend,
            precision=cfg.precision,
            clip_norm=cfg.optimizer.clip_norm,
            device_type=device_type,
            world=world,
        ),
        enabled=cfg.compile,
    )
    start_step = int(state["step"])
    progress = Progress(
        cfg.total_steps, initial=start_step, desc=desc, samples_per_step=cfg.global_batch_size,
        stream=None if world.is_main else NullStream(),
    )  # fmt: skip
    if latest is not None:
        progress.write(f"{desc}: resumed from {latest} (window {cursor['window']}, step {start_step})")
    mode = "compiling the step (30 s to a few minutes the first time, cached after)" if cfg.compile else "eager"
    progress.write(
        f"{desc}: {tree.count(state['params']):,} params, {cfg.total_steps} steps x {cfg.global_batch_size} samples"
        f" in {cfg.num_checkpoints} windows; {mode}"
        + (f"; {world.size} processes x {rank_rows} rows" if world.size > 1 else "")
    )
    t_start = time.monotonic()
    t_last, step_last = t_start, start_step
    metrics_out: dict[str, float] = {}
    steps_this_call = 0
    step = start_step
    nonfinite = torch.zeros((), dtype=torch.int64, device=device)  # summed on device, read when logging
    data_skipped = 0  # this rank's bad samples since the last log, summed over ranks when logging
    for window in range(cursor["window"], cfg.num_checkpoints):
        first = cursor["batch"] if window == cursor["window"] else 0
        source = batches(window, first)
        for _ in range(first, cfg.steps_per_window):
            batch = next(source)
            if steps_this_call == 0:
                _check_rows(batch, rank_rows, cfg, world)
            data_skipped = data_skipped + int(batch.get("_skipped", 0))
            hp = {"lr": torch.tensor(learning_rate(cfg.schedule, step, cfg.total_steps), device=device)}
            if "ema" in state:
                hp["ema_decay"] = torch.tensor(ema_lib.decay_at(cfg.ema, step), device=device)
            micro = {k: v.to(device, non_blocking=True) for k, v in split_micro_batches(batch, accum_steps).items()}
            state, metrics = step_fn(state, micro, hp)
            nonfinite = nonfinite + metrics["skipped"]
            steps_this_call += 1
            step = done = step + 1
            if steps_this_call == 1:  # show life right after the first (compiling) step; rates start from here
                progress.update(done, loss=float(metrics["loss"]), lr=float(metrics["lr"]))
                t_last, step_last = time.monotonic(), done
            if done % cfg.log_every == 0 or done == cfg.total_steps or done % cfg.steps_per_window == 0:
                values = {k: float(v) for k, v in metrics.items()}
                skipped["nonfinite"] += int(nonfinite)
                nonfinite.zero_()
                skipped["data"] += int(dist.sum_across([torch.tensor(data_skipped)], world)[0])
                data_skipped = 0
                _check_finite(cfg, values, done, skipped)
                now = time.monotonic()
                rate = (done - step_last) * cfg.global_batch_size / max(now - t_last, 1e-9)
                values["samples_per_s"] = rate
                if world.size > 1:
                    values["samples_per_s_per_process"] = rate / world.size
                if tokens_key in values:
                    values["tokens_per_s"] = rate * values[tokens_key] / cfg.global_batch_size
                if flops_per_sample and peak_flops:
                    values["mfu"] = rate * flops_per_sample / peak_flops
                values["skipped_steps"], values["skipped_samples"] = skipped["nonfinite"], skipped["data"]
                if world.is_main:
                    tracker.log(values, step=done, context={"subset": "train"})
                progress.update(done, loss=values["loss"], lr=values["lr"])
                metrics_out.update({f"train_{k}": v for k, v in values.items()})
                t_last, step_last = now, done
            if _stop(max_steps, steps_this_call) and done % cfg.steps_per_window:
                progress.close()
                return Result(state, metrics_out, latest, time.monotonic() - t_start)
        val = evaluate(state) if evaluate is not None else {}
        if val and world.is_main:
            tracker.log(val, step=int(state["step"]), context={"subset": "val"})
        if val:
            metrics_out.update({f"val_{k}": v for k, v in val.items()})
            progress.write(f"{desc}: window {window + 1}/{cfg.num_checkpoints} " + _fmt(val))
        saved = state if sharded is None else {**state, "opt_state": sharded.to_saved(state["opt_state"])}
        if world.is_main:
            path = checkpoint.save(
                run_dir,
                saved,
                config=config,
                extra={"cursor": {"window": window + 1, "batch": 0}, "skipped": skipped, "metrics": metrics_out},
                assets=assets,
                keep=cfg.keep_checkpoints,
            )
            progress.write(f"{desc}: saved {path}")
        dist.barrier(world)  # no rank runs ahead of (or returns before) the checkpoint
        if _stop(max_steps, steps_this_call):
            break
    progress.close()
    wall = time.monotonic() - t_start
    if steps_this_call:
        progress.write(f"{desc}: {steps_this_call} steps in {format_duration(wall)}")
    return Result(state, metrics_out, latest, wall)


def _check_rows(batch: dict, rows: int, cfg: TrainConfig, world: dist.World) -> None:
    """The batch source must yield this rank's share of the global batch (a clear error, not a W x batch)."""
    got = {k: v.shape[0] for k, v in batch.items() if not k.startswith("_")}
    if any(n != rows for n in got.values()):
        raise ValueError(
            f"the batch source yields {got} rows per step but train.global_batch_size ({cfg.global_batch_size}) "
            f"/ {world.size} processes = {rows}: build the collate and the source with "
            "train.rank_batch_size(world size) rows"
        )


def _stop(max_steps: int | None, steps: int) -> bool:
    return max_steps is not None and steps >= max_steps


def _check_finite(cfg: TrainConfig, values: dict[str, float], step: int, skipped: dict) -> None:
    # Skipped steps already refused their update; stop before anything is checkpointed, if so configured.
    if skipped["nonfinite"] > 0 and cfg.nonfinite == "stop":
        raise NonFiniteError(
            f"non-finite loss or gradient at step {step} (loss={values['loss']}, grad_norm="
            f"{values['grad_norm']}); the update was not applied. Lower the learning rate, enable "
            "clipping (--train.optimizer.clip-norm), or pass --train.nonfinite skip to skip such steps."
        )


def _fmt(values: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in values.items())
