"""Robotics shards: write -> read round trip through iterate_batches, masks, errors, instructions,
relative actions, heterogeneous robots."""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest
import torch

from foundry.data.episode import Episode
from foundry.data.images import preprocess
from foundry.data.loader import iterate_batches
from foundry.data.manifest import DataError
from foundry.data.normalize import Normalizer, NormConfig, load_stats
from foundry.data.plan import sample_seed, sequential_plan, window_plan
from foundry.data.robot import RobotConfig, batch_instructions, dataset_dims, images_to_float, robot_functions
from foundry.data.robot_stats import RobotStatsConfig, robot_stats
from foundry.data.robot_write import WindowSpec, write_robot_dataset
from foundry.data.rotations import compose_pose, matrix_to_rot6d, relative_pose, rot6d_to_matrix
from foundry.data.shards import ShardFiles, index_dataset, read_sample

WINDOW = WindowSpec(past=2, future=3, cameras=("scene", "wrist"), image_offsets=(-1, 0))
CFG = RobotConfig(cameras=("scene", "wrist"), image_offsets=(-1, 0), image_size=16, action_horizon=4, past_steps=2)


def gray(t: int, cam: int) -> int:
    """The (uniform) pixel value of frame t of camera cam: which frame a decoded image shows."""
    return 20 + 20 * t + 110 * cam


def episode(i: int, n: int = 6, action_dim: int = 10) -> Episode:
    rng = np.random.default_rng(i)
    rot = matrix_to_rot6d(rot6d_to_matrix(rng.normal(size=(n, 6))))
    pose = np.concatenate([rng.normal(size=(n, 3)), rot, rng.uniform(size=(n, 1))], -1).astype(np.float32)
    action = np.roll(pose, -1, 0)[:, :action_dim]  # the next pose (a 7-dim robot: xyz + 4 other columns)
    images = {
        cam: np.stack([np.full((12, 20, 3), gray(t, c), np.uint8) for t in range(n)])
        for c, cam in enumerate(("scene", "wrist"))
    }
    instructions = {"original": [f"pick {i}"], "randomized": [f"grab {i}", f"take {i}", f"lift {i}"]}
    return Episode(f"ep{i}", {"pose": pose, "action": action.astype(np.float32)}, images, instructions, {"n": n})


@pytest.fixture
def dataset(tmp_path):
    return write_robot_dataset([episode(0), episode(1, n=3)], tmp_path / "robot", window=WINDOW, samples_per_shard=4)


def batches(path, cfg=CFG, batch_size=3, num_workers=0, on_bad_sample="error", **kw):
    dims = kw.pop("dims", None) or dataset_dims(path, cfg)
    decode, collate = robot_functions(cfg, batch_size=batch_size, dims=dims, **kw)
    plan = sequential_plan(index_dataset(path))
    return list(iterate_batches(plan, batch_size=batch_size, decode=decode, collate=collate, seed=0,
                                num_workers=num_workers, on_bad_sample=on_bad_sample))  # fmt: skip


def test_sample_members_and_metadata(dataset):
    index = index_dataset(dataset)
    assert index.num_samples == 9 and index.shard_sizes == (4, 4, 1)
    with ShardFiles() as files:
        s = read_sample(index.shards[0], 0, files)
    assert s["__key__"] == "ep0-000000"
    assert sorted(k for k in s if not k.startswith("__")) == [
        "language_instructions.json", "lowdim.npz", "metadata.json",
        "scene_t-1.jpg", "scene_t0.jpg", "wrist_t-1.jpg", "wrist_t0.jpg",
    ]  # fmt: skip
    meta = json.loads(s["metadata.json"])
    assert meta["anchor_timestep"] == 0 and meta["anchor_relative_idx"] == 2 and meta["image_timesteps"] == [0, 0]
    assert (meta["past_padding"], meta["future_padding"], meta["camera_names"]) == (2, 0, ["scene", "wrist"])
    lowdim = np.load(io.BytesIO(s["lowdim.npz"]))
    assert lowdim["action"].shape == (6, 10) and lowdim["action"].dtype == np.float32
    assert lowdim["past_mask"].tolist() == [False, False, True, False, False, False]
    assert lowdim["future_mask"].tolist() == [False, False, False, True, True, True]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_round_trip_through_the_loader(dataset, num_workers):
    out = batches(dataset, num_workers=num_workers)
    assert len(out) == 3
    b = out[1]  # samples 3..5: ep0 anchors 3, 4, 5 (episode length 6)
    assert b["images"].shape == (3, 4, 3, 16, 16) and b["actions"].shape == (3, 4, 10)
    assert b["proprio"].shape == (3, 3, 10) and b["valid"].all() and b["_skipped"] == 0
    ep = episode(0)
    for row, t in enumerate((3, 4, 5)):
        # Images: cameras x offsets (-1, 0), camera-major; JPEG of a flat gray is exact up to +-1.
        want = [preprocess(ep.images[cam][f], size=16) for cam in ("scene", "wrist") for f in (t - 1, t)]
        np.testing.assert_allclose(b["images"][row].numpy(), np.stack(want), atol=2 / 127.5)
        steps = np.arange(t, t + 4).clip(max=5)
        np.testing.assert_array_equal(b["actions"][row].numpy(), ep.lowdim["action"][steps])
        np.testing.assert_array_equal(b["action_mask"][row].numpy(), np.arange(t, t + 4) < 6)
        np.testing.assert_array_equal(b["proprio"][row].numpy(), ep.lowdim["pose"][t - 2 : t + 1])
    assert b["proprio_mask"].all() and b["action_dim_mask"].all()
    # A short episode: padding before the start and after the end, frames clamped to frame 0.
    last = out[2]  # samples 6..8 = ep1 anchors 0..2 (length 3)
    assert last["proprio_mask"][0].tolist() == [False, False, True]
    assert last["action_mask"].tolist() == [[True, True, True, False], [True, True, False, False], [True] + [False] * 3]
    assert last["images"][0, 0].mean().item() == pytest.approx(gray(0, 0) / 127.5 - 1, abs=0.02)


def test_uint8_images_convert_exactly_like_preprocess(dataset):
    floats = batches(dataset)[0]["images"]
    uint8 = batches(dataset, RobotConfig(**{**vars(CFG), "uint8_images": True}))[0]["images"]
    assert uint8.dtype == torch.uint8 and floats.dtype == torch.float32
    torch.testing.assert_close(images_to_float(uint8), floats, rtol=0, atol=0)


def test_errors_name_shard_key_and_fields(dataset):
    cfg = RobotConfig(cameras=("scene",), image_size=8, action_horizon=2, action_fields=("action", "torque"))
    with pytest.raises(DataError, match=r"'torque'.*not in .*\['action', 'pose'\]"):
        batches(dataset, cfg, dims=(10, 10))
    with pytest.raises(DataError, match=r"robot-00000.tar: sample 'ep0-000000': image 'top_t0.jpg' is not in"):
        batches(dataset, RobotConfig(cameras=("top",), image_size=8, action_horizon=2), dims=(10, 10))
    with pytest.raises(DataError, match="needs 3 past"):
        batches(dataset, RobotConfig(cameras=("scene",), image_size=8, action_horizon=2, past_steps=3))
    with pytest.raises(DataError, match=r"'torque'.*\['action', 'pose'\]"):
        dataset_dims(dataset, cfg)


def test_nonfinite_error_or_skip(tmp_path):
    bad = episode(2)
    bad.lowdim["action"][4, 1] = np.nan  # in the windows of anchors 1..5 (past 2, future 3)
    path = write_robot_dataset([episode(0), bad], tmp_path / "nan", window=WINDOW, samples_per_shard=4)
    with pytest.raises(DataError, match=r"nan/robot-00001.tar: sample 'ep2-000001': lowdim fields \['action'\]"):
        batches(path, batch_size=4, num_workers=2)
    out = batches(path, RobotConfig(**{**vars(CFG), "on_nonfinite": "skip"}), batch_size=4)
    valid = torch.cat([b["valid"] for b in out])
    assert valid.tolist() == [True] * 7 + [False] * 5  # 12 samples: ep2's anchors 1..5 masked
    assert sum(int(b["_nonfinite"]) for b in out) == 5 and sum(int(b["_skipped"]) for b in out) == 0
    assert not out[2]["action_mask"][1:].any() and out[2]["images"][1:].abs().sum() == 0
    # The loader's own skip mode works too (counted in _skipped).
    out = batches(path, batch_size=4, on_bad_sample="skip")
    assert sum(int(b["_skipped"]) for b in out) == 5


def test_instructions_are_drawn_by_the_sample_seed(dataset):
    cfg = RobotConfig(**{**vars(CFG), "instruction_types": ("original", "randomized")})
    decode, _ = robot_functions(cfg, batch_size=1, dims=(10, 10))
    with ShardFiles() as files:
        sample = read_sample(index_dataset(dataset).shards[0], 1, files)
    draws = [decode(sample, seed)["instruction"] for seed in range(40)]
    assert draws == [decode(sample, seed)["instruction"] for seed in range(40)]
    assert set(draws) == {"pick 0", "grab 0", "take 0", "lift 0"}
    assert draws.count("pick 0") > 10  # a type first (1/2), then a variant
    plan = sequential_plan(index_dataset(dataset))
    assert (
        batch_instructions(plan, 0, batch_size=4, cfg=cfg, seed=7)[1]
        == decode(sample, sample_seed(7, 1))["instruction"]
    )
    assert batch_instructions(plan, 2, batch_size=4, cfg=cfg, seed=7)[1:] == [None] * 3
    # With a tokenizer the batch carries ids: here one id per word, padded with pad_id.
    out = batches(dataset, cfg, batch_size=4, tokenize=WordLengths(), pad_id=-1)
    assert out[0]["instruction_ids"].shape == (4, 64) and out[0]["instruction_ids"][0, :3].tolist() in (
        [4, 1, -1],
        [5, 1, -1],
    )
    assert out[0]["instruction_mask"].sum(1).tolist() == [2, 2, 2, 2]
    pickle.loads(pickle.dumps(robot_functions(cfg, batch_size=2, dims=(10, 10), tokenize=WordLengths())))


class WordLengths:
    def __call__(self, text: str) -> list[int]:
        return [len(w) for w in text.split()]


def test_relative_actions_and_normalization(dataset):
    stats = load_stats(robot_stats(RobotStatsConfig(str(dataset)), log=None))
    assert {"action", "action_rel", "pose"} <= stats["fields"].keys()
    cfg = RobotConfig(**{**vars(CFG), "relative_actions": True})
    raw = batches(dataset, cfg)[1]
    ep = episode(0)
    for row, t in enumerate((3, 4, 5)):
        steps = np.arange(t, t + 4).clip(max=5)
        np.testing.assert_allclose(
            raw["actions"][row].numpy(), relative_pose(ep.lowdim["pose"][t], ep.lowdim["action"][steps]), atol=1e-5
        )
        np.testing.assert_allclose(
            compose_pose(ep.lowdim["pose"][t], raw["actions"][row].numpy()), ep.lowdim["action"][steps], atol=1e-5
        )
    norm = Normalizer.from_stats(stats, NormConfig(mode="min_max", scope="step", clip=None))
    normed = batches(dataset, cfg, normalizer=norm)[1]
    assert normed["actions"][normed["action_mask"]].abs().max() <= 1 + 1e-5  # padding steps may exceed
    back = norm.unnormalize(normed["actions"], "action_rel", offsets=range(4))
    torch.testing.assert_close(back, raw["actions"], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"lacks \['action_rel'\]"):
        robot_functions(
            cfg, batch_size=2, dims=(10, 10), normalizer=Normalizer.from_stats(stats, NormConfig(), ["pose"])
        )


def test_heterogeneous_robots_pad_to_a_common_width(tmp_path):
    window = WindowSpec(past=0, future=1, cameras=("scene",))
    a = write_robot_dataset([episode(0, action_dim=10)], tmp_path / "a", window=window, samples_per_shard=3)
    b = write_robot_dataset([episode(1, action_dim=7)], tmp_path / "b", window=window, samples_per_shard=3)
    cfg = RobotConfig(image_size=8, action_horizon=2, pad_action_dim=12, pad_proprio_dim=11)
    plan = window_plan([index_dataset(a), index_dataset(b)], [0.5, 0.5], seed=0, window=0, samples_per_window=8)
    decode, collate = robot_functions(cfg, batch_size=8)
    batch = next(iterate_batches(plan, batch_size=8, decode=decode, collate=collate, seed=0))
    assert batch["actions"].shape == (8, 2, 12) and batch["proprio"].shape == (8, 1, 11)
    widths = batch["action_dim_mask"].sum(1)
    assert widths.tolist() == [10 if d == 0 else 7 for d in plan.dataset.tolist()] and 7 in widths and 10 in widths
    assert (batch["actions"][~batch["action_dim_mask"][:, None, :].expand(-1, 2, -1)] == 0).all()
    assert batch["proprio_dim_mask"].sum(1).tolist() == [10] * 8
    with pytest.raises(DataError, match=r"set robot\.pad_action_dim"):
        batches(a, RobotConfig(image_size=8, action_horizon=2, pad_action_dim=8))
