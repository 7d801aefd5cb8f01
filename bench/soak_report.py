"""The soak's results and their math: what was recorded, per-window latency, RSS growth, p99 flatness, targets.

Times are seconds since the soak's traffic started. The page and the plot are in `soak_page.py` and
`soak_plot.py`; everything here is plain data, so the math is tested on tiny inline series.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench.hardware import Hardware
from bench.load import percentile

if TYPE_CHECKING:
    from bench.soak import SoakConfig

MAX_RSS_GROWTH = 0.05  # the reliability issue: RSS growth under 5% after warm-up
MAX_P99_RATIO = 1.5  # "p99 flat": the last window's p99 at most 1.5x the first post-warm-up window's


@dataclass(frozen=True)
class ChatRecord:
    """One chat request: when it started, how long it took, what it asked for and what served it."""

    start_s: float
    latency_ms: float
    ttft_ms: float
    target: str  # "base" or the adapter's name
    served_by: str | None = None  # the gateway's `adapter` field ("name@version")
    error: str | None = None


@dataclass(frozen=True)
class Sample:
    """The gateway's process tree and SQLite WAL files at one moment."""

    t_s: float
    gateway_rss_mib: float
    engine_rss_mib: float  # every descendant of the gateway (vLLM's engine core and worker) together
    gateway_fds: int
    engine_fds: int
    feedback_wal_kib: float
    registry_wal_kib: float
    processes: dict[str, float] = field(default_factory=dict)  # descendant name -> RSS MiB


@dataclass(frozen=True)
class SwapEvent:
    """One promote or rollback through the admin API."""

    t_s: float
    action: str  # "promote" or "rollback"
    version: int  # the version production moved to
    admin_ms: float
    error: str | None = None


@dataclass(frozen=True)
class FeedbackWindow:
    """One stretch of paced feedback submissions (`bench.feedback_load.submit_feedback`)."""

    t_s: float
    submitted: int
    errors: int
    per_s: float
    p50_ms: float
    p99_ms: float
    first_error: str | None = None


@dataclass(frozen=True)
class Window:
    """Chat requests that started in [start_s, end_s); latencies in milliseconds."""

    index: int
    start_s: float
    end_s: float
    warmup: bool
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    ttft_p50_ms: float
    ttft_p99_ms: float


def error_kind(error: str) -> str:
    """A short class for an error text: `HTTP 503`, an exception name, or an error event inside a stream."""
    if error.startswith("HTTP "):
        return error[:8]
    if error.startswith("{"):
        return "error event in the stream"
    head = error.split(":", 1)[0].strip()
    return head if head.isidentifier() else "other"


def windows(records: list[ChatRecord], window_s: float, duration_s: float, warmup_s: float) -> list[Window]:
    """Per-window latency percentiles over the requests that *started* in each window (the load is closed-loop,
    so that is where the gateway's state at the time shows); a last partial window joins the one before it."""
    count = max(1, int(duration_s // window_s))
    buckets: list[list[ChatRecord]] = [[] for _ in range(count)]
    for r in records:
        buckets[min(int(r.start_s // window_s), count - 1)].append(r)
    out = []
    for i, bucket in enumerate(buckets):
        ok = [r for r in bucket if r.error is None]
        latency, ttft = [r.latency_ms for r in ok], [r.ttft_ms for r in ok if r.ttft_ms > 0]
        end = duration_s if i == count - 1 else (i + 1) * window_s
        out.append(Window(i, i * window_s, end, end <= warmup_s, len(bucket), len(bucket) - len(ok),
                          round(percentile(latency, 50), 1), round(percentile(latency, 99), 1),
                          round(percentile(ttft, 50), 1), round(percentile(ttft, 99), 1)))
    return out


def growth(series: list[tuple[float, float]], warmup_s: float) -> float | None:
    """Relative change from the first value at or after the warm-up to the last value; None with too few."""
    after = [value for t, value in series if t >= warmup_s]
    if len(after) < 2 or after[0] <= 0:
        return None
    return round(after[-1] / after[0] - 1, 4)


def sample_at(samples: list[Sample], t_s: float, slack_s: float = 1.0) -> Sample | None:
    """The last sample taken by `t_s` (a sample due at `t_s` is stamped a little after it: `slack_s`)."""
    return next((s for s in reversed(samples) if s.t_s <= t_s + slack_s), None)


def p99_flatness(all_windows: list[Window]) -> tuple[Window | None, Window | None, float | None]:
    """(first post-warm-up window, last window, last p99 / first p99); Nones when there are not two to compare."""
    steady = [w for w in all_windows if not w.warmup and w.p99_ms > 0]
    if len(steady) < 2:
        return None, None, None
    first, last = steady[0], steady[-1]
    return first, last, round(last.p99_ms / first.p99_ms, 3)


@dataclass
class SoakReport:
    """Everything one soak recorded, and where it was written."""

    hardware: Hardware
    config: SoakConfig
    records: list[ChatRecord] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    swaps: list[SwapEvent] = field(default_factory=list)
    feedback: list[FeedbackWindow] = field(default_factory=list)
    other_errors: list[str] = field(default_factory=list)  # "Kind: text": the gateway exited, /ready failed, ...
    client_cores: list[int] = field(default_factory=list)
    load_average_at_end: tuple[float, float, float] = (0.0, 0.0, 0.0)
    files: list[Path] = field(default_factory=list)

    def windows(self) -> list[Window]:
        c = self.config
        return windows(self.records, c.window_s, c.duration_s, c.warmup_s)

    def errors(self) -> dict[str, int]:
        """Error counts by kind, over chat, feedback (classed by each window's first error), swaps and the rest."""
        kinds: Counter[str] = Counter()
        for r in self.records:
            if r.error is not None:
                kinds[f"chat: {error_kind(r.error)}"] += 1
        for f in self.feedback:
            if f.errors:
                kinds[f"feedback: {error_kind(f.first_error or '')}"] += f.errors
        for s in self.swaps:
            if s.error is not None:
                kinds[f"{s.action}: {error_kind(s.error)}"] += 1
        for e in self.other_errors:
            kinds[e.split(":", 1)[0]] += 1
        return dict(kinds)

    def rss_growth(self) -> dict[str, float | None]:
        """RSS growth after the warm-up, of the gateway's process and of its engine processes together."""
        w = self.config.warmup_s
        return {"gateway": growth([(s.t_s, s.gateway_rss_mib) for s in self.samples], w),
                "engine": growth([(s.t_s, s.engine_rss_mib) for s in self.samples], w)}

    def drift(self) -> dict[str, float | None]:
        """Change of the fd count and the WAL sizes from the first sample at or after the warm-up to the last."""
        after = [s for s in self.samples if s.t_s >= self.config.warmup_s]
        keys = ("gateway_fds", "engine_fds", "feedback_wal_kib", "registry_wal_kib")
        if len(after) < 2:
            return dict.fromkeys(keys)
        return {k: round(getattr(after[-1], k) - getattr(after[0], k), 1) for k in keys}

    def first_served_ms(self) -> list[float | None]:
        """Per swap: from the admin call to the first token of a request started after it on the new version."""
        name, out = self.config.swap_adapter, []
        for swap in self.swaps:
            label = f"{name}@{swap.version}"
            firsts = [r.start_s + r.ttft_ms / 1000 for r in self.records
                      if r.start_s >= swap.t_s and r.served_by == label and r.error is None]
            out.append(round((min(firsts) - swap.t_s) * 1000, 1) if firsts else None)
        return out

    def targets(self) -> dict[str, bool]:
        """Pass/fail against the reliability issue's targets."""
        growths = [g for g in self.rss_growth().values()]
        _, _, p99_ratio = p99_flatness(self.windows())
        return {"zero_errors": not self.errors(),
                "rss_growth_under_5_percent": all(g is not None and g < MAX_RSS_GROWTH for g in growths),
                "p99_flat": p99_ratio is not None and p99_ratio <= MAX_P99_RATIO}

    def as_dict(self) -> dict:
        """Plain JSON-ready dict (per-window and per-sample series; single requests are left out)."""
        config = {k: v for k, v in asdict(self.config).items() if k not in ("out_dir", "work_dir")}
        first, last, p99_ratio = p99_flatness(self.windows())
        targets = self.targets()
        by_target = Counter(r.target for r in self.records)
        return {
            "benchmark": "flywheel bench soak", "hardware": self.hardware.as_dict(), "config": config,
            "load_average_at_end": self.load_average_at_end, "client_cores": self.client_cores,
            "requests": len(self.records), "requests_by_target": dict(sorted(by_target.items())),
            "feedback_submitted": sum(f.submitted for f in self.feedback),
            "errors": self.errors(), "other_errors": self.other_errors,
            "windows": [asdict(w) for w in self.windows()], "samples": [asdict(s) for s in self.samples],
            "swaps": [{**asdict(s), "first_served_ms": ms} for s, ms in zip(self.swaps, self.first_served_ms(),
                                                                             strict=True)],
            "feedback_windows": [asdict(f) for f in self.feedback],
            "rss_growth": self.rss_growth(), "drift_after_warmup": self.drift(),
            "p99_flatness": {"first_window": first.index if first else None,
                             "first_p99_ms": first.p99_ms if first else None,
                             "last_window": last.index if last else None,
                             "last_p99_ms": last.p99_ms if last else None, "ratio": p99_ratio,
                             "max_ratio": MAX_P99_RATIO},
            "targets": targets, "passed": all(targets.values()),
        }
