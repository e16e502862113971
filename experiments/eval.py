"""Closed-loop evaluation of a policy in the tabletop simulator: success rates with Wilson 95% intervals per
task and overall, a bar chart and a Markdown summary, and Barnard's exact test against other result sets.

Usage:
    python experiments/eval.py --policy expert --episodes-per-task 20 --workers 2 --out runs/eval
    python experiments/eval.py --policy random --episodes-per-task 20 --workers 2 --out runs/eval
    python experiments/eval.py --policy runs/vla --out runs/eval-vla --compare runs/eval --execute-steps 8
    python experiments/eval.py --policy expert --tasks push lift --episodes-per-task 5

Writes {out}/{model}/{task}/results.json ({"max_sample_size": N, "evaluations": [per-episode records]}),
{out}/success.png and {out}/summary.md over every model in --out and in each --compare dir; the p-values
compare the evaluated model with each of the others. Episode seeds depend on (--seed, task, index) only,
so two policies evaluated with the same seed face the same scenes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import tyro

from foundry.eval.open_loop import OpenLoopConfig, open_loop_agreement
from foundry.eval.report import markdown_table, plot_success
from foundry.eval.rollouts import (
    EvalConfig,
    ExpertPolicy,
    RandomPolicy,
    evaluate,
    load_results,
    load_trained_policy,
    write_results,
)
from foundry.eval.stats import compare, summarize
from foundry.sim.tabletop import TASK_FAMILIES, TabletopConfig


@dataclasses.dataclass(frozen=True)
class EvalExperiment:
    policy: str = "expert"  # "expert", "random", or a trained VLA run directory
    out: str = "runs/eval"  # results dir: {out}/{model}/{task}/results.json, success.png, summary.md
    name: str | None = None  # model name in the results; default: the policy name or the run dir's name
    episodes_per_task: int = 20
    tasks: tuple[str, ...] = TASK_FAMILIES
    workers: int = 0  # processes; 0 runs in this one
    seed: int = 0
    execute_steps: int = 8  # actions of each chunk executed before re-planning
    expert_noise: float = 0.0
    noise_scale: float = 1.0  # a trained policy's initial flow noise scale (0: deterministic chunks)
    # Also the open-loop agreement of a trained policy on this many expert episodes per task
    # (foundry.eval.open_loop), written to {out}/{model}/open_loop.json; 0 skips it.
    open_loop_episodes: int = 0
    env: TabletopConfig = TabletopConfig()  # images are rendered only for a trained policy
    compare: tuple[str, ...] = ()  # other results dirs (an --out dir, or one model's dir in it)

    @property
    def model_name(self) -> str:
        return self.name or Path(self.policy).name


def policy_factory(cfg: EvalExperiment):
    """A picklable `(env) -> ActionChunkPolicy` for --policy."""
    if cfg.policy == "expert":
        return functools.partial(ExpertPolicy, noise=cfg.expert_noise)
    if cfg.policy == "random":
        return RandomPolicy
    if not Path(cfg.policy).is_dir():
        raise SystemExit(f"--policy {cfg.policy!r}: not 'expert', 'random' or an existing run directory")
    load_trained_policy(None, run_dir=cfg.policy)  # fail here, with its message, not in every worker
    return functools.partial(load_trained_policy, run_dir=cfg.policy, noise_scale=cfg.noise_scale)


def main(cfg: EvalExperiment) -> dict:
    """Evaluate, write results + report; returns {model: {task: SuccessRate}} over every model shown."""
    factory = policy_factory(cfg)
    scripted = cfg.policy in ("expert", "random")  # they read the state, not the pixels: skip rendering
    env = dataclasses.replace(cfg.env, render=cfg.env.render and not scripted)
    ecfg = EvalConfig(tasks=cfg.tasks, episodes_per_task=cfg.episodes_per_task, seed=cfg.seed,
                      execute_steps=cfg.execute_steps, workers=cfg.workers, env=env)  # fmt: skip
    records = evaluate(factory, ecfg)
    write_results(cfg.out, cfg.model_name, records, max_sample_size=cfg.episodes_per_task)

    results = load_results(cfg.out)
    for other in cfg.compare:
        results.update({m: r for m, r in load_results(other).items() if m != cfg.model_name})
    results.pop(cfg.model_name, None)  # its files may hold older runs of other tasks: show this run's
    summaries = {cfg.model_name: summarize(records), **{m: summarize(r) for m, r in results.items()}}
    comparisons = {f"{cfg.model_name} vs {m}": compare(records, r) for m, r in results.items()}

    failures = [r["failure"] for r in records if r["failure"] and r["failure"] != "timeout"]
    if failures:
        print(f"{len(failures)} episodes ended in an exception, first: {failures[0]}")
    table = markdown_table(summaries, comparisons)
    print(table)
    plot_success(summaries, Path(cfg.out) / "success.png", title=f"success rate ({cfg.episodes_per_task}/task)")
    (Path(cfg.out) / "summary.md").write_text(f"# Closed-loop evaluation\n\n{table}")
    if cfg.open_loop_episodes and not scripted:
        ocfg = OpenLoopConfig(tasks=cfg.tasks, episodes_per_task=cfg.open_loop_episodes, seed=cfg.seed + 1, env=env)
        agreement = open_loop_agreement(factory, ocfg)
        (Path(cfg.out) / cfg.model_name / "open_loop.json").write_text(json.dumps(agreement, indent=1) + "\n")
        print("open-loop agreement:", json.dumps(agreement["overall"]))
    return summaries


if __name__ == "__main__":
    main(tyro.cli(EvalExperiment))
