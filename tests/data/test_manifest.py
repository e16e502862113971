"""Manifests, shard indexing and writing, and the data config."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from foundry.data.config import DataConfig, TextConfig
from foundry.data.manifest import DataError, read_manifest
from foundry.data.shards import ShardFiles, index_dataset, read_sample, split_name


def test_split_name_matches_webdataset():
    assert split_name("000123.lowdim.npz") == ("000123", "lowdim.npz")
    assert split_name("ep/000123.scene_t-1.jpg") == ("ep/000123", "scene_t-1.jpg")
    assert split_name("a.b/c.txt") == ("a.b/c", "txt")
    assert split_name("README") is None
    assert split_name(".hidden") is None


def test_index_groups_members_by_key_and_reads_by_seeking(write_dataset):
    samples = [{"__key__": f"s{i}", "jpg": bytes([i]) * 600, "lowdim.npz": b"z" * i} for i in range(5)]
    index = index_dataset(write_dataset("multi", samples, samples_per_shard=2))
    assert index.shard_sizes == (2, 2, 1)
    with ShardFiles() as files:
        s = read_sample(index.shards[1], 1, files)
    assert s["__key__"] == "s3" and s["jpg"] == bytes([3]) * 600 and s["lowdim.npz"] == b"zzz"
    assert s["__shard__"].endswith("multi-00001.tar")


def test_manifest_count_mismatch_warns_and_trusts_shards(write_dataset):
    path = write_dataset("m", [{"__key__": f"k{i}", "txt": b"x"} for i in range(6)], samples_per_shard=3)
    lines = (path / "manifest.jsonl").read_text().splitlines()
    lines[1] = json.dumps({"shard": "m-00001", "num_sequences": 99})
    (path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match=r"'m-00001' lists 99 samples but .*m-00001.tar holds 3"):
        index = index_dataset(path / "manifest.jsonl")
    assert index.num_samples == 6


def test_missing_manifest_and_shard_name_the_path(tmp_path, write_dataset):
    with pytest.raises(DataError, match=r"manifest .*nowhere.*does not exist"):
        index_dataset(tmp_path / "nowhere")
    path = write_dataset("gone", [{"__key__": "k", "txt": b"x"}])
    (path / "gone-00000.tar").unlink()
    with pytest.raises(DataError, match=r"shard .*gone-00000.tar listed in manifest .* does not exist"):
        index_dataset(path)


def test_malformed_manifest_names_line(tmp_path):
    (tmp_path / "manifest.jsonl").write_text('{"shard": "a", "num_sequences": 1}\n{"shard": 3}\n')
    with pytest.raises(DataError, match=r"manifest.jsonl line 2"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.jsonl").write_text("not json\n")
    with pytest.raises(DataError, match=r"line 1: not JSON"):
        read_manifest(tmp_path)


def test_not_a_tar_is_a_data_error(tmp_path):
    (tmp_path / "manifest.jsonl").write_text('{"shard": "bad", "num_sequences": 1}\n')
    (tmp_path / "bad.tar").write_bytes(b"this is not a tar file")
    with pytest.raises(DataError, match=r"shard .*bad.tar is not a readable tar"):
        index_dataset(tmp_path)


def test_write_shards_is_atomic_and_checks_keys(tmp_path, write_dataset):
    path = write_dataset("w", [{"__key__": f"k{i}", "txt": b"abc"} for i in range(5)], samples_per_shard=2)
    assert sorted(p.name for p in path.iterdir()) == [
        "manifest.jsonl",
        "w-00000.tar",
        "w-00001.tar",
        "w-00002.tar",
    ]
    assert [e.num_sequences for e in read_manifest(path)] == [2, 2, 1]
    with pytest.raises(ValueError, match="without dots"):
        write_dataset("bad", [{"__key__": "a.b", "txt": b""}])


def test_data_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"data.weights has 1 values but data.manifests has 2"):
        DataConfig(manifests=("a", "b"), weights=(1.0,))
    with pytest.raises(ValueError, match=r"data.weights\[1\] = -0.5"):
        DataConfig(manifests=("a", "b"), weights=(1.0, -0.5))
    with pytest.raises(ValueError, match=r"data\.manifests is empty"):
        _ = DataConfig().mix_weights
    assert DataConfig(manifests=("a", "b")).mix_weights == (0.5, 0.5)
    assert DataConfig(manifests=("a", "b"), weights=(3.0, 1.0)).mix_weights == (0.75, 0.25)


def test_text_config():
    cfg = TextConfig(seq_len=8, pack=True, samples_per_row=3)
    assert cfg.row_len == 9 and cfg.samples_per_batch(4) == 12
    assert TextConfig(seq_len=8).samples_per_batch(4) == 4
    with pytest.raises(ValueError, match=r"samples_per_row > 1 needs text\.pack"):
        TextConfig(samples_per_row=2)


def test_config_parses_from_the_command_line():
    import tyro

    cfg = tyro.cli(DataConfig, args=["--manifests", "A/manifest.jsonl", "B", "--weights", "0.7", "0.3"])
    assert cfg.manifests == ("A/manifest.jsonl", "B") and cfg.weights == (0.7, 0.3)


def test_config_and_make_text_import_without_torch():
    code = "import sys, foundry.data.config, foundry.data.make_text; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
