"""Versioned schema migrations for the stores, on SQLite and PostgreSQL alike.

Each store declares its schema as numbered `Migration`s, written once in SQLite's spelling
(`Dialect.ddl` gives PostgreSQL's). `migrate` applies the ones a database has not had yet, in order,
inside one write transaction of that store, and records the store's version in `flywheel_schema` (one
row per store: the three share one PostgreSQL database). A database made by an older release upgrades in
place when a store opens it; several processes opening it at once queue on the store's write lock, so
each step runs once. `flywheel_schema` itself is shared, so creating it also takes the lock every store
shares (`SCHEMA_LOCK`): two stores opening an empty PostgreSQL at once would otherwise both run its
`CREATE TABLE IF NOT EXISTS`, and one of them fails (that statement is not safe against a concurrent one).

SQLite files written before versioning have no `flywheel_schema` row: they start at version 0 and
replay every step, which is why the steps are idempotent (`CREATE ... IF NOT EXISTS`, `AddColumn`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from flywheel.connection import Connection
from flywheel.database import Database
from flywheel.dialect import SQLITE, Dialect

logger = logging.getLogger(__name__)

SCHEMA_LOCK = "schema"  # the write lock every store takes to create flywheel_schema
VERSIONS_TABLE = """CREATE TABLE IF NOT EXISTS flywheel_schema (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    updated_at REAL NOT NULL
)"""


@dataclass(frozen=True)
class AddColumn:
    """Add a column unless the table has it already (SQLite has no `ADD COLUMN IF NOT EXISTS`)."""

    table: str
    column: str
    definition: str

    def apply(self, conn: Connection) -> None:
        if conn.dialect.name == SQLITE:
            import sqlite_utils  # its introspection, instead of parsing PRAGMA table_info rows by position

            table = sqlite_utils.Database(conn.raw, recursive_triggers=False, execute_plugins=False)[self.table]
            if self.column not in table.columns_dict:
                conn.execute(f"ALTER TABLE {self.table} ADD COLUMN {self.column} {self.definition}")
        else:
            conn.execute(f"ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS {self.column} {self.definition}")


Step = str | AddColumn


@dataclass(frozen=True)
class Migration:
    """Schema version `version` of a store: the statements that bring version - 1 to it, in SQLite's spelling
    (PostgreSQL runs `Dialect.ddl` of each)."""

    version: int
    statements: Sequence[Step]

    def steps(self, dialect: str) -> list[Step]:
        """The steps as `dialect` runs them."""
        translate = Dialect(dialect).ddl
        return [translate(s) if isinstance(s, str) else s for s in self.statements]


def migrate(db: Database, component: str, migrations: Sequence[Migration]) -> int:
    """Bring `component`'s tables to the newest of `migrations`; returns the version it is at."""
    numbers = [m.version for m in migrations]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"{component}: migrations must be numbered 1..n in order, not {numbers}")
    with db.write() as conn:
        db.lock(conn, SCHEMA_LOCK)  # after the store's own lock, in every store: no lock-order deadlock
        conn.execute(db.dialect.ddl(VERSIONS_TABLE))
        row = conn.execute("SELECT version FROM flywheel_schema WHERE component = ?", [component]).fetchone()
        current = row[0] if row else 0
        if current > len(migrations):
            raise RuntimeError(
                f"the {component} schema in {db!r} is version {current}, newer than this release knows"
                f" ({len(migrations)}): upgrade Flywheel"
            )
        for migration in migrations[current:]:
            for step in migration.steps(db.dialect.name):
                if isinstance(step, AddColumn):
                    step.apply(conn)
                else:
                    conn.execute(step)
        if current < len(migrations):
            conn.execute(
                "INSERT INTO flywheel_schema (component, version, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (component) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at",
                [component, len(migrations), time.time()],
            )
            logger.info("%s schema in %r: version %d -> %d", component, db, current, len(migrations))
    return len(migrations)
