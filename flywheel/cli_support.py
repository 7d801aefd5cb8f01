"""What the three command lines share: Settings built at the entry point, and an operator's error as one red line.

`flywheel/cli.py`, `feedback/cli.py` and `trainer/cli.py` import it; it sits in the foundation
(docs/architecture.md, "Package dependencies") and imports nothing of the project but `flywheel.settings`.
"""

from __future__ import annotations

from datetime import datetime
from typing import NoReturn

import typer
from rich.console import Console

from flywheel.settings import Settings


def fail(message: str) -> NoReturn:
    """Print `error: MESSAGE` in red and end the command with exit status 1."""
    Console().print(f"[red]error:[/red] {message}")  # made per call: it sizes itself to the terminal of the moment
    raise typer.Exit(1)


def load_settings(**overrides: object) -> Settings:
    """Settings from FLYWHEEL_* variables and `.env` (and `overrides`); invalid ones fail with pydantic's message."""
    try:
        return Settings(**overrides)
    except ValueError as e:  # pydantic's ValidationError: its message names the FLYWHEEL_ variable
        fail(f"invalid settings: {e}")


def when(ts: float | None) -> str:
    """A Unix time as local `YYYY-MM-DD HH:MM:SS` for a table cell; `-` when there is none."""
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"
