"""The VLA policy: a saved run reloads to the same chunks as the in-memory model, and runs closed loop."""

import dataclasses
import functools
import json

import numpy as np
import pytest
import torch

from experiments import vla as exp
from foundry import rng
from foundry.data.images import preprocess
from foundry.data.normalize import Normalizer, NormConfig, load_stats
from foundry.data.rotations import compose_pose
from foundry.data.tokenizer import load_tokenizer
from foundry.eval.rollouts import EvalConfig, evaluate, load_trained_policy
from foundry.infer.policy import Policy
from foundry.models import vla
from foundry.sim.make_demos import MakeDemosConfig, make_demos
from foundry.sim.tabletop import TabletopConfig, TabletopEnv
from foundry.train import checkpoint
from foundry.train.config import RunConfig
from foundry.train.runs import config_from_dict


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("policy")
    make_demos(MakeDemosConfig(out=str(out / "demos"), episodes=6, val_episodes=1, image_size=32, workers=1, chunk=1),
               log=lambda line: None)  # fmt: skip
    cfg = exp.PRESETS["vla-debug"][1]
    data = out / "demos"
    cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, manifests=(str(data / "train"),), val_manifests=()),
        train=dataclasses.replace(cfg.train, total_train_samples=16, num_checkpoints=1),
        run=RunConfig(run_dir=str(out / "run"), tracker="none", peak_tflops=1.0),
    )
    exp.train(cfg)  # vla-debug trains eagerly (train.compile=False): no kernel compile
    return out / "run"


def observation(seed=1, task="push"):
    return TabletopEnv(TabletopConfig(image_size=32)).reset(seed=seed, task=task)


def test_a_loaded_policy_matches_the_in_memory_model(run_dir):
    policy = Policy.load(run_dir)
    for name in ("reset", "act", "observe"):  # the ActionChunkPolicy protocol
        assert callable(getattr(policy, name))
    obs = observation()
    policy.reset(seed=5)
    got = policy.act(obs)

    # The same chunk by hand, from the checkpoint's files and the training code paths.
    ckpt = checkpoint.latest(run_dir)
    config = json.loads((ckpt / "config.json").read_text())
    cfg = config_from_dict(vla.Config, config["model"])
    params = checkpoint.load_params(ckpt)
    size = config["robot"]["image_size"]
    frames = [preprocess(obs["images"][c], size=size) for c in ("scene", "wrist") for _ in (-1, 0)]
    norm = Normalizer.from_stats(load_stats(ckpt / "stats.json"), config_from_dict(NormConfig, config["norm"]))
    ids = load_tokenizer(ckpt / "tokenizer.json").encode(obs["instruction"]).ids
    batch = {
        "images": torch.from_numpy(np.stack(frames))[None],
        "proprio": torch.from_numpy(norm.normalize(obs["pose"].astype(np.float32), "pose"))[None, None],
        "instruction_ids": torch.tensor([ids]),
    }
    chunk = vla.sample_actions(params, cfg, batch, key=rng.fold_in(rng.key(5), 0), steps=4, compiled=False)[0]
    rel = norm.unnormalize(chunk.double().numpy(), "next_pose_delta")  # the preset: next_pose, world frame
    want = compose_pose(obs["pose"].astype(np.float64), rel, "world")
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)

    policy.reset(seed=5)  # the seed makes the chunk reproducible
    np.testing.assert_array_equal(policy.act(obs), got)


def test_act_returns_finite_chunks_and_the_previous_frame_is_one_step_back(run_dir):
    policy = Policy.load(run_dir, execute_steps=3)
    env = TabletopEnv(TabletopConfig(image_size=32))
    obs = env.reset(seed=2, task="lift")
    policy.reset(seed=0)
    first = policy.act(obs)
    assert first.shape == (3, 10) and np.isfinite(first).all()
    np.testing.assert_array_equal(policy.inputs(obs)["images"][0, 0].numpy(), policy.inputs(obs)["images"][0, 1])
    frames = []
    for action in first:
        obs, _, _ = env.step(action)
        frames.append(obs["images"]["scene"])
        if len(frames) < len(first):
            policy.observe(obs)
    batch = policy.inputs(obs)  # image offset -1 is the frame one env step back, as in training
    np.testing.assert_array_equal(batch["images"][0, 0].numpy(), preprocess(frames[-2], size=32))
    np.testing.assert_array_equal(batch["images"][0, 1].numpy(), preprocess(frames[-1], size=32))
    assert np.isfinite(policy.act(obs, instruction="lift the red cube")).all()


def test_closed_loop_smoke(run_dir):
    cfg = EvalConfig(tasks=("push", "lift"), episodes_per_task=1, max_steps=10, env=TabletopConfig(image_size=32))
    records = evaluate(functools.partial(load_trained_policy, run_dir=str(run_dir)), cfg)
    assert [r["task"] for r in records] == ["push", "lift"]
    assert all(r["failure"] in (None, "timeout") and r["steps"] > 0 for r in records), records
