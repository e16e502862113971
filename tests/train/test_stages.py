"""Cached stages: the hash covers config and inputs (not key order); a complete stage is skipped; a stage
whose function fails is not marked complete and runs again (in the same directory)."""

import pytest

from foundry.train.stages import read_stage, run_stage, stage_dir, stage_hash


def test_hash_covers_config_and_inputs_but_not_key_order():
    h = stage_hash("llm", {"a": 1, "b": [1, 2]}, {"text": "x"})
    assert h == stage_hash("llm", {"b": [1, 2], "a": 1}, {"text": "x"}) and len(h) == 12
    assert len({h, stage_hash("vlm", {"a": 1, "b": [1, 2]}, {"text": "x"}),
                stage_hash("llm", {"a": 2, "b": [1, 2]}, {"text": "x"}),
                stage_hash("llm", {"a": 1, "b": [1, 2]}, {"text": "y"})}) == 4  # fmt: skip


def test_complete_stages_are_skipped_and_failed_ones_rerun(tmp_path):
    calls, lines = [], []

    def work(d):
        calls.append(d)
        (d / "out.txt").write_text("done")
        if len(calls) == 1:
            raise RuntimeError("interrupted")
        return {"n": len(calls)}

    with pytest.raises(RuntimeError, match="interrupted"):
        run_stage("s", tmp_path, config={"k": 1}, inputs={}, fn=work, log=lines.append)
    path = stage_dir(tmp_path, "s", {"k": 1}, {})
    assert read_stage(path) is None and (path / "out.txt").exists()
    first = run_stage("s", tmp_path, config={"k": 1}, inputs={}, fn=work, log=lines.append)
    assert first.dir == path and not first.skipped and first.info == {"n": 2} and calls == [path, path]
    again = run_stage("s", tmp_path, config={"k": 1}, inputs={}, fn=work, log=lines.append)
    assert again.skipped and again.info == {"n": 2} and again.hash == first.hash and len(calls) == 2
    assert read_stage(path)["config"] == {"k": 1}
    assert [line.split(" in ")[0] for line in lines] == ["[pipeline] s: start", "[pipeline] s: resuming",
                                                         "[pipeline] s: done", "[pipeline] s: complete"]  # fmt: skip
