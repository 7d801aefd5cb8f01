"""Feedback ingestion into the store itself, on SQLite and on PostgreSQL in one run (no HTTP, no engine).

`python -m bench.store_ingest --database-url postgresql://...` records completions, then submits ratings
through `FeedbackStore.add_feedback_async` from one event loop with `inflight` waiting at a time (as the
gateway's handler does), first into an SQLite file, then into the PostgreSQL database, and writes
docs/bench_store_ingest.md. It isolates the store: the gateway-level run beside chat is
`flywheel bench feedback` (docs/bench_feedback.md), which uses the SQLite default.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from feedback.records import CompletionRecord
from feedback.store import FeedbackStore
from flywheel.location import Location, describe, is_url

DOCS = Path(__file__).resolve().parent.parent / "docs"


@dataclass
class IngestResult:
    """One store's run."""

    store: str
    submissions: int
    inflight: int
    per_s: float
    p50_ms: float
    p99_ms: float
    commits: int
    errors: int


def _completion(i: int) -> CompletionRecord:
    return CompletionRecord(
        id=f"chatcmpl-bench-{i}", adapter="bot", adapter_version=1, model="base",
        messages=[{"role": "user", "content": f"question {i}"}], params={},
        choices=[{"index": 0, "text": f"answer {i}", "finish_reason": "stop"}],
        prompt_tokens=5, completion_tokens=5, latency_ms=1.0, user=None, created_at=time.time(),
    )  # fmt: skip


async def _submit(store: FeedbackStore, ids: list[str], submissions: int, inflight: int) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    tickets = iter(range(submissions))

    async def worker() -> None:
        nonlocal errors
        for i in tickets:
            started = time.perf_counter()
            try:
                await store.add_feedback_async(ids[i % len(ids)], "up" if i % 3 else "down", user=f"u{i}",
                                               feedback_id=f"fb-{i}")
            except Exception:  # counted, the run goes on
                errors += 1
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(inflight)))
    return latencies, errors


def measure(location: Location, submissions: int = 5000, inflight: int = 64, completions: int = 500) -> IngestResult:
    """Ratings per second and latency percentiles of one store (its database should start empty)."""
    with FeedbackStore(location) as store:
        records = [_completion(i) for i in range(completions)]
        for rec in records:
            store.record_completion(rec)
        store.flush()
        commits_before = store.writer.batches_committed
        started = time.perf_counter()
        latencies, errors = asyncio.run(_submit(store, [r.id for r in records], submissions, inflight))
        elapsed = time.perf_counter() - started
        commits = store.writer.batches_committed - commits_before
    ordered = sorted(latencies)
    return IngestResult(
        store="PostgreSQL" if is_url(location) else "SQLite", submissions=submissions, inflight=inflight,
        per_s=submissions / elapsed, p50_ms=ordered[len(ordered) // 2] * 1000,
        p99_ms=ordered[int(len(ordered) * 0.99)] * 1000, commits=commits, errors=errors,
    )  # fmt: skip


WHY = (
    "Why PostgreSQL is slower here: each rating is four statements (the idempotency lookup, the completion\n"
    "check, the per-user replacement, the insert) inside a savepoint, and on PostgreSQL each of those six\n"
    "is a round trip to another process; SQLite runs them as calls inside the writer's own thread.\n"
    "Replicas' batches queue on one advisory lock, as processes queue on one SQLite file, so more replicas\n"
    "do not raise this ceiling; fewer round trips per rating (psycopg's pipeline mode, or one statement per\n"
    "rating) would. On a machine whose cores other work shares, the PostgreSQL numbers move a lot between\n"
    "runs: the load average is printed with them.\n"
)


def markdown(results: list[IngestResult], url: str, load: tuple[float, float, float]) -> str:
    rows = "\n".join(f"| {r.store} | {r.submissions} | {r.inflight} | {r.per_s:,.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f}"
                     f" | {r.commits} | {r.errors} |" for r in results)
    return (
        "# Feedback ingestion into the store: SQLite and PostgreSQL\n\n"
        "Written by `python -m bench.store_ingest` (bench/store_ingest.py): ratings submitted through\n"
        "`FeedbackStore.add_feedback_async` from one event loop, `inflight` waiting at a time, each one\n"
        "acknowledged only after its group commit. No HTTP and no engine: this is the store's own ceiling.\n"
        f"PostgreSQL: `{describe(url)}`, on the same machine (default settings: fsync on, synchronous commit).\n"
        f"Load average when the run started: {load[0]:.2f} (1 min), {load[1]:.2f} (5 min)"
        f" on {os.cpu_count()} cores.\n\n"
        "| store | ratings | in flight | per s | p50 ms | p99 ms | commits | errors |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- |\n"
        f"{rows}\n\n{WHY}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="An empty PostgreSQL database to measure.")
    parser.add_argument("--submissions", type=int, default=5000)
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--out", type=Path, default=DOCS)
    args = parser.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(Path(tmp) / "feedback.db", args.submissions, args.inflight),
                   measure(args.database_url, args.submissions, args.inflight)]
    (args.out / "bench_store_ingest.json").write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    page = markdown(results, args.database_url, load)
    (args.out / "bench_store_ingest.md").write_text(page)
    print(page)  # noqa: T201 - a CLI's output


if __name__ == "__main__":
    main()
