"""The soak's traffic: chat streams over the base model and adapters, a promote or rollback on a timer, and
samples of the gateway's memory, fds and WAL files, all on one event loop; paced feedback in a process of its own.

Every loop is bounded twice: by the soak's deadline and by a count, so a broken gateway that answers
errors in a millisecond cannot make a stream spin; in-flight requests end by their own timeout.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import httpx

from bench.feedback_load import submit_feedback
from bench.load import LoadSpec, request_body, stream_one
from bench.soak_report import ChatRecord, FeedbackWindow, Sample, SwapEvent
from bench.soak_sampler import GatewayGone, Sampler

if TYPE_CHECKING:
    from bench.soak import SoakConfig

ERROR_PAUSE_S = 1.0  # a stream waits this long after a failed request before its next one
MAX_REQUESTS_PER_STREAM_S = 2.0  # the count bound: no healthy stream on these sizes comes near it


@dataclass
class Traffic:
    """What the traffic recorded, times in seconds since it started."""

    records: list[ChatRecord] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    swaps: list[SwapEvent] = field(default_factory=list)
    feedback: list[FeedbackWindow] = field(default_factory=list)
    other_errors: list[str] = field(default_factory=list)


def sample_times(duration_s: float, every_s: float) -> list[float]:
    """0, every, 2 * every, ... and the end of the run."""
    times = [k * every_s for k in range(int(duration_s // every_s) + 1)]
    return times if times[-1] >= duration_s else [*times, duration_s]


def swap_plan(duration_s: float, every_s: float) -> list[tuple[float, str, int]]:
    """(when, action, version production moves to): promote to v2 and roll back to v1 in turn, before the end."""
    plan = []
    for k in itertools.count(1):
        if k * every_s >= duration_s:
            return plan
        plan.append((k * every_s, *(("promote", 2) if k % 2 else ("rollback", 1))))


class SoakTraffic:
    """One run of `config`'s traffic against the gateway at `url`, sampled through `sampler`."""

    def __init__(self, url: str, config: SoakConfig, sampler: Sampler,
                 on_window: Callable[[float, Traffic], None] | None = None):
        self.url, self.config, self.sampler, self.on_window = url, config, sampler, on_window
        self.out = Traffic()
        self.t0 = self.deadline = 0.0
        self.targets: list[str | None] = [None, *config.adapter_names()]
        self.next_request = itertools.count()

    async def run(self) -> Traffic:
        """Streams, swaps, samples and progress until the deadline; returns once in-flight requests ended."""
        c = self.config
        self.t0 = time.monotonic()
        self.deadline = self.t0 + c.duration_s
        limits = httpx.Limits(max_connections=c.concurrency + 4, max_keepalive_connections=c.concurrency + 4)
        async with httpx.AsyncClient(base_url=self.url, timeout=c.request_timeout_s, limits=limits) as client:
            await asyncio.gather(*(self._stream(client) for _ in range(c.concurrency)), self._swaps(client),
                                 self._samples(), self._windows())
        return self.out

    async def _sleep_until(self, t_s: float) -> None:
        await asyncio.sleep(max(0.0, self.t0 + t_s - time.monotonic()))

    async def _stream(self, client: httpx.AsyncClient) -> None:
        c = self.config
        spec = LoadSpec(max_tokens=c.max_tokens, model=c.flags.served_model_name)
        for _ in range(int(c.duration_s * MAX_REQUESTS_PER_STREAM_S) + 1):
            if time.monotonic() >= self.deadline:
                return
            n = next(self.next_request)
            target = self.targets[n % len(self.targets)]
            start = time.monotonic()
            result = await stream_one(client, request_body(replace(spec, adapter=target), n))
            self.out.records.append(ChatRecord(
                start_s=round(start - self.t0, 3), latency_ms=round(result.total_s * 1000, 1),
                ttft_ms=round(result.ttft_s * 1000, 1), target=target or "base", served_by=result.served_by,
                error=result.error))
            if result.error is not None:
                await asyncio.sleep(ERROR_PAUSE_S)

    async def _swaps(self, client: httpx.AsyncClient) -> None:
        name = self.config.swap_adapter
        for at, action, version in swap_plan(self.config.duration_s, self.config.swap_every_s):
            await self._sleep_until(at)
            body = {"version": version} if action == "promote" else {"to": version}
            sent, error = time.monotonic(), None
            try:
                response = await client.post(f"/admin/adapters/{name}/{action}", json=body)
                if response.status_code != 200:
                    error = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as e:
                error = f"{type(e).__name__}: {e}"[:200]
            self.out.swaps.append(SwapEvent(round(sent - self.t0, 3), action, version,
                                            round((time.monotonic() - sent) * 1000, 1), error))

    async def _samples(self) -> None:
        for at in sample_times(self.config.duration_s, self.config.sample_every_s):
            await self._sleep_until(at)
            try:
                self.out.samples.append(self.sampler.sample(time.monotonic() - self.t0))
            except GatewayGone as e:
                self.out.other_errors.append(f"GatewayGone: {e}")
                return

    async def _windows(self) -> None:
        """Progress: `on_window` once at the end of every window."""
        w = self.config.window_s
        for k in range(1, int(self.config.duration_s // w) + 1):
            await self._sleep_until(k * w)
            if self.on_window:
                self.on_window(k * w, self.out)


def _feedback_child(url: str, ids: list[str], rate: float, inflight: int, window_s: float, windows: int,
                    stop: object, out: object) -> None:
    for _ in range(windows):
        if stop.is_set():
            break
        started = time.monotonic()  # system-wide on Linux: the parent subtracts its own start
        result = asyncio.run(submit_feedback(url, ids, max(1, round(rate * window_s)), inflight, rate=rate))
        out.put({"started": started, **result.as_dict()})
    out.put(None)


class FeedbackWindows:
    """`submit_feedback` at `rate`, one window's worth at a time, in a spawned process (its own event loop, so
    neither side delays the other's timestamps); it inherits this process's nice value and CPU mask."""

    def __init__(self, url: str, ids: list[str], rate: float, inflight: int, window_s: float, windows: int):
        ctx = multiprocessing.get_context("spawn")
        self._stop, self._out = ctx.Event(), ctx.Queue()
        self._proc = ctx.Process(target=_feedback_child, daemon=True,
                                 args=(url, ids, rate, inflight, window_s, windows, self._stop, self._out))

    def start(self) -> FeedbackWindows:
        self._proc.start()
        return self

    def finish(self, t0: float, timeout_s: float) -> tuple[list[FeedbackWindow], str | None]:
        """Stop after the window in progress; its windows stamped relative to `t0`, and an error if it failed."""
        self._stop.set()
        windows, deadline = [], time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                try:
                    item = self._out.get(timeout=1.0)
                except queue.Empty:
                    if not self._proc.is_alive():
                        return windows, f"FeedbackDied: exit code {self._proc.exitcode}"
                    continue
                if item is None:
                    return windows, None
                started = item.pop("started")
                fields = {k: item[k] for k in ("submitted", "errors", "per_s", "p50_ms", "p99_ms", "first_error")}
                windows.append(FeedbackWindow(t_s=round(started - t0, 3), **fields))
            return windows, f"FeedbackTimeout: no end in {timeout_s:.0f} s"
        finally:
            self._proc.join(timeout=10)
            if self._proc.is_alive():
                self._proc.kill()
