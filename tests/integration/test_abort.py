"""A client that goes away aborts its request in the real engine, streamed or not."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import Gateway

pytestmark = pytest.mark.integration
LONG = {"model": "base", "messages": [{"role": "user", "content": "Count from 1 to 500, separated by commas."}],
        "max_tokens": 900, "temperature": 0}  # a minute of decoding here: far longer than the wait below


def sample(gateway: Gateway, name: str, **labels: str) -> float:
    text = httpx.get(f"{gateway.url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def aborted(gateway: Gateway) -> float:
    return sample(gateway, "flywheel_requests_total", adapter="", status="aborted")


def wait_until_aborted(gateway: Gateway, before: float) -> None:
    deadline = time.monotonic() + 30
    while aborted(gateway) <= before or sample(gateway, "flywheel_inflight_requests") > 0:
        assert time.monotonic() < deadline, "the abandoned request was still generating"
        time.sleep(0.2)


def test_a_non_streamed_request_is_aborted_when_its_client_disconnects(gateway: Gateway):
    before = aborted(gateway)
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection
        httpx.post(f"{gateway.url}/v1/chat/completions", json=LONG, timeout=httpx.Timeout(30, read=2))
    wait_until_aborted(gateway, before)


def test_a_streamed_request_is_aborted_when_its_client_disconnects(gateway: Gateway):
    before = aborted(gateway)
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json={**LONG, "stream": True},
                      timeout=60) as r:
        for line in r.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                break  # one token arrived: hang up
    wait_until_aborted(gateway, before)
