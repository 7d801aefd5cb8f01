"""`flywheel feedback ...`: export training sets and show feedback stats from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from feedback.export import ExportOptions, build_training_set, write_jsonl
from feedback.stats import version_stats
from feedback.store import FeedbackStore
from flywheel import database
from flywheel.cli_support import load_settings
from flywheel.database_errors import database_errors
from flywheel.location import describe

app = typer.Typer(help="Feedback log: export training sets and show ratings per adapter version.")

DbOption = Annotated[
    Path | None,
    typer.Option(
        "--db", help="Feedback SQLite database (default: the gateway's FLYWHEEL_DATA_DIR/feedback.db)."
    ),
]


def _open(db: Path | None) -> FeedbackStore:
    """Open an existing store; a missing file is a usage error, not a new empty database."""
    db = db or load_settings().feedback_db  # an entry point: settings are built here (or FLYWHEEL_DATABASE_URL)
    try:
        if not database.exists(db, "feedback"):
            raise typer.BadParameter(f"no feedback database at {describe(db)}", param_hint="--db")
        return FeedbackStore(db)
    except database_errors() as exc:
        raise typer.BadParameter(f"{db} is not a usable feedback database: {exc}", param_hint="--db") from exc


@app.command()
def export(
    adapter: Annotated[
        str, typer.Option("--adapter", help="Adapter name; feedback on all its versions is used.")
    ],
    kind: Annotated[
        str,
        typer.Option(
            "--kind", help="sft: up-rated answers and corrections; dpo: preference pairs; kto: thumbs."
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write the train split here as JSONL (default: ADAPTER-KIND.jsonl)."),
    ] = None,
    held_out_out: Annotated[
        Path | None, typer.Option("--held-out-out", help="Also write the held-out split here as JSONL.")
    ] = None,
    since: Annotated[
        float | None, typer.Option("--since", help="Only feedback created at or after this Unix time.")
    ] = None,
    held_out_fraction: Annotated[
        float,
        typer.Option("--held-out-fraction", help="Share of prompts held out for evaluation, in [0, 1)."),
    ] = 0.1,
    per_user_cap: Annotated[
        int | None, typer.Option("--per-user-cap", help="At most this many ratings/pairs from one user.")
    ] = None,
    conflict_policy: Annotated[
        str,
        typer.Option("--conflicts", help="Conflicting ratings: 'majority' keeps the majority, 'drop' drops."),
    ] = "majority",
    correction_weight: Annotated[
        int,
        typer.Option("--correction-weight", help="SFT: each correction counts this many times (thumbs once)."),
    ] = ExportOptions.correction_weight,
    db: DbOption = None,
) -> None:
    """Build a training set for ADAPTER and write it as JSONL in TRL's conversational format."""
    if kind not in ("sft", "dpo", "kto"):
        raise typer.BadParameter("use sft, dpo or kto", param_hint="--kind")
    try:
        options = ExportOptions(
            held_out_fraction=held_out_fraction,
            per_user_cap=per_user_cap,
            conflict_policy=conflict_policy,
            correction_weight=correction_weight,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    console = Console()  # made per call, so it sizes itself to the terminal it is printing to
    with _open(db) as store:
        training_set = build_training_set(store, adapter, kind, options, since=since)
    out = out or Path(f"{adapter}-{kind}.jsonl")
    n_train = write_jsonl(training_set, out)
    console.print(f"wrote {n_train} {kind} rows to {out}")
    if held_out_out is not None:
        n_held = write_jsonl(training_set, held_out_out, split="held_out")
        console.print(f"wrote {n_held} held-out rows to {held_out_out}")
    _print_report(console, training_set.report, training_set.dataset_hash)


def _print_report(console: Console, report: dict, dataset_hash: str) -> None:
    table = Table(title="export report", show_header=False)
    for key in ("raw", "raw_prompt_dropped", "tool_turns_dropped", "capped", "conflicts_dropped", "examples",
                "too_short_dropped", "too_long_dropped"):
        table.add_row(key, str(report[key]))
    for key in ("duplicates_dropped", "scrubbed", "replay", "held_out", "train"):
        table.add_row(key, str(report[key]))
    table.add_row("dataset_hash", dataset_hash)
    console.print(table)


@app.command()
def stats(
    adapter: Annotated[
        str | None, typer.Option("--adapter", help="Only this adapter (default: all).")
    ] = None,
    by_day: Annotated[
        bool, typer.Option("--by-day", help="One row per UTC day instead of all time.")
    ] = False,
    db: DbOption = None,
) -> None:
    """Completions, ratings, up-rate, corrections and pairs per adapter version."""
    with _open(db) as store:
        rows = version_stats(store, adapter, by_day=by_day)
    table = Table(title="feedback per adapter version")
    columns = ["adapter", "version"] + (["day"] if by_day else [])
    for name in [*columns, "completions", "up", "down", "up-rate", "corrections", "pairs"]:
        table.add_column(name, justify="left" if name in ("adapter", "day") else "right")
    for s in rows:
        cells = [s.adapter or "(base)", "-" if s.adapter_version is None else str(s.adapter_version)]
        cells += [s.day or ""] if by_day else []
        rate = "-" if s.up_rate is None else f"{s.up_rate:.0%}"
        cells += [str(s.completions), str(s.up), str(s.down), rate, str(s.corrections), str(s.pairs)]
        table.add_row(*cells)
    Console().print(table)
