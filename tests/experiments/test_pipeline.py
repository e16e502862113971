"""The pipeline experiment: pipeline-debug runs the whole chain and writes the report; a rerun reuses every
stage; an interrupted stage resumes; a sweep variant reruns only what it changes."""

import dataclasses
import json
import shutil

import pytest

from experiments import pipeline
from foundry.train import checkpoint
from foundry.train.stages import read_stage

DEBUG = pipeline.PRESETS["pipeline-debug"][1]
STAGES = ["text", "shapes", "demos", "tokenizer", "llm", "vlm", "vla", "eval", "eval-expert", "eval-random"]


def started(lines):
    return [line.split(":")[0].removeprefix("[pipeline] ") for line in lines if ": start in " in line]


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    cfg = dataclasses.replace(DEBUG, dir=str(tmp_path_factory.mktemp("pipeline")))
    lines = []
    success = pipeline.main(cfg, command="python experiments/pipeline.py pipeline-debug", log=lines.append)
    return cfg, lines, success


def test_the_chain_runs_end_to_end_and_writes_the_report(done):
    cfg, lines, success = done
    root = pipeline.Path(cfg.dir)
    assert list(success) == ["main"] and 0.0 <= success["main"] <= 1.0
    assert started(lines) == STAGES
    assert sum(": done in " in line for line in lines) == len(STAGES)
    stages = {p.name.rsplit("-", 1)[0]: p for p in (root / "stages").iterdir()}
    assert sorted(stages) == sorted(STAGES) and all(read_stage(p) is not None for p in stages.values())
    # the VLA started from the VLM stage's weights, the VLM from the LLM's, the LLM from the tokenizer stage
    vla_cfg = json.loads((stages["vla"] / "config.json").read_text())
    assert vla_cfg["init"]["vlm"] == str(stages["vlm"])
    assert json.loads((stages["vlm"] / "config.json").read_text())["init"]["llm"] == str(stages["llm"])
    assert json.loads((stages["llm"] / "config.json").read_text())["tokenizer"]["path"].startswith(
        str(stages["tokenizer"])
    )
    md, html = (root / "report.md").read_text(), (root / "report.html").read_text()
    for text in (
        "| overall |",
        "p (vla vs random)",
        "VLM captions",
        "pipeline-debug",
        "report/main-vla-loss.png",
        "Open-loop agreement",
        "| cosine | within 45 deg |",
    ):
        assert text in md, text
    assert html.count("data:image/png;base64,") == 4 and '<img src="report/' not in html  # self-contained
    for stage in ("llm", "vlm", "vla"):
        assert (root / "report" / f"main-{stage}-loss.png").stat().st_size > 1000


def test_a_rerun_reuses_every_stage(done):
    cfg, _, success = done
    lines = []
    assert pipeline.main(cfg, command="x", log=lines.append) == success
    assert sum(line.endswith("skipped") for line in lines) == len(STAGES)


def test_an_interrupted_stage_resumes_from_its_checkpoint(done):
    cfg, _, _ = done
    root = pipeline.Path(cfg.dir)
    vla = next((root / "stages").glob("vla-*"))
    (vla / "stage.json").unlink()  # as if the process died after the first window's checkpoint
    shutil.rmtree(checkpoint.list_checkpoints(vla)[-1])
    lines = []
    pipeline.run_pipeline(cfg, log=lines.append)
    assert f"[pipeline] vla: resuming in {vla}" in lines
    assert sum(line.endswith("skipped") for line in lines) == len(STAGES) - 1  # eval: same hash, reused
    assert read_stage(vla) is not None


def test_a_sweep_variant_reruns_only_the_stages_it_changes(done):
    cfg, _, _ = done
    lines = []
    success = pipeline.main(dataclasses.replace(cfg, sweep=("main", "vla-prefix")), command="x", log=lines.append)
    assert list(success) == ["main", "vla-prefix"]
    assert started(lines) == ["vla", "eval"]  # data, tokenizer, LLM, VLM and the baselines are shared
    md = (pipeline.Path(cfg.dir) / "report.md").read_text()
    assert "## Sweep: final policies compared" in md and "p (vla-prefix vs main)" in md and "| variant | cosine |" in md


def test_config_errors():
    with pytest.raises(ValueError, match=r"unknown variants \['nope'\]"):
        pipeline.variant_configs(dataclasses.replace(DEBUG, sweep=("nope",)))
    with pytest.raises(ValueError, match=r"PipelineExperiment has no field 'lm' \(in 'lm.train'\)"):
        pipeline.replace_at(DEBUG, "lm.train", 1)
    doubled = pipeline.VARIANTS["llm-2x"][1](DEBUG)
    assert doubled.llm.train.total_train_samples == 2 * DEBUG.llm.train.total_train_samples
    assert pipeline.VARIANTS["vla-k1"][1](DEBUG).vla.model.cond_layers == 1
    assert pipeline.VARIANTS["vla-prefix"][1](DEBUG).vla.model.cond_source == "prefix"


def test_evaluation_faces_the_demonstrations_scenes():
    """--eval.tasks left empty means the demonstrations' tasks; the scenes are the demonstrations' simulator."""
    lift = dataclasses.replace(DEBUG, demos=dataclasses.replace(DEBUG.demos, tasks=("lift",), num_distractors=0))
    tasks, sim = pipeline._scenes(lift)
    assert tasks == ("lift",) and sim.num_distractors == 0 and sim.image_size == DEBUG.demos.image_size
    chosen = dataclasses.replace(lift, eval=dataclasses.replace(lift.eval, tasks=("push", "lift")))
    assert pipeline._scenes(chosen)[0] == ("push", "lift")


def test_cli_overrides_any_stage_field(capsys):
    import tyro

    args = ["pipeline-debug", "--llm.train.total-train-samples", "64", "--vla.model.cond-layers", "1",
            "--eval.episodes-per-task", "3", "--print-config"]  # fmt: skip
    cfg = tyro.extras.overridable_config_cli(pipeline.PRESETS, args=args)
    assert cfg.llm.train.total_train_samples == 64 and cfg.vla.model.cond_layers == 1
    assert isinstance(cfg.llm, pipeline.LLMStage) and cfg.eval.episodes_per_task == 3
    pipeline.main(cfg)
    assert json.loads(capsys.readouterr().out)["main"]["eval"]["episodes_per_task"] == 3
