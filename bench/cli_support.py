"""What the benchmark commands share: the engine flags, the console, its result tables and quiet logs.

`bench/cli.py` and the benchmarks mounted from their own modules (`bench/replicas.py`) import it.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.servers import REPO, EngineFlags

console = Console()


def engine_flags(model: Path | None, max_model_len: int, kv_cache_gib: int, max_num_seqs: int) -> EngineFlags:
    """Engine flags for both servers; the default model is prepared (once) when no model is given."""
    from flywheel.default_model import prepare_default_model
    from flywheel.settings import Settings

    if model is None:
        model = prepare_default_model(Settings(data_dir=REPO / "data").default_model_dir)
    return EngineFlags(model_dir=model.resolve(), max_model_len=max_model_len, kv_cache_gib=kv_cache_gib,
                       max_num_seqs=max_num_seqs)


def print_table(title: str, headers: list[str], rows: list[list[object]]) -> None:
    """Print one result table, each cell formatted as the benchmark pages format it."""
    from bench.report import fmt

    table = Table(*headers, title=title)
    for row in rows:
        table.add_row(*(fmt(cell) for cell in row))
    console.print(table)


def quiet_logs() -> None:
    """Keep the console for progress and results: no per-request log line from httpx."""
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("adapters").setLevel(logging.WARNING)
