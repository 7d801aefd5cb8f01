"""Paged, read-only views of the registry and runs databases, for browsing (the operator console).

The registry's own reads return whole lists (every adapter, every version), which is right for
serving and wrong for a page that must stay quick with 100 adapters and 1,000 versions. These
queries page and search in SQL instead. Each call opens its own read-only connection
(`Database(read_only=True)`: SQLite `mode=ro`, PostgreSQL a READ ONLY transaction): nothing here can
write, and a reader never waits for a writer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from adapters.runs import Run
from adapters.version import AdapterVersion, AliasEvent
from flywheel.database import Database, exists
from flywheel.location import Location


@dataclass(frozen=True)
class Page:
    """One page of rows and the total they were cut from."""

    items: list
    total: int
    offset: int
    limit: int

    @property
    def has_next(self) -> bool:
        return self.offset + self.limit < self.total


@dataclass(frozen=True)
class AdapterSummary:
    """One adapter as a list row: how many versions, the newest, and its aliases."""

    name: str
    versions: int
    latest: int
    updated_at: float
    aliases: dict[str, int] = field(default_factory=dict)


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class Catalog:
    """Search and page adapters, versions, alias moves and training runs."""

    def __init__(self, registry_db: Location, trainer_db: Location, adapters_dir: Path):
        self.registry_db = registry_db
        self.trainer_db = trainer_db
        self.adapters_dir = Path(adapters_dir)
        self._registry = Database(registry_db, read_only=True, busy_timeout=5)
        self._runs = Database(trainer_db, read_only=True, busy_timeout=5)
        self._like = self._registry.dialect.like

    def adapters(self, search: str = "", offset: int = 0, limit: int = 25) -> Page:
        """Adapters whose name contains `search`, by name."""
        where, args = f"WHERE adapter {self._like} ? ESCAPE '\\'", [_like(search)]
        with self._registry.read_only() as conn:
            (total,) = conn.execute(f"SELECT COUNT(DISTINCT adapter) FROM versions {where}", args).fetchone()
            rows = conn.execute(
                f"SELECT adapter, COUNT(*), MAX(version), MAX(created_at) FROM versions {where}"
                " GROUP BY adapter ORDER BY adapter LIMIT ? OFFSET ?", [*args, limit, offset],
            ).fetchall()
            names = [r[0] for r in rows]
            aliases: dict[str, dict[str, int]] = {n: {} for n in names}
            if names:
                marks = ",".join("?" * len(names))
                for a, alias, v in conn.execute(
                    f"SELECT adapter, alias, version FROM aliases WHERE adapter IN ({marks}) ORDER BY alias", names
                ).fetchall():
                    aliases[a][alias] = v
        items = [AdapterSummary(r[0], r[1], r[2], r[3], aliases[r[0]]) for r in rows]
        return Page(items, total, offset, limit)

    def versions(self, adapter: str, offset: int = 0, limit: int = 25) -> Page:
        """An adapter's versions, newest first."""
        with self._registry.read_only() as conn:
            (total,) = conn.execute("SELECT COUNT(*) FROM versions WHERE adapter = ?", [adapter]).fetchone()
            rows = conn.query(
                "SELECT * FROM versions WHERE adapter = ? ORDER BY version DESC LIMIT ? OFFSET ?",
                [adapter, limit, offset],
            )
        return Page([AdapterVersion.from_row(r, self.adapters_dir) for r in rows], total, offset, limit)

    def history(self, adapter: str, offset: int = 0, limit: int = 25, version: int | None = None) -> Page:
        """Alias moves of an adapter (touching `version`, when given), newest first."""
        where, args = "WHERE adapter = ?", [adapter]
        if version is not None:
            where, args = where + " AND (from_version = ? OR to_version = ?)", [*args, version, version]
        with self._registry.read_only() as conn:
            (total,) = conn.execute(f"SELECT COUNT(*) FROM alias_events {where}", args).fetchone()
            rows = conn.query(
                f"SELECT * FROM alias_events {where} ORDER BY id DESC LIMIT ? OFFSET ?", [*args, limit, offset]
            )
        return Page([AliasEvent(**r) for r in rows], total, offset, limit)

    def runs(self, adapter: str = "", offset: int = 0, limit: int = 25) -> Page:
        """Training runs (of adapters whose name contains `adapter`), newest first."""
        if not exists(self.trainer_db, "runs"):
            return Page([], 0, offset, limit)
        where, args = f"WHERE adapter {self._like} ? ESCAPE '\\'", [_like(adapter)]
        with self._runs.read_only() as conn:
            (total,) = conn.execute(f"SELECT COUNT(*) FROM runs {where}", args).fetchone()
            rows = conn.query(f"SELECT * FROM runs {where} ORDER BY id DESC LIMIT ? OFFSET ?", [*args, limit, offset])
        return Page([Run.from_row(r) for r in rows], total, offset, limit)

