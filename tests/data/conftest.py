"""Fixtures for the data tests: tiny datasets written into tmp_path, a small trained tokenizer."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from foundry.data.shards import write_shards
from foundry.data.tokenizer import train_tokenizer

WORDS = "to be or not that is the question whether tis nobler in mind suffer slings arrows".split()  # noqa: SIM905


def text_of(i: int, n_words: int = 12) -> str:
    return " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(n_words)) + f" #{i}"


@pytest.fixture
def write_dataset(tmp_path: Path):
    """`write_dataset(name, samples, samples_per_shard)` -> dataset dir; samples are dicts of bytes."""

    def write(name: str, samples: list[dict], samples_per_shard: int = 4) -> Path:
        out = tmp_path / name
        write_shards(samples, out, samples_per_shard=samples_per_shard, prefix=name)
        return out

    return write


@pytest.fixture
def id_dataset(write_dataset):
    """`id_dataset(name, n, per_shard)`: n pre-tokenized samples; sample i holds ids [i, i, i] + offset."""

    def write(name: str, n: int, samples_per_shard: int = 4, offset: int = 0) -> Path:
        samples = [
            {"__key__": f"{name}-{i:04d}", "json.gz": gzip.compress(json.dumps([offset + i] * 3).encode())}
            for i in range(n)
        ]
        return write_dataset(name, samples, samples_per_shard)

    return write


@pytest.fixture(scope="session")
def tokenizer():
    texts = [text_of(i, 40) for i in range(200)] + ["Hark! wörld ünïcode — 🙂 <x>\n\ttabs"]
    return train_tokenizer(texts, vocab_size=400, min_frequency=1)
