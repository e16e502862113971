"""Plans: which sample fills each global sample position, as a pure function of (data, seed, window).

The training budget is a number of samples split into checkpoint windows of `S` samples. The plan of
window `w` lists the samples for global positions `[w*S, (w+1)*S)`; it depends only on the dataset
indexes, the weights, the seed and `w`, never on how many windows ran before (a resumed run rebuilds it)
nor on the number of workers.

Randomness: host-side numpy, one `Generator(Philox(SeedSequence([seed, purpose, ...])))` per decision,
keyed by explicit integers (never global state, never `foundry.rng`'s traced keys, which this
bookkeeping does not need):
- Mixing: window `w` takes `Multinomial(S, weights)` samples from each dataset (key `(seed, COUNTS, w)`)
  in a uniformly random order (key `(seed, ORDER, w)`): the same law as an i.i.d. weighted draw per
  position, but the number of earlier picks of a dataset (its position in its own stream) is the sum of
  the counts of earlier windows, O(windows) to compute.
- Each dataset is an endless stream over epochs. Epoch `e` visits the shards in a permuted order (key
  `(seed, SHARDS, dataset, e)`) and the samples of each shard in a permuted order (key
  `(seed, SAMPLES, dataset, e, shard)`); shards are read by seeking, so this costs no extra I/O pass.
- `sample_seed(seed, position)` is the per-sample seed handed to `decode` (crops, augmentations); turn
  it into a generator with `np.random.default_rng(seed)` or into a key with `foundry.rng.key(seed)`.

Usage:

    indexes = [index_dataset(m) for m in cfg.manifests]
    S = samples_per_window(total_samples=1_000_000, num_windows=100, samples_per_batch=64)
    plan = window_plan(indexes, cfg.mix_weights, seed=0, window=3, samples_per_window=S)
    plan.ref(0)  # SampleRef(dataset=1, shard=4, sample=17, position=30000)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from foundry.data.manifest import DataError
from foundry.data.shards import DatasetIndex

_SAMPLE_KEY, _COUNTS, _ORDER, _SHARDS, _SAMPLES = range(5)


def generator(seed: int, *words: int) -> np.random.Generator:
    """A numpy generator keyed by `(seed, *words)`; the same integers always give the same stream."""
    return np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, *words])))


def sample_seed(seed: int, position: int) -> int:
    """The 63-bit seed of the sample at global `position` (for `decode`'s random choices)."""
    state = np.random.SeedSequence([seed, _SAMPLE_KEY, int(position)]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


@dataclasses.dataclass(frozen=True)
class SampleRef:
    """One planned sample: `datasets[dataset].shards[shard].samples[sample]` at global `position`."""

    dataset: int
    shard: int
    sample: int
    position: int


@dataclasses.dataclass(frozen=True, eq=False)
class Plan:
    """An ordered list of sample references, with the indexes needed to read them (picklable)."""

    datasets: tuple[DatasetIndex, ...]
    dataset: np.ndarray  # (N,) int64
    shard: np.ndarray  # (N,) int64
    sample: np.ndarray  # (N,) int64
    position: np.ndarray  # (N,) int64 global sample positions

    def __len__(self) -> int:
        return len(self.position)

    def ref(self, i: int) -> SampleRef:
        return SampleRef(*(int(a[i]) for a in (self.dataset, self.shard, self.sample, self.position)))

    def refs(self) -> list[SampleRef]:
        return [self.ref(i) for i in range(len(self))]


def samples_per_window(total_samples: int, num_windows: int, samples_per_batch: int) -> int:
    """`total_samples / num_windows`, checked to be a whole number of batches."""
    if num_windows < 1 or total_samples < 1 or samples_per_batch < 1:
        raise ValueError(
            f"need total_samples, num_windows, samples_per_batch >= 1, got "
            f"{total_samples}, {num_windows}, {samples_per_batch}"
        )
    unit = num_windows * samples_per_batch
    if total_samples % unit:
        lower, upper = (total_samples // unit) * unit, (total_samples // unit + 1) * unit
        raise ValueError(
            f"total_samples={total_samples} does not split into {num_windows} windows of whole batches "
            f"of {samples_per_batch} samples; use a multiple of {unit}, e.g. {lower or upper} or {upper}"
        )
    return total_samples // num_windows


def batches_per_window(window_samples: int, samples_per_batch: int) -> int:
    """Batches in a window of `window_samples` samples; raises unless it divides evenly."""
    if samples_per_batch < 1 or window_samples % samples_per_batch:
        raise ValueError(
            f"a window of {window_samples} samples is not a whole number of batches of {samples_per_batch}"
        )
    return window_samples // samples_per_batch


def window_plan(
    indexes: Sequence[DatasetIndex],
    weights: Sequence[float],
    *,
    seed: int,
    window: int,
    samples_per_window: int,
) -> Plan:
    """The samples of global positions `[window*S, (window+1)*S)` drawn from `indexes` by `weights`."""
    p = _check_mixture(indexes, weights)
    if seed < 0 or window < 0 or samples_per_window < 1:
        raise ValueError(
            f"need seed >= 0, window >= 0, samples_per_window >= 1, got {seed}, {window}, {samples_per_window}"
        )
    S = samples_per_window
    before = sum((_window_counts(seed, w, S, p) for w in range(window)), np.zeros(len(p), np.int64))
    counts = _window_counts(seed, window, S, p)
    choice = np.repeat(np.arange(len(p)), counts)[generator(seed, _ORDER, window).permutation(S)]
    shard = np.zeros(S, np.int64)
    sample = np.zeros(S, np.int64)
    for d, index in enumerate(indexes):
        slots = np.flatnonzero(choice == d)
        if len(slots) == 0:
            continue
        stream = before[d] + np.arange(len(slots))
        shard[slots], sample[slots] = _locate(index, seed, d, stream)
    position = window * S + np.arange(S, dtype=np.int64)
    return Plan(tuple(indexes), choice.astype(np.int64), shard, sample, position)


def rank_share(plan: Plan, *, batch_size: int, rank: int, world_size: int) -> Plan:
    """Rank `rank`'s fixed slice of every global batch of `batch_size` plan entries: entries
    `[b*B + rank*B/W, b*B + (rank+1)*B/W)` of batch b, so its batch b is its part of the global batch b and
    `world_size` ranks together read exactly the entries (and positions, hence sample seeds) of one process
    with batch B. Raises unless B divides into `world_size` equal parts and the plan into whole batches."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size} processes")
    if batch_size < 1 or batch_size % world_size or len(plan) % batch_size:
        raise ValueError(
            f"a global batch of {batch_size} samples does not split into {world_size} equal rank shares "
            f"(or the plan's {len(plan)} samples into whole batches): make the global batch size a multiple "
            "of the number of processes"
        )
    share = batch_size // world_size
    starts = np.arange(0, len(plan), batch_size) + rank * share
    rows = (starts[:, None] + np.arange(share)[None, :]).reshape(-1)
    return Plan(plan.datasets, plan.dataset[rows], plan.shard[rows], plan.sample[rows], plan.position[rows])


def sequential_plan(index: DatasetIndex, *, num_samples: int | None = None) -> Plan:
    """The first `num_samples` samples (all if None or if the dataset holds fewer) of one dataset, in
    manifest and file order.

    For validation: no shuffling and no mixing, so the same samples are evaluated in every run.
    """
    total = index.num_samples
    if num_samples is not None and num_samples < 0:
        raise ValueError(f"num_samples = {num_samples} must be >= 0")
    n = total if num_samples is None else min(num_samples, total)
    shard = np.repeat(np.arange(len(index.shards)), index.shard_sizes)[:n]
    sample = np.concatenate([np.arange(k) for k in index.shard_sizes] + [np.zeros(0, np.int64)])[:n]
    position = np.arange(n, dtype=np.int64)
    return Plan((index,), np.zeros(n, np.int64), shard.astype(np.int64), sample.astype(np.int64), position)


def _check_mixture(indexes: Sequence[DatasetIndex], weights: Sequence[float]) -> np.ndarray:
    if not indexes:
        raise ValueError("no datasets to plan from: give at least one manifest")
    if len(weights) != len(indexes):
        raise ValueError(f"{len(weights)} weights for {len(indexes)} datasets: give one weight per dataset")
    p = np.asarray(weights, dtype=np.float64)
    if not (p >= 0).all() or p.sum() <= 0:
        raise ValueError(f"weights {tuple(weights)} must be >= 0 with a positive sum")
    for index, w in zip(indexes, p):
        if w > 0 and index.num_samples == 0:
            raise DataError(f"dataset {index.manifest} has weight {w} but its shards hold no samples")
    return p / p.sum()


def _window_counts(seed: int, window: int, S: int, p: np.ndarray) -> np.ndarray:
    return generator(seed, _COUNTS, window).multinomial(S, p).astype(np.int64)


def _locate(index: DatasetIndex, seed: int, d: int, stream: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shard, sample-in-shard) of positions `stream` of dataset `d`'s endless, per-epoch shuffled stream."""
    sizes = np.asarray(index.shard_sizes, dtype=np.int64)
    epoch, offset = np.divmod(stream, sizes.sum())
    shard = np.zeros(len(stream), np.int64)
    sample = np.zeros(len(stream), np.int64)
    for e in np.unique(epoch):
        sel = np.flatnonzero(epoch == e)
        order = generator(seed, _SHARDS, d, int(e)).permutation(len(sizes))  # this epoch's shard order
        ends = np.cumsum(sizes[order])
        slot = np.searchsorted(ends, offset[sel], side="right")
        picked, within = order[slot], offset[sel] - (ends[slot] - sizes[order][slot])
        shard[sel] = picked
        for s in np.unique(picked):
            perm = generator(seed, _SAMPLES, d, int(e), int(s)).permutation(int(sizes[s]))
            sample[sel[picked == s]] = perm[within[picked == s]]
    return shard, sample
