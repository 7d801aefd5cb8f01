"""What a user watching a benchmark sees: one line per phase and a bar per load run (rich)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


class Steps:
    """Reports benchmark phases to a console; `Steps(None)` stays silent (for tests and library use)."""

    def __init__(self, console: Console | None):
        self.console = console

    def note(self, text: str) -> None:
        """One log line."""
        if self.console:
            self.console.log(text)

    @contextmanager
    def phase(self, text: str) -> Iterator[None]:
        """A spinner while a slow step (a server starting) runs, then a line saying how long it took."""
        start = time.perf_counter()
        if self.console is None:
            yield
            return
        with self.console.status(text):
            yield
        self.console.log(f"{text} [dim]({time.perf_counter() - start:.1f}s)[/dim]")

    @contextmanager
    def bar(self, text: str, total: int) -> Iterator[Callable[..., None]]:
        """A progress bar of `total` items; yields a callback that advances it by one."""
        if self.console is None:
            yield lambda *_: None
            return
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        with Progress(*columns, console=self.console, transient=True) as progress:
            task = progress.add_task(text, total=total)
            yield lambda *_: progress.advance(task)
        self.console.log(f"{text}: done")
