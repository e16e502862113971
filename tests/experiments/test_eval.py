"""End to end: the eval CLI with the scripted expert and the random baseline on 2 episodes per task."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from experiments import eval as exp
from foundry.sim.tabletop import TASK_FAMILIES

ROOT = Path(__file__).resolve().parents[2]


def test_expert_then_random_with_comparison(tmp_path):
    expert_dir, out = tmp_path / "expert-results", tmp_path / "eval"
    rates = exp.main(exp.EvalExperiment(policy="expert", episodes_per_task=2, workers=2, out=str(expert_dir)))
    assert rates["expert"]["overall"].n == 2 * len(TASK_FAMILIES) and rates["expert"]["overall"].rate >= 0.8

    cmd = [sys.executable, "experiments/eval.py", "--policy", "random", "--episodes-per-task", "2",
           "--workers", "0", "--out", str(out), "--compare", str(expert_dir)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "| **overall** |" in proc.stdout and "p (random vs expert)" in proc.stdout

    for task in TASK_FAMILIES:
        data = json.loads((out / "random" / task / "results.json").read_text())
        assert data["max_sample_size"] == 2 and len(data["evaluations"]) == 2
        assert {r["task"] for r in data["evaluations"]} == {task}
    assert not (out / "expert").exists()  # compared, not copied
    with Image.open(out / "success.png") as img:
        assert img.size == (960, 480) and img.mode == "RGB"
    summary = (out / "summary.md").read_text()
    assert summary.count("\n|") == 3 + len(TASK_FAMILIES)  # header, rule, tasks, overall
    assert "| random | expert |" in summary


def test_run_dir_errors(tmp_path):
    with pytest.raises(SystemExit, match="not 'expert', 'random' or an existing run directory"):
        exp.main(exp.EvalExperiment(policy=str(tmp_path / "missing"), out=str(tmp_path / "out")))
    try:
        import foundry.infer.policy  # noqa: F401
    except ModuleNotFoundError:
        with pytest.raises(RuntimeError, match=r"Policy\.load"):
            exp.main(exp.EvalExperiment(policy=str(tmp_path), out=str(tmp_path / "out")))
