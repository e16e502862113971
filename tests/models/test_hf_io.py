"""Reading and writing Hugging Face model directories: sharded indexes and the errors for broken files
(no transformers needed)."""

import json

import pytest
import torch
from safetensors.torch import save_file

from foundry.models import hf_io


def write_sharded(path, shards: dict[str, dict[str, torch.Tensor]]):
    path.mkdir()
    (path / "config.json").write_text("{}")
    weight_map = {}
    for file, tensors in shards.items():
        save_file(tensors, str(path / file))
        weight_map.update({name: file for name in tensors})
    (path / hf_io.INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


SHARDS = {
    "model-00001-of-00002.safetensors": {"a.weight": torch.ones(4, 8), "b.weight": torch.zeros(3)},
    "model-00002-of-00002.safetensors": {"c.weight": torch.arange(6.0).to(torch.bfloat16)},
}


def test_sharded_directory_reads_every_tensor_and_names_its_file(tmp_path):
    write_sharded(tmp_path / "m", SHARDS)
    ckpt = hf_io.read(tmp_path / "m")
    assert sorted(ckpt.tensors) == ["a.weight", "b.weight", "c.weight"]
    assert ckpt.files["c.weight"] == "model-00002-of-00002.safetensors"
    template = {"x": torch.empty(4, 8, device="meta"), "y": torch.empty(3), "z": torch.empty(6)}
    flat, notes = hf_io.take(ckpt, {"x": "a.weight", "y": "b.weight", "z": "c.weight"}, template, dtype=torch.float32)
    assert notes == ["bf16 -> fp32 for 1 tensors"] and flat["z"].dtype == torch.float32
    assert torch.equal(flat["z"], torch.arange(6.0))


def test_truncated_file_names_the_file_and_the_cut_tensors(tmp_path):
    write_sharded(tmp_path / "m", SHARDS)
    shard = tmp_path / "m/model-00001-of-00002.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[:-8])  # the last tensor loses its tail
    with pytest.raises(
        ValueError,
        match=r"model-00001-of-00002\.safetensors: truncated safetensors file .*"
        r"tensors \[b\.weight\] are cut off",
    ):
        hf_io.read(tmp_path / "m")
    shard.write_bytes(data[:20])  # the header itself is cut
    with pytest.raises(ValueError, match=r"model-00001-of-00002\.safetensors: truncated safetensors file \(header"):
        hf_io.read(tmp_path / "m")


def test_missing_shard_names_the_index_the_file_and_its_tensors(tmp_path):
    write_sharded(tmp_path / "m", SHARDS)
    (tmp_path / "m/model-00002-of-00002.safetensors").unlink()
    with pytest.raises(
        FileNotFoundError,
        match=r"model\.safetensors\.index\.json names shard "
        r"model-00002-of-00002\.safetensors \(holding \[c\.weight\]\)",
    ):
        hf_io.read(tmp_path / "m")


def test_index_placing_a_tensor_in_the_wrong_shard_is_an_error(tmp_path):
    write_sharded(tmp_path / "m", SHARDS)
    index = json.loads((tmp_path / "m" / hf_io.INDEX).read_text())
    index["weight_map"]["c.weight"] = "model-00001-of-00002.safetensors"
    (tmp_path / "m" / hf_io.INDEX).write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"places \[c\.weight\] in model-00001-of-00002\.safetensors"):
        hf_io.read(tmp_path / "m")


def test_not_a_model_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        hf_io.read(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty/config\.json does not exist"):
        hf_io.read(tmp_path / "empty")
    (tmp_path / "empty/config.json").write_text("{")
    with pytest.raises(ValueError, match=r"config\.json: malformed JSON"):
        hf_io.read(tmp_path / "empty")
    (tmp_path / "empty/config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"no model\.safetensors and no model\.safetensors\.index\.json"):
        hf_io.read(tmp_path / "empty")


def test_write_is_atomic_and_reads_back(tmp_path):
    tensors = {"w": torch.randn(3, 2), "v": torch.randn(5).to(torch.bfloat16)}
    hf_io.write(tmp_path / "out", {"model_type": "x"}, tensors)
    back = hf_io.read(tmp_path / "out")
    assert back.config == {"model_type": "x"} and all(torch.equal(back.tensors[k], tensors[k]) for k in tensors)
    with pytest.raises(FileNotFoundError, match=r"tokenizer .*missing\.json does not exist"):
        hf_io.write(tmp_path / "out2", {}, tensors, tokenizer=tmp_path / "missing.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing half-written left behind
