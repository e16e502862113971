"""Text decode (members, bos/eos, crop) and collate (pad, pack), and text errors."""

from __future__ import annotations

import gzip
import json
import pickle

import numpy as np
import pytest

from foundry.data.config import TextConfig
from foundry.data.loader import iterate_batches
from foundry.data.manifest import DataError
from foundry.data.plan import sequential_plan
from foundry.data.shards import index_dataset
from foundry.data.text import TextCollate, TextDecoder, text_functions, texts_from_manifests
from foundry.data.tokenizer import special_ids


def sample(**members):
    return {"__key__": "k", "__shard__": "s.tar", **{k.replace("_", "."): v for k, v in members.items()}}


def test_raw_members_tokenize_alike_with_bos_eos(tokenizer):
    decode, _ = text_functions(TextConfig(seq_len=200), tokenizer, batch_size=2)
    text = "to be or not to be"
    expected = [decode.bos_id, *tokenizer.encode(text).ids, decode.eos_id]
    for s in (
        sample(txt=text.encode()),
        sample(json=json.dumps(text).encode()),
        sample(json=json.dumps({"text": text, "lang": "en"}).encode()),
        sample(json_gz=gzip.compress(json.dumps(tokenizer.encode(text).ids).encode())),
    ):
        assert decode(s, seed=0)["tokens"].tolist() == expected


def test_special_token_strings_in_raw_text_stay_text(tokenizer):
    decode, _ = text_functions(TextConfig(seq_len=200), tokenizer, batch_size=1)
    ids = decode(sample(txt=b"a <bos> b"), seed=0)["tokens"].tolist()
    assert ids.count(decode.bos_id) == 1 and ids[0] == decode.bos_id


def test_crop_takes_a_seeded_window(tokenizer):
    decode = TextDecoder(vocab_size=1000, bos_id=1, eos_id=2, max_len=5)
    s = sample(json_gz=gzip.compress(json.dumps(list(range(10, 40))).encode()))
    full = [1, *range(10, 40), 2]
    windows = {tuple(decode(s, seed)["tokens"].tolist()) for seed in range(20)}
    assert len(windows) > 5
    for w in windows:
        i = full.index(w[0])
        assert list(w) == full[i : i + 5]
    assert decode(s, 7)["tokens"].tolist() == decode(s, 7)["tokens"].tolist()


def test_crop_collate_pads_and_masks():
    batch = TextCollate(rows=3, row_len=4, pad_id=0)([{"tokens": np.array([5, 6])}, None, {"tokens": np.arange(1, 5)}])
    assert batch["tokens"].tolist() == [[5, 6, 0, 0], [0, 0, 0, 0], [1, 2, 3, 4]]
    assert batch["mask"].tolist() == [[True, True, False, False], [False] * 4, [True] * 4]


def test_pack_collate_concatenates_row_major():
    collate = TextCollate(rows=2, row_len=4, pad_id=0, pack=True)
    batch = collate([{"tokens": np.array([1, 2, 3])}, None, {"tokens": np.array([4, 5])}])
    assert batch["tokens"].tolist() == [[1, 2, 3, 4], [5, 0, 0, 0]]
    assert batch["mask"].sum().item() == 5
    over = collate([{"tokens": np.arange(10, 16)}, {"tokens": np.arange(20, 24)}])
    assert over["tokens"].tolist() == [[10, 11, 12, 13], [14, 15, 20, 21]] and over["mask"].all()


def test_pack_batches_end_to_end(write_dataset, tokenizer):
    cfg = TextConfig(seq_len=15, pack=True, samples_per_row=3)
    texts = ["to be", "or not", "to be that", "is the", "question", "whether", "tis", "nobler", "in"]
    path = write_dataset("p", [{"__key__": f"k{i}", "txt": t.encode()} for i, t in enumerate(texts)])
    decode, collate = text_functions(cfg, tokenizer, batch_size=2)
    batches = list(
        iterate_batches(
            sequential_plan(index_dataset(path)),
            batch_size=cfg.samples_per_batch(2),
            decode=decode,
            collate=collate,
            seed=0,
        )
    )
    assert len(batches) == 2 and batches[0]["tokens"].shape == (2, 16)
    ids = special_ids(tokenizer)
    row = batches[0]["tokens"][0].tolist()
    assert row[0] == ids["<bos>"] and row.count(ids["<eos>"]) >= 2
    assert batches[1]["mask"][1].sum() == 0  # 3 short samples fill less than one row


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"json.gz": gzip.compress(b"[1, 2.5]")}, "list of int"),
        ({"json.gz": gzip.compress(b"[1, 5000]")}, "token id 5000 is outside the vocab"),
        ({"json.gz": gzip.compress(b"[-1]")}, "token id -1 is outside"),
        ({"json.gz": b"not gzip"}, "not valid gzip"),
        ({"json.gz": gzip.compress(b"[1, 2")}, "not valid JSON"),
        ({"json": b"{broken"}, "not valid JSON"),
        ({"json": b'{"caption": "x"}'}, "'text' string"),
        ({"txt": b"\xff\xfe bad"}, "not valid UTF-8"),
        ({"jpg": b"..."}, "no text member"),
    ],
)
def test_bad_text_raises_naming_shard_and_key(write_dataset, members, message):
    path = write_dataset("e", [{"__key__": "oops", **members}])
    decode = TextDecoder(vocab_size=1000, bos_id=1, eos_id=2, max_len=8)
    with pytest.raises(DataError, match=message) as info:
        list(
            iterate_batches(
                sequential_plan(index_dataset(path)),
                batch_size=1,
                decode=decode,
                collate=TextCollate(1, 8, 0),
                seed=0,
            )
        )
    assert "e-00000.tar" in str(info.value) and "'oops'" in str(info.value)


def test_decoder_pickles_without_its_cached_tokenizer(tokenizer):
    decode, _ = text_functions(TextConfig(seq_len=50), tokenizer, batch_size=1)
    s = sample(txt=b"a <eos> b")
    before = decode(s, 0)["tokens"].tolist()
    again = pickle.loads(pickle.dumps(decode))
    assert "_tok" not in again.__dict__ and again(s, 0)["tokens"].tolist() == before


def test_texts_from_manifests(write_dataset):
    path = write_dataset("r", [{"__key__": f"k{i}", "txt": f"text {i}".encode()} for i in range(5)])
    assert list(texts_from_manifests([path])) == [f"text {i}" for i in range(5)]
    assert len(list(texts_from_manifests([path], max_bytes=10))) == 2
