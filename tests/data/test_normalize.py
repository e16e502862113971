"""Statistics (exact moments, percentiles, merging, the stats command) and normalizers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from foundry.data.episode import Episode
from foundry.data.normalize import FieldStats, Normalizer, NormConfig, StatsAccumulator, load_stats, merge_stats
from foundry.data.robot_stats import RobotStatsConfig, robot_stats
from foundry.data.robot_write import WindowSpec, write_robot_dataset
from foundry.data.rotations import matrix_to_rot6d, rot6d_to_matrix


def episode(i: int, n: int) -> Episode:
    rng = np.random.default_rng(i)
    pose = np.concatenate(
        [rng.normal(i, 1, (n, 3)), matrix_to_rot6d(rot6d_to_matrix(rng.normal(size=(n, 6)))), np.ones((n, 1))], -1
    )
    images = {"scene": np.zeros((n, 8, 8, 3), np.uint8)}
    return Episode(f"e{i}", {"pose": pose, "action": np.roll(pose, -1, 0)}, images, {"original": ["go"]})


def stats_of(tmp_path, name, episodes):
    write_robot_dataset(episodes, tmp_path / name, window=WindowSpec(past=2, future=3), samples_per_shard=16)
    return load_stats(robot_stats(RobotStatsConfig(str(tmp_path / name), compression=100), log=None))


def test_merged_stats_equal_the_stats_of_the_union(tmp_path):
    eps = [episode(i, n) for i, n in enumerate((30, 7, 25, 40))]
    a, b, both = stats_of(tmp_path, "a", eps[:2]), stats_of(tmp_path, "b", eps[2:]), stats_of(tmp_path, "ab", eps)
    merged = merge_stats(a, b)
    assert sorted(merged["fields"]) == ["action", "action_delta", "action_rel", "pose"]
    for name, f in both["fields"].items():
        m = merged["fields"][name]
        assert m["per_step"]["offsets"] == f["per_step"]["offsets"] == [-2, -1, 0, 1, 2, 3]
        for scope in ("global", "per_step"):
            assert m[scope]["count"] == f[scope]["count"]
            for k in ("mean", "std", "min", "max"):  # exact up to float rounding
                np.testing.assert_allclose(m[scope][k], f[scope][k], rtol=1e-9, atol=1e-12)
            for k in ("p1", "p5", "p95", "p99"):  # digest accuracy (small data: nearly exact)
                np.testing.assert_allclose(m[scope][k], f[scope][k], rtol=0.02, atol=0.02)
    # Global statistics count every real window step: 6 steps per window minus the padding.
    pose = both["fields"]["pose"]
    assert pose["global"]["count"] == sum(pose["per_step"]["count"]) and pose["per_step"]["count"][2] == 102
    assert json.loads((tmp_path / "ab" / "stats.json").read_text()).keys() >= {"fields", "percentiles"}
    assert "state" not in json.loads((tmp_path / "ab" / "stats.json").read_text())


def test_exact_moments_and_percentiles():
    x = np.random.default_rng(0).normal(5, 3, (20_000, 2))
    acc = FieldStats(2)
    for part in np.array_split(x, 7):
        acc.update(part)
    s = acc.summary()
    np.testing.assert_allclose(s["mean"], x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(s["std"], x.std(0), rtol=1e-12)
    np.testing.assert_array_equal(s["min"], x.min(0))
    np.testing.assert_allclose(s["p1"], np.percentile(x, 1, axis=0), rtol=0.02)
    with pytest.raises(ValueError, match="NaN"):
        acc.update(np.array([[np.nan, 0.0]]))


def zero_range_stats():
    """Field "x": column 0 varies, column 1 is constant; windows of 3 steps, anchor at index 1."""
    rng = np.random.default_rng(0)
    values = np.stack([rng.uniform(-4, 6, (500, 3)), np.full((500, 3), 7.0)], -1)  # (N, T, C)
    acc = StatsAccumulator()
    acc.update("x", values, np.ones((500, 3), bool), anchor=1)
    return acc.result(), values


@pytest.mark.parametrize("mode", ["percentile_1_99", "std", "min_max"])
@pytest.mark.parametrize("scope", ["global", "step"])
def test_normalize_round_trip_and_zero_range(mode, scope):
    stats, values = zero_range_stats()
    norm = Normalizer.from_stats(stats, NormConfig(mode=mode, scope=scope, clip=None))
    offsets = [-1, 0, 1] if scope == "step" else None
    y = norm.normalize(values, "x", offsets=offsets)
    assert np.isfinite(y).all() and y.dtype == values.dtype
    np.testing.assert_allclose(norm.unnormalize(y, "x", offsets=offsets), values, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(y[..., 1], 0.0)  # constant column: centered, never divided by 0
    if mode == "min_max":
        assert y[..., 0].min() >= -1 and y[..., 0].max() <= 1
    if mode == "percentile_1_99":
        assert 0.005 < (y[..., 0] < -1).mean() < 0.02
    # Torch in, torch out (same values, dtype and device); inference sees an unseen constant exactly.
    t = torch.tensor(values, dtype=torch.float32)
    yt = norm.normalize(t, "x", offsets=offsets)
    assert yt.dtype == torch.float32
    torch.testing.assert_close(yt, torch.tensor(y, dtype=torch.float32), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(norm.unnormalize(yt, "x", offsets=offsets), t, rtol=1e-5, atol=1e-4)
    other = norm.normalize(t + 1e-3, "x", offsets=offsets)
    assert torch.isfinite(other).all()


def test_clip_and_errors():
    stats, values = zero_range_stats()
    norm = Normalizer.from_stats(stats, NormConfig(mode="min_max", clip=(-1.5, 1.5)))
    assert np.abs(norm.normalize(values * 100, "x")).max() == 1.5
    with pytest.raises(ValueError, match=r"no field 'y'; it has \['x'\]"):
        norm.normalize(values, "y")
    with pytest.raises(ValueError, match=r"no statistics for fields \['y'\]"):
        Normalizer.from_stats(stats, NormConfig(), fields=["y"])
    step = Normalizer.from_stats(stats, NormConfig(scope="step"))
    with pytest.raises(ValueError, match="offsets"):
        step.normalize(values, "x")
    with pytest.raises(ValueError, match="outside"):
        step.normalize(values, "x", offsets=[0, 1, 2])
    with pytest.raises(ValueError, match="no digest state"):
        merge_stats({k: v for k, v in stats.items() if k != "state"}, stats)
