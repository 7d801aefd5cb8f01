"""The registry's tables, as versioned migrations (flywheel/migrations.py) for SQLite and PostgreSQL."""

from __future__ import annotations

from flywheel.database import Database
from flywheel.migrations import AddColumn, Migration, migrate

COMPONENT = "registry"

_SQLITE_TABLES = (
    """CREATE TABLE IF NOT EXISTS versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- global, never reused: the LoRA id inside vLLM
    adapter TEXT NOT NULL,
    version INTEGER NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    rank INTEGER NOT NULL,
    alpha REAL NOT NULL,
    target_modules TEXT NOT NULL,
    base_fingerprint TEXT NOT NULL,
    created_at REAL NOT NULL,
    source TEXT NOT NULL,
    parent_version INTEGER,
    metrics TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'ready',  -- VersionStatus.READY (a released migration's text never changes)
    created_by TEXT NOT NULL DEFAULT '',
    UNIQUE (adapter, version)
)""",
    """CREATE TABLE IF NOT EXISTS aliases (
    adapter TEXT NOT NULL,
    alias TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (adapter, alias)
)""",
    """CREATE TABLE IF NOT EXISTS alias_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    adapter TEXT NOT NULL,
    alias TEXT NOT NULL,
    from_version INTEGER,
    to_version INTEGER,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS status_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    adapter TEXT NOT NULL,
    version INTEGER NOT NULL,
    from_status TEXT NOT NULL,
    to_status TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
)""",
)


# Columns added after the first release; old files (SQLite) get them when the registry opens them.
_ADDED_COLUMNS = (
    AddColumn("versions", "files", "TEXT NOT NULL DEFAULT '{}'"),  # {name: {sha256, size}} of the served files
    AddColumn("versions", "status_reason", "TEXT NOT NULL DEFAULT ''"),
)

MIGRATIONS = (  # in SQLite's spelling; PostgreSQL's is Dialect.ddl of it (identity ids, 8-byte floats)
    Migration(1, _SQLITE_TABLES),
    Migration(2, _ADDED_COLUMNS[:1]),
    Migration(3, _ADDED_COLUMNS[1:]),
)


def create_tables(db: Database) -> None:
    """Create or upgrade the registry's tables (one process at a time: the store's write lock)."""
    migrate(db, COMPONENT, MIGRATIONS)
