"""Batch iteration: worker-count independence, exact resume, bad samples, per-sample seeds."""

from __future__ import annotations

import gzip
import json
import os

import pytest
import torch

from foundry.data.loader import iterate_batches
from foundry.data.manifest import DataError
from foundry.data.plan import sample_seed, sequential_plan, window_plan
from foundry.data.shards import index_dataset
from foundry.data.text import TextCollate, TextDecoder

DECODE = TextDecoder(vocab_size=1000, bos_id=998, eos_id=999, max_len=6)
COLLATE = TextCollate(rows=4, row_len=6, pad_id=0)


def seed_decode(sample, seed):
    return {"seed": seed, "key": sample["__key__"]}


def seed_collate(decoded):
    return {"seed": torch.tensor([d["seed"] if d else -1 for d in decoded], dtype=torch.int64)}


@pytest.fixture
def plan(id_dataset):
    indexes = [index_dataset(id_dataset("a", 10, 3)), index_dataset(id_dataset("b", 7, 2, offset=100))]
    return window_plan(indexes, [0.6, 0.4], seed=0, window=1, samples_per_window=24)


def run(plan, **kw):
    kw = {"batch_size": 4, "decode": DECODE, "collate": COLLATE, "seed": 0, **kw}
    return list(iterate_batches(plan, **kw))


def assert_same(batches_a, batches_b):
    assert len(batches_a) == len(batches_b)
    for a, b in zip(batches_a, batches_b):
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_batches_do_not_depend_on_the_number_of_workers(plan):
    reference = run(plan)
    assert len(reference) == 6 and reference[0]["tokens"].shape == (4, 6)
    for workers in (1, 2):
        assert_same(run(plan, num_workers=workers), reference)


def test_resume_equals_the_tail_of_the_full_iteration(plan):
    full = run(plan)
    for k in (0, 3, 6):  # 3 batches left for 2 workers: uneven shares
        assert_same(run(plan, start_batch=k, num_workers=2), full[k:])
    with pytest.raises(ValueError, match="outside the plan's 6 batches"):
        run(plan, start_batch=7)


def test_sample_seeds_follow_global_positions(plan):
    seeds = torch.cat([b["seed"] for b in run(plan, decode=seed_decode, collate=seed_collate, num_workers=2)])
    assert seeds.tolist() == [sample_seed(0, 24 + i) for i in range(24)]
    assert len(set(seeds.tolist())) == 24


def test_last_partial_batch_is_padded_not_skipped(id_dataset):
    plan = sequential_plan(index_dataset(id_dataset("v", 7, 3)))
    batches = run(plan)
    assert len(batches) == 2
    assert batches[1]["mask"].sum(1).tolist() == [5, 5, 5, 0] and batches[1]["_skipped"].item() == 0
    assert batches[0]["tokens"][:, 1].tolist() == [0, 1, 2, 3]  # sample i holds ids [i, i, i]


@pytest.fixture
def bad_dataset(write_dataset):
    good = [{"__key__": f"g{i}", "json.gz": gzip.compress(json.dumps([i, i]).encode())} for i in range(5)]
    bad = {"__key__": "bad-one", "json.gz": gzip.compress(b'{"not": "a list"}')}
    return index_dataset(write_dataset("bad", [*good[:2], bad, *good[2:]], samples_per_shard=3))


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_sample_error_names_shard_and_key(bad_dataset, workers):
    plan = sequential_plan(bad_dataset)
    with pytest.raises(DataError) as info:
        run(plan, num_workers=workers)
    msg = str(info.value)
    assert "bad-00000.tar" in msg and "'bad-one'" in msg and "list of int" in msg
    assert "Traceback" not in msg


def test_skip_mode_masks_and_counts_bad_samples(bad_dataset):
    batches = run(sequential_plan(bad_dataset), on_bad_sample="skip", num_workers=2)
    assert [b["_skipped"].item() for b in batches] == [1, 0]
    assert batches[0]["mask"][2].sum() == 0 and batches[0]["mask"][3].sum() == 4


def test_truncated_shard_names_shard_and_key(id_dataset):
    path = id_dataset("t", 6, 6)
    tar = path / "t-00000.tar"
    raw = tar.read_bytes()
    cut = raw.rfind(b"t-0005.json.gz") + 512 + 10  # inside the last member's data
    tar.write_bytes(raw[:cut])
    with pytest.warns(UserWarning):
        index = index_dataset(path)
    with pytest.raises(DataError, match=r"shard .*t-00000.tar: sample 't-0005': member 'json.gz' is truncated"):
        run(sequential_plan(index))
    assert sum(b["_skipped"].item() for b in run(sequential_plan(index), on_bad_sample="skip")) == 1


def test_workers_use_one_thread(plan):
    def threads_collate(decoded):
        return {"threads": torch.tensor(torch.get_num_threads()), "pid": torch.tensor(os.getpid())}

    batches = run(plan, collate=threads_collate, num_workers=2)
    assert {b["threads"].item() for b in batches} == {1}
    assert os.getpid() not in {b["pid"].item() for b in batches}
