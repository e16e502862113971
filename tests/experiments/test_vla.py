"""End-to-end test of the VLA stage: vla-debug on a tiny demonstration set; the checkpoint holds the
tokenizer and the normalization statistics that the policy needs."""

import dataclasses
import math

import pytest

from experiments import vla as exp
from foundry.sim.make_demos import MakeDemosConfig, make_demos
from foundry.train import checkpoint
from foundry.train.config import RunConfig


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos")
    cfg = MakeDemosConfig(out=str(out), episodes=6, val_episodes=1, image_size=32, workers=1, chunk=1)
    make_demos(cfg, log=lambda line: None)
    return out


def debug_cfg(data, run_dir) -> exp.VLAExperiment:
    cfg = exp.PRESETS["vla-debug"][1]
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(
            cfg.data,
            manifests=(str(data / "train/manifest.jsonl"),),
            val_manifests=(str(data / "val/manifest.jsonl"),),
            val_samples=8,
        ),
        train=dataclasses.replace(cfg.train, total_train_samples=16),
        run=RunConfig(run_dir=str(run_dir), tracker="none", peak_tflops=1.0),
        eval_samples=4,
    )


def test_debug_preset_trains_and_saves_policy_assets(demos, tmp_path):
    result = exp.train(debug_cfg(demos, tmp_path / "run"))
    assert math.isfinite(result.metrics["val_loss"]) and math.isfinite(result.metrics["val_action_mse"])
    ckpt = checkpoint.latest(tmp_path / "run")
    assert (ckpt / "tokenizer.json").is_file() and (ckpt / "stats.json").is_file()
    loaded = checkpoint.load(ckpt)
    assert set(loaded.state["params"]) == {"vlm", "obs_embedding", "action_head"}
    model = loaded.config["model"]
    assert model["obs_token_id"] >= 0 and model["head"]["action_dim"] == 10 and model["head"]["horizon"] == 4
    assert loaded.config["robot"]["image_size"] == model["vlm"]["vit"]["image_size"]
