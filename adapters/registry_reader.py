"""The registry's reads: versions, aliases, their history, and resolving a reference to a version.

`Registry` (adapters/registry.py) is a `RegistryReader` that also writes; the reads live here so that the
registry module is about what changes the registry (registering, moving aliases, marking versions
broken). Reads run on connections of their own (a thread's own on SQLite, the pool's on PostgreSQL),
never on the write connection: the gateway reads on its event loop, and must not wait behind a write
that waits out another process's lock. A read that still finds the database locked (a PostgreSQL pool
with no free connection) raises `RegistryBusy`, as a write does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from adapters.errors import AdapterNotFound, RegistryBusy
from adapters.names import PRODUCTION, AdapterRef, check_name
from adapters.version import AdapterVersion, AliasEvent, StatusEvent
from flywheel.database import Database
from flywheel.database_errors import database_errors, is_busy
from flywheel.location import describe


def reading(method: Callable) -> Callable:
    """A read: "database is locked" becomes RegistryBusy, and no lock of this process is taken."""

    @functools.wraps(method)
    def wrapper(self: RegistryReader, *args, **kwargs):
        with self._busy_is_typed():
            return method(self, *args, **kwargs)

    return wrapper


class RegistryReader:
    """Versions, aliases and their history, read from the registry's database."""

    def __init__(self, db: Database, adapters_dir: Path, version_root: Path | None = None):
        """`version_root`: where this host reads versions' folders (the adapters folder, or an object store's
        cache: adapters/files.py); `AdapterVersion.path` is under it."""
        self.db = db
        self.adapters_dir = Path(adapters_dir)
        self.version_root = Path(version_root or adapters_dir)
        self.busy_timeout = db.busy_timeout

    def __repr__(self) -> str:
        return f"{type(self).__name__}({describe(self.db.location)!r})"

    @contextmanager
    def _busy_is_typed(self) -> Iterator[None]:
        """Turn "database is locked" (SQLite) or a lock timeout (PostgreSQL) into RegistryBusy."""
        try:
            yield
        except database_errors() as e:
            if not is_busy(e):
                raise
            raise RegistryBusy(
                f"the adapter registry is locked by another process (still busy after {self.busy_timeout:g} s),"
                " so nothing was changed; retry shortly"
            ) from e

    def _rows(self, sql: str, args: list | tuple = ()) -> list[tuple]:
        return self.db.read(sql, args)

    def _dicts(self, sql: str, args: list | tuple = ()) -> list[dict]:
        return self.db.query(sql, args)

    def _require_registered(self, adapter: str) -> None:
        """AdapterNotFound unless `adapter` has at least one version."""
        if not self._rows("SELECT 1 FROM versions WHERE adapter = ? LIMIT 1", [adapter]):
            raise AdapterNotFound(f"adapter {adapter!r} is not registered")

    @reading
    def change_token(self) -> tuple[int, int, int]:
        """Cheap value that changes whenever a version is added, an alias moves or a status changes (for pollers)."""
        (row,) = self._rows(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM alias_events), (SELECT COALESCE(MAX(id), 0) FROM versions),"
            " (SELECT COALESCE(MAX(id), 0) FROM status_events)"
        )
        return row[0], row[1], row[2]

    @reading
    def adapters(self) -> list[str]:
        return [r[0] for r in self._rows("SELECT DISTINCT adapter FROM versions ORDER BY adapter")]

    @reading
    def versions(self, adapter: str) -> list[AdapterVersion]:
        rows = self._dicts("SELECT * FROM versions WHERE adapter = ? ORDER BY version", [check_name(adapter)])
        result = [AdapterVersion.from_row(r, self.version_root) for r in rows]
        if not result:
            raise AdapterNotFound(f"adapter {adapter!r} is not registered")
        return result

    @reading
    def get_version(self, adapter: str, version: int) -> AdapterVersion:
        sql = "SELECT * FROM versions WHERE adapter = ? AND version = ?"
        rows = list(self._dicts(sql, [check_name(adapter), version]))
        if not rows:
            self._require_registered(adapter)
            raise AdapterNotFound(f"adapter {adapter!r} has no version {version}")
        return AdapterVersion.from_row(rows[0], self.version_root)

    @reading
    def aliases(self, adapter: str | None = None) -> dict[tuple[str, str], int]:
        """(adapter, alias) -> version number, for one adapter or all."""
        sql, args = "SELECT adapter, alias, version FROM aliases", []
        if adapter is not None:
            sql, args = sql + " WHERE adapter = ?", [adapter]
        return {(a, al): v for a, al, v in self._rows(sql, args)}

    @reading
    def aliased_versions(self) -> dict[tuple[str, str], AdapterVersion]:
        """(adapter, alias) -> the version it points at, every alias in one query (the gateway's resolver
        re-reads them on every registry change; one query per alias would be 10,000 at 10,000 adapters)."""
        rows = self._dicts("SELECT a.alias AS alias_name, v.* FROM aliases a JOIN versions v"
                           " ON v.adapter = a.adapter AND v.version = a.version")
        return {(r["adapter"], r.pop("alias_name")): AdapterVersion.from_row(r, self.version_root) for r in rows}

    @reading
    def alias_version(self, adapter: str, alias: str) -> int | None:
        rows = self._rows("SELECT version FROM aliases WHERE adapter = ? AND alias = ?", [adapter, alias])
        return rows[0][0] if rows else None

    @reading
    def resolve(self, ref: AdapterRef | str) -> AdapterVersion:
        """Turn `name`, `name@7` or `name@alias` into the immutable version it names now."""
        ref = AdapterRef.parse(ref) if isinstance(ref, str) else ref
        if ref.version is not None:
            return self.get_version(ref.name, ref.version)
        version = self.alias_version(ref.name, ref.alias or PRODUCTION)
        if version is None:
            self._require_registered(ref.name)
            raise AdapterNotFound(f"adapter {ref.name!r} has no {ref.alias!r} version")
        return self.get_version(ref.name, version)

    @reading
    def history(self, adapter: str, alias: str | None = None) -> list[AliasEvent]:
        """The alias moves of an adapter (of one alias, when given), oldest first."""
        sql, args = "SELECT * FROM alias_events WHERE adapter = ?", [check_name(adapter)]
        if alias:
            sql, args = sql + " AND alias = ?", [*args, alias]
        return [AliasEvent(**r) for r in self._dicts(sql + " ORDER BY id", args)]

    @reading
    def status_history(self, adapter: str) -> list[StatusEvent]:
        """The status changes (broken, ready again) of an adapter's versions, oldest first."""
        rows = self._dicts("SELECT * FROM status_events WHERE adapter = ? ORDER BY id", [check_name(adapter)])
        return [StatusEvent(**r) for r in rows]

    def _not_found(self, adapter: str, version: int) -> None:
        """Raise AdapterNotFound for a version that is not there, saying whether the adapter is."""
        self.get_version(adapter, version)
        raise AdapterNotFound(f"adapter {adapter!r} has no version {version}")  # it was there a moment ago
