"""The feedback-over-time plot of one version as SVG geometry: volume bars with correction bars beside them, an
up-rate line, and alias-move markers labelled promote or rollback.

Computed here and drawn by `templates/plot.html` as inline SVG, so the page needs no charting library.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from adapters.names import CANARY, PRODUCTION
from adapters.version import AliasEvent
from feedback.timeline import BUCKET_SECONDS, Bucket

WIDTH, HEIGHT = 720, 200
LEFT, RIGHT, TOP, BOTTOM = 40, 10, 10, 30
VOLUME_SHARE = 0.6  # of a bucket's bar width: the volume bar; the correction bar takes the rest beside it
RECORDED_KIND = {"promote": "promote", "promoted": "promote", "rollback": "rollback", "rolled": "rollback"}


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
    corrections: list[Bar] = field(default_factory=list)  # one per bucket with any, beside its volume bar
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
    """"promote" or "rollback": the kind the move's recorded reason starts with, as the console's, the admin
    API's and the CLI's defaults do ("promote: ...", "rollback to v3"); the registry keeps no separate kind.
    Reasons that name none (the trainer's canary verdicts, free text through the API): an alias taken away or
    moved back to an older version reads as a rollback, any other move as a promote."""
    word = re.match(r"[a-z]+", event.reason.lower())
    if word and word.group() in RECORDED_KIND:
        return RECORDED_KIND[word.group()]
    if event.to_version is None:
        return "rollback"
    older = event.from_version is not None and event.to_version < event.from_version
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

    result.peak = max(max(b.completions, b.ratings, b.corrections) for b in buckets) or 1
    bar_w = max(1.0, span_x * size / (t1 - t0) - 1)
    volume_w = max(1.0, bar_w * VOLUME_SHARE)

    def bar(x: float, width: float, count: int, title: str) -> Bar:
        h = round(count / result.peak * span_y, 1)
        return Bar(round(x, 1), round(result.bottom - h, 1), round(width, 1), h, title)

    points = []
    for b in buckets:
        rate = f"{b.up_rate:.0%}" if b.up_rate is not None else "no ratings"
        title = (f"{_stamp(b.start, unit)}: {b.completions} completions, {b.up} up, {b.down} down, "
                 f"{b.corrections} corrections, up-rate {rate}")
        result.bars.append(bar(x_of(b.start), volume_w, max(b.completions, b.ratings), title))
        if b.corrections:
            result.corrections.append(bar(x_of(b.start) + volume_w, max(1.0, bar_w - volume_w), b.corrections,
                                          f"{_stamp(b.start, unit)}: {b.corrections} corrections"))
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
