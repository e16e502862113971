"""Throughput of the robotics data path: the loader (2 cameras x 2 image offsets at 128 px, 16-step
action chunks, decode + collate into batches of 32) with 0, 1 and 2 DataLoader workers, reported as
samples/s and samples/s per worker, with float32 or uint8 batch images (a float32 batch is 25 MB to
move from a worker through shared memory, about as costly as decoding it here); and the stats command
(lowdim members only) in samples/s.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/pytest bench/test_robot_loader.py --benchmark-columns=mean,stddev,rounds -s

Images are smooth gradients plus noise (JPEG sizes like rendered scenes, ~5 KB at quality 90).
"""

import numpy as np
import pytest

from foundry.data.episode import Episode
from foundry.data.loader import iterate_batches
from foundry.data.plan import sequential_plan
from foundry.data.robot import RobotConfig, dataset_dims, robot_functions
from foundry.data.robot_stats import compute_stats
from foundry.data.robot_write import WindowSpec, write_robot_dataset
from foundry.data.rotations import matrix_to_rot6d, rot6d_to_matrix
from foundry.data.shards import index_dataset

CAMERAS, OFFSETS, SIZE, BATCH = ("scene", "wrist"), (-1, 0), 128, 32


def episode(i: int, n: int, size: int) -> Episode:
    rng = np.random.default_rng(i)
    pose = np.concatenate(
        [np.cumsum(rng.normal(0, 0.01, (n, 3)), 0), matrix_to_rot6d(rot6d_to_matrix(rng.normal(size=(n, 6)))),
         rng.uniform(size=(n, 1))], -1,
    )  # fmt: skip
    ramp = np.linspace(0, 200, size)[None, :, None, None] + np.linspace(0, 50, size)[None, None, :, None]
    drift = 3 * np.arange(n)[:, None, None, None]  # frames differ over time
    images = {c: (ramp + drift + rng.normal(0, 8, (n, size, size, 3))).clip(0, 255).astype(np.uint8) for c in CAMERAS}
    return Episode(f"ep{i}", {"pose": pose, "action": np.roll(pose, -1, 0)}, images, {"original": [f"task {i}"]})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    window = WindowSpec(past=2, future=15, cameras=CAMERAS, image_offsets=OFFSETS)
    episodes = (episode(i, 64, SIZE) for i in range(8))
    return write_robot_dataset(episodes, tmp_path_factory.mktemp("robot"), window=window, samples_per_shard=64)


@pytest.mark.parametrize("workers", [0, 1, 2])
@pytest.mark.parametrize("images", ["float32", "uint8"])
def test_robot_loader_throughput(benchmark, dataset, images, workers):
    cfg = RobotConfig(cameras=CAMERAS, image_offsets=OFFSETS, image_size=SIZE, action_horizon=16, past_steps=1,
                      uint8_images=images == "uint8")  # fmt: skip
    decode, collate = robot_functions(cfg, batch_size=BATCH, dims=dataset_dims(dataset, cfg))
    plan = sequential_plan(index_dataset(dataset))

    def run():
        it = iterate_batches(plan, batch_size=BATCH, decode=decode, collate=collate, seed=0, num_workers=workers)
        return sum(int(b["valid"].sum()) for b in it)

    assert benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1) == len(plan)
    per_s = len(plan) / benchmark.stats.stats.mean
    benchmark.extra_info.update(samples_per_s=round(per_s), samples_per_s_per_worker=round(per_s / max(workers, 1)))
    print(f"\n{images} images, {workers} workers: {per_s:,.0f} samples/s ({per_s / max(workers, 1):,.0f} per worker; "
          f"{len(plan)} samples incl. worker start-up)")  # fmt: skip


def test_robot_stats_throughput(benchmark, tmp_path_factory):
    window = WindowSpec(past=2, future=15, cameras=("scene",))
    episodes = (episode(i, 100, 8) for i in range(40))
    path = write_robot_dataset(episodes, tmp_path_factory.mktemp("stats"), window=window, samples_per_shard=500)
    stats = benchmark.pedantic(lambda: compute_stats(path, log=None), rounds=2, iterations=1)
    n = stats["fields"]["pose"]["per_step"]["count"][2]
    per_s = n / benchmark.stats.stats.mean
    benchmark.extra_info.update(samples_per_s=round(per_s))
    print(f"\nstats: {n} samples, {per_s:,.0f} samples/s (3 fields x 18 steps x 10 dims of digests)")
