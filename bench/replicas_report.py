"""`flywheel bench replicas`' numbers and page: docs/bench_replicas.json (every move) and bench_replicas.md."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.hardware import Hardware
from bench.load import percentile
from bench.report import hardware_section, markdown_table, write
from bench.servers import REPO, EngineFlags

STEM = "bench_replicas"
TARGET_S = 2.0  # issue 16: an alias move reaches 2 replicas within 2 s ...
TARGET_SHARE = 0.99  # ... in at least 99% of trials, with 0 failed requests while streams run on both


@dataclass
class ReplicasConfig:
    """One run; the defaults are the ones the committed page was made with."""

    flags: EngineFlags
    moves: int = 30
    poll_seconds: float = 0.5  # FLYWHEEL_REGISTRY_POLL_SECONDS of both gateways
    streams: int = 2  # streaming requests per replica, one after another each, during the moves
    max_tokens: int = 16
    pause_s: float = 1.0  # between moves, plus a random share of a poll period (moves land at any poll phase)
    timeout_s: float = 60.0
    seed: int = 0
    note: str = ""  # the person's run note for the page
    out_dir: Path = REPO / "docs"
    work_dir: Path | None = None


@dataclass
class Move:
    """One timed move: seconds from the registry's timestamp of it until each replica reported / answered it."""

    index: int
    via: str  # "admin API of A", "admin API of B", "CLI"
    version: int
    call_s: float  # how long the mover's call took (the CLI's includes its process start)
    reported_s: dict[str, float | None]  # replica -> GET /v1/models named the version (None: not in time)
    answered_s: dict[str, float | None]  # replica -> a chat request was answered by it
    error: str | None = None

    def others(self) -> list[str]:
        """The replicas that learn of the move from the registry: not the one whose admin API made it."""
        return [r for r in ("A", "B") if not self.via.endswith(f"of {r}")]

    def to_others_s(self, seen: str = "answered") -> float | None:
        """Until every other replica answered with (or reported) the version; None: one never did in time."""
        times = [getattr(self, f"{seen}_s")[r] for r in self.others()]
        return None if self.error or None in times else max(times)


@dataclass
class StreamsResult:
    """The streams beside the moves."""

    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)  # the first few

    def add(self, error: str | None) -> None:
        if error is None:
            self.ok += 1
            return
        self.failed += 1
        if len(self.errors) < 5:
            self.errors.append(error)


@dataclass
class ReplicasReport:
    config: ReplicasConfig
    hardware: Hardware
    moves: list[Move]
    streams: StreamsResult
    load_average_end: tuple[float, float, float] = field(default_factory=os.getloadavg)
    files: list[Path] = field(default_factory=list)

    def within_target(self) -> int:
        return sum(1 for m in self.moves if (t := m.to_others_s()) is not None and t <= TARGET_S)

    def targets(self) -> dict[str, bool]:
        return {"moves_within_2s_99pct": self.within_target() >= TARGET_SHARE * len(self.moves),
                "zero_failed_requests": self.streams.failed == 0}

    def verdict(self) -> str:
        met = self.targets()
        return (f"{self.within_target()} of {len(self.moves)} moves served by the other replica(s) within "
                f"{TARGET_S:g} s (target: {TARGET_SHARE:.0%}); streams beside them: {self.streams.ok} done, "
                f"{self.streams.failed} failed -> " + ("PASS" if all(met.values()) else "FAIL"))


HEADERS = ["made through", "moves", "answered: median", "p90", "worst", f"within {TARGET_S:g} s",
           "/v1/models: median", "worst", "mover's call median"]


def _stats(moves: list[Move]) -> list[object]:
    answered = [t for m in moves if (t := m.to_others_s()) is not None]
    reported = [t for m in moves if (t := m.to_others_s("reported")) is not None]
    missed = len(moves) - len(answered)
    within = sum(t <= TARGET_S for t in answered)
    worst = "missed" if missed else (round(max(answered), 3) if answered else None)
    return [len(moves), _round(percentile(answered, 50), answered), _round(percentile(answered, 90), answered),
            worst, f"{within}/{len(moves)}", _round(percentile(reported, 50), reported),
            _round(max(reported), reported) if reported else None,
            round(percentile([m.call_s for m in moves], 50), 3)]


def _round(value: float, values: list[float]) -> float | None:
    return round(value, 3) if values else None


def summary_rows(report: ReplicasReport) -> list[list[object]]:
    """One row per way of moving, and one for all moves."""
    vias = list(dict.fromkeys(m.via for m in report.moves))
    return [[via, *_stats([m for m in report.moves if m.via == via])] for via in vias] + \
        [["all", *_stats(report.moves)]]


def command(config: ReplicasConfig) -> str:
    """The command line that reproduces the run."""
    return (f"flywheel bench replicas --moves {config.moves} --poll-seconds {config.poll_seconds:g} --streams "
            f"{config.streams} --max-tokens {config.max_tokens} --pause {config.pause_s:g}")


def _move_rows(report: ReplicasReport) -> list[list[object]]:
    return [[m.index, m.via, m.version, m.reported_s["A"], m.answered_s["A"], m.reported_s["B"], m.answered_s["B"],
             m.call_s, m.error or "-"] for m in report.moves]


def _markdown(report: ReplicasReport) -> str:
    c = report.config
    s = report.streams
    parts = [
        "# Alias moves across two gateway replicas on one PostgreSQL",
        "Produced by `flywheel bench replicas` (bench/replicas.py). One PostgreSQL server on this host, two "
        "gateway processes on it (`FLYWHEEL_DATABASE_URL`), each with its own vLLM engine (the default model) "
        "and data directory, their `adapters` folders one shared folder. Each move promotes a freshly "
        "registered version (so each replica loads new weights), made in turn through A's admin API, B's "
        "admin API and the `flywheel adapters promote` CLI. Time runs from the registry's timestamp of the "
        "move (the alias event's `at`) until the **other** replica (for the CLI: both) answered a chat request "
        "with the new version (`answered`), and until its `GET /v1/models` named it (`/v1/models`: the "
        f"resolver's snapshot, polled every 10 ms). Both gateways poll the registry every {c.poll_seconds:g} s "
        f"(`FLYWHEEL_REGISTRY_POLL_SECONDS`); {c.streams} streaming request(s) per replica ({c.max_tokens} "
        "tokens, naming the adapter) ran throughout.",
        hardware_section(report.hardware, report.load_average_end),
        f"## Result\n\n{report.verdict()}.\n\n" + markdown_table(HEADERS, summary_rows(report)),
        f"Streams beside the moves: {s.ok} finished, {s.failed} failed"
        + (": " + "; ".join(s.errors) if s.errors else "") + ".",
        "## Every move (seconds after the move; A and B: reported by /v1/models, answered)\n\n"
        + markdown_table(["#", "made through", "version", "A /v1/models", "A answered", "B /v1/models",
                          "B answered", "mover's call s", "error"], _move_rows(report)),
        f"Reproduce: `{command(c)}`",
    ]
    if c.note:
        parts.insert(2, f"**Run note.** {c.note}")
    return "\n\n".join(parts)


def write_page(report: ReplicasReport) -> list[Path]:
    """docs/bench_replicas.json and .md."""
    data = {"config": {**asdict(report.config), "flags": asdict(report.config.flags)},
            "hardware": report.hardware.as_dict(), "moves": [asdict(m) for m in report.moves],
            "streams": asdict(report.streams), "load_average_end": report.load_average_end,
            "targets": report.targets(), "within_target": report.within_target(),
            "summary": {row[0]: dict(zip(HEADERS[1:], row[1:], strict=True)) for row in summary_rows(report)}}
    return list(write(report.config.out_dir, STEM, data, _markdown(report)))
