"""Training configuration: frozen dataclasses, free of torch imports so `--help` stays fast.

Derived values are properties; nothing here reads files or starts anything.
"""

from __future__ import annotations

import dataclasses
from typing import Literal


@dataclasses.dataclass(frozen=True)
class AdamWConfig:
    """Decoupled-weight-decay Adam (Loshchilov & Hutter, 2019) over parameter trees."""

    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    # Parameters whose dotted path matches one of these regexes (re.search) get no weight decay:
    # norm scales/biases, biases, embeddings (GPT-2/nanoGPT practice).
    no_decay: tuple[str, ...] = (r"norm", r"(^|\.)b$", r"(^|\.)bias$", r"embed", r"pos_emb")
    # Parameters matching these regexes are frozen: no gradient is computed for them and they never change.
    frozen: tuple[str, ...] = ()
    # (regex, multiplier) pairs scaling the learning rate of matching parameters; the first match wins.
    lr_scales: tuple[tuple[str, float], ...] = ()
    # Clip gradients to this global L2 norm; None disables clipping.
    clip_norm: float | None = 1.0


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """Learning rate as a pure function of the step (see `foundry.train.schedules`)."""

    kind: Literal["cosine", "constant", "wsd"] = "cosine"
    peak_lr: float = 3e-4
    warmup_steps: int = 100
    # The lr at the end of cosine decay (or of the wsd decay phase), as a fraction of peak_lr.
    floor_fraction: float = 0.1
    # wsd only: the fraction of all steps spent in the final (linear) decay phase.
    decay_fraction: float = 0.2


@dataclasses.dataclass(frozen=True)
class EMAConfig:
    """Exponential moving average of the parameters, kept in the train state and checkpointed."""

    enabled: bool = False
    decay: float = 0.999
    # If True, the decay warms up as min(decay, (1 + step) / (10 + step)), so early EMA tracks the params.
    warmup: bool = True


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The training budget, batch geometry and step options shared by every stage.

    The budget is a sample count split into `num_checkpoints` windows; each window ends with validation and
    a checkpoint. Global batch = micro-batch x accumulation steps (x world size, when distributed)."""

    total_train_samples: int = 4096
    num_checkpoints: int = 4
    global_batch_size: int = 32
    micro_batch_size: int | None = None  # None: no gradient accumulation
    optimizer: AdamWConfig = AdamWConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    ema: EMAConfig = EMAConfig()
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 = autocast compute, fp32 master weights
    grad_backend: Literal["func", "autograd"] = "func"
    remat: bool = False  # activation checkpointing per block (needs grad_backend="autograd")
    compile: bool = True  # torch.compile(step, fullgraph=True); off for debugging
    nonfinite: Literal["skip", "stop"] = "stop"  # a non-finite loss/grad: skip the step and count, or stop
    seed: int = 0
    log_every: int = 10
    keep_checkpoints: int | None = 2  # None keeps every window's checkpoint
    # Under torchrun: each rank keeps the AdamW moments of 1/world_size of the parameters (ZeRO stage 1,
    # `foundry.train.zero`); checkpoints hold the full state either way.
    shard_optimizer: bool = False

    @property
    def accum_steps(self) -> int:
        """Micro-batches per step in a single process."""
        return self.accum_steps_for(1)

    def rank_batch_size(self, world_size: int) -> int:
        """Rows each of `world_size` processes trains on per step: global_batch_size / world_size."""
        if world_size < 1 or self.global_batch_size <= 0 or self.global_batch_size % world_size:
            raise ValueError(
                f"train.global_batch_size ({self.global_batch_size}) must be a positive multiple of the "
                f"world size ({world_size} processes)"
            )
        return self.global_batch_size // world_size

    def accum_steps_for(self, world_size: int) -> int:
        """Micro-batches per step and process: global = micro_batch_size x accumulation x world size."""
        rank_batch = self.rank_batch_size(world_size)
        micro = self.micro_batch_size or rank_batch
        if micro <= 0 or rank_batch % micro:
            raise ValueError(
                f"train.global_batch_size ({self.global_batch_size}) must be a positive multiple of "
                f"train.micro_batch_size ({micro})"
                + (f" x world size ({world_size} processes) = {micro * world_size}" if world_size > 1 else "")
            )
        return rank_batch // micro

    @property
    def samples_per_window(self) -> int:
        unit = self.num_checkpoints * self.global_batch_size
        if self.num_checkpoints <= 0 or self.total_train_samples <= 0 or self.total_train_samples % unit:
            nearest = max(unit, round(self.total_train_samples / unit) * unit)
            raise ValueError(
                f"train.total_train_samples ({self.total_train_samples}) must be a positive multiple of "
                f"num_checkpoints x global_batch_size = {unit}; e.g. {nearest}"
            )
        return self.total_train_samples // self.num_checkpoints

    @property
    def steps_per_window(self) -> int:
        return self.samples_per_window // self.global_batch_size

    @property
    def total_steps(self) -> int:
        return self.steps_per_window * self.num_checkpoints

    def check(self, world_size: int = 1) -> None:
        """Raise a clear error on inconsistent fields (called before training starts)."""
        _ = self.accum_steps_for(world_size), self.samples_per_window
        if self.remat and self.grad_backend != "autograd":
            raise ValueError("train.remat needs train.grad_backend='autograd' (torch.func has no saved-tensor hooks)")
        if self.schedule.warmup_steps > self.total_steps:
            raise ValueError(
                f"train.schedule.warmup_steps ({self.schedule.warmup_steps}) exceeds the run's {self.total_steps} steps"
            )


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Where a run lives and how it reports; shared by every experiment."""

    run_dir: str = "runs/default"
    tracker: Literal["aim", "none"] = "aim"
    aim_repo: str | None = None  # default: <run_dir>/aim
    device: str = "cpu"
    peak_tflops: float | None = None  # MFU denominator; None measures the matmul peak at start
    print_config: bool = False  # print the resolved config and exit without training
    # Under torchrun: a collective waiting longer than this (a peer crashed or hangs) raises instead of
    # hanging. Must exceed the slowest rank's first-step compile time.
    dist_timeout_s: float = 1800.0
