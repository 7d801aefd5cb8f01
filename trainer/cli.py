"""`flywheel train`: run once (`--adapter NAME`), keep watching (`--watch`), or list runs (`runs`).

`run_once`, `watch` and `list_runs` take a `Settings` built once at the entry point; the typer commands
only build it and translate errors into one red line. Heavy imports (torch, TRL) wait until a run starts,
so `flywheel --help` stays fast.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from flywheel.cli_support import fail, load_settings, when
from flywheel.settings import Settings

if TYPE_CHECKING:
    from adapters.runs import Run
    from trainer.config import TrainerSettings

logger = logging.getLogger(__name__)
console = Console()
app = typer.Typer(
    help="Train new adapter versions from feedback: once (--adapter NAME), continuously (--watch), "
    "or list runs (`runs`).",
    pretty_exceptions_enable=False,
)


class TrainerError(Exception):
    """A problem the operator can fix (unknown adapter, missing model); shown without a traceback."""


def trainer_settings(settings: Settings, **overrides: object) -> TrainerSettings:
    """The trainer's paths and policies from the global Settings; `overrides` replace TrainConfig fields."""
    from adapters.files import adapter_files
    from flywheel.default_model import ModelUnavailable, check_model_dir
    from trainer.config import GateConfig, LoraRecipe, PromotionPolicy, TrainConfig, TrainerSettings, TriggerPolicy

    try:
        model_path = check_model_dir(settings.resolved_model_path)
    except ModelUnavailable as e:
        raise TrainerError(str(e)) from None
    promotion = overrides.pop("promotion", None)
    return TrainerSettings(
        model_path=model_path,
        registry_db=settings.registry_db,
        adapters_dir=settings.adapters_dir,
        feedback_db=settings.feedback_db,
        runs_db=settings.trainer_db,
        work_dir=settings.data_dir / "work",  # on the data volume, where the next run clears what a killed one left
        cache_dir=settings.data_dir / "cache",
        max_lora_rank=settings.max_lora_rank,
        adapter_files=adapter_files(settings),
        lora=settings.recipe(LoraRecipe),
        train=settings.recipe(TrainConfig, **overrides),
        gate=settings.recipe(GateConfig),
        promotion=settings.recipe(PromotionPolicy, mode=promotion),
        trigger=settings.recipe(TriggerPolicy),
    )


def run_once(settings: Settings, adapter: str, **overrides: object) -> Run:
    """Train one new version of `adapter` now; returns the finished run. Raises TrainerError, LockBusy."""
    from adapters.names import check_name
    from trainer.dataset import adapters_with_feedback
    from trainer.job import run_job

    check_name(adapter)
    config = trainer_settings(settings, **overrides)
    if adapter not in config.registry().adapters() and adapter not in adapters_with_feedback(config.feedback_db):
        raise TrainerError(f"adapter {adapter!r} is neither registered nor has any feedback")
    return run_job(config, adapter)


def watch(settings: Settings, poll_seconds: float | None = None, **overrides: object) -> None:
    """Watch every adapter and train when its trigger policy fires (checking every FLYWHEEL_TRAIN_POLL_SECONDS
    unless `poll_seconds` says otherwise), until SIGTERM/SIGINT."""
    from trainer.watcher import Watcher

    Watcher(trainer_settings(settings, **overrides), poll_seconds).run_forever()


def list_runs(settings: Settings, adapter: str | None = None, limit: int = 20) -> list[Run]:
    """The newest runs, for one adapter or all."""
    from adapters.runs import RunStore

    return RunStore(settings.trainer_db).list(adapter, limit)


def next_runs(settings: Settings, adapters: list[str]) -> dict[str, str]:
    """What the watcher will do next for each adapter, and why."""
    from adapters.runs import RunStore
    from trainer.config import TriggerPolicy
    from trainer.watcher import assess, feedback_counter

    store, policy = RunStore(settings.trainer_db), settings.recipe(TriggerPolicy)
    count = feedback_counter(settings.feedback_db)
    queued, now, plans = set(store.queued_adapters()), time.time(), {}
    for adapter in adapters:
        holder = store.lock_holder(adapter)
        if holder is not None:
            plans[adapter] = f"run {holder['run_id']} is in progress"
        elif adapter in queued:
            plans[adapter] = "a run was requested: the watcher starts it at its next poll"
        else:
            decision = assess(policy, store, count, adapter, now)
            plans[adapter] = f"due at the watcher's next poll ({decision.reason})" if decision.run else decision.reason
    return plans


def _runs_table(runs: list[Run]) -> Table:
    from adapters.runs import RunStatus

    table = Table(title="training runs")
    for column in ("id", "adapter", "status", "stage", "step", "loss", "version", "started", "finished", "error"):
        table.add_column(column)
    colours = {RunStatus.SUCCEEDED: "green", RunStatus.FAILED: "red", RunStatus.REJECTED: "yellow",
               RunStatus.RUNNING: "cyan"}
    for r in runs:
        table.add_row(
            str(r.id), r.adapter, f"[{colours.get(r.status, 'white')}]{r.status}[/]", r.stage or "-",
            f"{r.step}/{r.total_steps}" if r.total_steps else str(r.step),
            f"{r.loss:.4f}" if r.loss is not None else "-",
            str(r.result_version or "-"), when(r.started_at), when(r.finished_at), (r.error or "")[:80],
        )  # fmt: skip
    return table


@app.callback(invoke_without_command=True)
def train(
    ctx: typer.Context,
    adapter: Annotated[str | None, typer.Option("--adapter", help="Train this adapter once, now.")] = None,
    watch_: Annotated[
        bool, typer.Option("--watch", help="Keep running: train each adapter when its trigger policy fires.")
    ] = False,
    poll_seconds: Annotated[
        float | None,
        typer.Option("--poll-seconds", help="--watch: seconds between checks (FLYWHEEL_TRAIN_POLL_SECONDS)."),
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Stop each stage after this many steps (default: epochs).")
    ] = None,
    epochs: Annotated[float | None, typer.Option("--epochs", help="Passes over each stage's data.")] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", help="CPU threads for training (default: all cores but one).")
    ] = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Start from a new LoRA instead of the production version's weights.")
    ] = False,
    promotion: Annotated[
        str | None, typer.Option("--promotion", help="manual (default), auto (promote on a passed gate) or canary.")
    ] = None,
) -> None:
    """Run once with --adapter NAME, or keep watching with --watch."""
    if ctx.invoked_subcommand is not None:
        return
    if bool(adapter) == watch_:
        console.print(ctx.get_help())
        fail("give exactly one of --adapter NAME or --watch")
    overrides = {"max_steps": max_steps, "epochs": epochs, "num_threads": threads, "promotion": promotion}
    if fresh:
        overrides["continue_from_production"] = False
    settings = load_settings()
    _dispatch(settings, adapter, poll_seconds, overrides)


def _dispatch(settings: Settings, adapter: str | None, poll_seconds: float | None, overrides: dict) -> None:
    from adapters.errors import RegistryError
    from adapters.runs import LockBusy, RunStatus

    try:
        if adapter is None:
            watch(settings, poll_seconds, **overrides)
            return
        run = run_once(settings, adapter, **overrides)
    except (TrainerError, LockBusy, RegistryError, ValueError) as e:
        fail(str(e))
    console.print(_runs_table([run]))
    if run.status == RunStatus.FAILED:
        raise typer.Exit(1)


@app.command("runs")
def runs(
    adapter: Annotated[str | None, typer.Option("--adapter", help="Only this adapter's runs.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many of the newest runs to show.")] = 20,
) -> None:
    """Show training runs (status, stage, step, loss, resulting version, error) and when each adapter trains next."""
    settings = load_settings()
    found = list_runs(settings, adapter, limit)
    if not found:
        console.print("no training runs yet")
        return
    console.print(_runs_table(found))
    for name, plan in next_runs(settings, sorted({r.adapter for r in found})).items():
        console.print(f"next for {name}: {plan}", markup=False, highlight=False)
