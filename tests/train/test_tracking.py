"""Trackers: the null tracker, and an Aim run that is written, closed, resumed and read back.

Run: OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 .venv/bin/pytest tests/train/test_tracking.py -q
"""

from __future__ import annotations

import math

import pytest
import torch

from foundry.train import tracking


def test_null_tracker_accepts_everything(tmp_path):
    tracker = tracking.NullTracker()
    tracker.log_params({"a": {"b": 1}})
    tracker.log({"loss": 1.0}, step=0, context={"subset": "train"})
    tracker.log_text("sample", "hello", step=0)
    tracker.close()
    assert list(tmp_path.iterdir()) == []


def test_metrics_file_reads_back_and_the_last_record_of_a_step_wins(tmp_path):
    tracker = tracking.make_tracker("none", run_dir=tmp_path, repo=None, experiment="x")
    tracker.log({"loss": torch.tensor(2.0), "lr": 1e-3}, step=10, context={"subset": "train"})
    tracker.log({"loss": 1.5, "skipped": None}, step=20, context={"subset": "train"})
    tracker.log({"loss": 1.7}, step=20, context={"subset": "val"})
    tracker.log_text("sample", "To be", step=20)
    tracker.close()
    resumed = tracking.make_tracker("none", run_dir=tmp_path, repo=None, experiment="x")  # appends
    resumed.log({"loss": 1.4}, step=20, context={"subset": "train"})  # the step redone after a resume
    resumed.close()
    with (tmp_path / tracking.METRICS_FILE).open("a") as f:
        f.write('{"step": 30, "metr')  # a process killed mid-line
    series, texts = tracking.read_metrics(tmp_path / tracking.METRICS_FILE)
    assert series == {"train": {"loss": [(10, 2.0), (20, 1.4)], "lr": [(10, 1e-3)]}, "val": {"loss": [(20, 1.7)]}}
    assert texts == {"sample": [(20, "To be")]}


def test_unknown_kind_and_value_conversion(tmp_path):
    with pytest.raises(ValueError, match="unknown tracker 'wandb'"):
        tracking.make_tracker("wandb", run_dir=tmp_path, repo=None, experiment="x")
    assert tracking.to_float(torch.tensor(2.5, dtype=torch.bfloat16)) == 2.5
    assert tracking.to_float(3) == 3.0 and tracking.to_float(True) == 1.0 and tracking.to_float(None) is None
    assert math.isnan(tracking.to_float(float("nan")))
    with pytest.raises(ValueError, match="one element"):
        tracking.to_float(torch.zeros(2))


def test_aim_run_resumes_and_reads_back(tmp_path):
    aim = pytest.importorskip("aim")
    from aim.storage.context import Context

    run_dir = tmp_path / "run"
    config = {"model": {"dim": 64, "sizes": (1, 2)}, "lr": 3e-4, "out": run_dir}
    tracker = tracking.make_tracker("aim", run_dir=run_dir, repo=None, experiment="unit", tags=["tiny"])
    tracker.log_params(config)
    tracker.log({"loss": torch.tensor(2.5), "tokens": 128}, step=0, context={"subset": "train"})
    tracker.log({"loss": float("nan")}, step=1, context={"subset": "train"})
    tracker.log({"loss": 3.0, "skipped": None}, step=1, context={"subset": "val"})
    tracker.log_text("sample", "To be, or not", step=1)
    tracker.close()
    tracker.close()  # idempotent
    run_hash = (run_dir / tracking.HASH_FILE).read_text().strip()
    aim_tracker, metrics_file = tracker.trackers  # Aim and metrics.jsonl
    assert run_hash == aim_tracker.run_hash and metrics_file.path == run_dir / tracking.METRICS_FILE

    resumed = tracking.make_tracker("aim", run_dir=run_dir, repo=None, experiment="unit", tags=["tiny"])
    assert resumed.trackers[0].run_hash == run_hash
    resumed.log({"loss": 2.0}, step=2, context={"subset": "train"})
    resumed.close()

    repo_path = run_dir / "aim"
    assert aim.Repo(str(repo_path)).get_run(run_hash) is None  # not indexed yet: Aim's documented behaviour
    tracking.index_aim_run(repo_path, run_hash)
    repo = aim.Repo(str(repo_path))
    assert [r.hash for r in repo.iter_runs()] == [run_hash]
    run = repo.get_run(run_hash)
    assert run["hparams"] == {"model": {"dim": 64, "sizes": [1, 2]}, "lr": 3e-4, "out": str(run_dir)}
    assert run.experiment == "unit" and run.tags == ["tiny"]
    series = {(m.name, m.context.to_dict()["subset"]): m for m in run.metrics()}
    assert sorted(series) == [("loss", "train"), ("loss", "val"), ("tokens", "train")]
    steps, (values,) = series["loss", "train"].data.view("val").items_list()
    assert list(steps) == [0, 1, 2]
    assert values[0] == 2.5 and math.isnan(values[1]) and values[2] == 2.0
    sample = run.get_text_sequence("sample", Context({}))
    text_steps, (texts,) = sample.data.view("val").items_list()
    assert list(text_steps) == [1] and texts[0].data == "To be, or not"
