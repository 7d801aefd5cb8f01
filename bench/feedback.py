"""Issue 3's benchmark: feedback ingestion while chat traffic runs through the gateway.

One gateway; some real completions to rate; then (1) feedback alone, as fast as it goes (the capacity),
(2) chat alone, (3) chat with feedback submitted beside it at the target rate (2,000/s, open loop) for the
whole chat run, and (4) chat with feedback as fast as it goes (the worst case). Chat throughput (3) / (2)
is the slowdown the target is about; (4) / (2) is reported beside it.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import mean

import httpx

from bench.cpu import CLIENT_NICE, keep_clients_off_engine
from bench.feedback_load import FeedbackLoadResult, FeedbackProcess
from bench.hardware import Hardware, detect
from bench.load import PROMPTS, LoadSpec, LoadSummary, run_load
from bench.progress import Steps
from bench.report import hardware_section, markdown_table, ratio, write
from bench.servers import REPO, EngineFlags, gateway_server

# issue 3's targets
TARGET_PER_S, TARGET_P99_MS, TARGET_CHAT_RATIO = 2000.0, 50.0, 0.95
PACED_RATE = 2050.0


@dataclass
class FeedbackConfig:
    """Sizes of one run; the defaults finish in a few minutes on 2 CPU cores."""

    flags: EngineFlags
    submissions: int = 5000
    inflight: int = 64
    completions: int = 32
    chat_concurrency: int = 16
    chat_requests: int = 128
    max_tokens: int = 64
    # feedback offered per second beside chat in phase 3: a little over the target, because the measured rate
    # (submissions / wall time, the drain of the last ones included) comes out slightly under the offered one
    rate: float = PACED_RATE
    rounds: int = 2  # turns of (chat alone, chat beside paced feedback)
    out_dir: Path = REPO / "docs"
    work_dir: Path | None = None
    engine_spin_wait: bool = False  # FLYWHEEL_ENGINE_SPIN_WAIT: vLLM's spinning engine core, for comparison

    @property
    def stem(self) -> str:
        """File name of the results: a run with vLLM's spinning engine core does not overwrite the default's."""
        return "bench_feedback_spin" if self.engine_spin_wait else "bench_feedback"


@dataclass
class FeedbackReport:
    """Everything one run measured, and where it was written. Chat alone and chat beside paced feedback take
    turns (A, B, A, B, ...), so drift on a shared machine hits both alike; one saturating run follows."""

    hardware: Hardware
    config: FeedbackConfig
    feedback_alone: FeedbackLoadResult
    chat_alone: list[LoadSummary]  # one per round
    chat_with_feedback: list[LoadSummary]  # feedback at `config.rate` beside it, one per round
    feedback_during_chat: list[FeedbackLoadResult]  # the paced feedback of each round
    chat_with_saturating: LoadSummary  # feedback as fast as it goes beside it
    saturating_during_chat: FeedbackLoadResult
    load_average_at_end: tuple[float, float, float] = (0.0, 0.0, 0.0)
    client_cores: list[int] = field(default_factory=list)  # where the load generators ran ([]: anywhere)
    files: list[Path] = field(default_factory=list)

    def alone_tokens_per_s(self) -> float:
        return mean(s.output_tokens_per_s for s in self.chat_alone)

    def chat_ratio(self) -> float | None:
        """Chat throughput beside feedback at the target rate / alone, over all rounds."""
        return ratio(mean(s.output_tokens_per_s for s in self.chat_with_feedback), self.alone_tokens_per_s())

    def saturating_ratio(self) -> float | None:
        """Chat throughput beside feedback as fast as it goes / alone."""
        return ratio(self.chat_with_saturating.output_tokens_per_s, self.alone_tokens_per_s())

    def worst_paced(self) -> tuple[float, float]:
        """The lowest rate and the highest p99 of the paced feedback over the rounds (the targets use these)."""
        return min(r.per_s for r in self.feedback_during_chat), max(r.p99_ms for r in self.feedback_during_chat)

    def targets(self) -> dict[str, bool]:
        """Which of issue 3's targets this run met (ingestion measured while chat ran, worst round)."""
        per_s, p99 = self.worst_paced()
        return {"submissions_per_s_at_least_2000": per_s >= TARGET_PER_S,
                "p99_under_50ms": p99 < TARGET_P99_MS,
                "chat_slowdown_at_most_5_percent": (self.chat_ratio() or 0.0) >= TARGET_CHAT_RATIO}

    def as_dict(self) -> dict:
        """Plain JSON-ready dict."""
        config = {k: v for k, v in asdict(self.config).items() if k not in ("out_dir", "work_dir")}
        return {"benchmark": "feedback ingestion under chat load", "hardware": self.hardware.as_dict(),
                "load_average_at_end": self.load_average_at_end, "client_cores": self.client_cores, "config": config,
                "feedback_alone": self.feedback_alone.as_dict(),
                "chat_alone": [s.as_dict() for s in self.chat_alone],
                "chat_with_feedback": [s.as_dict() for s in self.chat_with_feedback],
                "feedback_during_chat": [r.as_dict() for r in self.feedback_during_chat],
                "chat_with_saturating_feedback": self.chat_with_saturating.as_dict(),
                "saturating_feedback_during_chat": self.saturating_during_chat.as_dict(),
                "chat_throughput_ratio_with_over_without": self.chat_ratio(),
                "chat_throughput_ratio_saturating_over_without": self.saturating_ratio(), "targets_met": self.targets()}


def create_completions(url: str, count: int) -> list[str]:
    """Serve `count` short chat completions and return their ids, once feedback can resolve them."""
    ids = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for i in range(count):
            body = {"model": "base", "max_tokens": 8, "temperature": 0.0,
                    "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]}
            response = client.post("/v1/chat/completions", json=body)
            response.raise_for_status()
            ids.append(response.json()["id"])
        # the completion log is written off the request path; wait until the last id is rateable
        deadline = time.monotonic() + 10
        probe = {"completion_id": ids[-1], "rating": "up", "user": "bench-probe"}
        while client.post("/v1/feedback", json=probe).status_code != 201:
            if time.monotonic() > deadline:
                raise TimeoutError("completions were not rateable within 10 s")
            time.sleep(0.05)
    return ids


def run_feedback_bench(config: FeedbackConfig, steps: Steps) -> FeedbackReport:
    """Run the phases against one gateway and write `bench_feedback.json` and `.md`."""
    hardware = detect()
    chat = LoadSpec(concurrency=config.chat_concurrency, requests=config.chat_requests, max_tokens=config.max_tokens)
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-") as tmp, ExitStack() as stack:
        work = config.work_dir or Path(tmp)
        with steps.phase("starting the Flywheel gateway"):
            spin = {"FLYWHEEL_ENGINE_SPIN_WAIT": "true"} if config.engine_spin_wait else {}
            server = stack.enter_context(gateway_server(config.flags, work / "gateway-data", work / "gateway.log",
                                                        extra_env=spin))
        client_cores = keep_clients_off_engine(server.pid)
        steps.note(f"load generators on CPU(s) {client_cores or 'any'} at nice {CLIENT_NICE} "
                   "(the engine worker's cores are left to it)")
        asyncio.run(run_load(server.url, LoadSpec(concurrency=4, requests=4, max_tokens=8)))  # warm-up
        with steps.phase(f"serving {config.completions} completions to rate"):
            ids = create_completions(server.url, config.completions)
        with steps.phase(f"feedback alone: {config.submissions} submissions, {config.inflight} in flight"):
            alone = FeedbackProcess(server.url, ids, config.submissions, config.inflight).start().finish()
        steps.note(f"feedback alone: {alone.per_s:.0f}/s, p99 {alone.p99_ms:.1f} ms, errors {alone.errors}")
        chat_alone, chat_with, during = [], [], []
        for turn in range(1, config.rounds + 1):
            with steps.bar(f"round {turn}/{config.rounds}: chat alone", chat.requests) as tick:
                chat_alone.append(asyncio.run(run_load(server.url, chat, tick))[1])
            steps.note(f"chat alone: {chat_alone[-1].output_tokens_per_s:.1f} tokens/s")
            summary, paced = _chat_beside_feedback(server.url, ids, config, chat, config.rate, steps)
            chat_with.append(summary)
            during.append(paced)
        chat_sat, during_sat = _chat_beside_feedback(server.url, ids, config, chat, None, steps)
    report = FeedbackReport(hardware, config, alone, chat_alone, chat_with, during, chat_sat, during_sat,
                            os.getloadavg(), client_cores)
    report.files = list(write(config.out_dir, config.stem, report.as_dict(), markdown(report)))
    return report


def _chat_beside_feedback(url: str, ids: list[str], config: FeedbackConfig, chat: LoadSpec, rate: float | None,
                          steps: Steps) -> tuple[LoadSummary, FeedbackLoadResult]:
    """One chat run with feedback submitted beside it for the whole run, at `rate` (None: as fast as it goes)."""
    pace = f"{rate:,.0f} feedback/s" if rate else "feedback as fast as it goes"
    submitter = FeedbackProcess(url, ids, config.submissions, config.inflight, rate).start()
    with steps.bar(f"chat with {pace} beside it", chat.requests) as tick:
        _, chat_with = asyncio.run(run_load(url, chat, tick))
    with steps.phase("waiting for the feedback submitter to finish"):
        during = submitter.finish()
    steps.note(f"chat with {pace}: {chat_with.output_tokens_per_s:.1f} tokens/s; "
               f"feedback during chat: {during.per_s:.0f}/s, p99 {during.p99_ms:.1f} ms")
    return chat_with, during


def _yes(met: bool) -> str:
    return "**met**" if met else "**NOT met**"


def markdown(report: FeedbackReport) -> str:
    """The page: hardware, settings, ingestion and chat tables, targets, caveats."""
    c, met = report.config, report.targets()
    rate = f"{c.rate:,.0f}/s"
    rounds = range(1, len(report.chat_alone) + 1)
    feedback_rows = [[name, r.submitted, r.per_s, r.p50_ms, r.p99_ms, r.max_ms, r.errors] for name, r in
                     [("alone, as fast as it goes", report.feedback_alone),
                      *((f"round {i}: while chat runs, paced at {rate}", r)
                        for i, r in zip(rounds, report.feedback_during_chat, strict=True)),
                      ("while chat runs, as fast as it goes", report.saturating_during_chat)]]
    alone = report.alone_tokens_per_s()
    chat_phases = [phase for i, a, w in zip(rounds, report.chat_alone, report.chat_with_feedback, strict=True)
                   for phase in ((f"round {i}: alone", a), (f"round {i}: with feedback at {rate}", w))]
    chat_phases.append(("with feedback as fast as it goes", report.chat_with_saturating))
    chat_rows = [[name, s.output_tokens_per_s, ratio(s.output_tokens_per_s, alone), s.ttft_p50_ms, s.ttft_p99_ms,
                  s.itl_p50_ms, s.itl_p99_ms, s.errors] for name, s in chat_phases]
    per_s, p99 = report.worst_paced()
    return "\n\n".join([
        "# Feedback ingestion under chat load",
        "Produced by `flywheel bench feedback`, against one gateway (vLLM engine, default settings otherwise).",
        hardware_section(report.hardware, report.load_average_at_end),
        f"## Settings\n\n- Feedback: at least {c.submissions} `POST /v1/feedback` per phase, {c.inflight} in flight "
        f"(a lean asyncio HTTP/1.1 client in its own process), spread over {c.completions} real completions, "
        f"each a distinct user and feedback_id (every one a new row)\n- Chat: {c.chat_concurrency} concurrent "
        f"streams, {c.chat_requests} requests of {c.max_tokens} tokens per phase; {c.rounds} rounds of chat alone "
        f"then chat beside feedback paced at {rate} (interleaved, so drift hits both), then one chat phase beside "
        "feedback as fast as it goes; feedback is submitted for the whole of its chat phase\n- Engine core: "
        + ("spins while its worker computes (vLLM's way, `FLYWHEEL_ENGINE_SPIN_WAIT=true`)" if c.engine_spin_wait
           else "sleeps while its worker computes (the default, server/vllm_plugins/engine_wait.py)"),
        "## Feedback ingestion\n\n" + markdown_table(
            ["phase", "submissions", "per second", "p50 (ms)", "p99 (ms)", "max (ms)", "errors"], feedback_rows),
        "Paced: submission k is due at start + k / rate and its latency counts from then (open loop), so "
        "falling behind would show in the percentiles.",
        "## Chat throughput\n\n" + markdown_table(
            ["chat", "output tokens/s", "vs mean alone", "TTFT p50 (ms)", "TTFT p99 (ms)", "ITL p50 (ms)",
             "ITL p99 (ms)", "errors"], chat_rows)
        + f"\n\nBeside feedback at {rate} / alone, over the rounds: **{report.chat_ratio()}x**; beside feedback as "
        f"fast as it goes: {report.saturating_ratio()}x.",
        f"## Targets (issue 3), measured while chat runs with feedback at {rate} (worst round)\n\n"
        f"- >= 2,000 submissions/s: {_yes(met['submissions_per_s_at_least_2000'])} ({per_s:,.0f}/s)\n"
        f"- p99 < 50 ms: {_yes(met['p99_under_50ms'])} ({p99:.1f} ms)\n"
        f"- chat slowdown <= 5%: {_yes(met['chat_slowdown_at_most_5_percent'])} ({report.chat_ratio()}x)",
        "## Caveats\n\n- The load generators run on this machine, pinned like the gateway's API to the cores the "
        f"engine worker does not use (CPU(s) {report.client_cores or 'any'}), at nice {CLIENT_NICE} so that the "
        "gateway's threads run first, as if the clients were elsewhere: their own CPU is still taken from the "
        "gateway's core; other work on the machine (see the load averages) moves absolute numbers.",
    ])
