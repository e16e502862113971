"""Plans: determinism, independence from earlier windows, epochs, mixing proportions, validation."""

from __future__ import annotations

import numpy as np
import pytest

from foundry.data.plan import batches_per_window, samples_per_window, sequential_plan, window_plan
from foundry.data.shards import DatasetIndex, ShardIndex, index_dataset


@pytest.fixture
def two_datasets(id_dataset):
    return [index_dataset(id_dataset("a", 10, 3)), index_dataset(id_dataset("b", 7, 2, offset=100))]


def test_plan_is_deterministic_and_depends_on_seed(two_datasets):
    kw = dict(window=2, samples_per_window=16)
    p1 = window_plan(two_datasets, [0.5, 0.5], seed=1, **kw)
    p2 = window_plan(two_datasets, [0.5, 0.5], seed=1, **kw)
    p3 = window_plan(two_datasets, [0.5, 0.5], seed=2, **kw)
    assert p1.refs() == p2.refs()
    assert p1.refs() != p3.refs()
    assert list(p1.position) == list(range(32, 48))


def test_windows_continue_each_stream_through_epochs(two_datasets):
    """Windows planned separately (as after resumes) visit every sample once per epoch, per dataset."""
    refs = [
        r
        for w in range(6)
        for r in window_plan(two_datasets, [0.6, 0.4], seed=0, window=w, samples_per_window=8).refs()
    ]
    for d, index in enumerate(two_datasets):
        stream = [(r.shard, r.sample) for r in refs if r.dataset == d]
        n = index.num_samples
        for e in range(len(stream) // n):
            assert sorted(stream[e * n : (e + 1) * n]) == sorted(
                (s, j) for s, size in enumerate(index.shard_sizes) for j in range(size)
            )
        epochs = [stream[e * n : (e + 1) * n] for e in range(len(stream) // n)]
        assert len(epochs) >= 2 and epochs[0] != epochs[1]  # each epoch reshuffled


def test_mixing_follows_weights(id_dataset):
    indexes = [index_dataset(id_dataset(n, 5, 5)) for n in "abc"]
    plan = window_plan(indexes, [0.7, 0.2, 0.1], seed=0, window=0, samples_per_window=4000)
    freq = np.bincount(plan.dataset, minlength=3) / len(plan)
    np.testing.assert_allclose(freq, [0.7, 0.2, 0.1], atol=0.03)
    assert 1 not in set(window_plan(indexes, [1, 0, 1], seed=0, window=1, samples_per_window=50).dataset)


def test_plan_errors(two_datasets):
    with pytest.raises(ValueError, match="2 weights for 1 datasets"):
        window_plan(two_datasets[:1], [0.5, 0.5], seed=0, window=0, samples_per_window=4)
    with pytest.raises(ValueError, match="must be >= 0"):
        window_plan(two_datasets, [1.0, -1.0], seed=0, window=0, samples_per_window=4)


def test_sequential_plan_is_unshuffled(two_datasets):
    plan = sequential_plan(two_datasets[1], num_samples=5)
    assert [(r.shard, r.sample) for r in plan.refs()] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)]
    assert len(sequential_plan(two_datasets[1])) == 7
    assert len(sequential_plan(two_datasets[1], num_samples=100)) == 7


def test_window_helpers():
    assert samples_per_window(1000, 10, 20) == 100
    assert batches_per_window(100, 20) == 5
    with pytest.raises(ValueError, match=r"use a multiple of 200, e\.g\. 800 or 1000"):
        samples_per_window(900, 10, 20)
    with pytest.raises(ValueError, match="not a whole number of batches"):
        batches_per_window(100, 30)


def test_empty_shards_are_passed_over(two_datasets):
    a = two_datasets[0]
    empty = ShardIndex(path="empty.tar", samples=())
    with_empty = DatasetIndex(manifest=a.manifest, shards=(empty, *a.shards, empty))
    refs = window_plan([with_empty], [1.0], seed=0, window=0, samples_per_window=20).refs()
    assert {r.shard for r in refs} == {1, 2, 3, 4}
    assert sorted((r.shard, r.sample) for r in refs[:10]) == [
        (s + 1, j) for s in range(4) for j in range(a.shard_sizes[s])
    ]
