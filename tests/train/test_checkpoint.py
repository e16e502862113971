"""Checkpoint save/load/restore: bitwise round trips, atomicity (also under SIGKILL), pruning, clear errors.

Run: OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 .venv/bin/pytest tests/train/test_checkpoint.py -q
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from foundry import tree
from foundry.train import checkpoint


def make_state(step: int = 7, *, ema: bool = True, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    params = {
        "embed": {"w": torch.randn(11, 4, generator=g)},
        "blocks": [
            {"w": torch.randn(4, 4, generator=g).to(torch.bfloat16), "b": torch.randn(4, generator=g)},
            {"w": torch.randn(4, 4, generator=g).to(torch.bfloat16), "b": torch.randn(4, generator=g)},
        ],
        "ids": torch.arange(5, dtype=torch.int64) * (2**40),
    }
    state = {
        "step": torch.tensor(step, dtype=torch.int64),
        "params": params,
        "opt_state": {"mu": tree.map(torch.zeros_like, params), "count": torch.tensor(step)},
        "key": torch.tensor([123456789, 2**31 + 5], dtype=torch.int64),
    }
    if ema:
        state["ema"] = tree.map(lambda x: x.clone(), params)
    return state


def bitwise_equal(a, b) -> bool:
    fa, fb = tree.flatten(a), tree.flatten(b)
    return fa.keys() == fb.keys() and all(
        fa[k].dtype == fb[k].dtype
        and fa[k].shape == fb[k].shape
        and torch.equal(fa[k].reshape(-1).view(torch.uint8), fb[k].reshape(-1).view(torch.uint8))
        for k in fa
    )


def test_round_trip_is_bitwise(tmp_path):
    state = make_state()
    state["params"]["embed"]["w"][0, 0] = float("nan")
    config = {"model": {"dim": 4, "layers": [1, 2]}, "lr": 3e-4, "name": "tiny"}
    extra = {"data": {"shard": 3, "offset": 17}, "metrics": {"loss": 2.5}}
    path = checkpoint.save(tmp_path, state, config=config, extra=extra)
    assert path == tmp_path / "checkpoints" / "step_00000007"
    assert sorted(p.name for p in path.iterdir()) == sorted(
        ["params.safetensors", "opt_state.safetensors", "ema.safetensors", "state.json", "config.json"]
    )
    ckpt = checkpoint.load(path)
    assert bitwise_equal(ckpt.state, state)  # dtypes (bf16, int64) kept, NaN payload bits too
    state["params"]["embed"]["w"][0, 0] = 0.0
    ckpt.state["params"]["embed"]["w"][0, 0] = 0.0
    assert tree.first_difference(ckpt.state, state) is None
    assert ckpt.state["step"].dtype == torch.int64 and ckpt.state["step"].dim() == 0
    assert ckpt.config == config and ckpt.extra == extra and ckpt.path == path


def test_ema_is_optional(tmp_path):
    state = make_state(ema=False)
    path = checkpoint.save(tmp_path, state, config={})
    assert not (path / "ema.safetensors").exists()
    loaded = checkpoint.load(path).state
    assert "ema" not in loaded and tree.equal(loaded, state)


def test_non_contiguous_and_shared_tensors_are_saved(tmp_path):
    base = torch.randn(6, 6)
    state = make_state(ema=False)
    state["params"] = {"t": base.t(), "a": base[:3], "b": base[3:], "same": base, "same2": base}
    path = checkpoint.save(tmp_path, state, config={})
    assert tree.equal(checkpoint.load(path).state["params"], state["params"])


def test_assets_are_copied(tmp_path):
    source = tmp_path / "tok.json"
    source.write_text('{"vocab": 3}')
    folder = tmp_path / "stats"
    folder.mkdir()
    (folder / "a.json").write_text("[1]")
    assets = {"tokenizer.json": source, "norm_stats.json": b"{}", "stats": folder}
    path = checkpoint.save(tmp_path / "run", make_state(), config={}, assets=assets)
    assert (path / "tokenizer.json").read_text() == '{"vocab": 3}'
    assert (path / "norm_stats.json").read_bytes() == b"{}"
    assert (path / "stats" / "a.json").read_text() == "[1]"
    with pytest.raises(ValueError, match=r"state\.json"):
        checkpoint.save(tmp_path / "run", make_state(), config={}, assets={"state.json": b"x"})


def test_loaded_tensors_survive_deleting_the_files(tmp_path):
    path = checkpoint.save(tmp_path, make_state(), config={})
    params = checkpoint.load_params(path)
    for file in path.iterdir():
        file.unlink()
    assert tree.equal(params, make_state()["params"])


def test_latest_list_and_keep(tmp_path):
    assert checkpoint.latest(tmp_path) is None and checkpoint.list_checkpoints(tmp_path) == []
    for step in (5, 100, 20):
        checkpoint.save(tmp_path, make_state(step), config={})
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [
        "step_00000005",
        "step_00000020",
        "step_00000100",
    ]
    assert checkpoint.latest(tmp_path).name == "step_00000100"
    checkpoint.save(tmp_path, make_state(200), config={}, keep=2)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step_00000100", "step_00000200"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000100", "step_00000200"]


def test_saving_the_same_step_twice_replaces_it(tmp_path):
    checkpoint.save(tmp_path, make_state(3, seed=0), config={"v": 1})
    path = checkpoint.save(tmp_path, make_state(3, seed=1), config={"v": 2})
    ckpt = checkpoint.load(path)
    assert ckpt.config == {"v": 2} and tree.equal(ckpt.state, make_state(3, seed=1))
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000003"]


def test_partial_temporary_dirs_are_ignored(tmp_path):
    good = checkpoint.save(tmp_path, make_state(10), config={})
    partial = tmp_path / "checkpoints" / ".step_00000020.tmp-999999"
    partial.mkdir()
    (partial / "params.safetensors").write_bytes(b"partial")
    (partial / "state.json").write_text("{}")
    no_state = tmp_path / "checkpoints" / "step_00000030"  # final name but state.json never written
    no_state.mkdir()
    assert checkpoint.latest(tmp_path) == good
    assert tree.equal(checkpoint.load_params(tmp_path), make_state(10)["params"])


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    good = checkpoint.save(tmp_path, make_state(10), config={})

    def crash(*args):
        raise OSError("simulated crash")

    monkeypatch.setattr(checkpoint.os, "rename", crash)
    with pytest.raises(OSError, match="simulated"):
        checkpoint.save(tmp_path, make_state(20), config={}, keep=1)
    with pytest.raises(OSError, match="simulated"):
        checkpoint.save(tmp_path, make_state(10, seed=5), config={}, keep=1)  # same step: replace path
    monkeypatch.undo()
    assert checkpoint.latest(tmp_path) == good
    assert tree.equal(checkpoint.load(good).state, make_state(10))
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000010"]  # no temporaries


def test_failed_replace_puts_the_previous_checkpoint_back(tmp_path, monkeypatch):
    checkpoint.save(tmp_path, make_state(5), config={})
    previous = checkpoint.save(tmp_path, make_state(10), config={})
    real_rename = os.rename
    calls = []

    def rename(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the old step_10 is renamed away, the new one fails to move in
            raise OSError("simulated failure")
        real_rename(src, dst)

    monkeypatch.setattr(checkpoint.os, "rename", rename)
    with pytest.raises(OSError):
        checkpoint.save(tmp_path, make_state(10, seed=3), config={})
    monkeypatch.undo()
    assert checkpoint.latest(tmp_path) == previous
    assert tree.equal(checkpoint.load(previous).state, make_state(10))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000005", "step_00000010"]


def test_crash_between_replace_renames_leaves_an_older_checkpoint(tmp_path):
    older = checkpoint.save(tmp_path, make_state(5), config={})
    ten = checkpoint.save(tmp_path, make_state(10), config={})
    os.rename(ten, ten.with_name(".step_00000010.old-999999"))  # as left by a SIGKILL between the renames
    assert checkpoint.latest(tmp_path) == older
    checkpoint.save(tmp_path, make_state(6), config={})  # the next save removes the dead process's leftovers
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000005", "step_00000006"]


_KILL_CHILD = textwrap.dedent(
    """
    import sys, torch
    from foundry.train import checkpoint
    run_dir = sys.argv[1]
    last = checkpoint.latest(run_dir)
    step = 0 if last is None else int(last.name.split("_")[1])
    while True:
        step += 1
        params = {"w": torch.full((256, 1024), float(step)), "blocks": [{"b": torch.full((7,), step)}]}
        state = {"step": torch.tensor(step), "params": params, "opt_state": {"m": params["w"] * 2},
                 "key": torch.tensor([step, 1])}
        checkpoint.save(run_dir, state, config={"step": step}, extra={"s": step}, keep=2)
        print(step, flush=True)
    """
)


def test_sigkill_at_random_moments_leaves_a_loadable_latest(tmp_path):
    # Three savers run at once (importing torch dominates the time); each is killed at a random moment.
    rng = random.Random(0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    run_dirs = [tmp_path / f"run{i}" for i in range(3)]
    procs = [
        subprocess.Popen([sys.executable, "-c", _KILL_CHILD, str(d)], stdout=subprocess.PIPE, text=True, env=env)
        for d in run_dirs
    ]
    for proc in procs:
        proc.stdout.readline()  # first save done: torch imported, the loop is running
    for proc in procs:
        time.sleep(rng.uniform(0.0, 0.2))
        proc.send_signal(signal.SIGKILL)
    for proc, run_dir in zip(procs, run_dirs):
        proc.wait()
        proc.stdout.close()
        ckpt = checkpoint.load(checkpoint.latest(run_dir))
        step = int(ckpt.state["step"])
        assert ckpt.extra == {"s": step} and ckpt.config == {"step": step}
        assert torch.equal(ckpt.state["params"]["w"], torch.full((256, 1024), float(step)))
        assert torch.equal(ckpt.state["opt_state"]["m"], torch.full((256, 1024), 2.0 * step))
        for path in checkpoint.list_checkpoints(run_dir):
            checkpoint.load(path)


def test_check_compatible_names_everything(tmp_path):
    model = {"llm": {"embed": {"w": torch.zeros(520, 64)}, "head": torch.zeros(3), "new": torch.zeros(1)}}
    ckpt = {"llm": {"embed": {"w": torch.zeros(512, 64)}, "head": torch.zeros(3, dtype=torch.bfloat16)}}
    ckpt["llm"]["old"] = torch.zeros(2)
    with pytest.raises(ValueError) as err:
        checkpoint.check_compatible(model, ckpt, what="params.safetensors", source="runs/x/step_00000100")
    msg = str(err.value)
    assert msg.startswith("params.safetensors in runs/x/step_00000100: ")
    assert "shape mismatch: llm.embed.w checkpoint (512, 64) vs model (520, 64)" in msg
    assert "dtype mismatch: llm.head checkpoint torch.bfloat16 vs model torch.float32" in msg
    assert "missing: [llm.new]" in msg and "unexpected: [llm.old]" in msg
    checkpoint.check_compatible(model, model, what="params", source="here")  # no error


def test_restore_checks_against_template(tmp_path):
    state = make_state()
    path = checkpoint.save(tmp_path, state, config={}, extra={"data": [1, 2]})
    template = tree.map(lambda x: torch.empty_like(x, device="meta"), make_state(0, seed=9))
    restored, extra = checkpoint.restore(path, template)
    assert tree.equal(restored, state) and extra == {"data": [1, 2]}
    assert list(restored["params"]) == list(state["params"])  # the template's key order, not sorted

    bigger = make_state()
    bigger["params"]["embed"]["w"] = torch.zeros(12, 4)
    with pytest.raises(ValueError, match=r"params.safetensors in .*step_00000007: shape mismatch: "):
        checkpoint.restore(path, bigger)
    without_ema = make_state(ema=False)
    with pytest.raises(ValueError, match=r"has \['ema'\] that the train state lacks"):
        checkpoint.restore(path, without_ema)
    no_ema_path = checkpoint.save(tmp_path / "b", without_ema, config={})
    with pytest.raises(ValueError, match=r"has no \['ema'\]"):
        checkpoint.restore(no_ema_path, state)


def test_truncated_or_missing_files_are_named(tmp_path):
    path = checkpoint.save(tmp_path, make_state(), config={})
    params_file = path / "params.safetensors"
    data = params_file.read_bytes()
    params_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"params.safetensors: corrupt or truncated"):
        checkpoint.load(path)
    params_file.write_bytes(data)
    (path / "ema.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"ema.safetensors is missing"):
        checkpoint.load(path)
    path = checkpoint.save(tmp_path, make_state(), config={})
    (path / "config.json").write_text("{")
    with pytest.raises(ValueError, match=r"config\.json: corrupt JSON"):
        checkpoint.load(path)


def test_load_params_from_run_or_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither"):
        checkpoint.load_params(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        checkpoint.load_params(tmp_path)
    checkpoint.save(tmp_path, make_state(1, seed=1), config={})
    path = checkpoint.save(tmp_path, make_state(2, seed=2), config={})
    assert tree.equal(checkpoint.load_params(tmp_path), make_state(2, seed=2)["params"])
    assert tree.equal(checkpoint.load_params(path), make_state(2, seed=2)["params"])


def test_bad_states_are_rejected(tmp_path):
    state = make_state()
    with pytest.raises(ValueError, match="unknown \\['data'\\]"):
        checkpoint.save(tmp_path, {**state, "data": 1}, config={})
    with pytest.raises(ValueError, match="reserved"):
        checkpoint.save(tmp_path, state, config={}, extra={"step": 3})
    with pytest.raises(TypeError, match=r"params\.lr"):
        checkpoint.save(tmp_path, {**state, "params": {"lr": 0.1}}, config={})
    assert json.loads(json.dumps(checkpoint.load(checkpoint.save(tmp_path, state, config={})).extra)) == {}
