"""The `flywheel` command line: serve, prepare the model, operate adapters, feedback and training.

Settings are built here, once per command, from FLYWHEEL_* environment variables and `.env`.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from adapters.names import CANDIDATE, PRODUCTION  # a few constants: `flywheel --help` stays fast
from bench.cli import app as bench_app
from feedback.cli import app as feedback_app
from flywheel.cli_support import fail, load_settings, when
from flywheel.settings import Settings
from trainer.cli import app as train_app

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
console = Console()
app = typer.Typer(help="Flywheel: an OpenAI-compatible LoRA gateway on vLLM that learns from feedback.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
model_app = typer.Typer(help="Prepare or inspect the base model.", no_args_is_help=True)
adapters_app = typer.Typer(help="Register, inspect, promote and roll back adapter versions.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(adapters_app, name="adapters")


def _registry(settings: Settings):
    from adapters.base_model import BaseModelInfo
    from adapters.files import adapter_files
    from adapters.registry import Registry
    from flywheel.default_model import ModelUnavailable, check_model_dir

    try:
        base = BaseModelInfo.from_dir(check_model_dir(settings.resolved_model_path))
    except (ModelUnavailable, FileNotFoundError, ValueError) as e:
        fail(str(e))
    return Registry(settings.registry_db, settings.adapters_dir, base, settings.max_lora_rank,
                    files=adapter_files(settings))


# ---- model ------------------------------------------------------------------------------------
@model_app.command("prepare")
def model_prepare(force: bool = typer.Option(False, help="Rebuild even if the model directory exists.")) -> None:
    """Turn the shipped SmolLM2-135M-Instruct GGUF into a safetensors directory under the data dir (once)."""
    from flywheel.default_model import ModelUnavailable, prepare_default_model

    settings = load_settings()
    if settings.model_path is not None:
        console.print(f"FLYWHEEL_MODEL_PATH is set ({settings.model_path}); nothing to prepare.")
        return
    try:
        path = prepare_default_model(settings.default_model_dir, force=force)
    except ModelUnavailable as e:
        fail(str(e))
    console.print(f"default model ready at [bold]{path}[/bold]")


# ---- serve ------------------------------------------------------------------------------------
@app.command()
def serve(
    host: str = typer.Option(None, help="Bind address (default FLYWHEEL_HOST, 127.0.0.1)."),
    port: int = typer.Option(None, help="Port (default FLYWHEEL_PORT, 8000)."),
    trainer: bool = typer.Option(True, help="Also start the trainer watcher in its own process."),
) -> None:
    """Start the gateway (vLLM engine + OpenAI-compatible API) and, by default, the trainer watcher."""
    import uvicorn

    from flywheel.default_model import ModelUnavailable, check_model_dir, prepare_default_model
    from server.app import create_app

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = load_settings(**overrides)
    try:
        settings.check_bind()
        if settings.model_path is None:
            prepare_default_model(settings.default_model_dir)
        check_model_dir(settings.resolved_model_path)
    except (ValueError, ModelUnavailable) as e:
        fail(str(e))
    watcher = None
    if trainer:
        watcher = subprocess.Popen([sys.executable, "-m", "flywheel", "train", "--watch"], preexec_fn=_die_with_parent)
    app = create_app(settings)
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=settings.access_log)
    finally:
        if watcher is not None:
            watcher.terminate()
            watcher.wait(timeout=30)
    if app.state.flywheel.engine_died:  # non-zero, so that a supervisor restarts the gateway
        fail(app.state.flywheel.startup_error)


def _die_with_parent() -> None:
    """In the watcher, before exec: ask Linux for SIGTERM when the gateway dies, however it dies.

    uvicorn re-raises the SIGTERM it caught once it has shut down, so a `finally` in `serve` never runs.
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the `finally` below is the only cleanup
        pass


# ---- adapters ---------------------------------------------------------------------------------
@adapters_app.command("list")
def adapters_list() -> None:
    """Every adapter with its aliases and latest version."""
    registry = _registry(load_settings())
    table = Table("adapter", PRODUCTION, CANDIDATE, "other aliases", "versions", "latest")
    for name in registry.adapters():
        aliases = {alias: v for (_, alias), v in registry.aliases(name).items()}
        versions = registry.versions(name)
        others = ", ".join(f"{a}=v{v}" for a, v in aliases.items() if a not in (PRODUCTION, CANDIDATE))
        table.add_row(name, _v(aliases.get(PRODUCTION)), _v(aliases.get(CANDIDATE)), others or "-",
                      str(len(versions)), f"v{versions[-1].version} ({versions[-1].status})")
    console.print(table)


def _v(version: int | None) -> str:
    return f"v{version}" if version else "-"


@adapters_app.command("show")
def adapters_show(name: str = typer.Argument(..., help="Adapter name.")) -> None:
    """Every version of one adapter: rank, source, status, metrics, aliases."""
    registry = _registry(load_settings())
    with _registry_errors():
        versions = registry.versions(name)
        aliases = registry.aliases(name)
    table = Table("version", "aliases", "status", "source", "parent", "rank", "created", "sha256", "metrics")
    for v in versions:
        held = ", ".join(a for (_, a), n in aliases.items() if n == v.version)
        metrics = ", ".join(f"{k}={val:.3g}" if isinstance(val, float) else f"{k}={val}"
                            for k, val in v.metrics.items() if not isinstance(val, list | dict))
        status = f"{v.status}: {v.status_reason}" if v.status_reason else v.status  # why a version is broken
        table.add_row(f"v{v.version}", held or "-", status, v.source, _v(v.parent_version), str(v.rank),
                      when(v.created_at), v.sha256[:12], metrics[:80] or "-")
    console.print(table)


@adapters_app.command("register")
def adapters_register(
    name: str = typer.Argument(..., help="Adapter name (letters, digits, '-', '_')."),
    path: Path = typer.Argument(..., help="Folder with adapter_config.json and adapter_model.safetensors."),
    alias: str = typer.Option(None, help="Point this alias (e.g. production) at the new version."),
) -> None:
    """Validate a PEFT LoRA folder and register it as the adapter's next immutable version."""
    registry = _registry(load_settings())
    with _registry_errors():
        version = registry.register(name, path, actor="cli", alias=alias)
    console.print(f"registered [bold]{version.lora_name}[/bold] (rank {version.rank}, sha256 {version.sha256[:12]})")


@adapters_app.command("promote")
def adapters_promote(
    name: str = typer.Argument(..., help="Adapter name."),
    version: int = typer.Option(None, "--version", "-v", help="Version to promote (default: the candidate)."),
    reason: str = typer.Option("", help="Why; recorded in the history."),
) -> None:
    """Make a version the production version; a running gateway serves it within seconds."""
    registry = _registry(load_settings())
    with _registry_errors():
        event = registry.promote(name, version, actor="cli", reason=reason)
    console.print(f"{name}: production v{event.from_version} -> v{event.to_version}")


@adapters_app.command("rollback")
def adapters_rollback(
    name: str = typer.Argument(..., help="Adapter name."),
    to: int = typer.Option(None, "--to", help="Version to return to (default: the one held before)."),
    alias: str = typer.Option(PRODUCTION.value, help="Alias to roll back."),
    reason: str = typer.Option("", help="Why; recorded in the history."),
) -> None:
    """Return production (or another alias) to its previous version, or to --to N."""
    registry = _registry(load_settings())
    with _registry_errors():
        event = registry.rollback(name, to, alias=alias, actor="cli", reason=reason)
    console.print(f"{name}: {alias} v{event.from_version} -> v{event.to_version}")


@adapters_app.command("alias")
def adapters_alias(
    name: str = typer.Argument(..., help="Adapter name."),
    alias: str = typer.Argument(..., help="Alias to move (e.g. candidate, beta)."),
    version: int = typer.Argument(..., help="Version it should point to."),
    reason: str = typer.Option("", help="Why; recorded in the history."),
) -> None:
    """Point any alias at a version."""
    registry = _registry(load_settings())
    with _registry_errors():
        event = registry.set_alias(name, alias, version, actor="cli", reason=reason)
    console.print(f"{name}: {alias} {_v(event.from_version)} -> v{event.to_version}")


@adapters_app.command("history")
def adapters_history(name: str = typer.Argument(..., help="Adapter name.")) -> None:
    """Every alias move of an adapter: when, who, from, to, why."""
    registry = _registry(load_settings())
    with _registry_errors():
        registry.versions(name)
        events = registry.history(name)
    table = Table("when", "alias", "from", "to", "who", "why")
    for e in events:
        table.add_row(when(e.at), e.alias, _v(e.from_version), _v(e.to_version), e.actor, e.reason)
    console.print(table)


@contextmanager
def _registry_errors() -> Iterator[None]:
    """Print registry errors as one clear line (with every validation problem) and exit 1."""
    from adapters.errors import InvalidAdapter, RegistryError

    try:
        yield
    except InvalidAdapter as e:
        console.print("[red]error:[/red] adapter rejected, nothing was registered:")
        for problem in e.problems:
            console.print(f"  - {problem}")
        raise typer.Exit(1) from None
    except RegistryError as e:
        fail(str(e))


# The other packages' commands, mounted like `model` and `adapters`: every one of them ships in the same
# distribution, so a sub-command that fails to import is a bug to see at once, not a command that quietly goes.
app.add_typer(feedback_app, name="feedback", help="Export training sets from feedback and show rating statistics.")
app.add_typer(train_app, name="train", help="Train new adapter versions from feedback (once, or --watch).")
app.add_typer(bench_app, name="bench", help="Benchmarks: the gateway against vLLM's own server, feedback ingestion.")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app()
