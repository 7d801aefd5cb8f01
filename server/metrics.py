"""Prometheus metrics of the gateway, in their own registry (so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from server.state_metrics import ScrapeSource, StateCollector

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """Every metric the gateway exports on /metrics; labelled by adapter and version where it matters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("adapter", "version")
        self.requests = Counter(
            "flywheel_requests", "Chat completions answered, by outcome.", (*labels, "status"), registry=self.registry
        )
        self.errors = Counter(
            "flywheel_errors", "Requests that ended in an error, by HTTP status.", ("route", "status"),
            registry=self.registry,
        )
        self.ttft = Histogram(
            "flywheel_time_to_first_token_seconds", "Time from request to first generated token.", labels,
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.latency = Histogram(
            "flywheel_request_latency_seconds", "Total request latency.", labels,
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "flywheel_prompt_tokens", "Prompt tokens processed.", labels, registry=self.registry
        )
        self.completion_tokens = Counter(
            "flywheel_completion_tokens", "Completion tokens generated.", labels, registry=self.registry
        )
        self.inflight = Gauge("flywheel_inflight_requests", "Requests being served now.", registry=self.registry)
        self.adapter_loads = Counter(
            "flywheel_adapter_loads", "Adapter versions loaded into the engine.", (*labels, "result"),
            registry=self.registry,
        )
        self.adapter_load_seconds = Histogram(
            "flywheel_adapter_load_seconds", "Time to load an adapter version into the engine.",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.adapter_swaps = Counter(
            "flywheel_adapter_swaps", "Alias moves applied by the gateway.", ("adapter", "alias"),
            registry=self.registry,
        )
        self.feedback = Counter(
            "flywheel_feedback", "Feedback received, by adapter, version and rating (up, down, pair).",
            ("adapter", "version", "rating"), registry=self.registry,
        )
        self.up_rate = Gauge(
            "flywheel_feedback_up_rate", "Share of up ratings per adapter version since the gateway started.",
            ("adapter", "version"), registry=self.registry,
        )
        self._ratings: dict[tuple[str, str], list[int]] = {}
        self.swap_seconds = Histogram(
            "flywheel_adapter_swap_seconds", "Time from noticing an alias move to serving the new version.",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )

    def observe_feedback(self, adapter: str, version: str, rating: str) -> None:
        """Count one rating (or pair) and refresh the version's up-rate."""
        self.feedback.labels(adapter, version, rating).inc()
        if rating not in ("up", "down"):
            return
        counts = self._ratings.setdefault((adapter, version), [0, 0])
        counts[0] += rating == "up"
        counts[1] += 1
        self.up_rate.labels(adapter, version).set(counts[0] / counts[1])

    def watch(self, source: ScrapeSource) -> StateCollector:
        """Also export what is read from `source` at scrape time (server/state_metrics.py)."""
        collector = StateCollector(source)
        self.registry.register(collector)
        return collector
