"""Batch sources for the trainer, from a `DataConfig`: the training windows and the validation sets.

The trainer asks for `batches(window, start_batch)`; this module turns that into a window plan over the
configured datasets and runs it through the loader, so every modality (text, captions, robot data) is
wired the same way: only its `decode`/`collate` pair differs.

Usage::

    decode, collate = text_functions(text_cfg, tok, batch_size=32)
    batches = training_source(data_cfg, seed=0, batch_size=32, batches_per_window=100,
                              decode=decode, collate=collate)
    for batch in batches(window=0, start_batch=0): ...
    for batch in validation_batches(data_cfg, batch_size=32, decode=decode, collate=collate): ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from foundry.data.config import DataConfig
from foundry.data.loader import Collate, Decode, iterate_batches
from foundry.data.plan import rank_share, sequential_plan, window_plan
from foundry.data.shards import index_dataset

Batches = Callable[[int, int], Iterator[dict]]


def check_manifests(paths: tuple[str, ...], *, hint: str) -> None:
    """Raise FileNotFoundError naming the first missing manifest, with `hint` saying how to make it."""
    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"dataset manifest {path} does not exist; {hint}")


def training_source(
    data: DataConfig,
    *,
    seed: int,
    batch_size: int,
    batches_per_window: int,
    decode: Decode,
    collate: Collate,
    rank: int = 0,
    world_size: int = 1,
) -> Batches:
    """`batches(window, start_batch)` over the mixture of `data.manifests`, `batch_size` samples a batch.
    The shard headers are indexed once, here.

    With `world_size` processes, `batch_size` is each process's share: global batch b holds
    `batch_size * world_size` samples and this rank reads only its fixed slice `rank` of it
    (`plan.rank_share`), so the global sample order is that of one process with the whole batch."""
    indexes = [index_dataset(m) for m in data.manifests]
    weights = data.mix_weights
    global_batch = batch_size * world_size

    def batches(window: int, start_batch: int) -> Iterator[dict]:
        plan = window_plan(indexes, weights, seed=seed, window=window, samples_per_window=batches_per_window * global_batch)
        if world_size > 1:
            plan = rank_share(plan, batch_size=global_batch, rank=rank, world_size=world_size)
        return iterate_batches(
            plan, batch_size=batch_size, decode=decode, collate=collate, start_batch=start_batch,
            num_workers=data.num_workers, seed=seed, on_bad_sample=data.on_bad_sample,
        )  # fmt: skip

    return batches


def validation_batches(
    data: DataConfig, *, batch_size: int, decode: Decode, collate: Collate, seed: int = 0
) -> Iterator[dict]:
    """The first `data.val_samples` samples of each validation manifest, in order, in-process."""
    for manifest in data.val_manifests:
        plan = sequential_plan(index_dataset(manifest), num_samples=data.val_samples)
        yield from iterate_batches(plan, batch_size=batch_size, decode=decode, collate=collate, seed=seed)
