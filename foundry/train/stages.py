"""Cached pipeline stages: a stage's directory is named by the content hash of its resolved config and of
its inputs' hashes, so a stage is run once per distinct configuration and shared by every pipeline (and
sweep variant) that needs it.

Usage::

    data = run_stage("demos", root, config={"episodes": 1000}, inputs={}, fn=lambda d: make(d))
    vla = run_stage("vla", root, config=to_dict(vla_cfg), inputs={"demos": data.hash}, fn=train_in)
    vla.dir            # root/stages/vla-<hash>; vla.skipped: True when it had finished before

`fn(stage_dir) -> dict` does the work in the stage directory and returns what later stages or the report
want to know (JSON-able). When it returns, `stage.json` (name, hash, config, inputs, seconds, info) is
written atomically: a stage is complete exactly when that file exists. A stage interrupted before it finished
is run again in the same directory, so a training stage resumes from its newest checkpoint there.
Torch-free.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from foundry.train.progress import format_duration

STAGE_FILE = "stage.json"


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    hash: str
    dir: Path
    seconds: float  # of the run that completed it (a resumed stage: the last part only)
    skipped: bool  # complete before this call
    info: dict[str, Any]


def stage_hash(name: str, config: Mapping[str, Any], inputs: Mapping[str, str]) -> str:
    """12 hex digits of sha256 over the stage name, its config and its inputs' hashes (key order free)."""
    blob = json.dumps({"name": name, "config": config, "inputs": dict(inputs)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def stage_dir(root: str | Path, name: str, config: Mapping[str, Any], inputs: Mapping[str, str]) -> Path:
    return Path(root) / "stages" / f"{name}-{stage_hash(name, config, inputs)}"


def read_stage(path: str | Path) -> dict[str, Any] | None:
    """The `stage.json` of a complete stage directory, else None."""
    file = Path(path) / STAGE_FILE
    return json.loads(file.read_text()) if file.is_file() else None


def run_stage(
    name: str,
    root: str | Path,
    *,
    config: Mapping[str, Any],
    inputs: Mapping[str, str],
    fn: Callable[[Path], dict[str, Any]],
    log: Callable[[str], None] = print,
) -> Stage:
    """Run `fn` in the stage's directory unless that stage is complete already (see the module docstring)."""
    h = stage_hash(name, config, inputs)
    path = Path(root) / "stages" / f"{name}-{h}"
    done = read_stage(path)
    if done is not None:
        log(f"[pipeline] {name}: complete in {path} ({format_duration(done['seconds'])}), skipped")
        return Stage(name, h, path, done["seconds"], True, done["info"])
    log(f"[pipeline] {name}: {'resuming' if path.exists() else 'start'} in {path}")
    path.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    info = fn(path)
    seconds = time.monotonic() - start
    record = {"name": name, "hash": h, "config": config, "inputs": dict(inputs), "seconds": seconds, "info": info}
    tmp = path / f".{STAGE_FILE}.tmp"
    with tmp.open("w") as f:
        json.dump(record, f, indent=1, default=str)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path / STAGE_FILE)
    log(f"[pipeline] {name}: done in {format_duration(seconds)}")
    return Stage(name, h, path, seconds, False, info)
