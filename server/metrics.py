"""Prometheus metrics of the gateway, in their own registry (so tests can build many apps), exported together with
vLLM's own engine metrics (queue depth, KV cache usage, ...), which vLLM keeps in prometheus_client's default
registry."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric

from server.state_metrics import ScrapeSource, StateCollector

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# Time per output token: 50-160 ms per step on a CPU (docs/bench_profile.md's ms/step); the low buckets for GPUs.
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2.5)
OWN_PREFIX = "flywheel"  # every family of the gateway's registry (and its recording rules) is named flywheel...


class Forwarded:
    """Another registry's families, collected with the gateway's at scrape time.

    vLLM's stat logger (`PrometheusStatLogger`, vllm/v1/metrics/loggers.py) registers `vllm:*` metrics in
    prometheus_client's default registry, beside the process and Python collectors. They are read, not copied:
    nothing runs on the chat path. Families named like the gateway's own are left out, so no name is exported
    twice.
    """

    def __init__(self, source: CollectorRegistry):
        self.source = source

    def describe(self) -> list[Metric]:
        return []  # vLLM registers its metrics when the engine starts, after the gateway's registry is built

    def collect(self) -> Iterator[Metric]:
        return (family for family in self.source.collect() if not family.name.startswith(OWN_PREFIX))


class Metrics:
    """Every metric the gateway exports on /metrics; labelled by adapter and version where it matters."""

    def __init__(self, engine_registry: CollectorRegistry | None = REGISTRY) -> None:
        self.registry = CollectorRegistry()
        if engine_registry is not None:
            self.registry.register(Forwarded(engine_registry))
        labels = ("adapter", "version")
        self.requests = Counter(
            "flywheel_requests", "Chat completions answered, by outcome.", (*labels, "status"), registry=self.registry
        )
        self.errors = Counter(
            "flywheel_errors", "Requests that ended in an error, by HTTP status.", ("route", "status"),
            registry=self.registry,
        )
        self.ttft = Histogram(
            "flywheel_time_to_first_token_seconds",
            "Time from request to its first generated token (streamed or not; the token's time is vLLM's).", labels,
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.time_per_output_token = Histogram(
            "flywheel_time_per_output_token_seconds",
            "Inter-token latency: each finished request's mean time between its output tokens (from vLLM's"
            " timing of the request: decode time over the generated tokens after the first).", labels,
            buckets=TOKEN_BUCKETS, registry=self.registry,
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
