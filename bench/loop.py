"""`flywheel bench loop`: simulated users with a hidden preference rate answers, the trainer learns, repeat.

Round 0 measures the base rate on held-out prompts. Each round then collects `ratings_per_round` rated
answers on training prompts through the gateway, runs `flywheel train --promotion auto` as a separate
process (as the watcher would), waits until the gateway serves the promoted version (or records the
gate's rejection), and measures production again: held-out satisfaction, closed-book correctness (the
gate's question set, greedy) and degenerate answers.

The training recipe is the trainer's defaults, exactly what `make serve`'s watcher and `flywheel train`
run: the benchmark passes no recipe flag (docs/architecture.md, "The loop"). Only `--quick`, a smoke run
for the tests, caps the steps, and its report says so and is never written to docs/.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import typer

from bench.loop_report import HEADERS, RoundResult, table_rows, write_report
from bench.loop_users import PREFERENCES, SimulatedUser, load_prompts, users
from bench.lora import identity_adapter
from bench.progress import Steps
from bench.servers import REPO, EngineFlags, free_port, gateway_env, running
from trainer import correctness

ADAPTER = "bench"
TRAIN_TIMEOUT_S = 3600


def correctness_tokens() -> int:
    """The gate's answer length, so the benchmark and the gate judge the same answers."""
    from trainer.config import GateConfig

    return GateConfig().answer_tokens


@dataclass
class LoopConfig:
    """One benchmark run: the users, the rounds and the measurements. The training recipe is not here."""

    preference: str = "answer_prefix"  # the users' hidden preference (bench/loop_users.py PREFERENCES)
    rounds: int = 3  # rounds of rate -> train -> measure after round 0
    ratings_per_round: int = 300  # rated answers on training prompts per round
    noise: float = 0.0  # share of ratings flipped, and of corrections made wrong or sloppy
    corrections: float = 0.5  # share of down ratings that carry the fixed answer as a correction
    heldout: int | None = None  # held-out prompts measured per round (None: all)
    questions: int | None = None  # closed-book questions asked per round (None: all of the gate's set)
    users: int = 8  # simulated users sharing the preference (the export caps and resolves per user)
    concurrency: int = 16  # chat requests in flight
    max_tokens: int = 48  # per answer, rated or measured
    temperature: float = 0.7  # sampling, so satisfaction is a rate, not one greedy answer
    seed: int = 0
    smoke_steps: int | None = None  # --quick only: caps each stage's steps; such a run is not the recipe
    out_dir: Path = REPO / "docs"
    work_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.preference not in PREFERENCES:
            raise ValueError(f"--preference must be one of {', '.join(PREFERENCES)}")
        if self.rounds < 1 or self.ratings_per_round < 1:
            raise ValueError("--rounds and --ratings-per-round must be >= 1")


class LoopBench:
    """Drives one gateway through the rounds; `run()` returns the per-round results."""

    def __init__(self, config: LoopConfig, url: str, env: dict[str, str], work: Path, steps: Steps):
        self.config, self.url, self.env, self.work, self.steps = config, url, env, work, steps
        self.users = users(config.preference, config.users, config.noise, config.corrections, config.seed)
        self.check = PREFERENCES[config.preference].check
        self.heldout = load_prompts("heldout")[: config.heldout]
        self.questions = correctness.closed_book(limit=config.questions)
        self.answer_tokens = correctness_tokens()
        self.train_prompts = load_prompts("train")
        self.base_ppl: float | None = None
        self.production_ppl: float | None = None

    async def _chat(self, client: httpx.AsyncClient, prompt: str, user: str, greedy: bool = False) -> dict:
        body = {"model": ADAPTER, "messages": [{"role": "user", "content": prompt}], "user": user,
                "max_tokens": self.config.max_tokens, "temperature": self.config.temperature}
        if greedy:  # closed-book questions are asked as the gate asks them
            body.update(temperature=0.0, max_tokens=self.answer_tokens)
        r = await client.post("/v1/chat/completions", json=body)
        r.raise_for_status()
        return r.json()

    async def _many(self, jobs: list[tuple[str, SimulatedUser]], label: str, rate: bool,
                    greedy: bool = False) -> list[tuple[dict, object]]:
        """Ask every (prompt, user) concurrently; with `rate`, each user rates its answer via /v1/feedback."""
        gate = asyncio.Semaphore(self.config.concurrency)
        async with httpx.AsyncClient(base_url=self.url, timeout=600) as client:
            with self.steps.bar(label, len(jobs)) as advance:
                async def one(prompt: str, user: SimulatedUser) -> tuple[dict, object]:
                    async with gate:
                        answer = await self._chat(client, prompt, user.name, greedy)
                        rating = None
                        if rate:
                            rating = user.rate(answer["choices"][0]["message"]["content"])
                            fb = {"completion_id": answer["id"], "rating": rating.rating, "user": user.name,
                                  "correction": rating.correction}
                            (await client.post("/v1/feedback", json=fb)).raise_for_status()
                    advance()
                    return answer, rating
                return await asyncio.gather(*(one(p, u) for p, u in jobs))

    def measure(self, round_no: int) -> RoundResult:
        """Production's held-out satisfaction, closed-book correctness and degenerate answers (no feedback sent)."""
        start = time.monotonic()
        jobs = [(p, self.users[i % len(self.users)]) for i, p in enumerate(self.heldout)]
        answers = [a for a, _ in asyncio.run(self._many(jobs, f"round {round_no}: held-out answers", rate=False))]
        texts = [a["choices"][0]["message"]["content"] for a in answers]
        asked = [(q.question, self.users[0]) for q in self.questions]
        replies = asyncio.run(self._many(asked, f"round {round_no}: closed-book questions", rate=False, greedy=True))
        said = [a["choices"][0]["message"]["content"] for a, _ in replies]
        served = sorted({a.get("adapter") or "?" for a in answers})
        return RoundResult(round=round_no, served=",".join(served), heldout_answers=len(texts),
                           satisfied=round(sum(map(self.check, texts)) / len(texts), 4), sample=texts[0][:200],
                           correctness=round(correctness.accuracy(said, self.questions), 4),
                           questions=len(said), degenerate=round(correctness.degenerate_share(texts), 4),
                           eval_s=round(time.monotonic() - start, 1))

    def collect(self, round_no: int) -> dict:
        """`ratings_per_round` rated answers on training prompts; returns the counts for the round's row."""
        start = time.monotonic()
        rng = random.Random(self.config.seed * 1000 + round_no)
        prompts = [rng.choice(self.train_prompts) for _ in range(self.config.ratings_per_round)]
        jobs = [(p, self.users[i % len(self.users)]) for i, p in enumerate(prompts)]
        ratings = [r for _, r in asyncio.run(self._many(jobs, f"round {round_no}: rated answers", rate=True))]
        return {"ratings": len(ratings), "ratings_up": sum(r.rating == "up" for r in ratings),
                "corrections": sum(r.correction is not None for r in ratings), "noisy": sum(r.noisy for r in ratings),
                "rated_satisfied": round(sum(r.satisfied for r in ratings) / len(ratings), 4),
                "rate_s": round(time.monotonic() - start, 1)}

    def train(self, round_no: int) -> dict:
        """One `flywheel train` run in its own process; returns run status, gate verdict and version metrics."""
        start = time.monotonic()
        cmd = [sys.executable, "-m", "flywheel", "train", "--adapter", ADAPTER, "--promotion", "auto"]
        if self.config.smoke_steps:
            cmd += ["--max-steps", str(self.config.smoke_steps)]
        log = self.work / f"train-round{round_no}.log"
        with self.steps.phase(f"round {round_no}: training (log {log})"), open(log, "w") as out:
            subprocess.run(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                           cwd=REPO, timeout=TRAIN_TIMEOUT_S, check=False)
        with httpx.Client(base_url=self.url, timeout=60) as http:
            run = http.get("/admin/training/runs", params={"adapter": ADAPTER, "limit": 1}).json()[0]
            versions = http.get(f"/admin/adapters/{ADAPTER}").json()["versions"]
        out = {"run_status": run["status"], "train_s": round(time.monotonic() - start, 1)}
        version = next((v for v in versions if v["version"] == run.get("result_version")), None)
        if version is None:
            out["gate_reasons"] = [run.get("error") or "no version registered"]
            return out
        m, gate = version["metrics"], version["metrics"].get("gate", {})
        out.update(gate_passed=m.get("gate_passed"), gate_reasons=m.get("gate_reasons", []),
                   feedback_used=m.get("feedback_count"), candidate_ppl=gate.get("candidate_ppl"),
                   production_ppl=gate.get("production_ppl"), stages=m.get("stages", []),
                   candidate_correctness=gate.get("candidate_correctness"))
        if self.base_ppl is None and gate.get("compared_with") == "production":
            self.base_ppl = self.production_ppl = gate.get("production_ppl")  # v1 is the identity: the base
        if m.get("gate_passed"):
            self.production_ppl = gate.get("candidate_ppl")
            self._wait_served(f"{ADAPTER}@{version['version']}")
        return out

    def _wait_served(self, label: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.url, timeout=120) as http:
            while time.monotonic() < deadline:
                body = {"model": ADAPTER, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
                if http.post("/v1/chat/completions", json=body).json().get("adapter") == label:
                    return
                time.sleep(0.5)
        raise TimeoutError(f"the gateway did not serve {label} within {timeout_s:.0f}s of its promotion")

    def run(self, on_round: Callable[[RoundResult], None] | None = None) -> list[RoundResult]:
        """Round 0 (base rate), then `rounds` rounds of rate -> train -> measure."""
        results = [self.measure(0)]
        if on_round:
            on_round(results[-1])
        for n in range(1, self.config.rounds + 1):
            start = time.monotonic()
            collected, trained = self.collect(n), self.train(n)
            result = self.measure(n)
            for key, value in {**collected, **trained}.items():
                setattr(result, key, value)
            if self.base_ppl and self.production_ppl:
                result.ppl_change_vs_base = round(self.production_ppl / self.base_ppl - 1, 4)
            result.wall_s = round(time.monotonic() - start, 1)
            results.append(result)
            if on_round:
                on_round(result)
        return results


def run_loop_bench(config: LoopConfig, steps: Steps, on_round: Callable[[RoundResult], None] | None = None) -> dict:
    """Start a gateway on a fresh data dir, register the identity v1 as production, run the rounds, write docs."""
    from bench.hardware import detect
    from flywheel.default_model import prepare_default_model
    from flywheel.settings import Settings

    hardware, started = detect(), time.monotonic()
    model = prepare_default_model(REPO / Settings(data_dir=REPO / "data").default_model_dir).resolve()
    work = config.work_dir or Path(tempfile.mkdtemp(prefix="flywheel-bench-loop-"))
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")},
           **gateway_env(EngineFlags(model_dir=model), port, work / "data", 0.25)}
    with steps.phase("identity adapter v1 (r=16, all projections, B=0)"):
        folder = identity_adapter(model, work / "identity")
        subprocess.run([sys.executable, "-m", "flywheel", "adapters", "register", ADAPTER, str(folder), "--alias",
                        "production"], env=env, cwd=REPO, check=True, capture_output=True)
    cmd = [sys.executable, "-m", "flywheel", "serve", "--no-trainer"]
    steps.note("gateway starting (about a minute)")
    with running("gateway", cmd, env, "/ready", port, work / "gateway.log") as gateway:
        bench = LoopBench(config, gateway.url, env, work, steps)

        def checkpoint(result: RoundResult) -> None:
            # rewrite the docs after every round: a run killed in round 3 still leaves rounds 0-2
            done.append(result)
            write_report(config, hardware, done, bench.base_ppl, round(time.monotonic() - started, 1), work)
            if on_round:
                on_round(result)

        done: list[RoundResult] = []
        bench.run(checkpoint)
    return write_report(config, hardware, done, bench.base_ppl, round(time.monotonic() - started, 1), work)


def loop(
    preference: str = typer.Option("answer_prefix", help=f"Hidden preference: {', '.join(PREFERENCES)}."),
    rounds: int = typer.Option(3, min=1, help="Rounds of rate -> train -> measure."),
    ratings_per_round: int = typer.Option(300, min=1, help="Rated answers on training prompts per round."),
    noise: float = typer.Option(0.0, min=0, max=1, help="Share of ratings flipped."),
    corrections: float = typer.Option(0.5, min=0, max=1, help="Share of down ratings that carry a correction."),
    policy: str = typer.Option("auto", help="Promotion policy; only 'auto' (promote on a passed gate) for now."),
    heldout: int = typer.Option(None, min=1, help="Held-out prompts measured per round (default: all 86)."),
    questions: int = typer.Option(None, min=1, help="Closed-book questions asked per round (default: the gate's "
                                                    "whole set)."),
    seed: int = typer.Option(0, help="Seed of the simulated users and of the training prompts they are asked."),
    quick: bool = typer.Option(False, help="Smoke run, not the recipe: 1 round, 40 ratings, 16 held-out prompts, "
                                           "24 questions, 2 training steps; written to the work dir only."),
    out: Path = typer.Option(None, help="Where bench_loop.json/.md/.png go (default: docs/, or the work dir "
                                        "with --quick)."),
    work_dir: Path = typer.Option(None, help="Keep the gateway's data, logs and train logs here (default: temp)."),
) -> None:
    """Simulated users with a hidden preference rate answers; the trainer learns; held-out satisfaction per round.

    Training runs on the trainer's defaults (FLYWHEEL_TRAIN_* and FLYWHEEL_GATE_* as `make serve` has them):
    the benchmark measures the shipped recipe, so it has no recipe flags.
    """
    import logging

    from rich.console import Console
    from rich.table import Table

    console = Console()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if policy != "auto":
        raise typer.BadParameter("only 'auto' is supported: canary needs the watcher's canary review", "--policy")
    smoke_steps = None
    if quick:
        rounds, ratings_per_round, heldout, questions, smoke_steps = 1, 40, heldout or 16, questions or 24, 2
        work_dir = work_dir or Path(tempfile.mkdtemp(prefix="flywheel-bench-loop-quick-"))
        out = work_dir
    try:
        config = LoopConfig(preference=preference, rounds=rounds, ratings_per_round=ratings_per_round, noise=noise,
                            corrections=corrections, heldout=heldout, questions=questions, seed=seed,
                            smoke_steps=smoke_steps, out_dir=out or REPO / "docs", work_dir=work_dir)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None

    def show(result: RoundResult) -> None:
        console.log(f"round {result.round}: held-out satisfied {result.satisfied:.1%}, closed-book correct "
                    f"{result.correctness:.1%} on {result.served}"
                    + (f"; run {result.run_status}" if result.run_status else ""))

    report = run_loop_bench(config, Steps(console), show)
    keep = [HEADERS.index(h) for h in ("round", "served", "held-out satisfied", "correct", "ratings", "run",
                                       "production ppl vs base", "round wall s")]  # the markdown has them all
    table = Table(*(HEADERS[i] for i in keep), title=f"loop benchmark: {preference}, noise {noise:.0%}")
    for row in table_rows([RoundResult(**r) for r in report["rounds"]]):
        table.add_row(*(str(row[i]) if row[i] is not None else "-" for i in keep))
    console.print(table)
    t = report["targets"]
    console.print(f"target >= {t['threshold']:.0%} within 3 rounds; in every round correctness >= base - 2 "
                  "points and ppl <= +10%: " + ("[green]met[/green]" if t["met"] else "[red]not met[/red]")
                  + f" (best {t['best']}, worst round {t['worst_round']})")
    console.print("written: " + ", ".join(report["files"]))
