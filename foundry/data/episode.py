"""One demonstration episode in memory: the interchange between a producer (a simulator, a converter
of another dataset) and the robotics shard writer (`foundry.data.robot_write`).

Every per-step array has the episode length T as its first dimension.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Episode:
    episode_id: str
    # Named float32 arrays of shape (T, C), e.g. "pose" (T, 10) = xyz + 6-D rotation + gripper,
    # "action" (T, 10) = the commanded target pose at each step (absolute).
    lowdim: dict[str, np.ndarray]
    # Camera name -> (T, H, W, 3) uint8 frames.
    images: dict[str, np.ndarray]
    # Instruction variants by type, at least {"original": [...]}; e.g. also "randomized" paraphrases.
    instructions: dict[str, list[str]]
    # Anything else worth keeping: task family, seed, success, ...
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def length(self) -> int:
        return next(iter(self.lowdim.values())).shape[0]

    def check(self) -> None:
        """Raise ValueError when arrays disagree on T or have the wrong rank/dtype."""
        t = self.length
        for name, a in self.lowdim.items():
            if a.ndim != 2 or a.shape[0] != t:
                raise ValueError(f"episode {self.episode_id}: lowdim {name!r} has shape {a.shape}, expected ({t}, C)")
        for cam, frames in self.images.items():
            if frames.ndim != 4 or frames.shape[0] != t or frames.shape[-1] != 3 or frames.dtype != np.uint8:
                raise ValueError(
                    f"episode {self.episode_id}: camera {cam!r} frames {frames.shape} {frames.dtype}, "
                    f"expected ({t}, H, W, 3) uint8"
                )
        if "original" not in self.instructions:
            raise ValueError(f"episode {self.episode_id}: instructions need an 'original' list")
