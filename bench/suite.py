"""Issue 5's performance suite: gateway vs vLLM's server, many adapters, naive PEFT, hot-swap under load.

Order of work (2 cores: a server under test never shares them with another one doing work):
vLLM's server and the gateway start side by side and take turns (A, B, A, B) on the same base load,
so drift on a shared machine hits both; an idle server costs little (its CPU is recorded). Then
vLLM stops and the gateway runs mixed loads over 0, 1, 4 and 16 adapters and the hot-swap cycles;
a second gateway with more LoRA slots repeats the mixed loads; last, the naive PEFT server and its
batched variant (bench/peft_server.py).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from adapters.names import Alias
from bench.cpu import cpu_use
from bench.hardware import detect
from bench.load import LoadSpec, LoadSummary, RequestResult, percentile, request_body, stream_one, summarize
from bench.lora import build_loras
from bench.peft_server import peft_server
from bench.progress import Steps
from bench.servers import REPO, EngineFlags, RunningServer, gateway_server, vllm_server
from bench.suite_report import HotSwapResult, MixedResult, SuiteReport, write_suite
from bench.swap import upload_version

SWAP_ADAPTER = "swapbench"


@dataclass
class SuiteConfig:
    """Sizes of one suite run; the defaults finish in under 20 minutes on 2 idle CPU cores."""

    flags: EngineFlags
    concurrency: int = 16
    max_tokens: int = 64
    compare_requests: int = 48  # per turn of the gateway-vs-vLLM comparison
    compare_rounds: int = 2  # A,B turns per server; the median ratio is reported
    mixed_requests: int = 32  # per mixed-adapter load
    adapter_counts: tuple[int, ...] = (1, 4, 16)
    lora_rank: int = 8
    alt_max_loras: int = 16  # a second gateway with this many LoRA slots repeats the mixed loads; 0 skips
    swap_cycles: int = 20
    swap_max_tokens: int = 16  # short streams during hot-swap, so new requests start often
    peft_seconds: float = 180.0  # the naive server is serial: its throughput is measured over this window
    peft_dtype: str = "float32"
    out_dir: Path = REPO / "docs"
    work_dir: Path | None = None


async def _mixed_load(url: str, spec: LoadSpec, adapters: list[str | None], on_done: Callable[[], None] | None = None,
                      deadline_s: float | None = None) -> LoadSummary:
    """Like `run_load`, but request i goes to adapters[i % n]; an optional deadline ends the run early.

    With a deadline the wall time ends at the last completion, which is exact for a serial server
    (the naive PEFT one): all work done by then is in the completed requests.
    """
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(spec.requests):
        queue.put_nowait(i)
    results: list[RequestResult] = []
    last_done = start = time.perf_counter()
    limits = httpx.Limits(max_connections=spec.concurrency, max_keepalive_connections=spec.concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal last_done
        while not queue.empty():
            i = queue.get_nowait()
            result = await stream_one(client, request_body(replace(spec, adapter=adapters[i % len(adapters)]), i))
            results.append(result)
            last_done = time.perf_counter()
            if on_done:
                on_done()

    async with httpx.AsyncClient(base_url=url, timeout=spec.timeout_s, limits=limits) as client:
        tasks = [asyncio.create_task(worker(client)) for _ in range(spec.concurrency)]
        done, pending = await asyncio.wait(tasks, timeout=deadline_s)
        for task in pending:  # cut off at the deadline: unfinished requests are neither counted nor errors
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return summarize(results, (last_done if pending else time.perf_counter()) - start)


def _run_mixed(server: RunningServer, config: SuiteConfig, steps: Steps, names: list[str | None], label: str,
               requests: int, deadline_s: float | None = None) -> LoadSummary:
    spec = LoadSpec(concurrency=config.concurrency, requests=requests, max_tokens=config.max_tokens,
                    model=config.flags.served_model_name, timeout_s=1800)
    warm = replace(spec, concurrency=min(4, len(names) * 2), requests=min(4, len(names) * 2), max_tokens=4)
    asyncio.run(_mixed_load(server.url, warm, names))  # first use of each adapter loads it; not measured
    with steps.bar(f"{server.name}: {label}, {requests} requests, {spec.concurrency} at once", requests) as tick:
        summary = asyncio.run(_mixed_load(server.url, spec, names, tick, deadline_s))
    steps.note(f"{server.name} {label}: {summary.output_tokens_per_s:.1f} tokens/s, TTFT p50 "
               f"{summary.ttft_p50_ms:.0f} ms, ITL p50 {summary.itl_p50_ms:.0f} ms, errors {summary.errors}")
    return summary


def _register(server: RunningServer, folders: list[Path]) -> list[str]:
    """Register each folder as adapter `loraNN` (production) on the gateway; returns the names."""
    with httpx.Client(base_url=server.url, timeout=300) as client:
        for folder in folders:
            upload_version(client, folder.name, folder, alias=Alias.PRODUCTION)
    return [f.name for f in folders]


def _mixed_series(server: RunningServer, config: SuiteConfig, steps: Steps, names: list[str], counts: tuple[int, ...],
                  max_loras: int, report: SuiteReport) -> None:
    for n in (0, *counts):
        targets: list[str | None] = [None] if n == 0 else list(names[:n])
        label = "base model" if n == 0 else f"{n} adapter{'s' if n > 1 else ''} (max_loras {max_loras})"
        report.mixed.append(MixedResult("gateway", n, max_loras,
                                        _run_mixed(server, config, steps, targets, label, config.mixed_requests)))


def run_suite(config: SuiteConfig, steps: Steps) -> SuiteReport:
    """Run every part, write `bench_suite.json`, `bench_suite.md` and the plot under `config.out_dir`."""
    report = SuiteReport(detect(), config)
    report.load_average.append(("start", os.getloadavg()))
    flags = replace(config.flags, max_cpu_loras=max(config.flags.max_cpu_loras, max(config.adapter_counts) + 4),
                    max_lora_rank=max(config.flags.max_lora_rank, config.lora_rank))
    with tempfile.TemporaryDirectory(prefix="flywheel-suite-") as tmp:
        work = config.work_dir or Path(tmp)
        count = max(config.adapter_counts)
        with steps.phase(f"building {count} rank-{config.lora_rank} PEFT LoRAs (q/k/v/o)"):
            folders = build_loras(flags.model_dir, [work / "adapters" / f"lora{i:02d}" for i in range(count)],
                                  rank=config.lora_rank)
        with ExitStack() as stack:
            with steps.phase("starting vLLM's own OpenAI server"):
                vllm = stack.enter_context(vllm_server(flags, work / "vllm.log"))
            with steps.phase(f"starting the Flywheel gateway (max_loras {flags.max_loras})"):
                gateway = stack.enter_context(gateway_server(flags, work / "gw1", work / "gateway1.log"))
            _compare(vllm, gateway, config, steps, report)
            stack.pop_all().close()  # stops both; the gateway comes back below without a rival process
        report.load_average.append(("after gateway vs vLLM", os.getloadavg()))
        with ExitStack() as stack:
            with steps.phase(f"restarting the gateway alone (max_loras {flags.max_loras})"):
                gateway = stack.enter_context(gateway_server(flags, work / "gw2", work / "gateway2.log"))
            names = _register(gateway, folders)
            _mixed_series(gateway, config, steps, names, config.adapter_counts, flags.max_loras, report)
            if config.swap_cycles:
                report.hotswap = _hotswap(gateway, folders[0], folders[1], config, steps)
        report.load_average.append(("after mixed loads", os.getloadavg()))
        if config.alt_max_loras and config.alt_max_loras != flags.max_loras:
            alt = replace(flags, max_loras=config.alt_max_loras,
                          max_cpu_loras=max(flags.max_cpu_loras, config.alt_max_loras))
            with ExitStack() as stack:
                with steps.phase(f"starting a gateway with max_loras {alt.max_loras}"):
                    server = stack.enter_context(gateway_server(alt, work / "gw3", work / "gateway3.log"))
                names = _register(server, folders)
                counts = tuple(n for n in config.adapter_counts if n > flags.max_loras)
                _mixed_series(server, config, steps, names, counts, alt.max_loras, report)
        _peft(config, steps, work / "adapters", folders, report)
    report.load_average.append(("end", os.getloadavg()))
    report.files = write_suite(report)
    return report


def _compare(vllm: RunningServer, gateway: RunningServer, config: SuiteConfig, steps: Steps,
             report: SuiteReport) -> None:
    """Turns A (vLLM), B (gateway), A, B on the same base load; records the idle server's CPU meanwhile."""
    for server in (vllm, gateway):  # warm both before any turn
        _run_mixed(server, config, steps, [None], "warm-up", 4)
    for turn in range(config.compare_rounds):
        for server, idle in ((vllm, gateway), (gateway, vllm)):
            before = cpu_use(idle.pid)
            label = f"base model, turn {turn + 1}"
            summary = _run_mixed(server, config, steps, [None], label, config.compare_requests)
            used = cpu_use(idle.pid) - before
            report.compare.setdefault(server.name, []).append(summary)
            report.idle_cpu_s.append(round(used.api_s + used.engine_s, 2))


def _peft(config: SuiteConfig, steps: Steps, adapters_dir: Path, folders: list[Path], report: SuiteReport) -> None:
    """The naive PEFT server, then its mixed-adapter batching variant, at the largest mixed-adapter load, each
    over a fixed time window."""
    n = max(config.adapter_counts)
    for batched in (False, True):
        name = "peft-batched" if batched else "peft"
        try:
            with ExitStack() as stack:
                with steps.phase(f"starting the {'batched' if batched else 'naive'} transformers + PEFT server"):
                    server = stack.enter_context(peft_server(config.flags.model_dir, adapters_dir,
                                                             adapters_dir.parent / f"{name}.log", config.peft_dtype,
                                                             batched=batched))
                summary = _run_mixed(server, config, steps, [f.name for f in folders[:n]], f"{n} adapters",
                                     config.concurrency, deadline_s=config.peft_seconds)
                report.mixed.append(MixedResult(name, n, None, summary))
        except Exception as e:  # the suite's other results still get written
            report.errors.append(f"{name} server: {type(e).__name__}: {e}"[-1500:])


def _hotswap(server: RunningServer, v1: Path, v2: Path, config: SuiteConfig, steps: Steps) -> HotSwapResult:
    """Promote v2 / roll back to v1, `swap_cycles` times, while `concurrency` streams use the adapter."""
    with httpx.Client(base_url=server.url, timeout=300) as client:
        upload_version(client, SWAP_ADAPTER, v1, alias=Alias.PRODUCTION)
        upload_version(client, SWAP_ADAPTER, v2)
    with steps.bar(f"hot-swap: {config.swap_cycles} promote/rollback cycles under {config.concurrency} streams",
                   2 * config.swap_cycles) as tick:
        result = asyncio.run(_hotswap_async(server.url, config, tick))
    steps.note(f"hot-swap: first token on the new version p50 {percentile(result.first_token_ms, 50):.0f} ms, "
               f"p99 {percentile(result.first_token_ms, 99):.0f} ms; failed requests {result.failed}")
    return result


async def _hotswap_async(url: str, config: SuiteConfig, tick: Callable[[], None]) -> HotSwapResult:
    spec = LoadSpec(max_tokens=config.swap_max_tokens, model=config.flags.served_model_name, adapter=SWAP_ADAPTER)
    records: list[tuple[float, RequestResult]] = []  # (start, result) of every request of the phase
    swaps: list[tuple[float, float, str]] = []  # (admin call sent, admin call answered, version label)
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=config.concurrency + 2)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:

        async def stream(i: int) -> None:
            while not stop.is_set():
                start = time.perf_counter()
                records.append((start, await stream_one(client, request_body(spec, i))))

        async def served_since(t0: float, label: str) -> None:
            while not any(s >= t0 and r.served_by == label for s, r in records):
                await asyncio.sleep(0.02)

        streams = [asyncio.create_task(stream(i)) for i in range(config.concurrency)]
        await asyncio.sleep(2.0)  # let the streams fill the batch before the first swap
        try:
            for _ in range(config.swap_cycles):
                for path, body, label in (("promote", {"version": 2}, f"{SWAP_ADAPTER}@2"),
                                          ("rollback", {"to": 1}, f"{SWAP_ADAPTER}@1")):
                    t0 = time.perf_counter()
                    (await client.post(f"/admin/adapters/{SWAP_ADAPTER}/{path}", json=body)).raise_for_status()
                    swaps.append((t0, time.perf_counter(), label))
                    await asyncio.wait_for(served_since(t0, label), timeout=120)
                    tick()
        finally:
            stop.set()
            await asyncio.gather(*streams, return_exceptions=True)
    return _swap_result(config, records, swaps)


SEND_SLACK_S = 0.25  # time between stamping a request's start and the client actually sending it, at most


def _swap_result(config: SuiteConfig, records: list[tuple[float, RequestResult]],
                 swaps: list[tuple[float, float, str]]) -> HotSwapResult:
    """Per swap: the first token of the earliest-answering request started after the call, on the new version."""
    result = HotSwapResult(cycles=config.swap_cycles, streams=config.concurrency, requests=len(records))
    result.failed = sum(not r.ok for _, r in records)
    result.first_error = next((r.error for _, r in records if not r.ok), None)
    ends = [t0 for t0, _, _ in swaps[1:]] + [float("inf")]
    for (t0, acked, label), end in zip(swaps, ends, strict=True):
        result.admin_ms.append(round((acked - t0) * 1000, 1))
        firsts = [s + r.ttft_s for s, r in records if t0 <= s < end and r.ok and r.served_by == label]
        result.first_token_ms.append(round((min(firsts) - t0) * 1000, 1))
        # A request stamped just before the next admin call can still reach the server after it: one client
        # event loop sends both, and the call goes first (seen: 4-70 ms). Those are not stale.
        result.stale_after_ack += sum(1 for s, r in records
                                      if acked <= s < end - SEND_SLACK_S and r.ok and r.served_by != label)
    return result
