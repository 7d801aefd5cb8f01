"""The feedback-over-time plot of one version as SVG geometry: volume bars, an up-rate line, alias-move markers.

Computed here and drawn by `templates/plot.html` as inline SVG, so the page needs no charting library.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from adapters.names import CANARY, PRODUCTION
from adapters.version import AliasEvent
from feedback.timeline import BUCKET_SECONDS, Bucket

WIDTH, HEIGHT = 720, 200
LEFT, RIGHT, TOP, BOTTOM = 40, 10, 10, 30


class Frame:
    """The SVG box every console plot is drawn in: its size and the plotting area's edges (the templates read them)."""

    width, height = WIDTH, HEIGHT
    left, top, bottom, right = LEFT, TOP, HEIGHT - BOTTOM, WIDTH - RIGHT


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class Marker:
    x: float
    label: str  # "promote" or "rollback"
    title: str


@dataclass
class Plot(Frame):
    """What the template draws; `empty` when the version has no traffic yet."""

    unit: str
    bars: list[Bar] = field(default_factory=list)
    line: str = ""  # SVG polyline points of the up-rate
    dots: list[tuple[float, float, str]] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    first: str = ""
    last: str = ""
    peak: int = 0

    @property
    def empty(self) -> bool:
        return not self.bars


def _stamp(at: float, unit: str) -> str:
    return time.strftime("%Y-%m-%d %H:00" if unit == "hour" else "%Y-%m-%d", time.gmtime(at))


def move_kind(event: AliasEvent) -> str:
    """A move back to an older version reads as a rollback, any other as a promote (moves record no kind)."""
    older = event.from_version is not None and event.to_version is not None and event.to_version < event.from_version
    return "rollback" if older else "promote"


def plot(buckets: list[Bucket], events: list[AliasEvent], version: int, unit: str) -> Plot:
    """Lay out `buckets` (oldest first) and the alias moves that touched `version` within their span."""
    result = Plot(unit)
    if not buckets:
        return result
    size = BUCKET_SECONDS[unit]
    t0, t1 = buckets[0].start, buckets[-1].start + size
    span_x = result.right - result.left
    span_y = result.bottom - result.top

    def x_of(at: float) -> float:
        return round(result.left + (at - t0) / (t1 - t0) * span_x, 1)

    result.peak = max(max(b.completions, b.ratings) for b in buckets) or 1
    bar_w = max(1.0, span_x * size / (t1 - t0) - 1)
    points = []
    for b in buckets:
        volume = max(b.completions, b.ratings)
        h = round(volume / result.peak * span_y, 1)
        rate = f"{b.up_rate:.0%}" if b.up_rate is not None else "no ratings"
        title = (f"{_stamp(b.start, unit)}: {b.completions} completions, {b.up} up, {b.down} down, "
                 f"{b.corrections} corrections, up-rate {rate}")
        result.bars.append(Bar(x_of(b.start), round(result.bottom - h, 1), round(bar_w, 1), h, title))
        if b.up_rate is not None:
            cx, cy = round(x_of(b.start) + bar_w / 2, 1), round(result.top + (1 - b.up_rate) * span_y, 1)
            points.append(f"{cx},{cy}")
            result.dots.append((cx, cy, title))
    result.line = " ".join(points)
    for e in events:
        if t0 <= e.at <= t1 and e.alias in (PRODUCTION, CANARY):
            title = f"{e.alias}: v{e.from_version} -> v{e.to_version} by {e.actor} ({e.reason})"
            result.markers.append(Marker(x_of(e.at), move_kind(e), title))
    result.first, result.last = _stamp(t0, unit), _stamp(buckets[-1].start, unit)
    return result
