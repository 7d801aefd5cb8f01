"""Issue 14's honest `flywheel bench serve`: stock vLLM, vLLM with Flywheel's plugins, and the gateway.

Three servers, the same model, engine flags and load: vLLM's own OpenAI server with `VLLM_PLUGINS=""`
(none of Flywheel's vLLM plugins load), the same server with every installed plugin (Flywheel's CPU
LoRA ops, engine-core wait and orphan guard, as the gateway's engine has them), and the gateway. In
each of `rounds` rounds every server in turn starts, is warmed, runs the base-model load and the
adapter load, and stops: one server at a time (2 cores). The order changes every round
(`round_order`), so a trend on a shared machine (another job starting, a warming CPU) falls on every
server alike; the page reports the median, the spread and the worst round (bench/serve_report.py).
Hot-swap latency is measured once, on the last round's gateway, after its loads.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Sequence
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
from bench.report import write
from bench.serve_report import SERVERS, markdown, summary_data
from bench.servers import (
    REPO,
    EngineFlags,
    RunningServer,
    gateway_server,
    plugin_log_config,
    plugins_loaded,
    vllm_server,
)
from bench.swap import SwapResult, measure_swaps, upload_version

ADAPTER = "benchlora"
LOADS = ("base", "adapter")


@dataclass
class ServeConfig:
    """Sizes and flags of one run; the defaults take about 10-15 minutes on 2 quiet CPU cores (12 server starts)."""

    flags: EngineFlags
    rounds: int = 4
    concurrency: int = 16
    requests: int = 16
    adapter_requests: int = 16
    max_tokens: int = 64
    warmup_requests: int = 4
    swaps: int = 10
    poll_seconds: float = 0.5
    lora_rank: int = 16
    out_dir: Path = REPO / "docs"
    work_dir: Path | None = None  # server logs and the built adapter; a temporary folder when None


@dataclass
class Turn:
    """One server's turn in one round: started, warmed, both loads measured, stopped."""

    server: str
    round: int  # from 1
    place: int  # from 1: the turn's place in the round's order
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)  # when the turn began
    startup_s: float = 0.0
    base: LoadSummary | None = None
    adapter: LoadSummary | None = None
    cpu_s: dict[str, dict[str, float]] = field(default_factory=dict)  # load -> CPU seconds of API and engine
    plugins: list[str] | None = None  # vLLM's general plugins as its log says it loaded them
    error: str | None = None


@dataclass
class ServeReport:
    """Everything one run measured, and where it was written."""

    hardware: Hardware
    config: ServeConfig
    turns: list[Turn] = field(default_factory=list)
    orders: list[tuple[str, ...]] = field(default_factory=list)  # one per round
    swap: SwapResult | None = None
    load_average_at_end: tuple[float, float, float] = (0.0, 0.0, 0.0)
    files: list[Path] = field(default_factory=list)

    def summaries(self, server: str, load: str) -> list[LoadSummary]:
        """That server's measured `load` summaries, one per round it completed, in round order."""
        return [getattr(t, load) for t in self.turns if t.server == server and getattr(t, load)]

    def plugins(self, server: str) -> list[str] | None:
        """The plugins the server's log names, if its turns agree (None when no log said)."""
        seen = {tuple(t.plugins) for t in self.turns if t.server == server and t.plugins is not None}
        return list(seen.pop()) if len(seen) == 1 else None

    def as_dict(self) -> dict:
        """Plain JSON-ready dict: every turn's raw numbers, then the aggregates the page shows."""
        config = {k: v for k, v in asdict(self.config).items() if k not in ("out_dir", "work_dir")}
        return {
            "benchmark": "stock vLLM vs vLLM with Flywheel's plugins vs the gateway, rounds in rotated order",
            "hardware": self.hardware.as_dict(),
            "load_average_at_end": self.load_average_at_end,
            "config": config,
            "orders": self.orders,
            "turns": [asdict(t) for t in self.turns],
            **summary_data(self),
            "swap": self.swap.as_dict() if self.swap else None,
        }


def round_order(servers: Sequence[str], round_index: int) -> tuple[str, ...]:
    """The order of round `round_index` (from 0): the servers rotated by round_index // 2, reversed on odd rounds.

    For three servers that is ABC, CBA, BCA, ACB, CAB, BAC: after 4 rounds each server's places add up the same
    (first and last equally often), and after 6 every server has held every place twice.
    """
    k = (round_index // 2) % len(servers)
    order = tuple(servers[k:]) + tuple(servers[:k])
    return order[::-1] if round_index % 2 else order


def run_serve_bench(config: ServeConfig, steps: Steps) -> ServeReport:
    """Run every round and write `bench_serve.json` and `bench_serve.md` under `config.out_dir`."""
    report = ServeReport(detect(), config)
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-") as tmp:
        work = config.work_dir or Path(tmp)
        with steps.phase(f"building a rank-{config.lora_rank} PEFT LoRA for {config.flags.model_dir.name}"):
            lora = build_lora(config.flags.model_dir, work / "lora", rank=config.lora_rank)
        log_env = plugin_log_config(work / "vllm-logging.json")
        for r in range(config.rounds):
            order = round_order(SERVERS, r)
            report.orders.append(order)
            steps.note(f"round {r + 1}/{config.rounds}: {' -> '.join(order)}")
            for place, server in enumerate(order, start=1):
                turn = Turn(server, r + 1, place, os.getloadavg())
                swaps = config.swaps if r == config.rounds - 1 else 0
                report.swap = _turn(turn, config, work, lora, log_env, swaps, steps) or report.swap
                report.turns.append(turn)
            # after every round, so a run stopped early (a deadline, a busy machine) leaves its finished rounds
            report.load_average_at_end = os.getloadavg()
            report.files = list(write(config.out_dir, "bench_serve", report.as_dict(), markdown(report)))
    return report


def _turn(turn: Turn, config: ServeConfig, work: Path, lora: Path, log_env: dict[str, str], swaps: int,
          steps: Steps) -> SwapResult | None:
    """Start `turn.server`, measure both loads (base first on odd rounds), stop it; fills `turn` in place."""
    tag = f"{turn.server}-r{turn.round}"
    swap = None
    try:
        with ExitStack() as stack:
            start = time.perf_counter()
            with steps.phase(f"round {turn.round}, turn {turn.place}: starting {turn.server}"):
                server, adapter_spec, data_dir = _start(turn.server, config, work, tag, lora, log_env, stack)
            turn.startup_s = round(time.perf_counter() - start, 1)
            base_spec = LoadSpec(model=config.flags.served_model_name)
            loads = LOADS if turn.round % 2 else LOADS[::-1]
            for load in loads:
                spec = base_spec if load == "base" else adapter_spec
                summary, cpu = _measure(server, config, steps, spec, load)
                setattr(turn, load, summary)
                turn.cpu_s[load] = cpu
            if swaps and data_dir is not None:
                swap = _swaps(server, config, data_dir, lora, swaps, steps)
    except Exception as e:  # noqa: BLE001 - a failed turn is reported on the page; the other turns still run
        turn.error = f"{type(e).__name__}: {e}"[-2000:]
    log = work / f"{tag}.log"
    if log.exists():
        turn.plugins = plugins_loaded(log.read_text(errors="replace"))
    return swap


def _start(name: str, config: ServeConfig, work: Path, tag: str, lora: Path, log_env: dict[str, str],
           stack: ExitStack) -> tuple[RunningServer, LoadSpec, Path | None]:
    """Start one server; returns it, the adapter load's request shape, and the gateway's data folder."""
    log = work / f"{tag}.log"
    if name == "gateway":
        data_dir = work / f"{tag}-data"  # a fresh registry per turn: each starts as a new deployment would
        server = stack.enter_context(gateway_server(config.flags, data_dir, log, config.poll_seconds,
                                                    extra_env=log_env))
        with httpx.Client(base_url=server.url, timeout=120) as client:
            upload_version(client, ADAPTER, lora, alias=Alias.PRODUCTION)
        return server, LoadSpec(model=config.flags.served_model_name, adapter=ADAPTER), data_dir
    server = stack.enter_context(vllm_server(config.flags, log, {ADAPTER: lora}, plugins=name == "vllm-plugins",
                                             name=name, extra_env=log_env))
    return server, LoadSpec(model=ADAPTER), None


def _swaps(server: RunningServer, config: ServeConfig, data_dir: Path, lora: Path, swaps: int,
           steps: Steps) -> SwapResult:
    """Promote-to-first-answer latency through the admin API and through a registry move from this process."""
    from adapters.base_model import BaseModelInfo
    from adapters.registry import Registry

    registry = Registry(data_dir / "registry.db", data_dir / "adapters",
                        BaseModelInfo.from_dir(config.flags.model_dir), config.flags.max_lora_rank)

    def promote(name: str, version: int) -> object:  # what `flywheel adapters promote` does
        return registry.promote(name, version, actor="bench", reason="swap latency")

    with steps.bar("hot-swap: promote -> first response on the new version", 2 * swaps) as tick:
        return measure_swaps(server.url, lora, promote, swaps=swaps, poll_seconds=config.poll_seconds,
                             on_done=tick)


def _measure(server: RunningServer, config: ServeConfig, steps: Steps, template: LoadSpec,
             load: str) -> tuple[LoadSummary, dict[str, float]]:
    """Warm the server on this request shape, then run the measured load, noting the server's CPU use."""
    requests = config.adapter_requests if load == "adapter" else config.requests
    what = f"adapter {ADAPTER}" if load == "adapter" else "base model"
    warm = LoadSpec(concurrency=min(4, config.concurrency), requests=config.warmup_requests, max_tokens=8,
                    model=template.model, adapter=template.adapter)
    asyncio.run(run_load(server.url, warm))
    spec = LoadSpec(concurrency=config.concurrency, requests=requests, max_tokens=config.max_tokens,
                    model=template.model, adapter=template.adapter)
    before = cpu_use(server.pid)
    with steps.bar(f"{server.name}: {what}, {requests} requests, {spec.concurrency} at once", requests) as tick:
        _, summary = asyncio.run(run_load(server.url, spec, tick))
    used = cpu_use(server.pid) - before
    steps.note(f"{server.name} {what}: {summary.output_tokens_per_s:.1f} tokens/s, "
               f"TTFT p50 {summary.ttft_p50_ms:.0f} ms, ITL p50 {summary.itl_p50_ms:.0f} ms, errors {summary.errors}")
    return summary, {"api_process": used.api_s, "engine": used.engine_s}
