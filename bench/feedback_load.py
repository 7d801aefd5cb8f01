"""The feedback submitter: many concurrent `POST /v1/feedback` calls, run in a process of its own.

Its own process so that its event loop does not delay the chat load generator's timestamps (and
the other way round).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import multiprocessing
import queue
import time
import uuid
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from bench.load import percentile


@dataclass
class FeedbackLoadResult:
    """One feedback run as the clients saw it; latencies in milliseconds."""

    submitted: int
    errors: int
    wall_s: float
    per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    first_error: str | None = None

    def as_dict(self) -> dict:
        """Plain JSON-ready dict."""
        return asdict(self)


class _Connection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads the status and body.

    A load generator's own CPU per request decides how much load it can offer on 2 shared cores, and here it
    shares them with the gateway it measures: aiohttp spent ~140 µs of CPU per request, this ~65 µs (like `wrk`, it
    parses only what a benchmark needs: the status line and Content-Length)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: dict) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        payload = json.dumps(body).encode()
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def submit_feedback(
    url: str, completion_ids: list[str], count: int, inflight: int, keep_going: object | None = None,
    rate: float | None = None,
) -> FeedbackLoadResult:
    """Submit at least `count` ratings, `inflight` at a time; go on while `keep_going.is_set()` (an Event).

    Without `rate`, as fast as the server answers (closed loop: the capacity). With `rate`, submission k is
    due at start + k / rate (open loop) and its latency counts from when it was due, so a server that falls
    behind shows it in the percentiles instead of quietly receiving fewer requests.

    A warm-up of `2 * inflight` submissions opens every connection first and is not measured: the burst of
    connection set-ups would otherwise land in the p99 of a steady-state ingestion rate.
    """
    parsed = urlsplit(url)
    run = uuid.uuid4().hex[:8]  # distinct feedback_ids per run: a repeat would hit the idempotent shortcut
    ids = itertools.count()
    latencies: list[float] = []
    errors: list[str] = []

    async def worker(conn: _Connection, tickets: itertools.count, total: int, paced_from: float | None) -> None:
        go_on = paced_from is not None and keep_going is not None
        while (ticket := next(tickets)) < total or (go_on and keep_going.is_set()):
            i = next(ids)
            body = {"completion_id": completion_ids[i % len(completion_ids)], "rating": "up" if i % 3 else "down",
                    "user": f"bench-{run}-{i}", "feedback_id": f"bench-{run}-{i}"}
            start = time.perf_counter()
            if rate and paced_from is not None:
                start = paced_from + ticket / rate  # when this submission is due
                if start > time.perf_counter():
                    await asyncio.sleep(start - time.perf_counter())
            try:
                status, text = await conn.post("/v1/feedback", body)
            except (OSError, asyncio.IncompleteReadError, ValueError) as e:
                errors.append(f"{type(e).__name__}: {e}"[:200])
                conn.close()  # reconnect on the next request
                continue
            if status != 201:
                errors.append(f"HTTP {status}: {text[:200].decode(errors='replace')}")
                continue
            latencies.append((time.perf_counter() - start) * 1000)

    conns = [_Connection(parsed.hostname or "127.0.0.1", parsed.port or 80) for _ in range(inflight)]
    try:
        warmup = itertools.count()
        await asyncio.gather(*(worker(c, warmup, 2 * inflight, None) for c in conns))
        latencies.clear()
        measured = itertools.count()
        start = time.perf_counter()
        await asyncio.gather(*(worker(c, measured, count, start) for c in conns))
        wall = time.perf_counter() - start
    finally:
        for c in conns:
            c.close()
    return FeedbackLoadResult(
        submitted=len(latencies), errors=len(errors), wall_s=round(wall, 3),
        per_s=round(len(latencies) / wall, 1) if wall else 0.0,
        p50_ms=round(percentile(latencies, 50), 2), p99_ms=round(percentile(latencies, 99), 2),
        max_ms=round(max(latencies, default=0.0), 2), first_error=errors[0] if errors else None,
    )


def _child(url: str, ids: list[str], count: int, inflight: int, rate: float | None, keep_going: object,
           started: object, out: object) -> None:
    started.set()
    out.put(asyncio.run(submit_feedback(url, ids, count, inflight, keep_going, rate)).as_dict())


class FeedbackProcess:
    """`submit_feedback` in a spawned process: start it, do other work, then `finish()` for its result."""

    def __init__(self, url: str, completion_ids: list[str], count: int, inflight: int, rate: float | None = None):
        ctx = multiprocessing.get_context("spawn")
        self.keep_going = ctx.Event()
        self.keep_going.set()  # until the caller's own work is done
        self._started = ctx.Event()
        self._out = ctx.Queue()
        self._proc = ctx.Process(target=_child, args=(url, completion_ids, count, inflight, rate, self.keep_going,
                                                      self._started, self._out), daemon=True)

    def start(self) -> FeedbackProcess:
        """Start submitting; returns once the child runs (spawning takes a second or two of imports)."""
        self._proc.start()
        self._started.wait(timeout=60)
        return self

    def finish(self, timeout_s: float = 600) -> FeedbackLoadResult:
        """Let it stop once it has sent its count; wait for and return its result."""
        self.keep_going.clear()
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    return FeedbackLoadResult(**self._out.get(timeout=1.0))
                except queue.Empty:
                    if not self._proc.is_alive():
                        raise RuntimeError(f"the feedback submitter died (exit code {self._proc.exitcode})") from None
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the feedback submitter gave no result in {timeout_s:.0f} s") from None
        finally:
            self._proc.join(timeout=10)
            if self._proc.is_alive():
                self._proc.kill()
