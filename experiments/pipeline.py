"""The whole chain in one command: datasets -> tokenizer -> LLM -> VLM (from the LLM) -> VLA (from the VLM)
-> closed-loop evaluation against the scripted expert and a random policy -> report.

Usage:
    python experiments/pipeline.py pipeline                           # `make pipeline`: ~45 min on 2 cores
    python experiments/pipeline.py pipeline-full                      # all five tasks with distractors
    python experiments/pipeline.py pipeline-debug --dir /tmp/p        # the chain end to end in ~2 min
    python experiments/pipeline.py pipeline --llm.train.total-train-samples 25600 --dir runs/pipeline-llm2x
    python experiments/pipeline.py pipeline --sweep main vlm-scratch vla-k1      # ablations, compared
    python experiments/pipeline.py pipeline --print-config

Any field of any stage is a flag (`--text.*`, `--shapes.*`, `--demos.*`, `--tokenizer.*`, `--llm.*`, `--vlm.*`,
`--vla.*`, `--eval.*`); each stage's run directory, data paths and init runs are set by the pipeline.

Stages are cached by content: each runs in `{dir}/stages/{stage}-{hash}`, the hash covering the stage's
config and its inputs' hashes (`foundry.train.stages`), and is complete when its `stage.json` exists. Rerunning
a command skips complete stages and resumes an interrupted one from its last checkpoint; a changed field
reruns that stage and everything downstream of it, nothing upstream. `--sweep` runs named variants
(`VARIANTS`) of the config, sharing every stage whose hash is equal (the data, the tokenizer and, unless
the variant changes it, the LLM), and compares the final policies with Barnard's exact test.

Progress: a line per stage start and finish with its duration, each training stage's progress bar, and every
stage's metrics in one Aim repository, `{dir}/aim` (runs tagged by stage: `aim up --repo {dir}/aim`).
The report: `{dir}/report.html` (self-contained) and `{dir}/report.md`, plots in `{dir}/report/`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import tyro

from experiments import llm as llm_exp
from experiments import vla as vla_exp
from experiments import vlm as vlm_exp
from foundry.data.make_shapes import MakeShapesConfig, make_shapes
from foundry.data.make_text import MakeTextConfig, make_text
from foundry.data.text import texts_from_manifests
from foundry.data.tokenizer import save_tokenizer, train_tokenizer
from foundry.eval.document import Document
from foundry.eval.open_loop import OpenLoopConfig, open_loop_agreement
from foundry.eval.report import plot_curves, plot_success, summary_rows
from foundry.eval.rollouts import (
    EvalConfig,
    ExpertPolicy,
    RandomPolicy,
    evaluate,
    load_results,
    load_trained_policy,
    write_results,
)
from foundry.eval.stats import OVERALL, compare, summarize
from foundry.sim.make_demos import MakeDemosConfig, make_demos
from foundry.sim.tabletop import TabletopConfig
from foundry.train import runs
from foundry.train.config import RunConfig, ScheduleConfig, TrainConfig
from foundry.train.progress import format_duration
from foundry.train.stages import Stage, run_stage
from foundry.train.tracking import METRICS_FILE, read_metrics


# The stage experiments as pipeline fields: their `run` (directory, tracker) is set by the pipeline.
@dataclasses.dataclass(frozen=True)
class LLMStage(llm_exp.LLMExperiment):
    run: tyro.conf.Suppress[RunConfig] = RunConfig()


@dataclasses.dataclass(frozen=True)
class VLMStage(vlm_exp.VLMExperiment):
    run: tyro.conf.Suppress[RunConfig] = RunConfig()


@dataclasses.dataclass(frozen=True)
class VLAStage(vla_exp.VLAExperiment):
    run: tyro.conf.Suppress[RunConfig] = RunConfig()


def stage_of(cls: type, preset: Any, **changes: Any) -> Any:
    """A stage field from an experiment preset (same values, the pipeline's subclass)."""
    values = {f.name: getattr(preset, f.name) for f in dataclasses.fields(preset)}
    return cls(**(values | changes))


@dataclasses.dataclass(frozen=True)
class TokenizerStage:
    vocab_size: int = 4096
    text_bytes: int = 4_000_000  # of the LLM text
    caption_samples: int = 5000  # captions of the first shape scenes, so caption words are tokens too
    robot_samples: int = 5000  # instructions of the first demonstration samples


@dataclasses.dataclass(frozen=True)
class EvalStage:
    episodes_per_task: int = 20
    tasks: tuple[str, ...] = ()  # task families to evaluate; () = the demonstrations' (`--demos.tasks`)
    seed: int = 0  # episode seeds: every policy faces the same scenes
    execute_steps: int = 8  # actions of each chunk executed before re-planning
    noise_scale: float = 1.0  # the policy's initial flow noise scale (0: deterministic chunks)
    max_steps: int | None = None  # per episode; None: the simulator's limit
    baselines: tuple[Literal["expert", "random"], ...] = ("expert", "random")
    # Expert episodes per task for the VLA's open-loop agreement (foundry.eval.open_loop): a continuous
    # measure of what it learned, telling runs apart while closed-loop success is still 0; 0 skips it.
    # Steps of one episode are correlated: at 4 episodes per task two seed sets gave cosines 0.06 and 0.26.
    open_loop_episodes: int = 10
    workers: int = 2  # processes (results do not depend on it)


@dataclasses.dataclass(frozen=True)
class PipelineExperiment:
    dir: str = "runs/pipeline"  # stages, Aim repository and report go here
    text: MakeTextConfig = MakeTextConfig()
    shapes: MakeShapesConfig = MakeShapesConfig()
    demos: MakeDemosConfig = MakeDemosConfig()
    tokenizer: TokenizerStage = TokenizerStage()
    llm: LLMStage = LLMStage()
    vlm: VLMStage = VLMStage()
    vla: VLAStage = VLAStage()
    eval: EvalStage = EvalStage()
    vlm_from_llm: bool = True  # False: the VLM's language model starts from scratch (same tokenizer)
    vla_from_vlm: bool = True  # False: the VLA's VLM starts from scratch (same tokenizer)
    sweep: tuple[str, ...] = ()  # names of VARIANTS to run and compare; empty: this config alone
    tracker: Literal["aim", "none"] = "aim"
    device: str = "cpu"
    peak_tflops: float | None = None  # for MFU; None measures this device's matmul peak per stage
    print_config: bool = False  # print the resolved config (of every variant) and exit


def replace_at(cfg: Any, path: str, value: Any) -> Any:
    """`cfg` with the dotted field `path` (e.g. "llm.train.total_train_samples") set to `value`."""
    head, _, rest = path.partition(".")
    if not any(f.name == head for f in dataclasses.fields(cfg)):
        raise ValueError(f"{type(cfg).__name__} has no field {head!r} (in {path!r})")
    return dataclasses.replace(cfg, **{head: replace_at(getattr(cfg, head), rest, value) if rest else value})


def _scaled(path: str, factor: float) -> Callable[[PipelineExperiment], PipelineExperiment]:
    def get(cfg: Any) -> Any:
        for name in path.split("."):
            cfg = getattr(cfg, name)
        return cfg

    return lambda cfg: replace_at(cfg, path, type(get(cfg))(get(cfg) * factor))


VARIANTS: dict[str, tuple[str, Callable[[PipelineExperiment], PipelineExperiment]]] = {
    "main": ("the configuration as given", lambda cfg: cfg),
    "llm-2x": ("the LLM trained on twice as many samples", _scaled("llm.train.total_train_samples", 2)),
    "vlm-scratch": ("the VLM's language model from scratch, not from the LLM stage",
                    lambda cfg: dataclasses.replace(cfg, vlm_from_llm=False)),
    "vla-scratch": ("the VLA's VLM from scratch, not from the VLM stage",
                    lambda cfg: dataclasses.replace(cfg, vla_from_vlm=False)),
    "vla-k1": ("the action head conditioned on the last layer's <obs> state only (k = 1, not 4)",
               lambda cfg: replace_at(cfg, "vla.model.cond_layers", 1)),
    "vla-prefix": ("the action head reads every prompt token's features (images, instruction), not only <obs>'s",
                   lambda cfg: replace_at(cfg, "vla.model.cond_source", "prefix")),
}  # fmt: skip


def _hashed(cfg: Any, *drop: str) -> dict:
    """A stage's config for its hash: what the pipeline sets (output and run dirs, data paths, init runs:
    the input stages' hashes stand for them) left out."""
    out = {k: v for k, v in runs.to_dict(cfg).items() if k not in drop}
    if isinstance(out.get("data"), dict):
        out["data"] = {k: v for k, v in out["data"].items() if k not in ("manifests", "val_manifests")}
    return out


def _run(cfg: PipelineExperiment, stage_dir: Path) -> RunConfig:
    return RunConfig(run_dir=str(stage_dir), tracker=cfg.tracker, aim_repo=str(Path(cfg.dir) / "aim"),
                     device=cfg.device, peak_tflops=cfg.peak_tflops)  # fmt: skip


def _splits(stage: Stage) -> dict:
    """DataConfig fields for a dataset stage's train and val splits."""
    return {"manifests": (str(stage.dir / "train"),), "val_manifests": (str(stage.dir / "val"),)}


def _tokenizer(cfg: PipelineExperiment, text: Stage, shapes: Stage, demos: Stage, out: Path) -> dict:
    t = cfg.tokenizer

    def texts():
        yield from texts_from_manifests([text.dir / "train"], max_bytes=t.text_bytes)
        captions = texts_from_manifests([shapes.dir / "train"])
        yield from (c for _, c in zip(range(t.caption_samples), captions))
        yield from vla_exp.instruction_texts((str(demos.dir / "train"),), max_samples=t.robot_samples)

    tok = train_tokenizer(texts(), vocab_size=t.vocab_size)
    save_tokenizer(tok, out / "tokenizer.json")
    return {"vocab_size": tok.get_vocab_size()}


def _scenes(cfg: PipelineExperiment) -> tuple[tuple[str, ...], TabletopConfig]:
    """The evaluation's task families (`--eval.tasks`, else the demonstrations') and the demonstrations'
    simulator: what decides the episodes of every evaluated policy."""
    return cfg.eval.tasks or cfg.demos.tasks, cfg.demos.sim


def _evaluate(cfg: PipelineExperiment, policy: str, out: Path) -> dict:
    """Closed-loop episodes of `policy` ("expert", "random" or a VLA run dir) -> out/results."""
    e = cfg.eval
    factories = {"expert": ExpertPolicy, "random": RandomPolicy}
    factory = factories.get(policy) or functools.partial(load_trained_policy, run_dir=policy, noise_scale=e.noise_scale)
    tasks, sim = _scenes(cfg)
    env = dataclasses.replace(sim, render=policy not in factories)
    ecfg = EvalConfig(tasks=tasks, episodes_per_task=e.episodes_per_task, seed=e.seed,
                      execute_steps=e.execute_steps, workers=e.workers, max_steps=e.max_steps, env=env)  # fmt: skip
    records = evaluate(factory, ecfg)
    write_results(out / "results", "policy", records, max_sample_size=e.episodes_per_task)
    info: dict[str, Any] = {"success": {task: rate.rate for task, rate in summarize(records).items()}}
    if policy not in factories and e.open_loop_episodes:
        horizon = min(5, cfg.vla.robot.action_horizon)
        ocfg = OpenLoopConfig(tasks=tasks, episodes_per_task=e.open_loop_episodes, seed=e.seed + 1, env=env,
                              horizon=horizon)  # fmt: skip
        info["open_loop"] = open_loop_agreement(factory, ocfg)
    return info


def run_pipeline(cfg: PipelineExperiment, log: Callable[[str], None] = print) -> dict[str, Stage]:
    """Run (or resume, or skip) every stage of one configuration; returns the stages by name."""
    root = Path(cfg.dir)
    stage = functools.partial(run_stage, root=root, log=log)
    text = stage("text", config=_hashed(cfg.text, "out"), inputs={},
                 fn=lambda d: make_text(dataclasses.replace(cfg.text, out=str(d))))  # fmt: skip
    shapes = stage("shapes", config=_hashed(cfg.shapes, "out", "workers"), inputs={},
                   fn=lambda d: make_shapes(dataclasses.replace(cfg.shapes, out=str(d))))  # fmt: skip
    demos = stage("demos", config=_hashed(cfg.demos, "out", "workers"), inputs={},
                  fn=lambda d: make_demos(dataclasses.replace(cfg.demos, out=str(d))))  # fmt: skip
    data_in = {"text": text.hash, "shapes": shapes.hash, "demos": demos.hash}
    tok = stage("tokenizer", config=_hashed(cfg.tokenizer), inputs=data_in,
                fn=lambda d: _tokenizer(cfg, text, shapes, demos, d))  # fmt: skip
    tok_file = str(tok.dir / "tokenizer.json")

    def train(train_fn: Callable, stage_cfg: Any, data: Stage, **changes: Any) -> Callable[[Path], dict]:
        """The stage function: `stage_cfg` on `data`'s splits, run in the stage directory, with `changes`."""

        def fn(d: Path) -> dict:
            splits = dataclasses.replace(stage_cfg.data, **_splits(data))
            result = train_fn(dataclasses.replace(stage_cfg, data=splits, run=_run(cfg, d), **changes))
            return {"metrics": result.metrics, "train_seconds": result.wall_s}

        return fn

    # An imported model (--llm.init.hf) keeps the tokenizer its embeddings were trained with.
    llm_tok = cfg.llm.tokenizer if cfg.llm.init.hf else dataclasses.replace(cfg.llm.tokenizer, path=tok_file)
    llm = stage("llm", config=_hashed(cfg.llm, "run", "tokenizer"), inputs={"text": text.hash, "tokenizer": tok.hash},
                fn=train(llm_exp.train, cfg.llm, text, tokenizer=llm_tok))  # fmt: skip
    # From the previous stage's run (its tokenizer comes along), or from scratch with the pipeline's tokenizer.
    vlm_in, vlm_tok = ({"llm": llm.hash}, None) if cfg.vlm_from_llm else ({}, tok_file)
    vlm_init = vlm_exp.VLMInit(llm=str(llm.dir) if cfg.vlm_from_llm else None)
    vlm = stage("vlm", config=_hashed(cfg.vlm, "run", "init", "tokenizer"),
                inputs={"shapes": shapes.hash, "tokenizer": tok.hash, **vlm_in},
                fn=train(vlm_exp.train, cfg.vlm, shapes, init=vlm_init, tokenizer=vlm_tok))  # fmt: skip
    vla_in, vla_tok = ({"vlm": vlm.hash}, None) if cfg.vla_from_vlm else ({}, tok_file)
    vla_init = vla_exp.VLAInit(vlm=str(vlm.dir) if cfg.vla_from_vlm else None)
    vla = stage("vla", config=_hashed(cfg.vla, "run", "init", "tokenizer"),
                inputs={"demos": demos.hash, "tokenizer": tok.hash, **vla_in},
                fn=train(vla_exp.train, cfg.vla, demos, init=vla_init, tokenizer=vla_tok))  # fmt: skip
    tasks, sim = _scenes(cfg)  # they decide the episodes, the baselines' included
    scenes = {"tasks": list(tasks), "env": _hashed(sim, "render", "tasks")}
    eval_cfg = _hashed(cfg.eval, "workers", "baselines", "tasks") | scenes
    baseline_cfg = {k: v for k, v in eval_cfg.items() if k not in ("noise_scale", "open_loop_episodes")}
    out = {s.name: s for s in (text, shapes, demos, tok, llm, vlm, vla)}
    out["eval"] = stage("eval", config=eval_cfg, inputs={"vla": vla.hash},
                        fn=lambda d: _evaluate(cfg, str(vla.dir), d))  # fmt: skip
    for name in cfg.eval.baselines:
        out[f"eval-{name}"] = stage(f"eval-{name}", config=baseline_cfg, inputs={},
                                    fn=functools.partial(_evaluate, cfg, name))  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------- report


TRAINED = ("llm", "vlm", "vla")


def _records(stage: Stage) -> list[dict]:
    return load_results(stage.dir / "results")["policy"]


def _stage_rows(stages: dict[str, Stage]) -> list[list[str]]:
    rows = []
    for name, s in stages.items():
        m = s.info.get("metrics", {})
        rate = m.get("train_samples_per_s")
        rows.append([
            name, s.hash, format_duration(s.seconds), "reused" if s.skipped else "ran",
            f"{rate:.1f}" if rate is not None else "-",
            f"{m['train_loss']:.4g}" if "train_loss" in m else "-",
            f"{m['val_loss']:.4g}" if "val_loss" in m else "-",
        ])  # fmt: skip
    return rows


OPEN_LOOP_HEADER = ["task", "cosine", "within 45 deg", "error (cm)", "motion (cm)", "n"]


def _open_loop_cells(v: dict) -> list[str]:
    return [f"{v['cosine']:.2f}", f"{v['within_45deg']:.0%}", f"{100 * v['error_m']:.1f}", f"{100 * v['motion_m']:.1f}",
            str(v["n"])]  # fmt: skip


def write_report(cfg: PipelineExperiment, variants: dict[str, tuple[PipelineExperiment, dict[str, Stage]]],
                 command: str) -> tuple[Path, Path]:  # fmt: skip
    """report.md + report.html (+ report/*.png) in cfg.dir for the variants' stages; returns the two paths."""
    root = Path(cfg.dir)
    doc = Document("Foundry pipeline report")
    doc.text(f"Variants: {', '.join(variants)}. Reproduce with the command below (complete stages are reused).")
    doc.code(command)
    base_name, (_, base) = next(iter(variants.items()))
    for name, (vcfg, stages) in variants.items():
        doc.heading(f"Variant {name}: {VARIANTS[name][0]}" if name in VARIANTS else f"Variant {name}")
        doc.table(["stage", "hash", "time", "status", "samples/s", "train loss", "val loss"], _stage_rows(stages))
        for stage in TRAINED:
            series, texts = read_metrics(stages[stage].dir / METRICS_FILE)
            curves = {f"{subset} loss": s["loss"] for subset, s in series.items() if "loss" in s}
            png = plot_curves(curves, root / "report" / f"{name}-{stage}-loss.png", title=f"{stage} loss ({name})")
            doc.image(str(png.relative_to(root)), f"{stage} loss ({name})")
            for label, key in (("LLM sample", "sample"), ("VLM captions (reference -> generated)", "captions")):
                if texts.get(key):
                    step, text = texts[key][-1]
                    doc.text(f"{label} at step {step}:").code(text)
            acc = {k.removeprefix("val_acc_"): v for k, v in stages[stage].info.get("metrics", {}).items()
                   if k.startswith("val_acc_")}  # fmt: skip
            if acc:
                doc.text("VLM attribute accuracy on held-out scenes: "
                         + ", ".join(f"{k} {v:.1%}" for k, v in sorted(acc.items())))  # fmt: skip
        policies = {"vla": _records(stages["eval"])}
        policies |= {b: _records(stages[f"eval-{b}"]) for b in vcfg.eval.baselines}
        summaries = {m: summarize(r) for m, r in policies.items()}
        comparisons = {f"vla vs {b}": compare(policies["vla"], policies[b]) for b in vcfg.eval.baselines}
        doc.text(f"Closed loop, {vcfg.eval.episodes_per_task} episodes per task (the same seeds for every policy); "
                 "success rate [Wilson 95% interval] (successes/episodes), Barnard's exact test p-values.")  # fmt: skip
        doc.table(*summary_rows(summaries, comparisons))
        png = plot_success(summaries, root / "report" / f"{name}-success.png", title=f"success rate ({name})")
        doc.image(str(png.relative_to(root)), f"closed-loop success ({name})")
        if "open_loop" in stages["eval"].info:
            doc.text("Open-loop agreement of the VLA on expert demonstrations (the expert drives; every 6 steps the "
                     "policy's xy motion a few steps ahead is compared with the demonstration's): mean cosine, share "
                     "within 45 degrees, end-point error and the demonstration's motion.")  # fmt: skip
            doc.table(
                OPEN_LOOP_HEADER, [[t, *_open_loop_cells(v)] for t, v in stages["eval"].info["open_loop"].items()]
            )
    if len(variants) > 1:
        doc.heading("Sweep: final policies compared")
        summaries = {n: summarize(_records(stages["eval"])) for n, (_, stages) in variants.items()}
        ref = _records(base["eval"])
        comparisons = {f"{n} vs {base_name}": compare(_records(s["eval"]), ref)
                       for n, (_, s) in list(variants.items())[1:]}  # fmt: skip
        doc.table(*summary_rows(summaries, comparisons))
        agreement = {n: s["eval"].info["open_loop"]["overall"] for n, (_, s) in variants.items()
                     if "open_loop" in s["eval"].info}  # fmt: skip
        if agreement:
            doc.table(["variant", *OPEN_LOOP_HEADER[1:]], [[n, *_open_loop_cells(v)] for n, v in agreement.items()])
        png = plot_success(summaries, root / "report" / "sweep-success.png", title="success rate per variant")
        doc.image(str(png.relative_to(root)), "closed-loop success per variant")
    doc.heading("Resolved configuration")
    for name, (vcfg, _) in variants.items():
        doc.text(f"{name}:").code(json.dumps(runs.to_dict(vcfg), indent=1))
    return doc.write(root)


def variant_configs(cfg: PipelineExperiment) -> dict[str, PipelineExperiment]:
    names = cfg.sweep or ("main",)
    if unknown := [n for n in names if n not in VARIANTS]:
        raise ValueError(f"--sweep: unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    return {n: VARIANTS[n][1](cfg) for n in names}


def main(cfg: PipelineExperiment, *, command: str | None = None, log: Callable[[str], None] = print) -> dict:
    """Run every variant, then the report; returns {variant: overall success rate of its policy}."""
    configs = variant_configs(cfg)
    if cfg.print_config:
        print(json.dumps({n: runs.to_dict(c) for n, c in configs.items()}, indent=1))
        return {}
    results = {}
    for name, vcfg in configs.items():
        log(f"[pipeline] variant {name}: {VARIANTS[name][0]}")
        results[name] = (vcfg, run_pipeline(vcfg, log=log))
    command = command or shlex.join(["python", *sys.argv])
    md, html = write_report(cfg, results, command)
    success = {n: summarize(_records(s["eval"]))[OVERALL] for n, (_, s) in results.items()}
    for n, rate in success.items():
        log(f"[pipeline] {n}: closed-loop success {rate}")
    log(f"[pipeline] report: {html} and {md}")
    return {n: rate.rate for n, rate in success.items()}


# ---------------------------------------------------------------------------------------------- presets

_LLM = llm_exp.PRESETS["llm-shakespeare"][1]
_VLM = vlm_exp.PRESETS["vlm-shapes"][1]
_VLA = vla_exp.PRESETS["vla-tabletop"][1]
_VLA_ROBOT = dataclasses.replace(_VLA.robot, image_offsets=(0,))
_STAGES = {  # the LLM and VLM stages of both CPU presets
    "shapes": MakeShapesConfig(train_samples=12_000, val_samples=300, image_size=112, workers=2),
    "llm": stage_of(LLMStage, _LLM, train=dataclasses.replace(_LLM.train, total_train_samples=32 * 400)),
    "vlm": stage_of(VLMStage, _VLM, train=dataclasses.replace(_VLM.train, total_train_samples=32 * 700)),
}
_LIFT_STEPS = 3000
_LIFT_TRAIN = dataclasses.replace(
    _VLA.train, total_train_samples=32 * _LIFT_STEPS, num_checkpoints=6,
    schedule=dataclasses.replace(_VLA.train.schedule, peak_lr=1.5e-3),
)  # fmt: skip
_DEBUG_TRAIN = TrainConfig(
    total_train_samples=32, num_checkpoints=2, global_batch_size=8, compile=False, log_every=4,
    schedule=ScheduleConfig(peak_lr=3e-3, warmup_steps=1),
)  # fmt: skip

PRESETS = {
    "pipeline": (
        f"The default chain on 2 CPU cores in about 45 minutes: llm 11m (400 steps), vlm-shapes (700 steps), then "
        f"a VLA whose head reads every prompt token ({_LIFT_STEPS} steps) on 5000 single-object lift demonstrations, "
        "100 closed-loop episodes.",
        PipelineExperiment(
            # The robot task this budget can learn: one object to find, grasp and lift. On the five-task suite
            # with distractors (pipeline-full) 1500-3500 VLA steps here never beat the random policy.
            demos=MakeDemosConfig(episodes=5000, tasks=("lift",), num_distractors=0, workers=2),
            # One frame per camera (not t-1 and t): half the image tokens, so ~1.6x the steps in the budget.
            vla=stage_of(
                VLAStage,
                _VLA,
                model=dataclasses.replace(_VLA.model, cond_source="prefix"),
                robot=_VLA_ROBOT,
                train=_LIFT_TRAIN,
            ),
            eval=EvalStage(episodes_per_task=100, execute_steps=4),
            **_STAGES,
        ),
    ),
    "pipeline-full": (
        "All five task families with two distractors (1000 demonstrations), the VLA conditioned on <obs> for 1500 "
        "steps: ~25 min here, where its policy scores 0% like the random one; the suite for longer (GPU) runs.",
        PipelineExperiment(
            dir="runs/pipeline-full",
            demos=MakeDemosConfig(episodes=1000, workers=2),
            vla=stage_of(
                VLAStage, _VLA, robot=_VLA_ROBOT, train=dataclasses.replace(_VLA.train, total_train_samples=32 * 1500)
            ),
            **_STAGES,
        ),
    ),
    "pipeline-debug": (
        "Every stage at toy size (debug models, a few steps, 1 episode per task): the chain end to end in ~2 min.",
        PipelineExperiment(
            dir="runs/pipeline-debug",
            text=MakeTextConfig(max_files=2),
            shapes=MakeShapesConfig(train_samples=64, val_samples=16, image_size=32),
            demos=MakeDemosConfig(episodes=5, val_episodes=1, image_size=32),
            tokenizer=TokenizerStage(vocab_size=512, text_bytes=200_000, caption_samples=64, robot_samples=200),
            llm=stage_of(LLMStage, llm_exp.PRESETS["llm-debug"][1], train=_DEBUG_TRAIN),
            vlm=stage_of(VLMStage, vlm_exp.PRESETS["vlm-debug"][1], train=_DEBUG_TRAIN, eval_samples=4),
            vla=stage_of(VLAStage, vla_exp.PRESETS["vla-debug"][1], train=_DEBUG_TRAIN, eval_samples=4),
            eval=EvalStage(episodes_per_task=1, max_steps=16, workers=0, open_loop_episodes=1),
            tracker="none",
            peak_tflops=1.0,
        ),
    ),
}


if __name__ == "__main__":
    main(tyro.extras.overridable_config_cli(PRESETS))
