"""The soak's plot: chat latency p50/p99, RSS (gateway, engine), open fds and WAL sizes against time, swaps marked.

matplotlib is not in the project's environment, so it is drawn with Pillow (which vLLM pulls in), as the
loop and suite plots are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.soak_report import SoakReport

WIDTH, PANEL_H, LEFT, RIGHT, TOP, GAP = 960, 170, 80, 30, 50, 40
PROMOTE, ROLLBACK, WARMUP = "#2ca02c", "#9467bd", "#f0f0f0"


@dataclass(frozen=True)
class Series:
    label: str
    color: str
    points: list[tuple[float, float]]  # (seconds, value)


def _range(values: list[float], from_zero: bool) -> tuple[float, float]:
    """The y range: the data's, padded, and at least 10% of its top so that noise does not look like a cliff
    (a 5% growth then fills about half the panel); `from_zero` starts it at 0."""
    lo, hi = 0.0 if from_zero else min(values, default=0.0), max(values, default=1.0)
    span = max(hi - lo, 0.1 * abs(hi), 1.0)
    mid = (hi + lo) / 2
    return max(0.0, mid - 0.6 * span), mid + 0.6 * span


def _panel(draw, font, top: int, title: str, series: list[Series], report: SoakReport) -> None:
    """One panel at height `top`: warm-up shading, swap markers, grid, the series and their legend."""
    duration = report.config.duration_s
    lo, hi = _range([v for s in series for _, v in s.points], from_zero=title.startswith("chat"))
    bottom, right = top + PANEL_H, WIDTH - RIGHT

    def xy(t: float, v: float) -> tuple[float, float]:
        return LEFT + t / duration * (right - LEFT), bottom - (v - lo) / (hi - lo) * PANEL_H

    draw.rectangle([LEFT, top, xy(min(report.config.warmup_s, duration), lo)[0], bottom], fill=WARMUP)
    for swap in report.swaps:
        x = xy(swap.t_s, lo)[0]
        for y in range(top, bottom, 8):  # dashed
            draw.line([(x, y), (x, min(y + 4, bottom))], fill=PROMOTE if swap.action == "promote" else ROLLBACK)
    for k in range(5):
        value = lo + (hi - lo) * k / 4
        y = xy(0, value)[1]
        draw.line([(LEFT, y), (right, y)], fill="#dddddd")
        draw.text((LEFT - 6, y), f"{value:,.0f}", fill="black", font=font, anchor="rm")
    for s in series:
        pts = [xy(t, v) for t, v in s.points]
        if len(pts) > 1:
            draw.line(pts, fill=s.color, width=2)
        for x, y in pts:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=s.color)
    draw.rectangle([LEFT, top, right, bottom], outline="black")
    draw.text((LEFT, top - 6), title, fill="black", font=font, anchor="lb")
    x = right
    for s in reversed(series):  # legend, right-aligned above the panel
        draw.text((x, top - 6), s.label, fill=s.color, font=font, anchor="rb")
        x -= draw.textlength(s.label, font=font) + 16


def plot(report: SoakReport, path: Path) -> Path:
    """Five panels over the run's time axis; promotes and rollbacks dashed, the warm-up shaded."""
    from PIL import Image, ImageDraw, ImageFont

    windows = [((w.start_s + w.end_s) / 2, w) for w in report.windows() if w.requests]  # at the window's middle
    samples = report.samples
    panels = [
        ("chat latency per window (ms)", [Series("p50", "#1f77b4", [(t, w.p50_ms) for t, w in windows]),
                                          Series("p99", "#ff7f0e", [(t, w.p99_ms) for t, w in windows])]),
        ("gateway RSS (MiB)", [Series("gateway", "#1f77b4", [(s.t_s, s.gateway_rss_mib) for s in samples])]),
        ("engine processes' RSS, summed (MiB)",
         [Series("engine core, worker and helpers", "#d62728", [(s.t_s, s.engine_rss_mib) for s in samples])]),
        ("open file descriptors", [Series("gateway", "#1f77b4", [(s.t_s, s.gateway_fds) for s in samples])]),
        ("WAL size (KiB)", [Series("feedback.db-wal", "#8c564b", [(s.t_s, s.feedback_wal_kib) for s in samples]),
                            Series("registry.db-wal", "#17becf", [(s.t_s, s.registry_wal_kib) for s in samples])]),
    ]
    height = TOP + len(panels) * (PANEL_H + GAP) + 30
    img = Image.new("RGB", (WIDTH, height), "white")
    draw, font = ImageDraw.Draw(img), ImageFont.load_default(size=13)
    draw.text((WIDTH / 2, 18), f"flywheel bench soak: {report.config.concurrency} streams, "
              f"{report.config.duration_s:.0f} s (dashed: promote green, rollback purple; shaded: warm-up)",
              fill="black", font=font, anchor="mm")
    for i, (title, series) in enumerate(panels):
        _panel(draw, font, TOP + GAP // 2 + i * (PANEL_H + GAP), title, series, report)
    axis_y = height - 30
    for k in range(6):
        t = report.config.duration_s * k / 5
        x = LEFT + k / 5 * (WIDTH - RIGHT - LEFT)
        draw.text((x, axis_y), f"{t:.0f} s", fill="black", font=font, anchor="mt")
    img.save(path)
    return path
