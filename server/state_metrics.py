"""Metrics read at scrape time from the gateway's state and its stores, for the dashboard and the alert rules.

Engine readiness, where each alias points and how often it moved, each aliased version's up-rate beside the
version it replaced, training run outcomes, and whether the feedback store is writing. They are read when
Prometheus scrapes (a prometheus_client custom collector) rather than counted where things happen because the
registry, the run store and the feedback ratings are shared with the CLI and the trainer: an alias moved or a
run failed in another process counts all the same, and a gateway restart does not reset them. The alert rules
in deploy/prometheus/alerts.yml are written against these names (docs/architecture.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from adapters.runs import RunStatus

if TYPE_CHECKING:
    from adapters.registry import Registry
    from adapters.runs import RunStore
    from feedback.store import FeedbackStore

logger = logging.getLogger(__name__)

# The feedback aggregate scans an adapter's ratings; Prometheus scrapes every few seconds, so it is redone at
# most this often (alias moves are re-read at once: they invalidate it).
UPRATE_REFRESH_SECONDS = 15.0
ENDED_STREAK = (RunStatus.SUCCEEDED, RunStatus.REJECTED)  # a run that got through the pipeline ends a failure streak


class ScrapeSource(Protocol):
    """What the collector reads: the gateway's state (server.state.GatewayState) satisfies it."""

    ready: bool
    registry: Registry
    runs: RunStore
    feedback: FeedbackStore


@dataclass
class AliasReading:
    """One alias: the version it serves, the one it replaced, how often it moved, and both versions' ratings."""

    adapter: str
    alias: str
    version: int
    previous: int | None
    moves: int
    ratings: dict[int, tuple[int, int]] = field(default_factory=dict)  # version -> (up, up + down)


def read_aliases(registry: Registry, feedback: FeedbackStore) -> list[AliasReading]:
    """Every alias with its move count, the version its last move replaced, and both versions' all-time ratings."""
    readings = []
    for adapter in registry.adapters():
        events = registry.history(adapter)
        counts = {row["adapter_version"]: (row["up"] or 0, (row["up"] or 0) + (row["down"] or 0))
                  for row in feedback.rating_counts(adapter)}
        for (_, alias), version in sorted(registry.aliases(adapter).items()):
            moves = [e for e in events if e.alias == alias]
            # The move that put `version` there names the version it replaced (a rollback's too).
            arrival = next((e for e in reversed(moves) if e.to_version == version), None)
            previous = arrival.from_version if arrival and arrival.from_version != version else None
            reading = AliasReading(adapter, alias, version, previous, len(moves))
            for v in (version, previous):
                if v is not None:
                    reading.ratings[v] = counts.get(v, (0, 0))
            readings.append(reading)
    return readings


def read_runs(runs: RunStore) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
    """Runs per (adapter, status), and each adapter's failed runs since its last one that got through."""
    by_status, streaks = runs.status_counts(), runs.failure_streaks(ENDED_STREAK)
    return by_status, streaks


class StateCollector:
    """Yields the scrape-time metric families; a store that cannot be read leaves its families empty."""

    def __init__(self, source: ScrapeSource, refresh_seconds: float = UPRATE_REFRESH_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.source = source
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self._aliases: list[AliasReading] = []
        self._read_at: float | None = None
        self._token: tuple[int, int] | None = None

    def describe(self) -> Iterator[Metric]:
        """The families without samples (the registry checks names with it, without reading any store)."""
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        engine, versions, moves, uprate, ratings, runs, streaks, failing, failed, dropped = families
        engine.add_metric([], 1.0 if self.source.ready else 0.0)
        for a in self._alias_readings():
            versions.add_metric([a.adapter, a.alias], a.version)
            moves.add_metric([a.adapter, a.alias], a.moves)
            for role, v in (("current", a.version), ("previous", a.previous)):
                if v is None:
                    continue
                up, rated = a.ratings[v]
                labels = [a.adapter, a.alias, str(v), role]
                ratings.add_metric(labels, rated)
                if rated:
                    uprate.add_metric(labels, up / rated)
        try:
            by_status, by_adapter = read_runs(self.source.runs)
        except Exception as e:  # the dashboard must keep its other panels: skip these for one scrape
            logger.warning("metrics: could not read the run store: %s", e)
            by_status, by_adapter = {}, {}
        for (adapter, status), count in sorted(by_status.items()):
            runs.add_metric([adapter, status], count)
        for adapter, count in sorted(by_adapter.items()):
            streaks.add_metric([adapter], count or 0)
        writer = self.source.feedback.writer
        failing.add_metric([], 1.0 if writer.failing else 0.0)
        failed.add_metric([], writer.batches_failed)
        dropped.add_metric([], writer.writes_dropped)
        return iter(families)

    def _alias_readings(self) -> list[AliasReading]:
        """The cached alias readings, re-read when an alias moved or `refresh_seconds` passed."""
        source, now = self.source, self.clock()
        try:
            token = source.registry.change_token()
            stale = self._read_at is None or now - self._read_at >= self.refresh_seconds
            if stale or token != self._token:
                self._aliases, self._read_at, self._token = read_aliases(source.registry, source.feedback), now, token
        except Exception as e:  # a locked registry or store: serve the last readings
            logger.warning("metrics: could not read the registry or the feedback store: %s", e)
        return self._aliases

    @staticmethod
    def _families() -> list[Metric]:
        alias, version = ["adapter", "alias"], ["adapter", "alias", "version", "role"]
        return [
            GaugeMetricFamily("flywheel_engine_ready", "1 when the engine is warmed up and serving, else 0."),
            GaugeMetricFamily("flywheel_alias_version", "The version each alias points to in the registry.",
                              labels=alias),
            CounterMetricFamily("flywheel_alias_moves", "Alias moves recorded in the registry (any process).",
                                labels=alias),
            GaugeMetricFamily(
                "flywheel_version_up_rate",
                "All-time share of up ratings of the version an alias serves (role=current) and of the version"
                " it replaced (role=previous); absent while a version has no ratings.", labels=version),
            GaugeMetricFamily("flywheel_version_ratings", "Up plus down ratings behind flywheel_version_up_rate.",
                              labels=version),
            GaugeMetricFamily("flywheel_training_runs", "Training runs in the run store, by adapter and status.",
                              labels=["adapter", "status"]),
            GaugeMetricFamily("flywheel_training_consecutive_failures",
                              "Failed training runs since the adapter's last succeeded or rejected run.",
                              labels=["adapter"]),
            GaugeMetricFamily("flywheel_feedback_store_failing",
                              "1 while the feedback store's last write transaction failed (it refuses writes)."),
            CounterMetricFamily("flywheel_feedback_store_failed_batches",
                                "Feedback store write transactions rolled back whole (disk full, read-only, locked)."),
            CounterMetricFamily("flywheel_feedback_store_dropped_writes",
                                "Completion-log rows lost with a failed feedback store transaction."),
        ]
