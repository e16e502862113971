"""Closed-loop evaluation: run a policy for N seeded episodes per task family in the tabletop simulator.

Usage::

    cfg = EvalConfig(tasks=("push", "lift"), episodes_per_task=20, workers=2, env=TabletopConfig(render=False))
    records = evaluate(ExpertPolicy, cfg)             # [{"task", "seed", "is_success", "steps", "failure"}, ...]
    write_results("runs/eval", "expert", records, max_sample_size=cfg.episodes_per_task)
    load_results("runs/eval")                         # {"expert": [...records of all tasks...]}

A policy is an `ActionChunkPolicy`: `reset(seed=)` at the start of each episode (the episode seed, so a
stochastic policy is reproducible too) and `act(observation) -> (n, 10)` absolute target poses; the first
`execute_steps` actions of each chunk run open loop, then the policy re-plans. Every env observation goes
to the policy: to `act` when it re-plans, to `observe(observation)` otherwise (a policy with frame history,
like the trained VLA, records it; the baselines ignore it). Policies are built in each
worker by a picklable factory `(env) -> ActionChunkPolicy` (the scripted expert reads the env's state; a
trained or remote policy ignores it): `ExpertPolicy`, `RandomPolicy` and `functools.partial(CallablePolicy,
fn=...)` are factories themselves, `functools.partial(load_trained_policy, run_dir=...)` loads a trained VLA
run in each worker (`foundry.infer.policy.Policy.load`; its `reset` must accept `seed=`). Episode seeds depend
only on (seed, task, index), and every episode resets env and policy from its seed, so results are identical
for any number of workers.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import tempfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from foundry.sim.experts import make_expert
from foundry.sim.rollout import TASK_FAMILIES, random_policy
from foundry.sim.tabletop import TabletopConfig, TabletopEnv

RESULTS_FILE = "results.json"


@runtime_checkable
class ActionChunkPolicy(Protocol):
    def reset(self, *, seed: int | None = None) -> None: ...

    def act(self, observation: dict) -> np.ndarray: ...  # (n, 10) absolute target poses

    def observe(self, observation: dict) -> None:  # an observation while a chunk executes (no re-plan)
        """Policies without history inherit this no-op by subclassing the protocol."""


PolicyFactory = Callable[[TabletopEnv], ActionChunkPolicy]


class CallablePolicy(ActionChunkPolicy):
    """Adapts `fn(obs) -> (10,) action or (n, 10) chunk` (stateless, or reseeded by nobody) to the protocol."""

    def __init__(self, env: TabletopEnv | None = None, *, fn: Callable[[dict], np.ndarray]):
        self.fn = fn

    def reset(self, *, seed: int | None = None) -> None:
        pass

    def act(self, observation: dict) -> np.ndarray:
        a = np.asarray(self.fn(observation), dtype=np.float32)
        return a[None] if a.ndim == 1 else a


class ExpertPolicy(ActionChunkPolicy):
    """The scripted expert as a chunk policy (chunks of one action). It reads `env.state`, so it only works
    with the env it was built for; `noise` > 0 draws its noise from the episode seed."""

    def __init__(self, env: TabletopEnv, *, noise: float = 0.0):
        self.env, self.noise = env, noise
        self.fn = make_expert(env, noise=noise, seed=0)

    def reset(self, *, seed: int | None = None) -> None:
        self.fn = make_expert(self.env, noise=self.noise, seed=_derive(seed or 0, 1))

    def act(self, observation: dict) -> np.ndarray:
        return self.fn(observation)[None]  # (1, 10)


class RandomPolicy(ActionChunkPolicy):
    """Baseline `foundry.sim.rollout.random_policy` (a random target pose held for `hold` steps) as a chunk
    policy, reseeded per episode."""

    def __init__(self, env: TabletopEnv, *, hold: int = 5):
        self.cfg, self.hold = env.cfg, hold
        self.fn = random_policy(0, hold=hold, cfg=env.cfg)

    def reset(self, *, seed: int | None = None) -> None:
        self.fn = random_policy(_derive(seed or 0, 2), hold=self.hold, cfg=self.cfg)

    def act(self, observation: dict) -> np.ndarray:
        return self.fn(observation)[None]  # (1, 10)


def load_trained_policy(env: TabletopEnv | None = None, *, run_dir: str, noise_scale: float = 1.0) -> ActionChunkPolicy:
    """A trained VLA run via `foundry.infer.policy.Policy.load(run_dir, noise_scale=)`; `functools.partial(
    load_trained_policy, run_dir=...)` is an evaluation factory (the policy is loaded in each worker)."""
    from foundry.infer.policy import Policy  # imported here: expert/random evaluations never load torch models

    return Policy.load(run_dir, noise_scale=noise_scale)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    tasks: tuple[str, ...] = TASK_FAMILIES
    episodes_per_task: int = 20
    seed: int = 0  # base seed: episode seeds are derived from (seed, task, index)
    execute_steps: int = 8  # actions of each chunk executed open loop before asking the policy again
    workers: int = 0  # processes (spawned); 0 runs in this process
    max_steps: int | None = None  # per episode; None: env.max_steps
    env: TabletopConfig = TabletopConfig()

    def __post_init__(self):
        if unknown := [t for t in self.tasks if t not in TASK_FAMILIES]:
            raise ValueError(f"EvalConfig.tasks: unknown {unknown}; choose from {TASK_FAMILIES}")
        if self.execute_steps < 1 or self.episodes_per_task < 0 or self.workers < 0:
            raise ValueError(f"EvalConfig: need execute_steps >= 1, episodes_per_task >= 0, workers >= 0: {self}")


def _derive(*ints: int) -> int:
    return int(np.random.SeedSequence([int(i) for i in ints]).generate_state(1)[0])


def episode_seed(seed: int, task: str, index: int) -> int:
    """Seed of episode `index` of `task`; crc32 of the name (not `hash`) is stable across processes."""
    return _derive(seed, zlib.crc32(task.encode()), index)


def run_episode(
    env: TabletopEnv, policy: ActionChunkPolicy, *, task: str, seed: int, execute_steps: int = 8,
    max_steps: int | None = None,
) -> dict:  # fmt: skip
    """One episode -> {"task", "seed", "is_success", "steps", "failure"}; a policy or env exception ends the
    episode as a failure ("exception: ..."), running out of steps is "timeout"."""
    limit = env.cfg.max_steps if max_steps is None else max_steps
    steps, success, failure = 0, False, None
    try:
        obs = env.reset(seed=seed, task=task)
        policy.reset(seed=seed)
        while not success and steps < limit:
            chunk = np.asarray(policy.act(obs), dtype=np.float32)
            if chunk.ndim != 2 or chunk.shape[0] < 1 or chunk.shape[1] != 10:
                raise ValueError(f"policy.act returned shape {chunk.shape}, want (n >= 1, 10)")
            todo = chunk[:execute_steps]
            for i, action in enumerate(todo):
                obs, _, info = env.step(action)
                steps, success = steps + 1, bool(info["success"])
                if success or steps >= limit:
                    break
                if i + 1 < len(todo):  # the last one goes to act
                    policy.observe(obs)
        failure = None if success else "timeout"
    except Exception as e:  # the evaluation goes on; the record says why this episode failed
        failure = f"exception: {type(e).__name__}: {e}"[:300]
    return {"task": task, "seed": seed, "is_success": success, "steps": steps, "failure": failure}


_WORKER: dict = {}  # per process: the env and policy built once by the initializer


def _init_worker(factory: PolicyFactory, cfg: EvalConfig) -> None:
    env = TabletopEnv(cfg.env)
    _WORKER.update(env=env, policy=factory(env), cfg=cfg)


def _run_job(job: tuple[str, int]) -> dict:
    task, seed = job
    cfg: EvalConfig = _WORKER["cfg"]
    return run_episode(
        _WORKER["env"], _WORKER["policy"], task=task, seed=seed, execute_steps=cfg.execute_steps,
        max_steps=cfg.max_steps,
    )  # fmt: skip


def evaluate(factory: PolicyFactory, cfg: EvalConfig) -> list[dict]:
    """Records of `cfg.episodes_per_task` episodes of each task, in (task, index) order."""
    jobs = [(t, episode_seed(cfg.seed, t, i)) for t in cfg.tasks for i in range(cfg.episodes_per_task)]
    if cfg.workers == 0 or not jobs:
        _init_worker(factory, cfg)
        try:
            return [_run_job(j) for j in jobs]
        finally:
            _WORKER.clear()
    # spawn, not fork: a forked copy of a process running torch threads can deadlock.
    with mp.get_context("spawn").Pool(cfg.workers, _init_worker, (factory, cfg)) as pool:
        return pool.map(_run_job, jobs, chunksize=1)


def write_results(out_dir: str | Path, model: str, records: Iterable[dict], *, max_sample_size: int) -> list[Path]:
    """Write `{out_dir}/{model}/{task}/results.json` = {"max_sample_size": N, "evaluations": [records]} for
    each task in `records`, each atomically (a temporary file renamed over the old one)."""
    by_task: dict[str, list[dict]] = {}
    for r in records:
        by_task.setdefault(r["task"], []).append(r)
    paths = []
    for task, recs in by_task.items():
        path = Path(out_dir) / model / task / RESULTS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".results-", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"max_sample_size": max_sample_size, "evaluations": recs}, f, indent=1)
        os.replace(tmp, path)
        paths.append(path)
    return paths


def load_results(path: str | Path) -> dict[str, list[dict]]:
    """{model: records over its tasks} from a results dir (`{model}/{task}/results.json`) or from one
    model's dir (`{task}/results.json`, the model named after the dir)."""
    root = Path(path)
    files = sorted(root.glob(f"*/*/{RESULTS_FILE}")) or sorted(root.glob(f"*/{RESULTS_FILE}"))
    if not files:
        raise FileNotFoundError(f"{root}: no {{model}}/{{task}}/{RESULTS_FILE} found; is it an evaluation --out dir?")
    out: dict[str, list[dict]] = {}
    for f in files:
        model = root.name if f.parent.parent == root else f.parent.parent.name
        out.setdefault(model, []).extend(json.loads(f.read_text())["evaluations"])
    return out
