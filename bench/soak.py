"""`flywheel bench soak`: a long run of mixed chat, feedback and hot-swaps against one gateway, watching for leaks.

One gateway on a fresh data directory; three PEFT LoRAs registered (the first with a second version);
then, for `duration_s`, `concurrency` chat streams spread round-robin over the base model and the
adapters, paced feedback beside them, production of the first adapter promoted to v2 and rolled back
to v1 in turn every `swap_every_s`, and the gateway's RSS, its engine processes' RSS, its open fds and
its SQLite WAL sizes sampled every `sample_every_s`. The report says whether the targets held.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.cpu import CLIENT_NICE, keep_clients_off_engine
from bench.feedback import create_completions
from bench.hardware import detect
from bench.lora import build_loras
from bench.progress import Steps
from bench.servers import REPO, EngineFlags, RunningServer, gateway_server
from bench.soak_page import write_soak
from bench.soak_report import SoakReport
from bench.soak_sampler import Sampler
from bench.soak_traffic import FeedbackWindows, SoakTraffic, Traffic
from bench.swap import upload_version


@dataclass
class SoakConfig:
    """One soak; the defaults are the reliability issue's 10 minutes of 32 streams."""

    flags: EngineFlags
    duration_s: float = 600.0  # traffic time; in-flight requests finish after it
    concurrency: int = 32  # chat streams, each one request at a time
    max_tokens: int = 32  # per chat request: short, so each window holds enough requests for a p99
    adapter_ranks: tuple[int, ...] = (8, 16, 16)  # one adapter per rank; the first is the one swapped
    feedback_rate: float = 50.0  # feedback submissions per second beside the chat (paced, open loop)
    feedback_inflight: int = 8
    completions: int = 32  # real completions served first, for the feedback to rate
    swap_every_s: float = 30.0  # a promote or a rollback this often
    window_s: float = 30.0  # latency percentiles per window of this length
    warmup_s: float = 60.0  # left out of growth and flatness
    sample_every_s: float = 5.0  # RSS, fds and WAL sizes this often
    request_timeout_s: float = 120.0  # a chat request that takes longer is an error
    out_dir: Path = REPO / "docs"
    work_dir: Path | None = None
    swap_adapter: str = "soak0"

    def __post_init__(self) -> None:
        if not self.adapter_ranks:
            raise ValueError("--adapter-ranks needs at least one rank")
        if max(self.adapter_ranks) > self.flags.max_lora_rank:
            raise ValueError(f"--adapter-ranks: {max(self.adapter_ranks)} is over max_lora_rank "
                             f"{self.flags.max_lora_rank}")
        if self.warmup_s >= self.duration_s:
            raise ValueError("--warmup must be shorter than --duration")
        if self.window_s > self.duration_s - self.warmup_s:
            raise ValueError("--window must fit after the warm-up (--duration minus --warmup)")

    def adapter_names(self) -> list[str]:
        return [f"soak{i}" for i in range(len(self.adapter_ranks))]


def build_folders(config: SoakConfig, folder: Path) -> list[Path]:
    """One PEFT LoRA per adapter, and a second of the first one's rank: its version 2."""
    ranks = [*config.adapter_ranks, config.adapter_ranks[0]]
    built = {rank: iter(build_loras(config.flags.model_dir, [folder / f"rank{rank}" / f"lora{i:02d}"
                                                             for i in range(ranks.count(rank))], rank=rank))
             for rank in set(ranks)}
    return [next(built[rank]) for rank in ranks]


def register(server: RunningServer, config: SoakConfig, folders: list[Path]) -> None:
    """Each adapter's v1 as production; the swapped adapter's v2 beside it."""
    with httpx.Client(base_url=server.url, timeout=300) as client:
        for name, folder in zip(config.adapter_names(), folders, strict=False):
            upload_version(client, name, folder, alias="production")
        upload_version(client, config.swap_adapter, folders[-1])


def run_soak(config: SoakConfig, steps: Steps) -> SoakReport:
    """Build and register the adapters, start the gateway, run the traffic, write the JSON, page and plot."""
    hardware = detect()
    with tempfile.TemporaryDirectory(prefix="flywheel-soak-") as tmp, ExitStack() as stack:
        work = config.work_dir or Path(tmp)
        with steps.phase(f"building {len(config.adapter_ranks) + 1} PEFT LoRAs (ranks {config.adapter_ranks})"):
            folders = build_folders(config, work / "adapters")
        with steps.phase("starting the Flywheel gateway"):
            server = stack.enter_context(gateway_server(config.flags, work / "gateway-data", work / "gateway.log"))
        register(server, config, folders)
        client_cores = keep_clients_off_engine(server.pid)
        steps.note(f"load generators on CPU(s) {client_cores or 'any'} at nice {CLIENT_NICE}")
        with steps.phase(f"serving {config.completions} completions to rate"):
            ids = create_completions(server.url, config.completions)
        windows = int(config.duration_s // config.window_s)
        feedback = FeedbackWindows(server.url, ids, config.feedback_rate, config.feedback_inflight, config.window_s,
                                   windows).start()
        with steps.bar(f"soak: {config.duration_s:.0f} s of {config.concurrency} streams", windows) as tick:
            def window_done(t_s: float, so_far: Traffic) -> None:
                tick()
                steps.note(progress_line(t_s, so_far))

            run = SoakTraffic(server.url, config, Sampler(server.pid, work / "gateway-data"), window_done)
            traffic = asyncio.run(run.run())
        traffic.feedback, error = feedback.finish(run.t0, timeout_s=config.window_s + 60)
        traffic.other_errors += [error] if error else []
        traffic.other_errors += _still_ready(server)
    report = SoakReport(hardware, config, traffic.records, traffic.samples, traffic.swaps, traffic.feedback,
                        traffic.other_errors, client_cores, os.getloadavg())
    report.files = write_soak(report)
    return report


def progress_line(t_s: float, traffic: Traffic) -> str:
    """What a person watching the soak sees at the end of each window."""
    done = [r for r in traffic.records if r.error is None]
    failed = len(traffic.records) - len(done) + sum(s.error is not None for s in traffic.swaps)
    line = f"{t_s:.0f} s: {len(done)} requests done, {failed} failed, {len(traffic.swaps)} swaps"
    if traffic.samples:
        s = traffic.samples[-1]
        line += (f"; RSS gateway {s.gateway_rss_mib:,.0f} MiB, engine {s.engine_rss_mib:,.0f} MiB; "
                 f"{s.gateway_fds} fds; WAL feedback {s.feedback_wal_kib:,.0f} KiB")
    return line


def _still_ready(server: RunningServer) -> list[str]:
    """The gateway should still answer /ready once the soak is over."""
    try:
        status = httpx.get(server.url + "/ready", timeout=30).status_code
    except httpx.HTTPError as e:
        return [f"NotReady: {type(e).__name__}: {e}"]
    return [] if status == 200 else [f"NotReady: /ready answered {status}"]
