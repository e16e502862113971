"""Terminal progress for long work, without threads or tqdm.

On a TTY one line is redrawn in place (at most every 0.2 s); elsewhere (CI logs, pipes) a plain line is
printed for the first update, then every `every_s` seconds, and for the last step. The rate and ETA come
from the updates after the first one, so compile time in the first step does not skew them.

Usage:

    bar = Progress(total=1000, initial=start_step, desc="llm", samples_per_step=32, tokens_per_step=8192)
    for step in range(start_step, 1000):
        ...
        bar.update(step + 1, loss=loss, lr=lr)      # -> llm 120/1000 12% loss=2.345 lr=3.0e-04 ...
        if (step + 1) % 100 == 0:
            bar.write(f"step {step + 1}: val loss {val:.3f}")
    bar.close()
"""

from __future__ import annotations

import io
import math
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

TTY_INTERVAL_S = 0.2


class NullStream(io.TextIOBase):
    """A text stream that discards what is written (the progress of ranks other than 0)."""

    def write(self, s: str) -> int:
        return len(s)


def format_duration(seconds: float) -> str:
    """Compact durations: "12s", "3m05s", "1h02m" ("?" when unknown)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def format_scalar(value: Any) -> str:
    """Compact scalar: 2.345, 0.0123, 3.0e-04, 1.2e+05, 0, nan."""
    if hasattr(value, "item"):  # 0-D tensors and numpy scalars
        value = value.item()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    value = float(value)
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    if 1e-2 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.1e}"


def format_rate(per_second: float) -> str:
    """Rates with SI suffixes: 12.3, 4.56k, 1.23M."""
    for bound, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if per_second >= bound:
            return f"{per_second / bound:.3g}{suffix}"
    return f"{per_second:.3g}"


class Progress:
    """Progress of `total` steps with scalars, throughput and ETA; see the module docstring."""

    def __init__(
        self,
        total: int,
        *,
        initial: int = 0,
        desc: str = "",
        stream: TextIO | None = None,
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        samples_per_step: int | None = None,
        tokens_per_step: int | None = None,
    ) -> None:
        self.total, self.desc, self.every_s = total, desc, every_s
        self.samples_per_step, self.tokens_per_step = samples_per_step, tokens_per_step
        self._stream = stream if stream is not None else sys.stderr
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._clock = clock
        self._start = clock()
        self._step = initial
        self._first: tuple[float, int] | None = None  # (time, step) of the first update: the rate's origin
        self._last_draw = -math.inf
        self._line = ""  # the latest status line
        self._shown = True  # whether the latest status line has been printed
        self._drawn_width = 0  # width of the bar on screen (TTY)

    def update(self, step: int, **scalars: Any) -> None:
        """`step` = completed steps so far; `scalars` (loss, lr, ...) are shown as name=value."""
        now = self._clock()
        first = self._first is None
        if first:
            self._first = (now, step)
        self._step = step
        self._line = self._status(now, scalars)
        self._shown = False
        last = step >= self.total
        interval = TTY_INTERVAL_S if self._tty else self.every_s
        if first or last or now - self._last_draw >= interval:
            self._show(now)

    def write(self, line: str) -> None:
        """Print a whole line (a window summary, a sample) without breaking the bar."""
        if self._tty and self._drawn_width:
            self._stream.write("\r" + " " * self._drawn_width + "\r")
            self._stream.write(line + "\n")
            self._draw_tty(self._line)
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def close(self) -> None:
        """Show the final state (if not shown yet) and end the bar's line."""
        if not self._shown and self._line:
            self._show(self._clock())
        if self._tty and self._drawn_width:
            self._stream.write("\n")
            self._drawn_width = 0
        self._stream.flush()

    def _show(self, now: float) -> None:
        self._last_draw = now
        self._shown = True
        if self._tty:
            self._draw_tty(self._line)
        else:
            self._stream.write(self._line + "\n")
        self._stream.flush()

    def _draw_tty(self, line: str) -> None:
        pad = " " * max(0, self._drawn_width - len(line))
        self._stream.write("\r" + line + pad)
        self._drawn_width = len(line)

    def _status(self, now: float, scalars: dict[str, Any]) -> str:
        parts = [self.desc] if self.desc else []
        pct = f" {100 * self._step / self.total:.0f}%" if self.total > 0 else ""
        parts.append(f"{self._step}/{self.total}{pct}")
        parts += [f"{name}={format_scalar(value)}" for name, value in scalars.items()]
        rate = self._rate(now)
        if rate is not None:
            parts.append(f"{format_rate(rate)} it/s")
            if self.samples_per_step:
                parts.append(f"{format_rate(rate * self.samples_per_step)} samples/s")
            if self.tokens_per_step:
                parts.append(f"{format_rate(rate * self.tokens_per_step)} tok/s")
        eta = (self.total - self._step) / rate if rate else math.nan
        parts.append(f"elapsed {format_duration(now - self._start)}")
        parts.append(f"ETA {format_duration(max(eta, 0.0)) if self._step < self.total else '0s'}")
        return " ".join(parts)

    def _rate(self, now: float) -> float | None:
        """Steps per second since the first update, or None before a second update."""
        assert self._first is not None
        t0, step0 = self._first
        if now <= t0 or self._step <= step0:
            return None
        return (self._step - step0) / (now - t0)
