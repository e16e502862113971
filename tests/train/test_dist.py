"""Data-parallel training on 2 CPU processes (gloo, launched with torchrun): equivalence with one process
and twice the batch, checkpoints that resume across world sizes, rank-0-only files, and a failing rank
that stops the job with its message instead of a hang."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from experiments import llm as exp
from foundry import tree
from foundry.data.make_text import MakeTextConfig, make_text
from foundry.data.plan import rank_share, window_plan
from foundry.data.shards import index_dataset
from foundry.data.text import texts_from_manifests
from foundry.train import checkpoint, dist, runs
from foundry.train.config import RunConfig, TrainConfig

REPO = Path(__file__).resolve().parents[2]
JOB = REPO / "tests/train/dist_job.py"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("text")
    make_text(MakeTextConfig(out=str(out), max_files=2, samples_per_shard=32), log=lambda *a: None)
    # One tokenizer for every run, so runs differ only in how they are split into processes.
    (out / "tok").mkdir()
    texts = lambda: texts_from_manifests([out / "train/manifest.jsonl"], max_bytes=200_000)
    runs.run_tokenizer(out / "tok", init_run=None, path=None, train_texts=texts, vocab_size=512)
    return out


def cli_args(data: Path, run_dir: Path) -> list[str]:
    return [
        "llm-debug", "--data.manifests", str(data / "train/manifest.jsonl"),
        "--data.val-manifests", str(data / "val/manifest.jsonl"), "--data.val-samples", "8",
        "--tokenizer.path", str(data / "tok/tokenizer.json"), "--train.total-train-samples", "64",
        "--train.global-batch-size", "8", "--train.micro-batch-size", "2",
        "--run-dir", str(run_dir), "--tracker", "none", "--peak-tflops", "1.0",
    ]  # fmt: skip


def config(data: Path, run_dir: Path, **train) -> exp.LLMExperiment:
    cfg = exp.PRESETS["llm-debug"][1]
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(
            cfg.data, manifests=(str(data / "train/manifest.jsonl"),),
            val_manifests=(str(data / "val/manifest.jsonl"),), val_samples=8,
        ),
        tokenizer=dataclasses.replace(cfg.tokenizer, path=str(data / "tok/tokenizer.json")),
        train=dataclasses.replace(cfg.train, total_train_samples=64, global_batch_size=8, micro_batch_size=2, **train),
        run=RunConfig(run_dir=str(run_dir), tracker="none", peak_tflops=1.0),
    )  # fmt: skip


def torchrun(args: list[str], *, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*TORCHRUN, *args], env=ENV, capture_output=True, text=True, timeout=timeout)


def job(tmp_path: Path, name: str, runs_: list[tuple[exp.LLMExperiment, int | None]]) -> list[dict]:
    """Train `runs_` in one 2-process torchrun job; returns each rank's report."""
    report = tmp_path / f"{name}-report"
    report.mkdir()
    spec = {"timeout_s": 60, "report": str(report),
            "runs": [{"config": runs.to_dict(cfg), "max_steps": steps} for cfg, steps in runs_]}  # fmt: skip
    (tmp_path / f"{name}.json").write_text(json.dumps(spec))
    done = torchrun([str(JOB), str(tmp_path / f"{name}.json")])
    assert done.returncode == 0, done.stdout + done.stderr
    return [json.loads((report / f"rank{r}.json").read_text()) for r in range(2)]


def final(run_dir: Path) -> dict:
    return checkpoint.load(checkpoint.latest(run_dir)).state


def max_diff(a: dict, b: dict) -> float:
    return max((x.double() - y.double()).abs().max().item() for x, y in zip(tree.leaves(a), tree.leaves(b)))


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> dict:
    """The LLM experiment trained 8 steps x 8 rows by one process (in this one) and, through its real
    entry point under torchrun, by 2 processes of 4 rows."""
    root = tmp_path_factory.mktemp("reference")
    exp.train(config(data, root / "one"))
    done = torchrun([str(REPO / "experiments/llm.py"), *cli_args(data, root / "two")])
    assert done.returncode == 0, done.stdout + done.stderr
    return {"root": root, "one": final(root / "one"), "two": final(root / "two"), "out": done.stdout}


def test_two_processes_equal_one_process_with_twice_the_batch(reference):
    one, two = reference["one"], reference["two"]
    assert int(two["step"]) == 8
    diff = max_diff(one["params"], two["params"])
    print(f"max |params(2 x 4 rows) - params(1 x 8 rows)| = {diff:.3g}")
    assert diff < 1e-5
    assert max_diff(one["opt_state"], two["opt_state"]) < 1e-5
    # Only rank 0 wrote: one run dir with one config, one tokenizer, the two window checkpoints.
    run_dir = reference["root"] / "two"
    files = ["checkpoints", "config.json", "metrics.jsonl", "tokenizer.json"]
    assert sorted(p.name for p in run_dir.iterdir()) == files
    assert [p.name for p in checkpoint.list_checkpoints(run_dir)] == ["step_00000004", "step_00000008"]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_00000004", "step_00000008"]
    assert reference["out"].count('"val_loss"') == 1  # the final metrics are printed by rank 0 only


def test_checkpoints_resume_across_world_sizes(data, reference, tmp_path):
    one, two = reference["one"], reference["two"]
    # Interrupted runs: 1 process stops after window 1; 2 processes stop mid-window 2 (checkpoint at 4).
    exp.train(config(data, tmp_path / "from1"), max_steps=4)
    job(tmp_path, "interrupt", [(config(data, tmp_path / "from2"), 6)])
    assert checkpoint.latest(tmp_path / "from2").name == "step_00000004"
    shutil.copytree(tmp_path / "from2", tmp_path / "from2-again")

    exp.train(config(data, tmp_path / "from2"))  # saved by 2 processes, resumed by 1
    zero = config(data, tmp_path / "zero", shard_optimizer=True)
    resumed = [(config(data, tmp_path / "from1"), None), (config(data, tmp_path / "from2-again"), None), (zero, None)]
    reports = job(tmp_path, "resume", resumed)
    two_to_one, one_to_two, two_to_two = (final(tmp_path / d) for d in ("from2", "from1", "from2-again"))
    # Same world size: bit-exact. Another world size sums the micro-batch gradients in another order,
    # so only float rounding differs; the data cursor and step are the same.
    assert tree.equal(two_to_two, two), tree.first_difference(two_to_two, two)
    print(f"2->1 vs 1: {max_diff(two_to_one['params'], one['params']):.3g}, "
          f"1->2 vs 2: {max_diff(one_to_two['params'], two['params']):.3g}")  # fmt: skip
    assert max_diff(two_to_one["params"], one["params"]) < 1e-5
    assert max_diff(one_to_two["params"], two["params"]) < 1e-5
    for d in ("from1", "from2"):
        assert checkpoint.load(checkpoint.latest(tmp_path / d)).extra["cursor"] == {"window": 2, "batch": 0}

    # ZeRO-1 (sharded AdamW moments): the same training as plain data parallelism, a full checkpoint, and
    # half the optimizer state per rank.
    sharded = final(tmp_path / "zero")
    print(f"ZeRO-1 vs replicated AdamW, 2 processes: {max_diff(sharded['params'], two['params']):.3g}")
    # Same element-wise arithmetic as AdamW.update on a flat slice: bit-identical here (eager).
    assert tree.equal(sharded["params"], two["params"]), tree.first_difference(sharded["params"], two["params"])
    checkpoint.check_compatible(two["opt_state"], sharded["opt_state"], what="opt_state", source="zero")
    assert tree.equal(sharded["opt_state"], two["opt_state"])
    full = sum(x.numel() * x.element_size() for x in tree.leaves(one["opt_state"]))
    per_rank = [r[2]["opt_state_bytes"] for r in reports]
    print(f"optimizer state bytes: 1 process {full:,}; 2 processes with ZeRO-1 {per_rank} per rank")
    assert all(b <= full / 2 + 64 for b in per_rank)


def test_a_failing_rank_stops_the_job_with_its_message(tmp_path):
    spec = tmp_path / "fail.json"
    spec.write_text(json.dumps({"timeout_s": 30, "fail_rank": 1, "run_dir": str(tmp_path / "run")}))
    start = time.monotonic()
    done = torchrun([str(JOB), str(spec)], timeout=90)
    elapsed = time.monotonic() - start
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "rank 1/2 failed: DataError: shard data/bad-000001.tar: sample 'k7': truncated token ids" in out, out
    assert elapsed < 60, f"the job took {elapsed:.0f} s to stop"
    assert checkpoint.latest(tmp_path / "run") is None


def test_a_hanging_rank_makes_the_others_time_out(tmp_path):
    spec = tmp_path / "hang.json"
    spec.write_text(json.dumps({"timeout_s": 5, "fail_rank": 1, "hang": True, "run_dir": str(tmp_path / "run")}))
    start = time.monotonic()
    done = torchrun([str(JOB), str(spec)], timeout=120)
    elapsed = time.monotonic() - start
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "rank 0/2 failed: RuntimeError" in out and "Timed out waiting 5000ms" in out, out  # after 5 s
    assert elapsed < 60, f"the job took {elapsed:.0f} s to stop"


def test_rank_shares_are_fixed_slices_of_each_global_batch(data):
    index = index_dataset(data / "train/manifest.jsonl")
    plan = window_plan([index], [1.0], seed=3, window=1, samples_per_window=24)
    shares = [rank_share(plan, batch_size=8, rank=r, world_size=2) for r in range(2)]
    for b in range(3):  # global batch b = rank 0's batch b followed by rank 1's batch b
        joined = np.concatenate([s.position[b * 4 : (b + 1) * 4] for s in shares])
        assert (joined == plan.position[b * 8 : (b + 1) * 8]).all()
    assert (shares[1].sample == plan.sample.reshape(3, 2, 4)[:, 1].reshape(-1)).all()
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        rank_share(plan, batch_size=8, rank=0, world_size=3)


def test_batch_geometry_and_environment_errors_name_the_fields():
    cfg = TrainConfig(global_batch_size=8, micro_batch_size=2)
    assert (cfg.accum_steps_for(1), cfg.accum_steps_for(2), cfg.rank_batch_size(2)) == (4, 2, 4)
    with pytest.raises(ValueError, match=r"global_batch_size \(8\) must be a positive multiple of the world size \(3"):
        cfg.check(3)
    with pytest.raises(ValueError, match=r"micro_batch_size \(3\) x world size \(2 processes\) = 6"):
        dataclasses.replace(cfg, micro_batch_size=3).check(2)
    assert dist.env_world({}) is None
    env = {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}
    assert dist.env_world(env) == dist.World(rank=1, size=2, local_rank=1)
    with pytest.raises(ValueError, match=r"\['MASTER_ADDR', 'MASTER_PORT'\] are not"):
        dist.env_world({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="RANK='x' is not an integer"):
        dist.env_world({**env, "RANK": "x"})
    assert dist.init(timeout_s=1, environ={}) == dist.World()  # a single process starts nothing
