"""Throughput of the tabletop simulator: env steps/s without rendering and with both cameras rendered at
64 and 128 px (expert actions, so the scenes are busy), scripted-expert episodes/s (rendered at 64 px,
and state only), and the `make_demos` command end to end (simulate + render + JPEG + shards + stats) with
1 and 2 worker processes.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/pytest bench/test_sim.py --benchmark-columns=mean,stddev,rounds -s
"""

import pytest

from foundry.sim.experts import make_expert
from foundry.sim.make_demos import MakeDemosConfig, make_demos
from foundry.sim.rollout import TASK_FAMILIES, expert_episode
from foundry.sim.tabletop import TabletopConfig, TabletopEnv

STEPS, EPISODES, DEMOS = 400, 20, 40


@pytest.mark.parametrize("render", ["off", 64, 128])
def test_env_steps_per_s(benchmark, render):
    cfg = TabletopConfig(render=False) if render == "off" else TabletopConfig(image_size=render)
    env = TabletopEnv(cfg)
    expert = make_expert(env, noise=0.3, seed=0)

    def run():
        episode, obs, done = 0, env.reset(seed=0, task=TASK_FAMILIES[0]), False
        for _ in range(STEPS):
            if done:
                episode += 1
                obs = env.reset(seed=episode, task=TASK_FAMILIES[episode % len(TASK_FAMILIES)])
            obs, done, _ = env.step(expert(obs))

    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    per_s = STEPS / benchmark.stats.stats.mean
    benchmark.extra_info.update(steps_per_s=round(per_s))
    print(f"\nrender {render}: {per_s:,.0f} env steps/s (expert policy included)")


@pytest.mark.parametrize("render", ["off", 64])
def test_expert_episodes_per_s(benchmark, render):
    cfg = TabletopConfig(render=False) if render == "off" else TabletopConfig(image_size=render)

    def run():
        return sum(expert_episode(cfg, i, TASK_FAMILIES[i % 5], noise=0.3)[0].length for i in range(EPISODES))

    steps = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    per_s = EPISODES / benchmark.stats.stats.mean
    benchmark.extra_info.update(episodes_per_s=round(per_s, 1), steps_per_episode=steps / EPISODES)
    print(f"\nrender {render}: {per_s:,.1f} expert episodes/s ({steps / EPISODES:.1f} steps per episode)")


@pytest.mark.parametrize("workers", [1, 2])
def test_make_demos(benchmark, tmp_path, workers):
    cfg = MakeDemosConfig(out=str(tmp_path), episodes=DEMOS, val_episodes=0, workers=workers)
    summary = benchmark.pedantic(lambda: make_demos(cfg, log=lambda line: None), rounds=2, iterations=1)
    samples = summary["splits"]["train"]["samples"]
    episodes_per_s, samples_per_s = DEMOS / benchmark.stats.stats.mean, samples / benchmark.stats.stats.mean
    benchmark.extra_info.update(episodes_per_s=round(episodes_per_s, 1), samples_per_s=round(samples_per_s))
    print(f"\nmake_demos, {workers} workers, 64 px: {episodes_per_s:.1f} episodes/s, {samples_per_s:,.0f} samples/s "
          f"({DEMOS} episodes incl. process start-up and stats)")  # fmt: skip
