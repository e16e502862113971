"""Progress output with a fake clock: plain periodic lines off a TTY, one redrawn line on a TTY.

Run: OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 .venv/bin/pytest tests/train/test_progress.py -q
"""

from __future__ import annotations

import io

import pytest
import torch

from foundry.train.progress import Progress, format_duration, format_rate, format_scalar


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (12.4, "12s"), (59.6, "1m00s"), (185, "3m05s"), (3720, "1h02m"), (90000, "25h00m")],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_format_duration_unknown():
    assert format_duration(float("nan")) == "?" and format_duration(float("inf")) == "?"


def test_format_scalar_and_rate():
    assert format_scalar(2.3456) == "2.346"
    assert format_scalar(3e-4) == "3.0e-04"
    assert format_scalar(torch.tensor(0.5)) == "0.5"
    assert format_scalar(0.0) == "0" and format_scalar(float("nan")) == "nan" and format_scalar(7) == "7"
    assert format_rate(12.34) == "12.3" and format_rate(4567) == "4.57k" and format_rate(1.5e6) == "1.5M"


def test_plain_lines_first_periodic_last():
    clock, out = FakeClock(), io.StringIO()
    bar = Progress(100, desc="llm", stream=out, every_s=10.0, clock=clock, tokens_per_step=1000)
    clock.now += 30.0  # the first step includes compilation
    bar.update(1, loss=5.0)
    for step in range(2, 101):
        clock.now += 1.0
        bar.update(step, loss=5.0 - step / 100, lr=3e-4)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "llm 1/100 1% loss=5 elapsed 30s ETA ?"
    # one line per 10 s after the first, plus the last step: steps 11, 21, ..., 91, and 100
    assert [line.split()[1] for line in lines] == [
        "1/100",
        *(f"{s}/100" for s in range(11, 100, 10)),
        "100/100",
    ]
    # rate from updates after the first one: 1 step/s, so the ETA is exact despite the 30 s first step
    assert lines[1] == "llm 11/100 11% loss=4.89 lr=3.0e-04 1 it/s 1k tok/s elapsed 40s ETA 1m29s"
    assert lines[-1].endswith("elapsed 2m09s ETA 0s")


def test_close_shows_unprinted_last_update_and_write_prints_lines():
    clock, out = FakeClock(), io.StringIO()
    bar = Progress(1000, initial=500, stream=out, clock=clock, samples_per_step=8)
    bar.update(501)
    clock.now += 2.0
    bar.update(503, loss=1.0)
    bar.write("window 1: loss 1.00")
    bar.close()
    assert out.getvalue().splitlines() == [
        "501/1000 50% elapsed 0s ETA ?",
        "window 1: loss 1.00",
        "503/1000 50% loss=1 1 it/s 8 samples/s elapsed 2s ETA 8m17s",
    ]


def test_tty_redraws_one_line_at_most_every_fifth_of_a_second():
    clock, out = FakeClock(), FakeTTY()
    bar = Progress(10, stream=out, clock=clock)
    for step in range(1, 11):
        clock.now += 0.125  # exact in binary floating point
        bar.update(step)
    bar.write("note")
    bar.close()
    text = out.getvalue()
    assert "\n" not in text.split("note\n")[0]  # the bar itself never scrolls
    draws = [chunk for chunk in text.split("\r") if chunk.strip() and not chunk.startswith("note")]
    steps = [chunk.split()[0] for chunk in draws]
    assert steps[:6] == ["1/10", "3/10", "5/10", "7/10", "9/10", "10/10"]
    assert text.endswith("10/10 100% 8 it/s elapsed 1s ETA 0s\n")
