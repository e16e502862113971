"""Normalization statistics of a robotics dataset, written to `stats.json` next to its manifest.

Usage:

    python -m foundry.data.robot_stats data/robot/train                # -> data/robot/train/stats.json
    python -m foundry.data.robot_stats data/robot/train --relative-fields   # no "<field>_rel" statistics
    python -m foundry.data.robot_stats data/robot/train --out /tmp/stats.json --compression 100

Streams only the `lowdim.npz` member of each sample (seeking by the shard index: image bytes are never
read, let alone decoded) and accumulates, per lowdim field, global and per-step statistics (offsets from
the anchor) on the real steps of each window (`past_mask | future_mask`); see `foundry.data.normalize`.
Each of `relative_fields` (xyz + rot6d + extra columns) is also accumulated relative to
`reference_field` at the anchor, as "<field>_rel" (translation in the reference's axes) and "<field>_delta"
(in the world's): what `RobotConfig(relative_actions=True, relative_frame=...)` feeds the model. The digest state goes to the `stats.state.json` sidecar, so `merge_stats` combines datasets
without re-reading them. Progress is logged every few seconds.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import tyro

from foundry.data.manifest import DataError, manifest_path
from foundry.data.normalize import StatsAccumulator, save_stats
from foundry.data.robot import MASKS, anchor_index, load_lowdim
from foundry.data.rotations import relative_pose
from foundry.data.shards import DatasetIndex, ShardFiles, index_dataset


@dataclasses.dataclass(frozen=True)
class RobotStatsConfig:
    """Options of `python -m foundry.data.robot_stats`."""

    # Dataset directory (or its manifest.jsonl).
    dataset: tyro.conf.Positional[Annotated[str, tyro.conf.arg(metavar="DATASET_DIR")]]
    # Pose fields also summarized relative to the reference pose at the anchor, as "<field>_rel".
    relative_fields: tuple[str, ...] = ("action",)
    # The pose the relative fields are expressed in (xyz + rot6d, at the anchor step).
    reference_field: str = "pose"
    # t-digest compression: more centroids, more accurate percentiles, bigger state.
    compression: float = 200.0
    # Samples stacked per accumulator update (memory vs Python overhead).
    batch_samples: int = 2048
    # Output path; empty: stats.json next to the manifest.
    out: str = ""


def lowdim_members(index: DatasetIndex) -> Iterator[tuple[str, str, bytes]]:
    """(shard path, key, lowdim.npz bytes) of every sample, reading nothing else."""
    with ShardFiles() as files:
        for shard in index.shards:
            f = files.get(shard.path)
            for sample in shard.samples:
                member = next(((o, n) for ext, o, n in sample.members if ext == "lowdim.npz"), None)
                if member is None:
                    found = [ext for ext, _, _ in sample.members]
                    raise DataError(f"shard {shard.path}: sample {sample.key!r} has no 'lowdim.npz' (it has {found})")
                f.seek(member[0])
                yield shard.path, sample.key, f.read(member[1])


def compute_stats(
    path: str | Path,
    *,
    relative_fields: tuple[str, ...] = ("action",),
    reference_field: str = "pose",
    compression: float = 200.0,
    batch_samples: int = 2048,
    log: Callable[[str], None] | None = print,
    log_every_s: float = 5.0,
) -> dict[str, Any]:
    """The statistics dict of one dataset (see the module docstring)."""
    index = index_dataset(path)
    acc = StatsAccumulator(compression)
    pending: dict[tuple[int, int], list[dict[str, np.ndarray]]] = defaultdict(list)  # by (T, anchor)
    start = last = time.perf_counter()
    for done, (shard, key, data) in enumerate(lowdim_members(index), start=1):
        try:
            lowdim = load_lowdim(data)
            a = anchor_index(lowdim["past_mask"])
            if bad := [k for k, v in lowdim.items() if k not in MASKS and not np.isfinite(v).all()]:
                raise DataError(f"lowdim fields {bad} hold NaN or Inf")
            if relative_fields and (missing := [f for f in (*relative_fields, reference_field) if f not in lowdim]):
                raise DataError(f"relative statistics need fields {missing} (pass --relative-fields with "
                                f"none to skip them); the sample has {sorted(lowdim)}")  # fmt: skip
        except DataError as e:
            raise DataError(f"shard {shard}: sample {key!r}: {e}") from None
        group = pending[len(lowdim["past_mask"]), a]
        group.append(lowdim)
        if len(group) >= batch_samples:
            _accumulate(acc, group, a, relative_fields, reference_field)
            group.clear()
        if log is not None and time.perf_counter() - last > log_every_s:
            last = time.perf_counter()
            rate = done / (last - start)
            log(f"{done}/{index.num_samples} samples, {rate:.0f}/s, eta {(index.num_samples - done) / rate:.0f} s")
    for (_, a), group in pending.items():
        if group:
            _accumulate(acc, group, a, relative_fields, reference_field)
    stats = acc.result()
    if log is not None:
        seconds = time.perf_counter() - start
        log(f"{index.num_samples} samples in {seconds:.1f} s ({index.num_samples / max(seconds, 1e-9):.0f}/s)")
    return stats


def _accumulate(acc: StatsAccumulator, group: list, anchor: int, relative: tuple[str, ...], reference: str) -> None:
    names = [k for k in group[0] if k not in MASKS]
    if bad := next((sorted(g) for g in group if sorted(g) != sorted(group[0])), None):
        raise DataError(f"samples of one dataset disagree on their lowdim fields: {sorted(group[0])} vs {bad}")
    mask = np.stack([g["past_mask"] | g["future_mask"] for g in group])  # (N, T)
    stacked = {k: np.stack([g[k] for g in group]).astype(np.float64) for k in names}  # (N, T, C) each
    for k in names:
        acc.update(k, stacked[k], mask, anchor=anchor)
    for k in relative:
        ref = stacked[reference][:, anchor : anchor + 1]  # (N, 1, D)
        acc.update(f"{k}_rel", relative_pose(ref, stacked[k]), mask, anchor=anchor)
        acc.update(f"{k}_delta", relative_pose(ref, stacked[k], "world"), mask, anchor=anchor)


def robot_stats(cfg: RobotStatsConfig, log: Callable[[str], None] | None = print) -> Path:
    """Compute and save; returns the stats.json path."""
    stats = compute_stats(
        cfg.dataset,
        relative_fields=cfg.relative_fields,
        reference_field=cfg.reference_field,
        compression=cfg.compression,
        batch_samples=cfg.batch_samples,
        log=log,
    )
    out = Path(cfg.out) if cfg.out else manifest_path(cfg.dataset).parent / "stats.json"
    save_stats(stats, out)
    if log is not None:
        log(f"wrote {out} ({', '.join(sorted(stats['fields']))})")
    return out


def main() -> None:
    robot_stats(tyro.cli(RobotStatsConfig, description=__doc__))


if __name__ == "__main__":
    main()
