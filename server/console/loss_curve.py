"""A run's loss curve as SVG geometry: one polyline per stage along the run's steps, drawn by `loss_curve.html`.

The points are the trainer's logged losses (`metrics["loss_curve"]`, `[stage, step, loss]` rows written by
`trainer/progress.py`). Each stage counts its steps from zero, so a later stage is drawn after the
earlier ones. Like `plot.py`, no charting library: the page stays a template.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from server.console.plot import Frame


@dataclass(frozen=True)
class StageLine:
    """One stage's part of the curve: SVG polyline points, where it starts on the x axis, its last loss."""

    stage: str
    points: str
    x0: float
    last_loss: float


@dataclass
class LossPlot(Frame):
    """What the template draws; `empty` when the run logged no loss."""

    lines: list[StageLine] = field(default_factory=list)
    low: float = 0.0
    high: float = 0.0
    first_step: int = 0  # the x axis spans the logged steps: from the first one...
    steps: int = 0  # ...to the last, counted over the whole run

    @property
    def empty(self) -> bool:
        return not self.lines


def _valid(curve: object) -> list[tuple[str, int, float]]:
    """The well-formed rows of a stored curve (the metrics are JSON written by another process)."""
    rows = []
    for row in curve if isinstance(curve, list) else []:
        if (isinstance(row, list) and len(row) == 3 and isinstance(row[0], str)
                and isinstance(row[1], int) and isinstance(row[2], int | float)):
            rows.append((row[0], row[1], float(row[2])))
    return rows


def loss_plot(curve: object) -> LossPlot:
    """Lay out the curve: x is the step counted over the whole run, y the loss between its low and high."""
    result = LossPlot()
    rows = _valid(curve)
    if not rows:
        return result
    placed: list[tuple[str, float, float]] = []  # stage, run-wide step, loss
    starts: list[int] = []  # where each stage's steps begin on the run-wide axis
    offset, previous_stage, previous_step = 0, None, 0
    for stage, step, loss in rows:
        if stage != previous_stage:
            offset += previous_step if previous_stage is not None else 0
            starts.append(offset)
        placed.append((stage, offset + step, loss))
        previous_stage, previous_step = stage, step
    result.first_step = int(min(x for _, x, _ in placed))
    result.steps = max(int(max(x for _, x, _ in placed)), result.first_step + 1)
    span = result.steps - result.first_step
    result.low, result.high = min(r[2] for r in placed), max(r[2] for r in placed)
    spread = (result.high - result.low) or 1.0

    def xy(x: float, loss: float) -> str:
        px = result.left + (x - result.first_step) / span * (result.right - result.left)
        py = result.top + (result.high - loss) / spread * (result.bottom - result.top)
        return f"{px:.1f},{py:.1f}"

    start = 0
    for i in range(1, len(placed) + 1):
        if i == len(placed) or placed[i][0] != placed[start][0]:
            part = placed[start:i]
            at = max(starts[len(result.lines)], result.first_step)
            x0 = result.left + (at - result.first_step) / span * (result.right - result.left)
            result.lines.append(StageLine(part[0][0], " ".join(xy(x, y) for _, x, y in part), round(x0, 1),
                                          part[-1][2]))
            start = i
    return result
