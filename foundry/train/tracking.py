"""Experiment tracking behind one small protocol: Aim for real runs, a null tracker for tests.

Usage:

    tracker = make_tracker("aim", run_dir=run_dir, repo=None, experiment="llm", tags=["tiny"])
    tracker.log_params(dataclasses.asdict(cfg))
    tracker.log({"loss": 2.31, "lr": 3e-4}, step=100, context={"subset": "train"})
    tracker.log_text("sample", "To be, or not", step=100)
    tracker.close()

    aim up --repo runs/llm/aim --host 127.0.0.1    # browse; the repo defaults to <run_dir>/aim

`make_tracker` also writes every metric and text to `<run_dir>/metrics.jsonl` (one JSON object per call,
appended; `read_metrics` reads it back, later records of a step replacing earlier ones after a resume), so
a run's curves can be plotted without Aim (the pipeline report does).

`make_tracker("aim", ...)` stores the Aim run hash in `<run_dir>/aim_run_hash.txt`, so a resumed training
appends to the same Aim run (Aim also reopens a run whose process was SIGKILLed).

Values: ints, bools and one-element tensors are logged as floats; NaN and ±inf are logged as they are
(Aim stores and returns them); None is skipped. Reading runs back through `aim.Repo` needs the repo index
to be up to date: `aim storage reindex --yes` (or `aim up`, whose indexer does it) — see `index_aim_run`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

HASH_FILE = "aim_run_hash.txt"
METRICS_FILE = "metrics.jsonl"


class Tracker(Protocol):
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record the resolved config (a nested dict)."""

    def log(self, metrics: Mapping[str, Any], *, step: int, context: Mapping[str, Any] | None = None) -> None:
        """Record scalar metrics at `step`; `context` separates series, e.g. {"subset": "val"}."""

    def log_text(self, name: str, text: str, *, step: int) -> None:
        """Record a piece of text, e.g. a sample generation."""

    def close(self) -> None:
        """Flush and release the tracker; further calls are errors."""


class NullTracker:
    """A tracker that records nothing (tests, `--tracker none`)."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log(self, metrics: Mapping[str, Any], *, step: int, context: Mapping[str, Any] | None = None) -> None:
        pass

    def log_text(self, name: str, text: str, *, step: int) -> None:
        pass

    def close(self) -> None:
        pass


class AimTracker:
    """One Aim run in the Aim repository at `repo` (created if missing); `run_hash` reopens an existing run.

    No background threads for system metrics or terminal capture (they cost CPU on a 2-core machine)."""

    def __init__(
        self, repo: str | Path, *, experiment: str, run_hash: str | None = None, tags: Sequence[str] = ()
    ) -> None:
        from aim import Run  # imported here: aim takes ~1 s to import and tests mostly use NullTracker

        Path(repo).mkdir(parents=True, exist_ok=True)
        self._run = Run(
            run_hash,
            repo=str(repo),
            experiment=experiment,
            system_tracking_interval=None,
            log_system_params=False,
            capture_terminal_logs=False,
        )
        present = set(self._run.tags)
        for tag in tags:
            if tag not in present:
                self._run.add_tag(tag)
        self._closed = False

    @property
    def run_hash(self) -> str:
        return self._run.hash

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._run["hparams"] = _plain(params)

    def log(self, metrics: Mapping[str, Any], *, step: int, context: Mapping[str, Any] | None = None) -> None:
        ctx = _plain(context or {})
        for name, value in metrics.items():
            number = to_float(value)
            if number is not None:
                self._run.track(number, name=name, step=step, context=ctx)

    def log_text(self, name: str, text: str, *, step: int) -> None:
        from aim import Text

        self._run.track(Text(text), name=name, step=step)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._run.close()


class MetricsFile:
    """Appends metrics and texts to a JSON-lines file: {"step", "context", "metrics"} or {"step", "text": {name:
    text}}; flushed per call, so an interrupted run keeps what it logged."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a")

    def _write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass  # the run directory's config.json holds them

    def log(self, metrics: Mapping[str, Any], *, step: int, context: Mapping[str, Any] | None = None) -> None:
        values = {k: to_float(v) for k, v in metrics.items() if v is not None}
        self._write({"step": int(step), "context": dict(context or {}), "metrics": values})

    def log_text(self, name: str, text: str, *, step: int) -> None:
        self._write({"step": int(step), "text": {name: text}})

    def close(self) -> None:
        self._file.close()


class Trackers:
    """Several trackers as one."""

    def __init__(self, *trackers: Tracker):
        self.trackers = trackers

    def log_params(self, params: Mapping[str, Any]) -> None:
        for t in self.trackers:
            t.log_params(params)

    def log(self, metrics: Mapping[str, Any], *, step: int, context: Mapping[str, Any] | None = None) -> None:
        for t in self.trackers:
            t.log(metrics, step=step, context=context)

    def log_text(self, name: str, text: str, *, step: int) -> None:
        for t in self.trackers:
            t.log_text(name, text, step=step)

    def close(self) -> None:
        for t in self.trackers:
            t.close()


def read_metrics(path: str | Path) -> tuple[dict[str, dict[str, list[tuple[int, float]]]], dict[str, list]]:
    """A `metrics.jsonl` -> ({subset: {metric: [(step, value)] by step}}, {text name: [(step, text)]}); of
    records repeated for one step (a resumed run redoes the steps after its last checkpoint) the last wins.
    A truncated last line (a killed process) is ignored."""
    series: dict[str, dict[str, dict[int, float]]] = {}
    texts: dict[str, dict[int, str]] = {}
    for line in Path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        step = int(record["step"])
        for name, text in record.get("text", {}).items():
            texts.setdefault(name, {})[step] = text
        subset = str(record.get("context", {}).get("subset", ""))
        for name, value in record.get("metrics", {}).items():
            series.setdefault(subset, {}).setdefault(name, {})[step] = value
    ordered = lambda d: sorted(d.items())
    return {s: {m: ordered(v) for m, v in ms.items()} for s, ms in series.items()}, {
        n: ordered(v) for n, v in texts.items()
    }


def to_float(value: Any) -> float | None:
    """A metric value as a Python float (NaN/inf kept), or None for None."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"metric tensors must have one element, got shape {tuple(value.shape)}")
        value = value.item()
    return float(value)


def _plain(value: Any) -> Any:
    """A JSON-like copy Aim can store: tuples become lists, paths and other objects become strings."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return str(value)


def make_tracker(
    kind: Literal["aim", "none"],
    *,
    run_dir: str | Path,
    repo: str | Path | None,
    experiment: str,
    tags: Sequence[str] = (),
) -> Tracker:
    """The tracker for a training run: `<run_dir>/metrics.jsonl` and, with "aim", an Aim run (a resumed run,
    same `run_dir`, continues its Aim run)."""
    if kind not in ("aim", "none"):
        raise ValueError(f"unknown tracker {kind!r}; choose 'aim' or 'none'")
    run_dir = Path(run_dir)
    metrics = MetricsFile(run_dir / METRICS_FILE)
    if kind == "none":
        return metrics
    hash_file = run_dir / HASH_FILE
    run_hash = hash_file.read_text().strip() if hash_file.is_file() else None
    tracker = AimTracker(repo or run_dir / "aim", experiment=experiment, run_hash=run_hash or None, tags=tags)
    if run_hash != tracker.run_hash:
        run_dir.mkdir(parents=True, exist_ok=True)
        hash_file.write_text(tracker.run_hash + "\n")
    return Trackers(tracker, metrics)


def index_aim_run(repo: str | Path, run_hash: str) -> None:
    """Bring the repo index up to date for one run so `aim.Repo(repo).get_run(run_hash)` sees it.

    Aim 3.29 writes runs to per-run chunks and only its indexer (`aim up`, `aim storage reindex`) copies them
    into the index that `aim.Repo` queries; this does the same for one run, in milliseconds."""
    from aim import Repo
    from aim.sdk.index_manager import RepoIndexManager

    RepoIndexManager(Repo(str(repo))).index(run_hash)
