"""An async, streaming chat load generator for any OpenAI-compatible server (vLLM's own, or the gateway).

C workers share one queue of R requests. Each request streams with `stream_options.include_usage`
so the token count comes from the server's own usage block, and time to first token and the gaps
between content chunks are measured on the client, the way a user would feel them.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import httpx

# Prompts that ask for long answers, so that (at temperature 0) nearly every request runs to
# `max_tokens` on both servers and the two see the same work.
PROMPTS = (
    "Write a detailed essay about the history of the Roman Empire.",
    "Explain step by step how a car engine works, in as much detail as you can.",
    "Describe the water cycle in detail, with examples from different climates.",
    "Tell a long story about a dragon who learns to cook.",
    "List and explain twenty tips for learning a new programming language.",
    "Write a long letter to a friend describing your last holiday by the sea.",
    "Explain in detail how computers store and process information.",
    "Describe the life of a honey bee from egg to adult, in detail.",
)


@dataclass(frozen=True)
class LoadSpec:
    """What one load run sends: how many, how many at once, and the request body's fixed part."""

    concurrency: int = 16
    requests: int = 64
    max_tokens: int = 64
    model: str = "base"
    adapter: str | None = None  # the gateway's extra `adapter` field; vLLM's server names adapters in `model`
    timeout_s: float = 600.0


@dataclass
class RequestResult:
    """One request as the client saw it."""

    ok: bool
    ttft_s: float = 0.0
    total_s: float = 0.0
    tokens_out: int = 0
    itl_s: list[float] = field(default_factory=list)
    served_by: str | None = None  # the gateway's `adapter` field ("name@version"), when present
    error: str | None = None


@dataclass
class LoadSummary:
    """Aggregates of one load run; times in milliseconds, rates per second of wall time."""

    requests: int
    errors: int
    wall_s: float
    tokens_out: int
    output_tokens_per_s: float
    requests_per_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    itl_p50_ms: float
    itl_p99_ms: float
    latency_p50_ms: float
    latency_p99_ms: float
    first_error: str | None = None

    def as_dict(self) -> dict:
        """Plain JSON-ready dict."""
        return asdict(self)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation; 0.0 for no values."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[min(max(int(q), 1), 99) - 1]


def request_body(spec: LoadSpec, index: int) -> dict:
    """The JSON body of request number `index` (prompts rotate through a fixed list)."""
    body: dict = {
        "model": spec.model,
        "messages": [{"role": "user", "content": PROMPTS[index % len(PROMPTS)]}],
        "max_tokens": spec.max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if spec.adapter:
        body["adapter"] = spec.adapter
    return body


async def stream_one(client: httpx.AsyncClient, body: dict) -> RequestResult:
    """Send one streaming chat request and time every content chunk."""
    start = time.perf_counter()
    result = RequestResult(ok=False)
    last: float | None = None
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                result.error = f"HTTP {response.status_code}: {response.text[:200]}"
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    result.error = str(chunk["error"])[:200]
                    return result
                result.served_by = chunk.get("adapter", result.served_by)
                if chunk.get("usage"):
                    result.tokens_out = chunk["usage"]["completion_tokens"]
                if any((c.get("delta") or {}).get("content") for c in chunk.get("choices", [])):
                    now = time.perf_counter()
                    if last is None:
                        result.ttft_s = now - start
                    else:
                        result.itl_s.append(now - last)
                    last = now
        result.ok = True
    except (httpx.HTTPError, json.JSONDecodeError, KeyError) as e:
        result.error = f"{type(e).__name__}: {e}"[:200]
    result.total_s = time.perf_counter() - start
    return result


async def run_load(
    base_url: str, spec: LoadSpec, on_done: Callable[[RequestResult], None] | None = None
) -> tuple[list[RequestResult], LoadSummary]:
    """Run `spec.requests` streaming requests, `spec.concurrency` at a time; return each result and a summary."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(spec.requests):
        queue.put_nowait(i)
    results: list[RequestResult] = []
    limits = httpx.Limits(max_connections=spec.concurrency, max_keepalive_connections=spec.concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            result = await stream_one(client, request_body(spec, queue.get_nowait()))
            results.append(result)
            if on_done:
                on_done(result)

    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, timeout=spec.timeout_s, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(spec.concurrency)))
    return results, summarize(results, time.perf_counter() - start)


def summarize(results: list[RequestResult], wall_s: float) -> LoadSummary:
    """Throughput and latency percentiles over the successful requests of one run."""
    ok = [r for r in results if r.ok]
    ttft = [r.ttft_s * 1000 for r in ok if r.ttft_s > 0]
    itl = [gap * 1000 for r in ok for gap in r.itl_s]
    total = [r.total_s * 1000 for r in ok]
    tokens = sum(r.tokens_out for r in ok)
    errors = [r for r in results if not r.ok]
    return LoadSummary(
        requests=len(results),
        errors=len(errors),
        wall_s=round(wall_s, 3),
        tokens_out=tokens,
        output_tokens_per_s=round(tokens / wall_s, 2) if wall_s else 0.0,
        requests_per_s=round(len(ok) / wall_s, 3) if wall_s else 0.0,
        ttft_p50_ms=round(percentile(ttft, 50), 1),
        ttft_p99_ms=round(percentile(ttft, 99), 1),
        itl_p50_ms=round(percentile(itl, 50), 1),
        itl_p99_ms=round(percentile(itl, 99), 1),
        latency_p50_ms=round(percentile(total, 50), 1),
        latency_p99_ms=round(percentile(total, 99), 1),
        first_error=errors[0].error if errors else None,
    )
