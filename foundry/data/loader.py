"""Turn a plan into batches: read, decode and collate, in-process or in DataLoader worker processes.

Batch `b` holds plan entries `[b*B, (b+1)*B)`; a short last batch is filled with `None` slots (padding
rows, not counted as skipped). With `W` workers, worker `k` builds batches `start_batch + k + n*W`; the
DataLoader asks its workers in round robin starting at worker 0, so batches arrive in order and the
output never depends on `W` (tested for W = 0, 1, 2). A resume passes the checkpointed cursor as
`start_batch` and gets exactly the remaining batches of the window.

A modality supplies two functions (picklable, e.g. frozen dataclasses, for non-fork start methods):
- `decode(sample, seed) -> dict`: `sample` maps member extensions to bytes, plus `"__key__"` and
  `"__shard__"`; `seed` is `plan.sample_seed(seed, position)` for random crops and augmentations. Bad
  data raises `DataError` saying what is wrong; the loader adds the shard path and sample key.
- `collate(list[decoded | None]) -> dict[str, Tensor]` with static shapes; `None` is a fully-masked row.

Every batch also carries `"_skipped"`: a 0-D int64 count of bad samples replaced by padding (keys that
start with "_" are metadata for the trainer to pop).

Usage:

    for batch in iterate_batches(plan, batch_size=32, decode=dec, collate=col, seed=0, num_workers=2):
        skipped = batch.pop("_skipped")
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from foundry.data.manifest import DataError
from foundry.data.plan import Plan, sample_seed
from foundry.data.shards import ShardFiles, read_sample

_log = logging.getLogger(__name__)

Decode = Callable[[dict[str, Any], int], Any]
Collate = Callable[[list[Any]], dict[str, torch.Tensor]]


def iterate_batches(
    plan: Plan,
    *,
    batch_size: int,
    decode: Decode,
    collate: Collate,
    start_batch: int = 0,
    num_workers: int = 0,
    seed: int,
    on_bad_sample: Literal["error", "skip"] = "error",
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield the batches of `plan` from batch `start_batch` on (see the module docstring)."""
    if batch_size < 1:
        raise ValueError(f"batch_size = {batch_size} must be >= 1")
    num_batches = math.ceil(len(plan) / batch_size)
    if not 0 <= start_batch <= num_batches:
        raise ValueError(f"start_batch = {start_batch} is outside the plan's {num_batches} batches")
    if on_bad_sample not in ("error", "skip"):
        raise ValueError(f"on_bad_sample = {on_bad_sample!r}: use 'error' or 'skip'")
    stream = BatchStream(plan, batch_size, decode, collate, start_batch, seed, on_bad_sample)
    if num_workers == 0:
        return stream.batches(start_batch, 1)
    return _from_workers(stream, num_workers)


def _from_workers(stream: BatchStream, num_workers: int) -> Iterator[dict[str, torch.Tensor]]:
    loader = DataLoader(
        stream,
        batch_size=None,
        num_workers=num_workers,
        collate_fn=_identity,
        worker_init_fn=_init_worker,
    )
    for item in loader:
        if isinstance(item, DataError):
            # Raised afresh so the message is the worker's, not a traceback inside torch.
            raise DataError(str(item)) from None
        yield item


def _identity(x: Any) -> Any:
    return x


def _init_worker(worker_id: int) -> None:
    torch.set_num_threads(1)  # W workers x N threads would oversubscribe the cores


class BatchStream(IterableDataset):
    """The batches of a plan; in a DataLoader worker, only that worker's share of them."""

    def __init__(
        self,
        plan: Plan,
        batch_size: int,
        decode: Decode,
        collate: Collate,
        start_batch: int,
        seed: int,
        on_bad_sample: str,
    ) -> None:
        super().__init__()
        self.plan, self.batch_size, self.decode, self.collate = plan, batch_size, decode, collate
        self.start_batch, self.seed, self.on_bad_sample = start_batch, seed, on_bad_sample

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        if info is None:
            yield from self.batches(self.start_batch, 1)
            return
        try:
            yield from self.batches(self.start_batch + info.id, info.num_workers)
        except DataError as e:
            yield e  # re-raised by the main process with this message

    def batches(self, first: int, step: int) -> Iterator[dict[str, torch.Tensor]]:
        """Batches `first, first + step, ...` up to the end of the plan."""
        num_batches = math.ceil(len(self.plan) / self.batch_size)
        with ShardFiles() as files:
            for b in range(first, num_batches, step):
                yield self.batch(b, files)

    def batch(self, b: int, files: ShardFiles) -> dict[str, torch.Tensor]:
        lo = b * self.batch_size
        hi = min(lo + self.batch_size, len(self.plan))
        decoded: list[Any] = []
        skipped = 0
        for i in range(lo, hi):
            try:
                decoded.append(self.sample(i, files))
            except DataError as e:
                if self.on_bad_sample == "error":
                    raise
                _log.warning("skipped a bad sample: %s", e)
                decoded.append(None)
                skipped += 1
        decoded += [None] * (self.batch_size - (hi - lo))
        out = self.collate(decoded)
        out["_skipped"] = torch.tensor(skipped, dtype=torch.int64)
        return out

    def sample(self, i: int, files: ShardFiles) -> Any:
        """Read and decode plan entry `i`; a `DataError` names the shard file and the sample key."""
        ref = self.plan.ref(i)
        shard = self.plan.datasets[ref.dataset].shards[ref.shard]
        key = shard.samples[ref.sample].key
        try:
            return self.decode(read_sample(shard, ref.sample, files), sample_seed(self.seed, ref.position))
        except DataError as e:
            raise DataError(f"shard {shard.path}: sample {key!r}: {e}") from None
        except Exception as e:  # a bug in decode, not bad data: keep the traceback, add where
            e.add_note(f"while decoding shard {shard.path}, sample {key!r}")
            raise
