"""Reports of training and closed-loop evaluations: loss curves and a grouped bar chart (PNGs drawn with PIL),
and a Markdown table of success rates with Wilson 95% intervals per task and overall, for several policies side by side.

Usage::

    rates = {model: summarize(records) for model, records in load_results("runs/eval").items()}
    plot_success(rates, "runs/eval/success.png")                    # 960 x 480 px by default
    plot_curves({"train": [(10, 2.3), (20, 1.9)], "val": [(20, 2.0)]}, "loss.png")
    print(markdown_table(rates, {"vla vs expert": compare(records_vla, records_expert)}))

PIL (already a dependency, used by the simulator's renderer) rather than matplotlib: bars, error bars and a
few labels are ~60 lines of drawing, not worth a ~40 MB dependency with its own font cache.
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from foundry.eval.stats import OVERALL, SuccessRate
from foundry.sim.tabletop import TASK_FAMILIES

PALETTE = [(70, 110, 200), (220, 120, 40), (60, 160, 90), (190, 60, 70), (130, 90, 180), (120, 120, 120)]
Summaries = dict[str, dict[str, SuccessRate]]  # {model: {task or "overall": SuccessRate}}


def task_order(summaries: Summaries) -> list[str]:
    """Tasks of any model: simulator families in their canonical order, others after, "overall" last."""
    seen = {t for rates in summaries.values() for t in rates if t != OVERALL}
    known = [t for t in TASK_FAMILIES if t in seen]
    return [*known, *sorted(seen - set(known)), OVERALL]


def summary_rows(
    summaries: Summaries, comparisons: dict[str, dict[str, float]] | None = None
) -> tuple[list[str], list[list[str]]]:
    """(header, rows): rows = tasks + overall; one column per model ("rate [low, high] (k/n)"), then one
    column of Barnard p-values per comparison (`{label: {task: p}}`, e.g. from `foundry.eval.stats.compare`)."""
    comparisons = comparisons or {}
    header = ["task", *summaries, *(f"p ({label})" for label in comparisons)]
    rows = []
    for task in task_order(summaries):
        cells = [str(rates[task]) if task in rates else "-" for rates in summaries.values()]
        cells += [f"{p[task]:.3g}" if task in p else "-" for p in comparisons.values()]
        rows.append([task, *cells])
    return header, rows


def markdown_table(summaries: Summaries, comparisons: dict[str, dict[str, float]] | None = None) -> str:
    """`summary_rows` as a Markdown table, the overall row in bold."""
    header, rows = summary_rows(summaries, comparisons)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task, *cells in rows:
        lines.append("| " + " | ".join([f"**{task}**" if task == OVERALL else task, *cells]) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(
    series: dict[str, list[tuple[int, float]]],
    path: str | Path,
    *,
    size: tuple[int, int] = (640, 360),
    title: str = "loss",
    xlabel: str = "step",
) -> Path:
    """Lines of (step, value) points, one colour per series, on shared axes (finite values only)."""
    w, h = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    points = {k: [(x, y) for x, y in v if math.isfinite(y)] for k, v in series.items()}
    xs = [x for v in points.values() for x, _ in v] or [0, 1]
    ys = [y for v in points.values() for _, y in v] or [0.0, 1.0]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.05 or 0.5
    y0, y1 = y0 - pad, y1 + pad
    left, right, top, bottom = 56, 16, 40, 36
    px = lambda x: left + (x - x0) / (x1 - x0) * (w - left - right)
    py = lambda y: top + (y1 - y) / (y1 - y0) * (h - top - bottom)
    for i in range(5):
        y = y0 + (y1 - y0) * i / 4
        draw.line([(left, py(y)), (w - right, py(y))], fill=(230, 230, 230))
        draw.text((left - 6, py(y)), f"{y:.3g}", fill="black", font=font, anchor="rm")
    draw.line([(left, top), (left, h - bottom), (w - right, h - bottom)], fill="black")
    for x in (x0, (x0 + x1) / 2, x1):
        draw.text((px(x), h - bottom + 6), f"{x:.0f}", fill="black", font=font, anchor="mt")
    draw.text((w // 2, h - 12), xlabel, fill="black", font=font, anchor="mm")
    draw.text((w // 2, 12), title, fill="black", font=font, anchor="mt")
    for i, (name, pts) in enumerate(points.items()):
        colour = PALETTE[i % len(PALETTE)]
        xy = [(px(x), py(y)) for x, y in pts]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        for x, y in xy if len(xy) <= 12 else []:  # few points (validation): mark them
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        draw.rectangle([w - right - 110, top + 4 + 14 * i, w - right - 100, top + 12 + 14 * i], fill=colour)
        draw.text((w - right - 94, top + 8 + 14 * i), name, fill="black", font=font, anchor="lm")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def plot_success(
    summaries: Summaries, path: str | Path, *, size: tuple[int, int] = (960, 480), title: str = "success rate"
) -> Path:
    """Grouped bars (one group per task and overall, one bar per model) with Wilson-interval error bars."""
    w, h = size
    tasks, models = task_order(summaries), list(summaries)
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    left, right, top, bottom = 48, 16, 40, 40  # plot margins (px): axis labels left, task names below
    y_of = lambda v: top + (1.0 - v) * (h - top - bottom)
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = y_of(tick)
        draw.line([(left, y), (w - right, y)], fill=(225, 225, 225) if tick else (0, 0, 0))
        draw.text((left - 6, y), f"{tick:.0%}", fill="black", font=font, anchor="rm")
    draw.line([(left, top), (left, y_of(0.0))], fill="black")
    draw.text((w // 2, 12), title, fill="black", font=font, anchor="mt")
    group_w = (w - left - right) / len(tasks)
    bar_w = group_w * 0.8 / max(1, len(models))
    for gi, task in enumerate(tasks):
        x0 = left + gi * group_w + group_w * 0.1
        for mi, model in enumerate(models):
            rate = summaries[model].get(task)
            if rate is None or rate.n == 0:
                continue
            xa, xb = x0 + mi * bar_w, x0 + (mi + 1) * bar_w - 2
            colour = PALETTE[mi % len(PALETTE)]
            draw.rectangle([xa, min(y_of(rate.rate), y_of(0.0) - 1), xb, y_of(0.0)], fill=colour)
            lo, hi = rate.interval
            xc, cap = (xa + xb) / 2, max(2.0, bar_w / 5)
            draw.line([(xc, y_of(lo)), (xc, y_of(hi))], fill="black", width=2)
            for v in (lo, hi):
                draw.line([(xc - cap, y_of(v)), (xc + cap, y_of(v))], fill="black", width=2)
        draw.text((left + (gi + 0.5) * group_w, y_of(0.0) + 8), task, fill="black", font=font, anchor="mt")
    x = w - right - 4
    for mi, model in reversed(list(enumerate(models))):  # legend, right-aligned at the top
        label_w = draw.textlength(model, font=font)
        draw.text((x, 26), model, fill="black", font=font, anchor="rm")
        draw.rectangle([x - label_w - 16, 22, x - label_w - 6, 30], fill=PALETTE[mi % len(PALETTE)])
        x -= label_w + 28
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
