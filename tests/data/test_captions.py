"""Image-caption batches: round trip from make_shapes, token layout and masks, truncation, crop vs pad,
mixing with text, broken images, augmentation."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from foundry.data.captions import CaptionCollate, CaptionConfig, caption_functions, prefix_ids
from foundry.data.loader import iterate_batches
from foundry.data.make_shapes import MakeShapesConfig, make_shapes, shape_sample
from foundry.data.manifest import DataError
from foundry.data.plan import Plan, sequential_plan, window_plan
from foundry.data.shapes import random_scene
from foundry.data.shards import index_dataset
from foundry.data.tokenizer import special_ids, train_tokenizer

IMG_TOKENS = 6
WORDS = "to be or not that is the question whether tis nobler in the mind".split()  # noqa: SIM905


def text_of(i: int, n_words: int) -> str:
    return " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(n_words))


CFG = CaptionConfig(image_size=32, image_tokens=IMG_TOKENS, prompt="<image>Caption:", seq_len=40)


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    make_shapes(
        MakeShapesConfig(out=str(out), train_samples=24, val_samples=4, image_size=48, samples_per_shard=10, workers=1),
        log=lambda s: None,
    )
    return out


@pytest.fixture(scope="module")
def tok():
    rng = np.random.default_rng(0)
    texts = [random_scene(rng)["caption"] for _ in range(300)] + [text_of(i, 30) for i in range(100)]
    return train_tokenizer(["Caption: " + t for t in texts], vocab_size=400, min_frequency=1)


def batches(path_or_plan, tok, cfg=CFG, batch_size=4, **kw):
    plan = path_or_plan if not isinstance(path_or_plan, str) else sequential_plan(index_dataset(path_or_plan))
    decode, collate = caption_functions(cfg, tok, batch_size=batch_size)
    return list(iterate_batches(plan, batch_size=batch_size, decode=decode, collate=collate, seed=0, **kw))


def test_shapes_round_trip_batch_format(shapes_dir, tok):
    out = batches(str(shapes_dir / "train"), tok)
    assert len(out) == 6
    b = out[0]
    assert b["images"].shape == (4, 1, 3, 32, 32) and b["images"].dtype == torch.float32
    assert b["images"].min() >= -1 and b["images"].max() <= 1 and b["images"].std() > 0.1
    assert b["image_valid"].dtype == torch.bool and b["image_valid"].all()
    for k in ("tokens", "mask", "loss_mask"):
        assert b[k].shape == (4, 41)
    assert b["tokens"].dtype == b["prefix_len"].dtype == torch.int64 and b["prefix_len"].shape == (4,)
    assert b["mask"].dtype == b["loss_mask"].dtype == torch.bool
    assert b["_skipped"].shape == () and b["_skipped"].item() == 0


def test_tokens_placeholders_masks_and_prefix(shapes_dir, tok):
    ids = special_ids(tok)
    prefix = prefix_ids(CFG, tok)
    assert prefix[0] == ids["<bos>"] and prefix[1 : 1 + IMG_TOKENS] == [ids["<image>"]] * IMG_TOKENS
    assert tok.decode(prefix[1 + IMG_TOKENS :]) == "Caption:"
    captions = [shape_sample(0, "train", i, size=8)["txt"].decode() for i in range(8)]
    for b_i, b in enumerate(batches(str(shapes_dir / "train"), tok)[:2]):
        for r in range(4):
            row, n = b["tokens"][r], int(b["mask"][r].sum())
            assert (row == ids["<image>"]).sum() == IMG_TOKENS * b["image_valid"][r].sum()
            assert b["prefix_len"][r] == len(prefix) and row[: len(prefix)].tolist() == prefix
            targets = row[b["loss_mask"][r]].tolist()
            assert targets == [*tok.encode(" " + captions[4 * b_i + r]).ids, ids["<eos>"]]
            assert b["loss_mask"][r].nonzero().flatten().tolist() == list(range(len(prefix), n))
            assert (row[n:] == ids["<pad>"]).all() and row[n - 1] == ids["<eos>"]


def test_truncation_cuts_the_caption_never_the_placeholders(shapes_dir, tok):
    prefix = prefix_ids(CFG, tok)
    cfg = CaptionConfig(image_size=32, image_tokens=IMG_TOKENS, seq_len=len(prefix) + 2)
    b = batches(str(shapes_dir / "val"), tok, cfg)[0]
    assert b["mask"].all() and (b["tokens"] == special_ids(tok)["<image>"]).sum(1).tolist() == [IMG_TOKENS] * 4
    assert b["loss_mask"].sum(1).tolist() == [3] * 4  # 3 caption tokens kept, eos cut
    too_long = CaptionConfig(image_size=32, image_tokens=40, seq_len=40)
    with pytest.raises(ValueError, match=r"prefix is 4\d tokens .* 40 <image> .* seq_len \+ 1 = 41"):
        caption_functions(too_long, tok, batch_size=2)
    with pytest.raises(ValueError, match="placeholders"):
        CaptionConfig(prompt="<image><image>Compare:", max_images=1)


def image_sample(key: str, img: np.ndarray, fmt: str = "PNG", caption: str = "a small red circle") -> dict:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt)
    return {"__key__": key, "__shard__": "s.tar", fmt.lower(): buf.getvalue(), "txt": caption.encode()}


def test_crop_versus_pad():
    red = np.zeros((20, 40, 3), np.uint8)
    red[..., 0] = 255
    tok = train_tokenizer(["a small red circle"] * 4, vocab_size=300)
    for mode, black in (("crop", False), ("pad", True)):
        cfg = CaptionConfig(image_size=16, image_mode=mode, image_tokens=2, seq_len=16)
        decode, _ = caption_functions(cfg, tok, batch_size=1)
        x = decode(image_sample("k", red), seed=0)["images"][0]  # (3, 16, 16)
        assert x.shape == (3, 16, 16)
        assert bool((x[0] == -1).any()) == black  # pad: black bands above and below
        assert np.allclose(x[:, 6:10, :], [[[1.0]], [[-1.0]], [[-1.0]]], atol=0.02)  # the middle stays red


def test_text_and_caption_samples_mix_in_one_batch(shapes_dir, tok, write_dataset):
    text = write_dataset("text", [{"__key__": f"t{i}", "txt": text_of(i, 60).encode()} for i in range(12)])
    indexes = [index_dataset(shapes_dir / "train"), index_dataset(text)]
    plan = window_plan(indexes, [0.5, 0.5], seed=0, window=0, samples_per_window=16)
    out = batches(plan, tok)
    assert out[0].keys() == batches(plan, tok, num_workers=2)[0].keys()
    for a, b in zip(out, batches(plan, tok, num_workers=2)):  # picklable functions, same batches
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    caption_rows = text_rows = 0
    for b in out:
        for r in range(4):
            if b["image_valid"][r].any():
                caption_rows += 1
                assert b["prefix_len"][r] > 0 and not b["loss_mask"][r, : b["prefix_len"][r]].any()
            else:
                text_rows += 1
                assert (b["images"][r] == 0).all() and b["prefix_len"][r] == 0
                assert torch.equal(b["loss_mask"][r], b["mask"][r]) and b["mask"][r].all()  # cropped to a row
                assert not (b["tokens"][r] == special_ids(tok)["<image>"]).any()
    assert caption_rows == (plan.dataset == 0).sum() and text_rows == (plan.dataset == 1).sum()
    assert caption_rows > 0 and text_rows > 0


@pytest.fixture
def broken_dir(shapes_dir, write_dataset):
    good = [shape_sample(0, "train", i, size=24) for i in range(5)]
    png = good[0]["png"]
    jpg = shape_sample(0, "train", 9, size=24, fmt="jpg")["jpg"]
    bad = [
        {"__key__": "truncated", "jpg": jpg[: len(jpg) // 2], "txt": b"a small red circle"},
        {"__key__": "unknown", "png": b"GIF87a not an image at all", "txt": b"a small red circle"},
        {"__key__": "empty", "webp": b"", "txt": b"a small red circle"},
        {"__key__": "nocaption", "png": png},
    ]
    return write_dataset("broken", good[:2] + bad + good[2:], samples_per_shard=3)


def test_broken_images_raise_data_errors_naming_shard_and_key(broken_dir, tok):
    index = index_dataset(broken_dir)
    messages = {}
    for k, shard in enumerate(index.shards):
        for i, s in enumerate(shard.samples):
            one = Plan((index,), *(np.array([v]) for v in (0, k, i, 0)))  # just this sample
            try:
                batches(one, tok, batch_size=1)
            except DataError as e:
                messages[s.key] = str(e)
                assert shard.path in str(e) and repr(s.key) in str(e)
    assert sorted(messages) == ["empty", "nocaption", "truncated", "unknown"]
    assert "empty image file" in messages["empty"] and "cannot decode image" in messages["unknown"]
    assert "'txt'" in messages["nocaption"]


def test_skip_mode_counts_bad_samples(broken_dir, tok):
    out = batches(str(broken_dir), tok, on_bad_sample="skip")
    assert sum(b["_skipped"].item() for b in out) == 4
    skipped_rows = sum(int((~b["mask"].any(1)).sum()) for b in out)
    assert skipped_rows == 4 + 3  # 9 samples in 3 batches of 4: 3 padding rows at the end
    with pytest.raises(DataError, match="truncated"):
        batches(str(broken_dir), tok)


def test_augmentation_is_seeded_and_off_by_default(tok):
    img = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    sample = image_sample("k", img)
    plain, _ = caption_functions(CFG, tok, batch_size=1)
    aug, _ = caption_functions(CaptionConfig(**{**vars(CFG), "augment": True}), tok, batch_size=1)
    assert np.array_equal(plain(sample, 1)["images"], plain(sample, 2)["images"])
    assert np.array_equal(aug(sample, 1)["images"], aug(sample, 1)["images"])
    assert not np.array_equal(aug(sample, 1)["images"], aug(sample, 2)["images"])
    assert pickle.loads(pickle.dumps(aug)) == aug


def test_collate_empty_rows_and_wrong_images(tok):
    out = CaptionCollate(rows=2, row_len=5, max_images=2, image_size=4, pad_id=0)([None, None])
    assert out["images"].shape == (2, 2, 3, 4, 4) and not out["image_valid"].any() and not out["mask"].any()
    assert out["prefix_len"].tolist() == [0, 0]
    decode, _ = caption_functions(CFG, tok, batch_size=1)
    two = {**image_sample("k", np.zeros((8, 8, 3), np.uint8)), "1.png": b"x"}
    with pytest.raises(DataError, match=r"2 image members \['1.png', 'png'\]"):
        decode(two, seed=0)
    img = image_sample("k", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="empty caption"):
        decode({**img, "txt": b"  "}, seed=0)
