"""Issue 2's benchmark: the gateway against vLLM's own OpenAI server, same model, flags and load.

The servers run one after the other, never at once (2 cores), each warmed before it is measured:
vLLM's server (base model, then an adapter passed with --lora-modules), then the gateway (base
model, the same adapter registered in its registry, then hot-swap latency).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from adapters.names import Alias
from bench.cpu import cpu_use
from bench.hardware import Hardware, detect
from bench.load import LoadSpec, LoadSummary, run_load
from bench.lora import build_lora
from bench.progress import Steps
from bench.report import ratio, write
from bench.serve_report import markdown
from bench.servers import REPO, EngineFlags, RunningServer, ServerFailed, gateway_server, vllm_server
from bench.swap import SwapResult, measure_swaps, upload_version

ADAPTER = "benchlora"


@dataclass
class ServeConfig:
    """Sizes and flags of one run; the defaults finish in under 10 minutes on 2 CPU cores."""

    flags: EngineFlags
    concurrency: int = 16
    requests: int = 64
    adapter_requests: int = 32
    max_tokens: int = 64
    warmup_requests: int = 4
    swaps: int = 10
    with_adapter: bool = True
    poll_seconds: float = 0.5
    lora_rank: int = 16
    out_dir: Path = REPO / "docs"
    work_dir: Path | None = None  # server logs and the built adapter; a temporary folder when None


@dataclass
class SideResult:
    """One server's numbers."""

    server: str
    startup_s: float = 0.0
    base: LoadSummary | None = None
    adapter: LoadSummary | None = None
    cpu_s: dict[str, dict[str, float]] = field(default_factory=dict)  # load -> CPU seconds of API and engine
    error: str | None = None


@dataclass
class ServeReport:
    """Everything one run measured, and where it was written."""

    hardware: Hardware
    config: ServeConfig
    vllm: SideResult
    gateway: SideResult
    swap: SwapResult | None = None
    load_average_at_end: tuple[float, float, float] = (0.0, 0.0, 0.0)
    files: list[Path] = field(default_factory=list)

    def ratios(self) -> dict[str, float | None]:
        """Gateway / vLLM for throughput and latency, per load."""
        out: dict[str, float | None] = {}
        for load in ("base", "adapter"):
            g, v = getattr(self.gateway, load), getattr(self.vllm, load)
            if g and v:
                out[f"{load}_throughput"] = ratio(g.output_tokens_per_s, v.output_tokens_per_s)
                out[f"{load}_ttft_p50"] = ratio(g.ttft_p50_ms, v.ttft_p50_ms)
                out[f"{load}_itl_p50"] = ratio(g.itl_p50_ms, v.itl_p50_ms)
        return out

    def as_dict(self) -> dict:
        """Plain JSON-ready dict."""
        config = {k: v for k, v in asdict(self.config).items() if k not in ("out_dir", "work_dir")}
        return {
            "benchmark": "gateway vs vLLM's own OpenAI server",
            "hardware": self.hardware.as_dict(),
            "load_average_at_end": self.load_average_at_end,
            "config": config,
            "vllm": asdict(self.vllm),
            "gateway": asdict(self.gateway),
            "ratios_gateway_over_vllm": self.ratios(),
            "swap": self.swap.as_dict() if self.swap else None,
        }


def run_serve_bench(config: ServeConfig, steps: Steps) -> ServeReport:
    """Run the whole comparison and write `bench_serve.json` and `bench_serve.md` under `config.out_dir`."""
    hardware = detect()
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-") as tmp:
        work = config.work_dir or Path(tmp)
        lora = None
        if config.with_adapter or config.swaps:
            with steps.phase(f"building a rank-{config.lora_rank} PEFT LoRA for {config.flags.model_dir.name}"):
                lora = build_lora(config.flags.model_dir, work / "lora", rank=config.lora_rank)
        vllm = _side("vllm", config, work, lora, steps)
        gateway, swap = SideResult("gateway"), None
        try:
            gateway, swap = _gateway_side(config, work, lora, steps)
        except (ServerFailed, httpx.HTTPError, TimeoutError) as e:
            gateway.error = str(e)[-2000:]
    report = ServeReport(hardware, config, vllm, gateway, swap, os.getloadavg())
    report.files = list(write(config.out_dir, "bench_serve", report.as_dict(), markdown(report)))
    return report


def _side(name: str, config: ServeConfig, work: Path, lora: Path | None, steps: Steps) -> SideResult:
    """vLLM's own server: base load, then the adapter load (the adapter given at start)."""
    side = SideResult(name)
    modules = {ADAPTER: lora} if lora and config.with_adapter else {}
    try:
        start = time.perf_counter()
        with ExitStack() as stack:
            with steps.phase("starting vLLM's own OpenAI server"):
                server = stack.enter_context(vllm_server(config.flags, work / "vllm.log", modules))
            side.startup_s = round(time.perf_counter() - start, 1)
            side.base = _measure(server, config, steps, LoadSpec(model=config.flags.served_model_name), side)
            if modules:
                side.adapter = _measure(server, config, steps, LoadSpec(model=ADAPTER), side)
    except (ServerFailed, httpx.HTTPError) as e:
        side.error = str(e)[-2000:]
    return side


def _gateway_side(
    config: ServeConfig, work: Path, lora: Path | None, steps: Steps
) -> tuple[SideResult, SwapResult | None]:
    """The gateway: base load, the same adapter registered as production, then hot-swap latency."""
    from adapters.base_model import BaseModelInfo
    from adapters.registry import Registry

    side, swap = SideResult("gateway"), None
    data_dir = work / "gateway-data"
    start = time.perf_counter()
    with ExitStack() as stack:
        with steps.phase("starting the Flywheel gateway"):
            server = stack.enter_context(gateway_server(config.flags, data_dir, work / "gateway.log",
                                                        config.poll_seconds))
        side.startup_s = round(time.perf_counter() - start, 1)
        side.base = _measure(server, config, steps, LoadSpec(model=config.flags.served_model_name), side)
        if lora and config.with_adapter:
            with httpx.Client(base_url=server.url, timeout=120) as client:
                upload_version(client, ADAPTER, lora, alias=Alias.PRODUCTION)
            side.adapter = _measure(server, config, steps, LoadSpec(model=config.flags.served_model_name,
                                                                    adapter=ADAPTER), side)
        if lora and config.swaps:
            registry = Registry(data_dir / "registry.db", data_dir / "adapters",
                                BaseModelInfo.from_dir(config.flags.model_dir), config.flags.max_lora_rank)

            def promote(name: str, version: int) -> object:  # what `flywheel adapters promote` does
                return registry.promote(name, version, actor="bench", reason="swap latency")

            with steps.bar("hot-swap: promote -> first response on the new version", 2 * config.swaps) as tick:
                swap = measure_swaps(server.url, lora, promote, swaps=config.swaps,
                                     poll_seconds=config.poll_seconds, on_done=tick)
    return side, swap


def _measure(
    server: RunningServer, config: ServeConfig, steps: Steps, template: LoadSpec, side: SideResult
) -> LoadSummary:
    """Warm the server on this request shape, then run the measured load, noting the server's CPU use."""
    on_adapter = template.adapter is not None or template.model == ADAPTER
    what = f"adapter {ADAPTER}" if on_adapter else "base model"
    requests = config.adapter_requests if on_adapter else config.requests
    warm = LoadSpec(concurrency=min(4, config.concurrency), requests=config.warmup_requests, max_tokens=8,
                    model=template.model, adapter=template.adapter)
    asyncio.run(run_load(server.url, warm))
    spec = LoadSpec(concurrency=config.concurrency, requests=requests, max_tokens=config.max_tokens,
                    model=template.model, adapter=template.adapter)
    before = cpu_use(server.pid)
    with steps.bar(f"{server.name}: {what}, {requests} requests, {spec.concurrency} at once", requests) as tick:
        _, summary = asyncio.run(run_load(server.url, spec, tick))
    used = cpu_use(server.pid) - before
    side.cpu_s["adapter" if on_adapter else "base"] = {"api_process": used.api_s, "engine": used.engine_s}
    steps.note(f"{server.name} {what}: {summary.output_tokens_per_s:.1f} tokens/s, "
               f"TTFT p50 {summary.ttft_p50_ms:.0f} ms, errors {summary.errors}")
    return summary
