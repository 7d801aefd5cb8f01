"""Request timing from the real engine, and vLLM's own metrics on the gateway's /metrics, through the openai client."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.test_dashboard import alert_rules, dashboard, dashboard_exprs, metric_names
from tests.integration.conftest import Gateway

pytestmark = pytest.mark.integration
BASE = {"adapter": "", "version": ""}  # the base model's labels
STORY = [{"role": "user", "content": "Tell me a short story about a robot."}]
TOKENS = 12


def scrape(gateway: Gateway) -> tuple[list[str], dict[tuple[str, frozenset], float]]:
    """The family names of /metrics, and every sample: (name, labels) -> value."""
    families, samples = [], {}
    for family in text_string_to_metric_families(httpx.get(f"{gateway.url}/metrics", timeout=30).text):
        families.append(family.name)
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return families, samples


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, frozenset({**BASE, **labels}.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


def served(gateway: Gateway, stream: bool) -> dict[str, float]:
    """One request on the base model (at least two tokens); what it added to the base model's metrics."""
    _, before = scrape(gateway)
    client = gateway.client()
    args = dict(model="base", messages=STORY, max_tokens=TOKENS, temperature=0, extra_body={"min_tokens": TOKENS})
    if stream:
        assert [chunk for chunk in client.chat.completions.create(**args, stream=True)]
    else:
        assert client.chat.completions.create(**args).usage.completion_tokens == TOKENS
    _, after = scrape(gateway)
    names = {"ttft": "flywheel_time_to_first_token_seconds", "latency": "flywheel_request_latency_seconds",
             "itl": "flywheel_time_per_output_token_seconds"}
    added = {f"{key}_{part}": delta(before, after, f"{name}_{part}") for key, name in names.items()
             for part in ("sum", "count")}
    added["tokens"] = delta(before, after, "flywheel_completion_tokens_total")
    return added


@pytest.mark.parametrize("stream", [False, True], ids=["non-streamed", "streamed"])
def test_first_token_and_time_per_output_token_come_from_the_engine(gateway: Gateway, stream: bool):
    added = served(gateway, stream)
    assert added["ttft_count"] == added["latency_count"] == added["itl_count"] == 1
    assert added["tokens"] == TOKENS
    itl = added["itl_sum"]
    assert itl > 0
    # The first token came before the end by at least the decode time (the tokens after the first): a
    # non-streamed request's TTFT is no longer its latency.
    assert added["ttft_sum"] + itl * (TOKENS - 1) <= added["latency_sum"] + 1e-3


def test_vllm_engine_metrics_are_exported_beside_the_gateways(gateway: Gateway):
    families, samples = scrape(gateway)
    assert len(families) == len(set(families))  # no name exported twice
    exported = {name for name, _ in samples}
    for name in ("vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc"):
        assert name in exported
    # everything the dashboard and the alert rules read from vLLM is there under that name
    used = {n for e in dashboard_exprs(dashboard()) + [r["expr"] for r in alert_rules()] for n in metric_names(e)}
    assert {n for n in used if n.startswith("vllm:")} - exported == set()
