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
