"""VLA stage: a VLM reads the cameras, the instruction and an `<obs>` token; a flow-matching head turns noise
into an action chunk. Trained on scripted tabletop demonstrations.

Usage:
    python -m foundry.sim.make_demos --out data/tabletop --episodes 2000      # once: expert demonstrations
    python -m foundry.sim.make_demos --out data/tabletop-debug --episodes 8   # for vla-debug
    python experiments/vla.py vla-debug                                         # seconds
    python experiments/vla.py vla-tabletop --init.vlm runs/vlm-shapes          # from a trained VLM
    python experiments/vla.py vla-tabletop --run-dir runs/vla-scratch          # from scratch
    python experiments/vla.py vla-tabletop --init.vlm runs/vlm-shapes --train.optimizer.frozen '^vlm\\.'
    python experiments/eval.py --policy runs/vla-tabletop --out runs/eval-vla --compare runs/eval

Shapes that come from the data are taken from it: the head's action/proprio widths (`dataset_dims`, or
`robot.pad_*_dim`), its horizon (`robot.action_horizon`), proprio steps (`robot.past_steps + 1`); the
robot images are resized to the ViT's input. Normalization: the `stats.json` of the first train manifest
(saved with every checkpoint, with the tokenizer, for `foundry.infer.policy.Policy.load`).

After every window: the flow loss on the val manifest and `action_mse`: the masked MSE (normalized units)
of sampled chunks (`sample_steps` Euler steps, fixed noise) against the demonstrations on `eval_samples`
held-out samples.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import torch
import tyro

from foundry import rng, tree
from foundry.data.config import DataConfig
from foundry.data.manifest import DataError
from foundry.data.normalize import Normalizer, NormConfig, load_stats, save_stats
from foundry.data.robot import RobotConfig, dataset_dims, robot_functions
from foundry.data.shards import ShardFiles, index_dataset, read_sample
from foundry.data.sources import check_manifests, training_source, validation_batches
from foundry.data.tokenizer import (
    special_ids,
)
from foundry.infer.policy import InstructionTokenizer
from foundry.models import llm, vla, vlm
from foundry.train import checkpoint, dist, loop, runs
from foundry.train.config import RunConfig, ScheduleConfig, TrainConfig
from foundry.train.optim import AdamW
from foundry.train.step import init_state


@dataclasses.dataclass(frozen=True)
class VLAInit:
    vlm: str | None = None  # a VLM run (or checkpoint) dir: its params start params["vlm"], its tokenizer is used
    from_run: str | None = None  # a VLA run (or checkpoint) dir: start from all its params, config and tokenizer


# Actions are the poses the demonstration reached over the next steps ("next_pose", relative to the current
# pose), not the expert's commands: those are far-away targets the env approaches at bounded speed, which a
# policy cannot infer from the images; reached poses replay the demonstration exactly (tests/sim).
ROBOT = RobotConfig(
    action_fields=("next_pose",),
    proprio_fields=("pose",),
    action_horizon=10,
    cameras=("scene", "wrist"),
    image_offsets=(-1, 0),
    image_size=112,
    max_instruction_tokens=24,
    relative_actions=True,
    relative_fields=("next_pose",),
    reference_field="pose",
    # Translations in the table's axes, as the scene camera shows them: in the gripper's axes a motion
    # toward an object seen in the image depends on the gripper's yaw, which the model would have to undo.
    relative_frame="world",
)


@dataclasses.dataclass(frozen=True)
class VLAExperiment:
    model: vla.Config = vla.PRESETS["vla-tabletop"]
    data: DataConfig = DataConfig()
    robot: RobotConfig = ROBOT
    norm: NormConfig = NormConfig()
    tokenizer: str | None = None  # a tokenizer.json or a run dir to take it from (default: the init run's)
    tokenizer_vocab_size: int = 512  # for a tokenizer trained here on the instructions
    init: VLAInit = VLAInit()
    train: TrainConfig = TrainConfig()
    # Flags without a prefix: --run-dir, --tracker, --aim-repo, --device, --peak-tflops, --print-config.
    run: Annotated[RunConfig, tyro.conf.OmitArgPrefixes] = RunConfig(run_dir="runs/vla")
    eval_samples: int = 64  # held-out samples for the sampled-chunk action error (0 skips it)
    sample_steps: int = 10  # Euler steps when sampling chunks (validation and the saved policy)


TABLETOP = DataConfig(
    manifests=("data/tabletop/train/manifest.jsonl",),
    val_manifests=("data/tabletop/val/manifest.jsonl",),
    val_samples=256,
    num_workers=1,
)
DATA_HINT = "make it with `python -m foundry.sim.make_demos --out data/tabletop`, or point --data.manifests elsewhere"

PRESETS = {
    "vla-debug": (
        "vla-debug (vit-debug + llm debug + a 2-layer head, horizon 4) on a few demos at 32 px, eager: seconds.",
        VLAExperiment(
            model=vla.PRESETS["vla-debug"],
            data=DataConfig(
                manifests=("data/tabletop-debug/train/manifest.jsonl",),
                val_manifests=("data/tabletop-debug/val/manifest.jsonl",),
                val_samples=16,
            ),
            robot=dataclasses.replace(ROBOT, action_horizon=4, image_size=32, max_instruction_tokens=16),
            train=TrainConfig(
                total_train_samples=64,
                num_checkpoints=2,
                global_batch_size=8,
                compile=False,
                log_every=4,
                schedule=ScheduleConfig(peak_lr=3e-3, warmup_steps=2),
            ),
            run=RunConfig(run_dir="runs/vla-debug"),
            eval_samples=8,
            sample_steps=4,
        ),
    ),
    "vla-tabletop": (
        "vlm-shapes-shaped VLM (vit-tiny at 112 px, llm 11m) + a 4-layer head, 2 cameras x 2 frames, ~15 min here.",
        VLAExperiment(
            # Budget guess: 4 images (64 image tokens) + ~24 text tokens per sample cost ~3x a vlm-shapes
            # caption sample, so ~500 steps of 32 fit the ~15 min that 1200 vlm-shapes steps take.
            model=vla.PRESETS["vla-tabletop"],
            data=TABLETOP,
            robot=ROBOT,
            train=TrainConfig(
                total_train_samples=32 * 500,
                num_checkpoints=4,
                global_batch_size=32,
                log_every=20,
                schedule=ScheduleConfig(peak_lr=5e-4, warmup_steps=50),
            ),
            run=RunConfig(run_dir="runs/vla-tabletop"),
        ),
    ),
}


def stats_path(manifest: str | Path) -> Path:
    """`stats.json` beside a manifest (a manifest.jsonl path or its dataset directory)."""
    path = Path(manifest)
    return (path.parent if path.suffix == ".jsonl" else path) / "stats.json"


def instruction_texts(manifests: tuple[str, ...], *, max_samples: int = 5000) -> Iterator[str]:
    """Every instruction (all types) of the first `max_samples` samples of each robot dataset."""
    for manifest in manifests:
        index, seen = index_dataset(manifest), 0
        with ShardFiles() as files:
            for shard in index.shards:
                for i in range(len(shard)):
                    if seen >= max_samples:
                        break
                    seen += 1
                    sample = read_sample(shard, i, files)
                    if "language_instructions.json" not in sample:
                        raise DataError(f"shard {shard.path}: sample {i} has no language_instructions.json")
                    for texts in json.loads(sample["language_instructions.json"]).values():
                        yield from (str(t) for t in texts)


def resolve_tokenizer(cfg: VLAExperiment, run_dir: Path):
    """See `runs.run_tokenizer`; a new BPE is trained on the dataset's instructions."""
    texts = lambda: list(instruction_texts(cfg.data.manifests))
    return runs.run_tokenizer(
        run_dir, init_run=cfg.init.from_run or cfg.init.vlm, path=cfg.tokenizer, train_texts=texts,
        vocab_size=cfg.tokenizer_vocab_size,
    )  # fmt: skip


def resolve_model(cfg: VLAExperiment, tok, dims: tuple[int, int]) -> vla.Config:
    """The model config: the VLM's shape from the init run (when given), the whole model from a VLA run
    (`from_run`); vocabulary and token ids from the tokenizer; the head's data shapes from the data."""
    model = cfg.model
    if cfg.init.from_run:
        model = runs.config_from_dict(vla.Config, runs.run_config(cfg.init.from_run)["model"])
    elif cfg.init.vlm:
        model = dataclasses.replace(
            model, vlm=runs.config_from_dict(vlm.Config, runs.run_config(cfg.init.vlm)["model"])
        )
    ids, m = special_ids(tok), model.vlm
    m = dataclasses.replace(
        m, llm=dataclasses.replace(m.llm, vocab_size=tok.get_vocab_size()), image_token_id=ids["<image>"]
    )
    r = cfg.robot
    head = dataclasses.replace(
        model.head,
        action_dim=r.pad_action_dim or dims[0],
        proprio_dim=r.pad_proprio_dim or dims[1],
        horizon=r.action_horizon,
        proprio_steps=r.past_steps + 1,
        past_steps=r.past_action_steps,
        cond_dim=model.cond_layers * m.llm.d_model,
    )
    model = dataclasses.replace(model, vlm=m, head=head, obs_token_id=ids["<obs>"])
    if model.cond_source == "prefix":  # the head reads the whole padded prompt
        head = dataclasses.replace(head, cond_tokens=vla.prompt_length(model, r.num_images, r.max_instruction_tokens))
        model = dataclasses.replace(model, head=head)
    return model


def initial_params(cfg: VLAExperiment, mcfg: vla.Config, key: torch.Tensor) -> dict:
    """Fresh params, with the VLM (its vocabulary grown to the tokenizer's) or the whole VLA loaded."""
    params = vla.init(key, mcfg)
    if cfg.init.from_run:
        loaded = checkpoint.load_params(cfg.init.from_run)
        checkpoint.check_compatible(params, loaded, what="params", source=cfg.init.from_run)
        return loaded
    if cfg.init.vlm:
        old = runs.config_from_dict(vlm.Config, runs.run_config(cfg.init.vlm)["model"])
        loaded = checkpoint.load_params(cfg.init.vlm)
        loaded["llm"] = llm.resize_vocab(loaded["llm"], old.llm, mcfg.vlm.llm.vocab_size)
        checkpoint.check_compatible(params["vlm"], loaded, what="vlm params", source=cfg.init.vlm)
        params["vlm"] = loaded
    return params


@torch.no_grad()
def action_error(
    params: dict, mcfg: vla.Config, batches, *, steps: int, seed: int, device: str = "cpu", compiled: bool = False
) -> float:
    """Masked MSE (normalized units) of sampled chunks against the demonstrations' chunks."""
    total, count = 0.0, 0.0
    for i, batch in enumerate(batches):
        batch = {k: v.to(device) for k, v in batch.items() if not k.startswith("_")}
        key = rng.fold_in(rng.key(seed), i)
        chunk = vla.sample_actions(params, mcfg, batch, key=key, steps=steps, compiled=compiled)
        mask = vla.loss_mask(batch)
        total += float(torch.where(mask, (chunk - batch["actions"].float()) ** 2, 0.0).sum())
        count += float(mask.sum())
    if count == 0:
        raise ValueError("action error: no valid action elements in the held-out samples")
    return total / count


def train(cfg: VLAExperiment, *, max_steps: int | None = None) -> loop.Result:
    """Run (or resume) the VLA stage described by `cfg`."""
    check_manifests((*cfg.data.manifests, *cfg.data.val_manifests), hint=DATA_HINT)
    run_dir = Path(cfg.run.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tok = resolve_tokenizer(cfg, run_dir)
    dims = dataset_dims(cfg.data.manifests[0], cfg.robot)
    mcfg = resolve_model(cfg, tok, dims)
    robot = dataclasses.replace(cfg.robot, image_size=mcfg.vlm.vit.image_size)
    cfg = dataclasses.replace(cfg, model=mcfg, robot=robot)
    tcfg, device = cfg.train, cfg.run.device
    stats = {k: v for k, v in load_stats(stats_path(cfg.data.manifests[0])).items() if k != "state"}
    world = dist.current()
    if world.is_main:  # the run's shared files are written by rank 0
        save_stats(stats, run_dir / "stats.json")
    fields = [robot.stats_name(f) for f in robot.proprio_fields + robot.action_fields]
    normalizer = Normalizer.from_stats(stats, cfg.norm, fields=fields)
    tracker = runs.start(cfg.run, experiment="vla", config=runs.to_dict(cfg), tags=("vla",))

    init_key, train_key = rng.split(rng.key(tcfg.seed))
    params = tree.map(lambda x: x.to(device), initial_params(cfg, mcfg, init_key))
    optimizer = AdamW(tcfg.optimizer, params)
    state = init_state(params, optimizer, train_key, use_ema=tcfg.ema.enabled)

    def functions(batch_size: int):
        return robot_functions(
            robot, batch_size=batch_size, dims=dims, normalizer=normalizer,
            tokenize=InstructionTokenizer(tok.to_str()), pad_id=special_ids(tok)["<pad>"],
        )  # fmt: skip

    rows = tcfg.rank_batch_size(world.size)  # this process's share of every global batch
    decode, collate = functions(rows)
    batches = training_source(
        cfg.data, seed=tcfg.seed, batch_size=rows, batches_per_window=tcfg.steps_per_window,
        decode=decode, collate=collate, rank=world.rank, world_size=world.size,
    )  # fmt: skip
    loss_fn = lambda p, b, *, key: vla.loss(p, mcfg, b, key=key, remat=tcfg.remat, compiled=tcfg.compile)
    held_out = dataclasses.replace(cfg.data, val_manifests=cfg.data.val_manifests[:1], val_samples=cfg.eval_samples)

    def evaluate(state: dict) -> dict[str, float]:
        params, metrics = state["params"], {}
        if cfg.data.val_manifests:
            val = validation_batches(cfg.data, batch_size=rows, decode=decode, collate=collate)
            # the flow loss draws noise and times: a fixed key makes windows comparable
            fixed = lambda p, b, *, key: loss_fn(p, b, key=rng.key(tcfg.seed + 1, device=device))
            metrics["loss"] = runs.mean_loss(fixed, params, val, device=device)
            if cfg.eval_samples:
                val = validation_batches(held_out, batch_size=rows, decode=decode, collate=collate)
                metrics["action_mse"] = action_error(
                    params, mcfg, val, steps=cfg.sample_steps, seed=tcfg.seed, device=device, compiled=tcfg.compile
                )
        return metrics

    n_images = robot.num_images
    seq_len = vla.prompt_length(mcfg, n_images, robot.max_instruction_tokens)
    print(f"vla: parameter groups\n{optimizer.describe()}")
    return runs.train_loop(
        cfg, tracker=tracker, state=state, optimizer=optimizer, loss_fn=loss_fn, batches=batches, evaluate=evaluate,
        assets={"tokenizer.json": run_dir / "tokenizer.json", "stats.json": run_dir / "stats.json"},
        flops_per_sample=vla.flops_per_sample(mcfg, seq_len, n_images), desc="vla", max_steps=max_steps,
    )  # fmt: skip


if __name__ == "__main__":
    runs.cli(PRESETS, train)
