"""VLM stage: a ViT, pixel shuffle and a projector on top of a (trained) LLM, trained to caption images.

Usage:
    python -m foundry.data.make_shapes --out data/shapes          # once: rendered scenes with captions
    python experiments/vlm.py vlm-debug                            # seconds
    python experiments/vlm.py vlm-shapes --init.llm runs/llm-shakespeare    # from a trained LLM
    python experiments/vlm.py vlm-shapes --run-dir runs/vlm-scratch --tokenizer runs/llm-shakespeare  # from scratch
    # align the projector first (ViT and LLM frozen), then train everything from that run:
    python experiments/vlm.py vlm-shapes --init.llm runs/llm-shakespeare --run-dir runs/vlm-align \
        --train.optimizer.frozen '^vit\\.' '^llm\\.'
    python experiments/vlm.py vlm-shapes --init.from-run runs/vlm-align --run-dir runs/vlm-full
    # a pretrained SigLIP vision tower (its config.json sets the ViT shape and image size) on a trained LLM:
    python experiments/vlm.py vlm-shapes --init.llm runs/llm-shakespeare --init.hf-vision ~/models/siglip \
        --model.shuffle-factor 3 --run-dir runs/vlm-siglip

After every window: validation caption loss, sample captions of fixed validation scenes (logged to Aim)
and, with --eval-samples > 0, the caption attribute accuracy against a blind (blank-image) baseline.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import torch
import tyro

from foundry import rng, tree
from foundry.data.captions import CaptionConfig, caption_functions
from foundry.data.config import DataConfig
from foundry.data.sources import check_manifests, training_source, validation_batches
from foundry.data.text import texts_from_manifests
from foundry.data.tokenizer import (
    special_ids,
)
from foundry.eval.captions import caption_accuracy, load_scenes
from foundry.models import hf_vit, llm, vit, vlm
from foundry.train import checkpoint, dist, loop, runs
from foundry.train.config import RunConfig, ScheduleConfig, TrainConfig
from foundry.train.optim import AdamW
from foundry.train.step import init_state


@dataclasses.dataclass(frozen=True)
class VLMInit:
    llm: str | None = None  # an LLM run (or checkpoint) dir: its params and tokenizer start the VLM's LLM
    from_run: str | None = None  # a VLM run (or checkpoint) dir: start from all its params and tokenizer
    # A Hugging Face SigLIP directory (SiglipVisionModel or SiglipModel): its config.json replaces the preset's
    # ViT shape (image size included) and its vision tower starts the ViT. Composes with --init.llm.
    hf_vision: str | None = None


@dataclasses.dataclass(frozen=True)
class VLMExperiment:
    model: vlm.Config = vlm.PRESETS["vlm-tiny"]
    data: DataConfig = DataConfig()
    caption: CaptionConfig = CaptionConfig()
    tokenizer: str | None = None  # a tokenizer.json or a run dir to take it from (default: the init run's)
    tokenizer_vocab_size: int = 4096  # for a tokenizer trained here (no --init and no --tokenizer)
    init: VLMInit = VLMInit()
    train: TrainConfig = TrainConfig()
    # Flags without a prefix: --run-dir, --tracker, --aim-repo, --device, --peak-tflops, --print-config.
    run: Annotated[RunConfig, tyro.conf.OmitArgPrefixes] = RunConfig(run_dir="runs/vlm")
    eval_samples: int = 64  # held-out scenes for the attribute accuracy (0 skips it)


SHAPES = DataConfig(
    manifests=("data/shapes/train/manifest.jsonl",),
    val_manifests=("data/shapes/val/manifest.jsonl",),
    val_samples=128,
    num_workers=1,
)
DATA_HINT = "make it with `python -m foundry.data.make_shapes --out data/shapes`, or point --data.manifests elsewhere"

PRESETS = {
    "vlm-debug": (
        "vit-debug + llm debug on the shapes scenes at 32 px, 16 steps, eager: a smoke test in seconds.",
        VLMExperiment(
            model=vlm.PRESETS["vlm-debug"],
            data=dataclasses.replace(SHAPES, val_samples=16, num_workers=0),
            caption=CaptionConfig(seq_len=40),
            tokenizer_vocab_size=512,
            train=TrainConfig(
                total_train_samples=128,
                num_checkpoints=2,
                global_batch_size=8,
                compile=False,
                log_every=4,
                schedule=ScheduleConfig(peak_lr=3e-3, warmup_steps=2),
            ),
            run=RunConfig(run_dir="runs/vlm-debug"),
            eval_samples=8,
        ),
    ),
    "vlm-shapes": (
        "vit-tiny widths at 112 px (16 image tokens) + llm 11m captioning the shapes scenes, ~10-15 min here.",
        VLMExperiment(
            # vit-tiny's 224 px would give 64 image tokens; 112 px keeps the shapes legible at a quarter of
            # the ViT cost and half the sequence, so the CPU budget buys 3x more steps.
            model=vlm.Config(vit=dataclasses.replace(vit.PRESETS["vit-tiny"], image_size=112), llm=llm.PRESETS["11m"]),
            data=SHAPES,
            caption=CaptionConfig(seq_len=48),
            train=TrainConfig(
                total_train_samples=32 * 1200,
                num_checkpoints=4,
                global_batch_size=32,
                log_every=20,
                schedule=ScheduleConfig(peak_lr=1e-3, warmup_steps=100),
            ),
            run=RunConfig(run_dir="runs/vlm-shapes"),
        ),
    ),
}


def resolve_tokenizer(cfg: VLMExperiment, run_dir: Path):
    """See `runs.run_tokenizer`; a new BPE is trained on the captions (and any text) of the training data."""
    texts = lambda: texts_from_manifests(cfg.data.manifests, max_bytes=4_000_000)
    return runs.run_tokenizer(
        run_dir, init_run=cfg.init.from_run or cfg.init.llm, path=cfg.tokenizer, train_texts=texts,
        vocab_size=cfg.tokenizer_vocab_size,
    )  # fmt: skip


def import_vision(cfg: VLMExperiment) -> hf_vit.Imported | None:
    """The --init.hf-vision SigLIP tower (fp32), its notes printed; None without --init.hf-vision."""
    if not cfg.init.hf_vision:
        return None
    if cfg.init.from_run:
        raise ValueError("--init.hf-vision and --init.from-run both give the ViT's weights: choose one")
    imported = hf_vit.load(cfg.init.hf_vision, dtype=torch.float32)
    for note in imported.notes:
        print(f"vlm: --init.hf-vision {cfg.init.hf_vision}: {note}")
    return imported


def resolve_model(cfg: VLMExperiment, tok, vision: hf_vit.Imported | None = None) -> vlm.Config:
    """The model config with the LLM's shape taken from the init run (when given), the ViT's from the imported
    vision tower (when given, see `runs.imported_model_config`) and the vocabulary and `<image>` id from the
    tokenizer."""
    vit_cfg = cfg.model.vit
    if vision is not None:
        presets = [*vit.PRESETS.values(), *(c.model.vit for _, c in PRESETS.values())]
        vit_cfg = runs.imported_model_config(
            vit_cfg, vision.cfg, presets=presets, keep=("init_std",), flag="--init.hf-vision",
            source=cfg.init.hf_vision,
        )  # fmt: skip
    llm_cfg = cfg.model.llm
    if cfg.init.llm and not cfg.init.from_run:
        llm_cfg = runs.config_from_dict(llm.Config, runs.run_config(cfg.init.llm)["model"])
    llm_cfg = dataclasses.replace(llm_cfg, vocab_size=tok.get_vocab_size())
    return dataclasses.replace(cfg.model, vit=vit_cfg, llm=llm_cfg, image_token_id=special_ids(tok)["<image>"])


def initial_params(
    cfg: VLMExperiment, mcfg: vlm.Config, key: torch.Tensor, vision: hf_vit.Imported | None = None
) -> dict:
    """Fresh params, with the LLM (grown to the new vocabulary) or the whole VLM loaded from an init run, and
    the ViT from an imported vision tower."""
    params = vlm.init(key, mcfg)
    if vision is not None:
        checkpoint.check_compatible(params["vit"], vision.params, what="vit params", source=cfg.init.hf_vision)
        params["vit"] = vision.params
    if cfg.init.from_run:
        loaded = checkpoint.load_params(cfg.init.from_run)
        checkpoint.check_compatible(params, loaded, what="params", source=cfg.init.from_run)
        return loaded
    if cfg.init.llm:
        old_cfg = runs.config_from_dict(llm.Config, runs.run_config(cfg.init.llm)["model"])
        loaded = llm.resize_vocab(checkpoint.load_params(cfg.init.llm), old_cfg, mcfg.llm.vocab_size)
        checkpoint.check_compatible(params["llm"], loaded, what="llm params", source=cfg.init.llm)
        params["llm"] = loaded
    return params


def train(cfg: VLMExperiment, *, max_steps: int | None = None) -> loop.Result:
    """Run (or resume) the VLM stage described by `cfg`."""
    check_manifests((*cfg.data.manifests, *cfg.data.val_manifests), hint=DATA_HINT)
    run_dir = Path(cfg.run.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    vision = import_vision(cfg)
    tok = resolve_tokenizer(cfg, run_dir)
    mcfg = resolve_model(cfg, tok, vision)
    ccfg = dataclasses.replace(cfg.caption, image_size=mcfg.vit.image_size, image_tokens=mcfg.tokens_per_image)
    cfg = dataclasses.replace(cfg, model=mcfg, caption=ccfg)
    tcfg, device = cfg.train, cfg.run.device
    tracker = runs.start(cfg.run, experiment="vlm", config=runs.to_dict(cfg), tags=("vlm",))

    init_key, train_key = rng.split(rng.key(tcfg.seed))
    params = tree.map(lambda x: x.to(device), initial_params(cfg, mcfg, init_key, vision))
    optimizer = AdamW(tcfg.optimizer, params)
    state = init_state(params, optimizer, train_key, use_ema=tcfg.ema.enabled)
    world = dist.current()
    rows = tcfg.rank_batch_size(world.size)  # this process's share of every global batch
    decode, collate = caption_functions(ccfg, tok, batch_size=rows, vocab_size=mcfg.llm.vocab_size)
    batches = training_source(
        cfg.data, seed=tcfg.seed, batch_size=rows, batches_per_window=tcfg.steps_per_window,
        decode=decode, collate=collate, rank=world.rank, world_size=world.size,
    )  # fmt: skip
    loss_fn = lambda p, b, *, key: vlm.loss(p, mcfg, b, key=key, remat=tcfg.remat)
    val_manifest = cfg.data.val_manifests[0] if cfg.data.val_manifests else None
    scenes = load_scenes(val_manifest, ccfg, cfg.eval_samples) if val_manifest and cfg.eval_samples else None

    def evaluate(state: dict) -> dict[str, float]:
        params, metrics = state["params"], {}
        if val_manifest:
            val = validation_batches(cfg.data, batch_size=rows, decode=decode, collate=collate)
            metrics["loss"] = runs.mean_loss(loss_fn, params, val, device=device)
        if scenes is not None:
            seen, texts = caption_accuracy(params, mcfg, tok, ccfg, val_manifest, scenes=scenes)
            blind, _ = caption_accuracy(params, mcfg, tok, ccfg, val_manifest, scenes=scenes, blind=True)
            metrics.update({f"acc_{k}": v for k, v in seen.items()})
            metrics.update({f"blind_acc_{k}": v for k, v in blind.items()})
            samples = "\n".join(f"{m['caption']!r} -> {t!r}" for m, t in zip(scenes[1][:4], texts[:4]))
            tracker.log_text("captions", samples, step=int(state["step"]))
        return metrics

    print(f"vlm: parameter groups\n{optimizer.describe()}")
    return runs.train_loop(
        cfg, tracker=tracker, state=state, optimizer=optimizer, loss_fn=loss_fn, batches=batches, evaluate=evaluate,
        assets={"tokenizer.json": run_dir / "tokenizer.json"},
        flops_per_sample=vlm.flops_per_sample(mcfg, ccfg.seq_len, ccfg.images_per_sample), desc="vlm",
        max_steps=max_steps,
    )  # fmt: skip


if __name__ == "__main__":
    runs.cli(PRESETS, train)
