"""`flywheel bench replicas`: how soon an alias move reaches the other gateway replica (issue 16's 2 s target).

One PostgreSQL (bench/postgres.py: a throwaway server on this host) and two gateways on it, each with its own
real vLLM engine and data directory, whose `adapters` folder is a link to one shared folder (every replica
mounts one volume, docs/kubernetes.md). Then `moves` promotions to freshly registered versions, made in turn
through A's admin API, B's admin API and the `flywheel adapters` CLI (a third process). A watcher per replica
polls its `GET /v1/models`, which reports the resolver's snapshot (what a request naming the adapter gets,
server/routes/chat.py), and once that names the new version sends one tiny chat request to confirm it serves
it. Times run from the registry's own timestamp of the move (the alias event's `at`), on the same clock.
Meanwhile `streams` streaming requests per replica run on the moved adapter, and each failure is counted.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import typer

from bench.hardware import detect
from bench.postgres import create_database, running_postgres
from bench.progress import Steps
from bench.replicas_report import Move, ReplicasConfig, ReplicasReport, StreamsResult, write_page
from bench.servers import REPO, RunningServer, gateway_env, gateway_server
from bench.swap import upload_version

ADAPTER = "replicabench"
WATCH_EVERY_S = 0.01  # a /v1/models read costs the gateway well under a millisecond
HI = [{"role": "user", "content": "Hi"}]
VIAS = ("admin API of A", "admin API of B", "CLI")


@dataclass
class _Sighting:
    """When one replica first reported the version (GET /v1/models) and first answered with it (time.time())."""

    reported: float | None = None
    answered: float | None = None


def _watch(url: str, version: int, deadline: float, out: _Sighting, abandon: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        while out.reported is None and time.time() < deadline and not abandon.is_set():
            cards = client.get("/v1/models").json()["data"]
            if any(c["id"] == ADAPTER and c.get("version") == version for c in cards):
                out.reported = time.time()
            else:
                time.sleep(WATCH_EVERY_S)
        body = {"model": ADAPTER, "messages": HI, "max_tokens": 1, "temperature": 0}
        while out.reported is not None and out.answered is None and time.time() < deadline:
            r = client.post("/v1/chat/completions", json=body)
            if r.status_code == 200 and r.json().get("adapter") == f"{ADAPTER}@{version}":
                out.answered = time.time()


def _promote(via: str, servers: list[RunningServer], version: int, cli_env: dict[str, str]) -> float:
    """Make the move; the registry's timestamp of it."""
    if via == "CLI":
        done = subprocess.run([sys.executable, "-m", "flywheel", "adapters", "promote", ADAPTER, "--version",
                               str(version)], env=cli_env, capture_output=True, text=True, timeout=300, cwd=REPO)
        if done.returncode:
            raise RuntimeError(f"flywheel adapters promote exited {done.returncode}: {done.stderr[-1000:]}")
        history = httpx.get(f"{servers[0].url}/admin/adapters/{ADAPTER}/history", timeout=30).json()
        return next(e["at"] for e in reversed(history) if e["alias"] == "production" and e["to_version"] == version)
    server = servers[0] if via.endswith("A") else servers[1]
    r = httpx.post(f"{server.url}/admin/adapters/{ADAPTER}/promote", json={"version": version}, timeout=300)
    r.raise_for_status()
    return r.json()["at"]


def timed_move(index: int, via: str, version: int, servers: list[RunningServer], cli_env: dict[str, str],
               timeout_s: float) -> Move:
    """One move, watched on every replica from before it is made."""
    sightings, abandon = [_Sighting() for _ in servers], threading.Event()
    deadline = time.time() + timeout_s
    watchers = [threading.Thread(target=_watch, args=(s.url, version, deadline, seen, abandon), daemon=True)
                for s, seen in zip(servers, sightings, strict=True)]
    for w in watchers:
        w.start()
    started, at, error = time.time(), None, None
    try:
        at = _promote(via, servers, version, cli_env)
    except Exception as e:  # counted as a failed move; the run goes on
        error = f"{type(e).__name__}: {e}"
        abandon.set()  # nothing to wait for
    call_s = time.time() - started
    for w in watchers:
        w.join(timeout_s + 30)
    since = at if at is not None else started
    return Move(index=index, via=via, version=version, call_s=round(call_s, 3), error=error,
                reported_s={n: _after(seen.reported, since) for n, seen in zip("AB", sightings, strict=True)},
                answered_s={n: _after(seen.answered, since) for n, seen in zip("AB", sightings, strict=True)})


def _after(t: float | None, since: float) -> float | None:
    return None if t is None else round(t - since, 3)


class Streams:
    """`per_replica` threads per gateway, each streaming one chat request on the adapter after another."""

    def __init__(self, urls: list[str], per_replica: int, max_tokens: int):
        self.result = StreamsResult()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(url, max_tokens), daemon=True)
                         for url in urls for _ in range(per_replica)]

    def __enter__(self) -> Streams:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(300)

    def _run(self, url: str, max_tokens: int) -> None:
        body = {"model": ADAPTER, "messages": HI, "max_tokens": max_tokens, "stream": True}
        with httpx.Client(base_url=url, timeout=120) as client:
            while not self._stop.is_set():
                error = None
                try:
                    with client.stream("POST", "/v1/chat/completions", json=body) as r:
                        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
                        if r.status_code != 200 or not lines or lines[-1] != "data: [DONE]":
                            error = f"status {r.status_code}, last line {lines[-1:] or 'none'}"
                except httpx.HTTPError as e:
                    error = f"{type(e).__name__}: {e}"
                with self._lock:
                    self.result.add(error)


def _gateways(stack: ExitStack, config: ReplicasConfig, work: Path, database_url: str,
              steps: Steps) -> list[RunningServer]:
    shared = work / "shared-adapters"
    shared.mkdir(parents=True)
    servers = []
    for name in "ab":
        data = work / f"data-{name}"
        data.mkdir()
        (data / "adapters").symlink_to(shared, target_is_directory=True)
        with steps.phase(f"starting gateway {name.upper()} (its own vLLM engine)"):
            servers.append(stack.enter_context(gateway_server(
                config.flags, data, work / f"gateway-{name}.log", config.poll_seconds,
                {"FLYWHEEL_DATABASE_URL": database_url})))
    return servers


def run_replicas(config: ReplicasConfig, steps: Steps) -> ReplicasReport:
    """Start PostgreSQL and two gateways, make and time the moves, write docs/bench_replicas.{md,json}."""
    from bench.lora import build_lora  # torch, peft: only once a run starts

    hardware, rng = detect(), random.Random(config.seed)
    with tempfile.TemporaryDirectory(prefix="flywheel-replicas-") as tmp, ExitStack() as stack:
        work = config.work_dir or Path(tmp)
        with steps.phase("starting PostgreSQL"):
            database_url = create_database(stack.enter_context(running_postgres()), "bench_replicas")
        with steps.phase("building a rank-8 PEFT LoRA"):
            folder = build_lora(config.flags.model_dir, work / "lora", rank=8)
        servers = _gateways(stack, config, work, database_url, steps)
        port = int(servers[0].url.rsplit(":", 1)[1])  # A's settings; the CLI binds nothing
        cli_env = {**_plain_env(), **gateway_env(config.flags, port, work / "data-a", config.poll_seconds),
                   "FLYWHEEL_DATABASE_URL": database_url}
        with httpx.Client(base_url=servers[0].url, timeout=300) as client:
            for _ in range(config.moves + 1):  # every move loads weights new to both engines, as a promotion does
                upload_version(client, ADAPTER, folder)
        warm = timed_move(0, VIAS[0], 1, servers, cli_env, config.timeout_s)  # untimed: the first production
        if warm.error or None in warm.answered_s.values():
            raise RuntimeError(f"the first promotion was not served by both gateways: {warm}")
        moves = []
        with Streams([s.url for s in servers], config.streams, config.max_tokens) as streams, \
                steps.bar(f"{config.moves} alias moves", config.moves) as tick:
            for i in range(config.moves):
                time.sleep(rng.uniform(config.pause_s, config.pause_s + config.poll_seconds))  # any poll phase
                moves.append(timed_move(i + 1, VIAS[i % len(VIAS)], i + 2, servers, cli_env, config.timeout_s))
                if moves[-1].error:
                    steps.note(f"move {i + 1} ({moves[-1].via}) failed: {moves[-1].error}")
                tick()
    report = ReplicasReport(config=config, hardware=hardware, moves=moves, streams=streams.result)
    report.files = write_page(report)
    return report


def _plain_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}  # as bench/servers.py does


def replicas(
    moves: int = typer.Option(30, "--moves", "-n", min=1, help="Alias moves timed (turns: A's API, B's, the CLI)."),
    poll_seconds: float = typer.Option(0.5, min=0.01, max=5, help="FLYWHEEL_REGISTRY_POLL_SECONDS of both "
                                                                  "gateways (0.5: the default)."),
    streams: int = typer.Option(2, min=0, help="Streaming chat requests per replica kept running during the moves."),
    max_tokens: int = typer.Option(16, min=1, help="Tokens per streamed request."),
    pause: float = typer.Option(1.0, min=0, help="Seconds between moves (plus a random part of a poll period)."),
    timeout: float = typer.Option(60, min=1, help="A replica not serving a move by then counts it as missed."),
    note: str = typer.Option("", help="A run note for the page (who else was using the machine)."),
    model: Path = typer.Option(None, help="Base model directory (default: the embedded SmolLM2-135M-Instruct)."),
    out: Path = typer.Option(REPO / "docs", help="Where bench_replicas.json and bench_replicas.md go."),
    work_dir: Path = typer.Option(None, help="Keep the gateways' data and logs here (default: a temp dir)."),
) -> None:
    """Two gateways with real engines on one PostgreSQL: time from an alias move to the other replica serving it."""
    from bench.cli_support import console, engine_flags, print_table, quiet_logs
    from bench.replicas_report import HEADERS, summary_rows

    quiet_logs()
    config = ReplicasConfig(flags=engine_flags(model, 1024, 1, 64), moves=moves, poll_seconds=poll_seconds,
                            streams=streams, max_tokens=max_tokens, pause_s=pause, timeout_s=timeout, note=note,
                            out_dir=out, work_dir=work_dir)
    report = run_replicas(config, Steps(console))
    print_table("alias move -> served by the other replica (s)", HEADERS, summary_rows(report))
    console.print(report.verdict())
    console.print("written: " + ", ".join(str(p) for p in report.files))
