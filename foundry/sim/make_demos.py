"""Make the tabletop demonstration dataset: scripted-expert episodes -> robotics shards + statistics.

Usage:

    python -m foundry.sim.make_demos --out data/tabletop --episodes 2000       # ~1.5 min on 2 cores, ~0.7 GB
    python -m foundry.sim.make_demos --out /tmp/demos --episodes 8                 # smoke test, ~3 s
    python -m foundry.sim.make_demos --out data/pick --tasks place_in_bowl stack --noise 0.5 --image-size 128

Writes `OUT/train` and `OUT/val` (each `manifest.jsonl` + `<split>-NNNNN.tar` shards + `stats.json`, the
normalization statistics of `foundry.data.robot_stats`, "action_rel" and "next_pose_rel" included) and
`OUT/config.json` (this config). Episode j of a split runs task `tasks[j % len(tasks)]` (round robin, so tasks
are balanced) from the env seed `SeedSequence([seed, split, j, attempt])` (train 0, val 1: disjoint streams);
its id is `<task>-<split>-<j:06d>`. Success: by default only successful demonstrations are kept: a failed
attempt is retried with the next attempt's seed, up to `max_attempts`, and the episode is dropped if all fail
(rare: the experts succeed ~100% at noise <= 0.5). With `--keep-failed` the first attempt is kept whatever its
outcome. Either way every sample's `metadata.json` records the episode's task, env seed, attempt, noise, steps
and `success`, and the summary reports the success rate per task (successes / attempts).

Episodes are simulated, rendered and encoded (`episode_samples`) in `workers` processes, `chunk` episodes
per task, and written by this process in episode order (through a seeded shuffle buffer), so the output
bytes depend on the config, never on `workers`. Progress goes to stderr, the summary to stdout.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from foundry.data.manifest import read_manifest
from foundry.data.robot_write import WindowSpec, episode_samples, write_robot_samples
from foundry.sim.rollout import expert_episode
from foundry.sim.tabletop import TASK_FAMILIES, TabletopConfig

SPLITS = {"train": 0, "val": 1}  # the seed stream of each split
RELATIVE_FIELDS = ("action", "next_pose")  # also summarized relative to the anchor pose (robot_stats)


@dataclasses.dataclass(frozen=True)
class MakeDemosConfig:
    """Options of `python -m foundry.sim.make_demos`."""

    # Output directory; gets train/, val/ and config.json.
    out: str = "data/tabletop"
    # Episodes in OUT/train.
    episodes: int = 2000
    # Episodes in OUT/val; -1: 5% of `episodes` (at least 1), 0: no val split.
    val_episodes: int = -1
    # Task families, run round robin.
    tasks: tuple[str, ...] = TASK_FAMILIES
    # Expert noise (1 = 1 cm position, 0.1 rad yaw std per step): diverse demonstrations.
    noise: float = 0.3
    # Side of the square camera images in pixels.
    image_size: int = 64
    cameras: tuple[str, ...] = ("scene", "wrist")
    # Objects in each scene besides the ones the instruction names (0 .. 4).
    num_distractors: int = 2
    # Frames stored per camera and sample, relative to the anchor step.
    image_offsets: tuple[int, ...] = (-1, 0)
    # Lowdim steps stored before / after the anchor: proprio history up to `past`, action chunks of up to
    # `future` + 1 steps (the chunk includes the anchor).
    past: int = 2
    future: int = 9
    jpeg_quality: int = 90
    # Keep failed first attempts (success recorded) instead of retrying with a new seed.
    keep_failed: bool = False
    # Attempts per episode before a (never successful) episode is dropped.
    max_attempts: int = 5
    samples_per_shard: int = 512
    # Seeded buffer mixing episodes inside shards (0: episode order).
    shuffle_buffer: int = 2048
    seed: int = 0
    # Simulation processes; 0 uses all cores. The output does not depend on it.
    workers: int = 0
    # Episodes per task handed to a worker.
    chunk: int = 4

    def __post_init__(self) -> None:
        if not self.tasks or (unknown := [t for t in self.tasks if t not in TASK_FAMILIES]):
            unknown = [t for t in self.tasks if t not in TASK_FAMILIES]
            raise ValueError(f"make_demos --tasks {list(self.tasks)}: unknown {unknown}; choose from {TASK_FAMILIES}")
        if self.episodes < 1 or self.val_episodes < -1:
            raise ValueError(f"need episodes >= 1, val_episodes >= -1, got {self.episodes}, {self.val_episodes}")
        if self.noise < 0 or self.max_attempts < 1 or self.workers < 0 or self.chunk < 1:
            raise ValueError("need noise >= 0, max_attempts >= 1, workers >= 0, chunk >= 1")
        if self.past < 0 or self.future < 0 or not self.image_offsets or self.samples_per_shard < 1:
            raise ValueError("need past >= 0, future >= 0, image_offsets non-empty, samples_per_shard >= 1")
        self.sim  # noqa: B018 - TabletopConfig checks image_size and cameras

    @property
    def num_val(self) -> int:
        return max(1, round(0.05 * self.episodes)) if self.val_episodes < 0 else self.val_episodes

    @property
    def sim(self) -> TabletopConfig:
        return TabletopConfig(
            image_size=self.image_size, cameras=self.cameras, tasks=self.tasks, num_distractors=self.num_distractors
        )

    @property
    def window(self) -> WindowSpec:
        return WindowSpec(past=self.past, future=self.future, cameras=self.cameras,
                          image_offsets=self.image_offsets, jpeg_quality=self.jpeg_quality)  # fmt: skip


def env_seed(seed: int, split: str, j: int, attempt: int) -> int:
    return int(np.random.SeedSequence([seed, SPLITS[split], j, attempt]).generate_state(1)[0])


def demo_samples(cfg: MakeDemosConfig, split: str, j: int) -> tuple[str, list[bool], list[dict]]:
    """Episode j of `split`: (task, outcome of each attempt, its samples; empty when dropped)."""
    task = cfg.tasks[j % len(cfg.tasks)]
    outcomes: list[bool] = []
    for attempt in range(1 if cfg.keep_failed else cfg.max_attempts):
        ep, ok = expert_episode(cfg.sim, env_seed(cfg.seed, split, j, attempt), task, noise=cfg.noise)
        outcomes.append(ok)
        if ok or cfg.keep_failed:
            ep = dataclasses.replace(
                ep, episode_id=f"{task}-{split}-{j:06d}", metadata={**ep.metadata, "attempt": attempt}
            )
            return task, outcomes, list(episode_samples(ep, cfg.window))
    return task, outcomes, []


def _chunk(args: tuple[MakeDemosConfig, str, int, int]) -> list[tuple[str, list[bool], list[dict]]]:
    cfg, split, lo, hi = args
    return [demo_samples(cfg, split, j) for j in range(lo, hi)]


def split_samples(cfg: MakeDemosConfig, split: str, n: int, counts: Counter, log: Callable[[str], None]) -> Iterator:
    """The samples of the `n` episodes of `split` in episode order; `counts` gathers per-task outcomes."""
    tasks = [(cfg, split, lo, min(lo + cfg.chunk, n)) for lo in range(0, n, cfg.chunk)]
    workers = min(cfg.workers or os.cpu_count() or 1, len(tasks))
    if workers <= 1:
        chunks = map(_chunk, tasks)
    else:  # imap keeps task order, so the output does not depend on the worker count
        pool = get_context("spawn").Pool(workers)  # spawn: no forked copy of a caller's torch threads
        chunks = pool.imap(_chunk, tasks)
    start, done, samples, last = time.perf_counter(), 0, 0, 0.0
    try:
        for chunk in chunks:
            for task, outcomes, episode in chunk:
                counts[task, "attempts"] += len(outcomes)
                counts[task, "successes"] += sum(outcomes)
                counts[task, "episodes"] += bool(episode)
                samples += len(episode)
                yield from episode
            done += len(chunk)
            elapsed = time.perf_counter() - start
            if done == n or elapsed - last > 2.0:
                rate = done / elapsed
                log(f"{split}: {done}/{n} episodes, {samples} samples, {rate:.1f} episodes/s, "
                    f"eta {(n - done) / rate:.0f} s")  # fmt: skip
                last = elapsed
    finally:
        if workers > 1:
            pool.terminate()
            pool.join()


def make_demos(cfg: MakeDemosConfig, log: Callable[[str], None] | None = None) -> dict:
    """Build the dataset; returns the summary (per split: episodes, attempts, per-task success rates,
    samples, MB; seconds, episodes/s, samples/s; `format_summary` prints it). Progress goes to `log`
    (default: stderr)."""
    from foundry.data.robot_stats import RobotStatsConfig, robot_stats

    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    start, out = time.perf_counter(), Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1) + "\n")
    summary: dict = {"out": str(out), "splits": {}}
    for split, n in (("train", cfg.episodes), ("val", cfg.num_val)):
        if n == 0:
            continue
        counts: Counter = Counter()
        samples = split_samples(cfg, split, n, counts, log)
        manifest = write_robot_samples(samples, out / split, samples_per_shard=cfg.samples_per_shard, prefix=split,
                                       shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed, log=log)  # fmt: skip
        robot_stats(RobotStatsConfig(dataset=str(out / split), relative_fields=RELATIVE_FIELDS), log=log)
        entries = read_manifest(manifest)
        summary["splits"][split] = {
            "episodes": sum(counts[t, "episodes"] for t in cfg.tasks),
            "attempts": sum(counts[t, "attempts"] for t in cfg.tasks),
            "success_rate": {
                t: counts[t, "successes"] / counts[t, "attempts"] for t in cfg.tasks if counts[t, "attempts"]
            },
            "samples": sum(e.num_sequences for e in entries),
            "mb": sum((out / split / f"{e.shard}.tar").stat().st_size for e in entries) / 1e6,
        }
    seconds = time.perf_counter() - start
    splits = summary["splits"].values()
    summary |= {"seconds": seconds, "episodes_per_s": sum(s["attempts"] for s in splits) / seconds,
                "samples_per_s": sum(s["samples"] for s in splits) / seconds}  # fmt: skip
    return summary


def format_summary(summary: dict) -> str:
    lines = []
    for split, s in summary["splits"].items():
        rates = ", ".join(f"{t} {r:.0%}" for t, r in s["success_rate"].items())
        lines.append(f"{split}: {s['episodes']} episodes ({s['attempts']} attempts; success {rates}), "
                     f"{s['samples']} samples, {s['mb']:.1f} MB -> {Path(summary['out']) / split}")  # fmt: skip
    lines.append(f"done in {summary['seconds']:.1f} s: {summary['episodes_per_s']:.1f} episodes/s, "
                 f"{summary['samples_per_s']:.0f} samples/s (statistics included)")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    import tyro

    print(format_summary(make_demos(tyro.cli(MakeDemosConfig, description=__doc__))))


if __name__ == "__main__":
    main()
