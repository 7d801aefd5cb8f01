"""The registry's tables, and the columns added to databases created before them."""

from __future__ import annotations

import sqlite3

TABLES = (
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
    status TEXT NOT NULL DEFAULT 'ready',
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

# Columns added after the first release: (table, column, definition). Older files get them on open.
ADDED_COLUMNS = (
    ("versions", "files", "TEXT NOT NULL DEFAULT '{}'"),  # {name: {sha256, size}} of the served files
    ("versions", "status_reason", "TEXT NOT NULL DEFAULT ''"),
)


def create_tables(conn: sqlite3.Connection) -> None:
    """Create missing tables and columns; run inside the caller's write transaction (one process at a time)."""
    for statement in TABLES:
        conn.execute(statement)
    for table, column, definition in ADDED_COLUMNS:
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
