"""End-to-end tests of the LLM stage: smoke run, bit-exact resume (in process and after SIGKILL),
interrupted checkpoints, CLI overrides and errors."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import tyro

from experiments import llm as exp
from foundry import tree
from foundry.data.make_text import MakeTextConfig, make_text
from foundry.train import checkpoint
from foundry.train.config import RunConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shakespeare(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shakespeare")
    make_text(MakeTextConfig(out=str(out), max_files=2, samples_per_shard=32), log=lambda *a: None)
    return out


def debug_cfg(data: Path, run_dir: Path) -> exp.LLMExperiment:
    cfg = exp.PRESETS["llm-debug"][1]
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(
            cfg.data,
            manifests=(str(data / "train/manifest.jsonl"),),
            val_manifests=(str(data / "val/manifest.jsonl"),),
            val_samples=8,
        ),
        train=dataclasses.replace(cfg.train, total_train_samples=64, global_batch_size=8, micro_batch_size=4),
        run=RunConfig(run_dir=str(run_dir), tracker="none", peak_tflops=1.0),
    )


def final_state(run_dir: Path) -> dict:
    return checkpoint.load(checkpoint.latest(run_dir)).state


def test_debug_preset_trains_and_saves_everything(shakespeare, tmp_path):
    result = exp.train(debug_cfg(shakespeare, tmp_path / "run"))
    assert result.metrics["val_loss"] < 6.0  # below ln(512): it learned something
    assert {"train_loss", "train_tokens_per_s", "train_mfu", "val_perplexity"} <= set(result.metrics)
    ckpt = checkpoint.latest(tmp_path / "run")
    assert ckpt.name == "step_00000008"
    assert (ckpt / "tokenizer.json").exists() and (tmp_path / "run/config.json").exists()
    saved = json.loads((ckpt / "config.json").read_text())
    assert saved["model"]["vocab_size"] == 512  # resolved from the tokenizer
    assert checkpoint.load(ckpt).extra["cursor"] == {"window": 2, "batch": 0}


def test_resume_is_bit_exact_and_interrupted_checkpoints_are_ignored(shakespeare, tmp_path):
    cfg_a = debug_cfg(shakespeare, tmp_path / "a")
    exp.train(cfg_a)
    reference = final_state(tmp_path / "a")

    cfg_b = debug_cfg(shakespeare, tmp_path / "b")
    exp.train(cfg_b, max_steps=6)  # "interrupted" two steps into window 2
    assert checkpoint.latest(tmp_path / "b").name == "step_00000004"  # stopped mid-window 2
    exp.train(cfg_b)
    resumed = final_state(tmp_path / "b")
    assert tree.equal(resumed, reference), tree.first_difference(resumed, reference)

    # A save interrupted before its state.json landed is not a checkpoint: training redoes window 2.
    (checkpoint.latest(tmp_path / "b") / "state.json").unlink()
    assert checkpoint.latest(tmp_path / "b").name == "step_00000004"
    exp.train(cfg_b)
    assert tree.equal(final_state(tmp_path / "b"), reference)


def test_training_resumes_bit_exactly_after_sigkill(shakespeare, tmp_path):
    reference_dir = tmp_path / "ref"
    cfg = debug_cfg(shakespeare, reference_dir)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, total_train_samples=128, num_checkpoints=4))
    exp.train(cfg)
    reference = final_state(reference_dir)

    run_dir = tmp_path / "killed"
    args = [
        sys.executable, str(REPO / "experiments/llm.py"), "llm-debug",
        "--data.manifests", *cfg.data.manifests, "--data.val-manifests", *cfg.data.val_manifests,
        "--data.val-samples", "8", "--train.total-train-samples", "128", "--train.num-checkpoints", "4",
        "--train.micro-batch-size", "4",
        "--run-dir", str(run_dir), "--tracker", "none", "--peak-tflops", "1.0",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while checkpoint.latest(run_dir) is None:
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert checkpoint.latest(run_dir).name != "step_00000016"  # killed before the end
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resumed from" in done.stderr
    assert tree.equal(final_state(run_dir), reference), tree.first_difference(final_state(run_dir), reference)


def test_cli_overrides_and_print_config(shakespeare, tmp_path):
    cfg = tyro.extras.overridable_config_cli(
        exp.PRESETS,
        args=["llm-debug", "--data.manifests", "a/manifest.jsonl", "b/manifest.jsonl", "--data.weights", "0.7", "0.3",
              "--train.total-train-samples", "128", "--model.n-layers", "3"],
    )  # fmt: skip
    assert cfg.data.manifests == ("a/manifest.jsonl", "b/manifest.jsonl") and cfg.data.weights == (0.7, 0.3)
    assert cfg.train.total_train_samples == 128 and cfg.model.n_layers == 3
    out = subprocess.run(
        [sys.executable, str(REPO / "experiments/llm.py"), "llm-debug", "--print-config",
         "--run-dir", str(tmp_path / "never")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["model"]["d_model"] == exp.PRESETS["llm-debug"][1].model.d_model
    assert not (tmp_path / "never").exists()  # printing the config trains nothing


def test_bad_inputs_are_clear_errors(shakespeare, tmp_path):
    cfg = debug_cfg(shakespeare, tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="make_text"):
        exp.train(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, manifests=("nope/manifest.jsonl",))))
    with pytest.raises(ValueError, match="multiple of num_checkpoints x global_batch_size"):
        exp.train(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, total_train_samples=60)))
    exp.train(cfg)
    wider = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, d_model=32, vocab_size=512))
    with pytest.raises(ValueError, match=r"shape mismatch: embed\.w"):
        exp.train(dataclasses.replace(wider, run=dataclasses.replace(cfg.run, run_dir=str(tmp_path / "b")),
                                      init=exp.InitConfig(from_run=str(tmp_path / "run"))))  # fmt: skip


def test_start_from_another_runs_weights(shakespeare, tmp_path):
    cfg = debug_cfg(shakespeare, tmp_path / "base")
    exp.train(cfg)
    base = final_state(tmp_path / "base")["params"]
    child = dataclasses.replace(
        cfg, run=dataclasses.replace(cfg.run, run_dir=str(tmp_path / "child")),
        init=exp.InitConfig(from_run=str(tmp_path / "base")),
        train=dataclasses.replace(cfg.train, schedule=dataclasses.replace(cfg.train.schedule, peak_lr=1e-12)),
    )  # fmt: skip
    exp.train(child)
    assert tree.allclose(final_state(tmp_path / "child")["params"], base, atol=1e-6)
    assert (tmp_path / "child/tokenizer.json").read_text() == (tmp_path / "base/tokenizer.json").read_text()
    assert torch.equal(final_state(tmp_path / "child")["step"], torch.tensor(8))


@pytest.mark.slow
def test_compiled_training_resumes_bit_exactly(shakespeare, tmp_path):
    # The same as the eager resume test, through torch.compile(fullgraph=True) and bf16 autocast.
    def compiled(run_dir):
        cfg = debug_cfg(shakespeare, run_dir)
        return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, compile=True, precision="bf16"))

    exp.train(compiled(tmp_path / "a"))
    exp.train(compiled(tmp_path / "b"), max_steps=5)
    exp.train(compiled(tmp_path / "b"))
    a, b = final_state(tmp_path / "a"), final_state(tmp_path / "b")
    assert tree.equal(a, b), tree.first_difference(a, b)
