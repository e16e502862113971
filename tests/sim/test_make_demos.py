"""make_demos: a tiny dataset that the robot loader reads, statistics, success records, worker independence."""

import dataclasses
import json

import numpy as np
import pytest
import tyro

from foundry.data.loader import iterate_batches
from foundry.data.manifest import read_manifest
from foundry.data.normalize import Normalizer, NormConfig, load_stats
from foundry.data.plan import window_plan
from foundry.data.robot import RobotConfig, dataset_dims, robot_functions
from foundry.data.shards import ShardFiles, index_dataset, read_sample
from foundry.sim.make_demos import MakeDemosConfig, demo_samples, format_summary, make_demos
from foundry.sim.tabletop import TabletopEnv

TINY = MakeDemosConfig(episodes=6, val_episodes=2, tasks=("push", "lift", "place_in_bowl"), image_size=32,
                       samples_per_shard=40, shuffle_buffer=16, workers=1, chunk=1)  # fmt: skip


def files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos")
    return out, make_demos(dataclasses.replace(TINY, out=str(out)), log=lambda line: None)


def test_writes_train_and_val_with_statistics(tiny):
    out, summary = tiny
    train, val = summary["splits"]["train"], summary["splits"]["val"]
    assert (train["episodes"], train["attempts"], val["episodes"]) == (6, 6, 2)
    assert train["success_rate"] == {"push": 1.0, "lift": 1.0, "place_in_bowl": 1.0}
    for split, s in summary["splits"].items():
        entries = read_manifest(out / split)
        assert sum(e.num_sequences for e in entries) == s["samples"] and all(e.shard.startswith(split) for e in entries)
        stats = load_stats(out / split / "stats.json")
        fields = {"pose", "action", "action_rel", "next_pose", "next_pose_rel", "next_pose_delta"}
        assert fields <= stats["fields"].keys()
    assert len(read_manifest(out / "train")) > 1  # several shards at 40 samples each
    assert json.loads((out / "config.json").read_text())["episodes"] == 6
    assert "train: 6 episodes (6 attempts; success push 100%, lift 100%, place_in_bowl 100%)" in format_summary(summary)


def test_samples_record_task_seed_and_success(tiny):
    out, _ = tiny
    with ShardFiles() as handles:
        index = index_dataset(out / "train")
        metas = [json.loads(read_sample(s, i, handles)["metadata.json"]) for s in index.shards for i in range(len(s))]
    episodes = {m["episode_id"]: m["episode"] for m in metas}
    assert sorted(episodes) == sorted(f"{t}-train-{j:06d}" for j, t in enumerate(TINY.tasks * 2))
    assert all(e["success"] and e["attempt"] == 0 and e["noise"] == TINY.noise for e in episodes.values())
    assert metas[0]["image_offsets"] == [-1, 0] and metas[0]["camera_names"] == ["scene", "wrist"]
    assert [m["episode_id"] for m in metas[:8]] != sorted(m["episode_id"] for m in metas[:8])  # shuffled


def test_the_robot_loader_reads_a_normalized_batch(tiny):
    out, _ = tiny
    path = out / "train"
    cfg = RobotConfig(cameras=("scene", "wrist"), image_offsets=(-1, 0), image_size=32, action_horizon=10,
                      past_steps=2, relative_actions=True)  # fmt: skip
    norm = Normalizer.from_stats(load_stats(path / "stats.json"), NormConfig())
    decode, collate = robot_functions(cfg, batch_size=8, dims=dataset_dims(path, cfg), normalizer=norm)
    plan = window_plan([index_dataset(path)], [1.0], seed=0, window=0, samples_per_window=16)
    batch = next(iterate_batches(plan, batch_size=8, decode=decode, collate=collate, seed=0))
    assert batch["images"].shape == (8, 4, 3, 32, 32) and batch["actions"].shape == (8, 10, 10)
    assert batch["proprio"].shape == (8, 3, 10) and batch["valid"].all()
    assert batch["action_mask"][:, 0].all() and np.isfinite(batch["actions"].numpy()).all()


def test_output_does_not_depend_on_the_worker_count(tiny, tmp_path):
    out, _ = tiny
    make_demos(dataclasses.replace(TINY, out=str(tmp_path), workers=2), log=lambda line: None)
    ours, theirs = files(tmp_path), files(out)
    assert ours.keys() == theirs.keys() and "train/stats.json" in ours
    assert [k for k in ours if k != "config.json" and ours[k] != theirs[k]] == []


def test_failed_demonstrations_are_retried_dropped_or_kept():
    cfg = dataclasses.replace(TINY, tasks=("lift",), noise=5.0, max_attempts=2)  # 5 cm of noise: the expert fails
    task, outcomes, samples = demo_samples(cfg, "train", 0)
    assert (task, outcomes, samples) == ("lift", [False, False], [])
    task, outcomes, samples = demo_samples(dataclasses.replace(cfg, keep_failed=True), "train", 0)
    meta = json.loads(samples[0]["metadata.json"])
    assert outcomes == [False] and len(samples) == 120 and meta["episode"]["success"] is False


def test_cli_flags_and_config_errors():
    args = "--out /tmp/x --episodes 8 --tasks push lift --noise 0.5 --image-size 32 --workers 2 --keep-failed"
    cfg = tyro.cli(MakeDemosConfig, args=[*args.split(), "--num-distractors", "1"])
    assert (cfg.tasks, cfg.noise, cfg.image_size, cfg.keep_failed, cfg.num_val) == (("push", "lift"), 0.5, 32, True, 1)
    env = TabletopEnv(cfg.sim)  # the demonstrations' scenes: the named object + 1 distractor
    for seed in range(4):
        env.reset(seed=seed)
        assert len(env.state.pos) == 2
    with pytest.raises(ValueError, match=r"num_distractors=5: use 0\.\.4"):
        MakeDemosConfig(num_distractors=5)
    with pytest.raises(ValueError, match=r"unknown \['pour'\]"):
        MakeDemosConfig(tasks=("push", "pour"))
    with pytest.raises(ValueError, match="image_size"):
        MakeDemosConfig(image_size=8)
    assert MakeDemosConfig(episodes=8).num_val == 1 and MakeDemosConfig(episodes=2000).num_val == 100
