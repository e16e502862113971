"""Write robotics shards: one sample per anchor time step of an `Episode` (read them with
`foundry.data.robot`).

Sample members, key `<episode_id>-<anchor:06d>`, window of T = past + 1 + future steps, anchor at index
`past` (`anchor_relative_idx`):
- `<camera>_t<offset>.jpg` (e.g. `scene_t-1.jpg`, `wrist_t0.jpg`): the frame at anchor + offset. Frames
  before the episode start clamp to frame 0 and after its end to the last frame (an offset never fails,
  the edge frame repeats); metadata `image_timesteps` lists the frames used, in the members' order.
- `lowdim.npz`: every lowdim field of the episode, float32 (T, C). Steps outside the episode repeat the
  edge step (finite values) and are masked out: `past_mask` (T,) bool is True on real steps at or before
  the anchor, `future_mask` (T,) bool on real steps after it, so `past_mask | future_mask` marks the real
  steps and the anchor is the last True of `past_mask` (`foundry.data.robot.anchor_index`).
- `metadata.json`: episode_id, anchor_timestep, anchor_relative_idx, episode_length, camera_names,
  image_offsets, image_timesteps, past_padding, future_padding, lowdim_fields, episode (its metadata).
- `language_instructions.json`: the episode's instructions by type, e.g. {"original": [..], "randomized": [..]}.

Usage:

    path = write_robot_dataset(episodes, "data/robot/train", window=WindowSpec(past=2, future=15))
    # or, encoding in worker processes (see foundry.sim.make_demos):
    samples = [s for ep in episodes for s in episode_samples(ep, window)]   # in the workers
    path = write_robot_samples(samples, "data/robot/train", shuffle_buffer=2048)   # in the parent
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from foundry.data.episode import Episode
from foundry.data.manifest import manifest_path
from foundry.data.robot import MASKS
from foundry.data.shards import write_shards


@dataclasses.dataclass(frozen=True)
class WindowSpec:
    """What the writer stores per sample."""

    past: int = 4  # lowdim steps stored before the anchor
    future: int = 16  # lowdim steps stored after the anchor
    cameras: tuple[str, ...] = ()  # empty: every camera of the episode, in its order
    image_offsets: tuple[int, ...] = (0,)  # frames stored per camera, relative to the anchor
    jpeg_quality: int = 90
    anchor_stride: int = 1  # one sample every `anchor_stride` steps


def episode_samples(episode: Episode, spec: WindowSpec) -> Iterator[dict[str, bytes | str]]:
    """The samples of one episode (one per anchor), ready for `write_shards`; usable in worker processes."""
    episode.check()
    eid, n = episode.episode_id, episode.length
    cameras = spec.cameras or tuple(episode.images)
    for name in (eid, *cameras):
        if not name or "." in name or "/" in name:
            raise ValueError(f"episode {eid}: name {name!r} must be non-empty, without '.' or '/'")
    if missing := [c for c in cameras if c not in episode.images]:
        raise ValueError(f"episode {eid}: cameras {missing} not in its images {sorted(episode.images)}")
    if reserved := [k for k in episode.lowdim if k in MASKS]:
        raise ValueError(f"episode {eid}: lowdim names {reserved} are reserved for the masks")
    lowdim = {k: np.asarray(v, dtype=np.float32) for k, v in episode.lowdim.items()}
    jpegs: dict[tuple[str, int], bytes] = {}  # each frame is encoded once, whatever the offsets
    pos = np.arange(spec.past + 1 + spec.future)
    for t in range(0, n, spec.anchor_stride):
        steps = t - spec.past + pos
        real = (steps >= 0) & (steps < n)
        arrays = {k: a[steps.clip(0, n - 1)] for k, a in lowdim.items()}
        arrays |= {"past_mask": real & (pos <= spec.past), "future_mask": real & (pos > spec.past)}
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        frames = [min(max(t + o, 0), n - 1) for o in spec.image_offsets]
        meta = {
            "episode_id": eid,
            "anchor_timestep": t,
            "anchor_relative_idx": spec.past,
            "episode_length": n,
            "camera_names": list(cameras),
            "image_offsets": list(spec.image_offsets),
            "image_timesteps": frames,
            "past_padding": int(max(0, spec.past - t)),
            "future_padding": int(max(0, t + spec.future - (n - 1))),
            "lowdim_fields": sorted(lowdim),
            "episode": episode.metadata,
        }
        sample: dict[str, bytes | str] = {
            "__key__": f"{eid}-{t:06d}",
            "lowdim.npz": buf.getvalue(),
            "metadata.json": json.dumps(meta, default=_json_default).encode(),
            "language_instructions.json": json.dumps(episode.instructions).encode(),
        }
        for cam in cameras:
            for off, frame in zip(spec.image_offsets, frames):
                if (cam, frame) not in jpegs:
                    jpegs[cam, frame] = _jpeg(episode.images[cam][frame], spec.jpeg_quality)
                sample[f"{cam}_t{off}.jpg"] = jpegs[cam, frame]
        yield sample


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic | np.ndarray):
        return obj.tolist()
    raise TypeError(f"episode metadata value {obj!r} ({type(obj).__name__}) is not JSON-serializable")


def _jpeg(frame: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_robot_dataset(
    episodes: Iterable[Episode],
    out_dir: str | os.PathLike,
    *,
    window: WindowSpec,
    samples_per_shard: int = 256,
    prefix: str = "robot",
    shuffle_buffer: int = 0,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write the episodes' samples as shards + manifest (atomic, `write_shards`); returns the manifest.
    Episode ids must be unique; see `write_robot_samples` for the order of the samples."""
    return write_robot_samples(
        _unique(episodes, window), out_dir, samples_per_shard=samples_per_shard, prefix=prefix,
        shuffle_buffer=shuffle_buffer, seed=seed, log=log,
    )  # fmt: skip


def write_robot_samples(
    samples: Iterable[dict[str, bytes | str]],
    out_dir: str | os.PathLike,
    *,
    samples_per_shard: int = 256,
    prefix: str = "robot",
    shuffle_buffer: int = 0,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write `episode_samples` output as shards + manifest; returns the manifest.

    Samples are written in the given order unless `shuffle_buffer` > 0: then a seeded buffer of that many
    samples mixes episodes inside shards (the plan shuffles whole shards and samples within a shard, so
    without it a batch holds few episodes). The output depends only on the samples, their order and `seed`.
    """
    it = iter(samples)
    if shuffle_buffer > 0:
        it = _shuffled(it, shuffle_buffer, np.random.default_rng(seed))
    write_shards(it, out_dir, samples_per_shard=samples_per_shard, prefix=prefix, log=log)
    return manifest_path(out_dir)


def _unique(episodes: Iterable[Episode], window: WindowSpec) -> Iterator[dict[str, bytes | str]]:
    seen: set[str] = set()
    for episode in episodes:
        if episode.episode_id in seen:
            raise ValueError(f"episode id {episode.episode_id!r} appears twice: sample keys would collide")
        seen.add(episode.episode_id)
        yield from episode_samples(episode, window)


def _shuffled(items: Iterator[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    buffer: list[Any] = []
    for item in items:
        buffer.append(item)
        if len(buffer) == size:
            i = int(rng.integers(size))
            buffer[i], buffer[-1] = buffer[-1], buffer[i]
            yield buffer.pop()
    yield from (buffer[i] for i in rng.permutation(len(buffer)))
