"""Time to first token and time per output token from vLLM's own timing of a request, and vLLM's engine metrics
exported beside the gateway's. The stats are made by vLLM's own code (`IterationStats`), as its output
processor makes them, step by step; the route tests use the fake engine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from vllm.outputs import CompletionOutput, RequestOutput
from vllm.v1.engine import EngineCoreOutput
from vllm.v1.metrics.stats import IterationStats, LoRARequestStates, RequestStateStats

from server.engine import EngineCall, counted, parse_request
from server.metrics import Metrics
from tests.gateway.test_alert_metrics import scrape, value
from tests.gateway.test_chat_routes import HI


def engine_steps(stats: RequestStateStats, ages: list[float]) -> None:
    """One generated token per step, made `ages` seconds ago (oldest first), recorded by vLLM's own stats code."""
    now = time.monotonic()
    for age in ages:
        prefill = stats.num_generation_tokens == 0  # the step that makes the first token
        IterationStats().update_from_output(EngineCoreOutput("r", [7]), now - age, prefill, stats,
                                            LoRARequestStates(log_stats=True), None)


def output(tokens: int, finished: bool, stats: RequestStateStats | None) -> RequestOutput:
    completion = CompletionOutput(0, "x" * tokens, [7] * tokens, None, None, "stop" if finished else None)
    return RequestOutput("r", None, [1, 2, 3], None, [completion], finished, metrics=stats)


def call() -> EngineCall:
    return EngineCall("chat", parse_request("chat", {"messages": HI}), None, "base")


def ttft_error(c: EngineCall, stats: RequestStateStats) -> float:
    """How far the call's first-token time is from the engine's (both read as an age, back to back)."""
    return abs((time.perf_counter() - c.first_token_at) - (time.monotonic() - stats.first_token_ts))


async def drain(c: EngineCall, outputs: list[RequestOutput]) -> list[float]:
    """Run `outputs` through `counted`; returns when each one arrived (time.perf_counter)."""
    arrived = []

    async def arriving() -> AsyncIterator[RequestOutput]:
        for out in outputs:
            await asyncio.sleep(0.01)
            arrived.append(time.perf_counter())
            yield out

    async for _ in counted(c, arriving()):
        pass
    return arrived


def test_a_non_streamed_request_gets_the_engine_time_of_its_first_token():
    stats = RequestStateStats(arrival_time=time.time() - 1)
    engine_steps(stats, [0.9, 0.8, 0.7, 0.6, 0.5])
    c = call()
    arrived = asyncio.run(drain(c, [output(5, True, stats)]))  # FINAL_ONLY: the one output comes at the end
    assert ttft_error(c, stats) < 0.01
    assert arrived[0] - c.first_token_at > 0.85  # not when the output arrived
    assert c.time_per_output_token == pytest.approx((stats.last_token_ts - stats.first_token_ts) / 4)
    assert c.time_per_output_token == pytest.approx(0.1, abs=0.01)  # the steps were made 0.1 s apart
    assert (c.prompt_tokens, c.completion_tokens) == (3, 5)


def test_a_streamed_request_is_timed_at_its_first_token_and_counted_once_it_ends():
    stats = RequestStateStats(arrival_time=time.time())
    c = call()

    async def stream() -> None:
        outputs = counted(c, streamed(stats))
        await anext(outputs)
        assert ttft_error(c, stats) < 0.01
        assert c.time_per_output_token is None  # not finished yet
        async for _ in outputs:
            pass

    asyncio.run(stream())
    assert c.completion_tokens == 3
    assert c.time_per_output_token == pytest.approx((stats.last_token_ts - stats.first_token_ts) / 2)
    assert c.time_per_output_token > 0


async def streamed(stats: RequestStateStats) -> AsyncIterator[RequestOutput]:
    """Three tokens, one output each (DELTA), each made by an engine step just before it is sent."""
    for last in (False, False, True):
        engine_steps(stats, [0.0])
        yield output(1, last, stats)
        await asyncio.sleep(0.01)


def test_one_token_has_no_time_per_output_token():
    stats = RequestStateStats(arrival_time=time.time())
    engine_steps(stats, [0.2])
    c = call()
    asyncio.run(drain(c, [output(1, True, stats)]))
    assert c.time_per_output_token is None
    assert ttft_error(c, stats) < 0.01


def test_without_vllm_stats_the_first_output_is_the_first_token():
    c = call()
    arrived = asyncio.run(drain(c, [output(2, False, None), output(2, True, None)]))
    assert arrived[0] <= c.first_token_at < arrived[1]
    assert c.time_per_output_token is None


def test_time_per_output_token_is_exported_per_adapter_and_version(client: TestClient):
    for stream in (False, True):
        r = client.post("/v1/chat/completions", json={"messages": HI, "stream": stream})
        assert r.status_code == 200, r.text
    samples = scrape(client)
    assert value(samples, "flywheel_time_per_output_token_seconds_count", adapter="", version="") == 2
    assert value(samples, "flywheel_time_to_first_token_seconds_count", adapter="", version="") == 2


def test_the_engine_registry_is_exported_without_a_second_copy_of_a_name():
    engine = CollectorRegistry()
    Gauge("vllm:num_requests_waiting", "Requests waiting.", ["engine"], registry=engine).labels("0").set(3)
    Gauge("flywheel_inflight_requests", "A clash with the gateway's own.", registry=engine).set(9)
    metrics = Metrics(engine_registry=engine)
    metrics.inflight.inc()
    families = [f.name for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())]
    assert len(families) == len(set(families))
    samples = {(s.name, tuple(s.labels.values())): s.value
               for f in text_string_to_metric_families(generate_latest(metrics.registry).decode()) for s in f.samples}
    assert samples[("vllm:num_requests_waiting", ("0",))] == 3
    assert samples[("flywheel_inflight_requests", ())] == 1  # the gateway's, not the engine registry's


def test_the_gateway_exports_the_process_registry_once(client: TestClient):
    families = [f.name for f in text_string_to_metric_families(client.get("/metrics").text)]
    assert len(families) == len(set(families))
    assert "process_cpu_seconds" in families or "python_info" in families  # prometheus_client's default collectors
