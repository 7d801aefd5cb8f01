"""The one database seam of the three stores (registry, runs, feedback): SQLite files or one PostgreSQL.

A store is given a location (flywheel/location.py): a `Path` (an SQLite file, the embedded default) or a
`postgresql://` URL (`FLYWHEEL_DATABASE_URL`, one database that every replica shares). `Database` owns what
the stores used to hand-write each: connecting, SQLite's WAL and pragmas, write transactions and read
connections, each a `Connection` (flywheel/connection.py). What its errors mean (busy, full, unreachable, on
both) is `flywheel/database_errors.py`.

- **Write transactions serialise writers, on both.** SQLite: `BEGIN IMMEDIATE` takes the file's write
  lock up front. PostgreSQL: a transaction that first takes a transaction-scoped advisory lock named
  after the store (`pg_advisory_xact_lock`), so writers of one store queue exactly as they do on one
  SQLite file, across every host; it is released by the commit or the rollback. A lock still held by
  someone else after `busy_timeout` fails the statement (SQLite's busy timeout, PostgreSQL's
  `lock_timeout`), and `database_errors.is_busy` says so for both.
- **Reads never wait for writers:** WAL readers on SQLite, MVCC snapshots on PostgreSQL.
- **SQL is written once, in SQLite's spelling with `?` placeholders.** `Connection.execute` turns it
  into psycopg's `%s` on PostgreSQL; what differs beyond that (table DDL, a few expressions) the
  stores take from `Dialect` (flywheel/dialect.py).

PostgreSQL connections come from the process's pool for the URL (flywheel/postgres_pools.py); psycopg is
imported only when a URL is used, so the SQLite default needs none of it.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flywheel.connection import Connection
from flywheel.dialect import POSTGRESQL, SQLITE, Dialect
from flywheel.location import Location, describe, is_url
from flywheel.postgres_pools import pool_for


def exists(location: Location, table: str) -> bool:
    """Whether the store at `location` can be read: its `table` has been created (by the process that owns the
    store, the gateway for feedback). A reader that polls before then gets False instead of a missing table."""
    if is_url(location):  # the database is there from the start: whether the store created its tables is the question
        (row,) = Database(location, read_only=True).read("SELECT to_regclass(?) IS NOT NULL", [table])
        return bool(row[0])
    if not Path(location).is_file():
        return False
    import sqlite_utils  # its introspection instead of hand-written sqlite_master queries

    with Database(location, read_only=True).read_only() as conn:
        return sqlite_utils.Database(conn.raw, recursive_triggers=False, execute_plugins=False)[table].exists()


def lock_key(name: str) -> int:
    """The PostgreSQL advisory lock key of a write lock's name (64 bits of its hash)."""
    return int.from_bytes(hashlib.sha256(f"flywheel:{name}".encode()).digest()[:8], "big", signed=True)


class Database:
    """Connections and transactions to one store's database (see the module docstring).

    `lock_name` names the store's write lock on PostgreSQL (every store of one database has its own, as
    every SQLite store has its own file); `pragmas` run on each new SQLite connection. A `read_only`
    Database never writes: SQLite opens the file `mode=ro` (and never creates it), PostgreSQL reads in
    READ ONLY transactions. That one opener serves the trainer's reader and the console's views.
    """

    def __init__(self, location: Location, *, lock_name: str = "", busy_timeout: float = 30.0,
                 pragmas: Sequence[str] = (), wal: bool = True, read_only: bool = False):
        self.location = location
        self.read_only_mode = read_only
        self.busy_timeout = busy_timeout
        self.dialect = Dialect(POSTGRESQL if is_url(location) else SQLITE)
        self.lock_key = lock_key(lock_name)
        self._pragmas = tuple(pragmas)
        self._wal = wal
        self._write_lock = threading.RLock()  # SQLite: one write connection per Database, one thread at a time
        self._write_conn: Connection | None = None
        self._local = threading.local()
        self._readers: list[Connection] = []
        self._readers_lock = threading.Lock()
        if self.dialect.name == SQLITE:
            if not read_only:
                Path(location).parent.mkdir(parents=True, exist_ok=True)
        else:
            self._pool = pool_for(str(location))

    @property
    def is_postgresql(self) -> bool:
        return self.dialect.name == POSTGRESQL

    def __repr__(self) -> str:
        return f"Database({describe(self.location)!r})"

    # ---- connections ----------------------------------------------------------------------------
    def connect(self) -> Connection:
        """A new connection of its own (a writer thread's), closed by the caller."""
        if self.is_postgresql:
            import psycopg

            options = "-c default_transaction_read_only=on" if self.read_only_mode else ""
            # A server that is down must not hold a writer thread for the OS's TCP timeout (minutes).
            raw = psycopg.connect(str(self.location), autocommit=True, options=options,
                                  connect_timeout=max(1, int(self.busy_timeout)))
            return Connection(raw, self.dialect)
        if self.read_only_mode:
            uri = f"{Path(self.location).resolve().as_uri()}?mode=ro"
            raw = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout, check_same_thread=False)
            return Connection(raw, self.dialect)
        raw = sqlite3.connect(self.location, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
        if self._wal:
            raw.execute("PRAGMA journal_mode=WAL")
        for pragma in self._pragmas:
            raw.execute(pragma)
        return Connection(raw, self.dialect)

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection for reads: this thread's own on SQLite, one from the pool on PostgreSQL."""
        if self.is_postgresql:
            with self._pooled() as conn:
                yield conn
            return
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.connect()
            with self._readers_lock:
                self._readers.append(conn)
        yield conn

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[dict]:
        """Rows as dicts, read on a read connection."""
        with self.reading() as conn:
            return conn.query(sql, args)

    def read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        """Rows as tuples, read on a read connection."""
        with self.reading() as conn:
            return [tuple(row) for row in conn.execute(sql, args).fetchall()]

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction holding the store's write lock from its start; committed at the end,
        rolled back on any exception."""
        if self.is_postgresql:
            with self._pool.connection(timeout=self.busy_timeout) as raw:
                conn = Connection(raw, self.dialect)
                yield from self._transaction(conn)
            return
        with self._write_lock:
            if self._write_conn is None:
                self._write_conn = self.connect()
            yield from self._transaction(self._write_conn)

    def _transaction(self, conn: Connection) -> Iterator[Connection]:
        self.begin(conn)
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if not conn.closed and conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def begin(self, conn: Connection) -> None:
        """Begin a write transaction on `conn` and take the store's write lock (see the module docstring)."""
        if not self.is_postgresql:
            conn.execute("BEGIN IMMEDIATE")
            return
        conn.execute("BEGIN")
        conn.execute(f"SET LOCAL lock_timeout = '{int(self.busy_timeout * 1000)}ms'")
        conn.execute("SELECT pg_advisory_xact_lock(?)", [self.lock_key])

    def lock(self, conn: Connection, name: str) -> None:
        """Inside a write transaction, also take the write lock named `name` that several stores share (held
        to the commit). On SQLite each store has a file of its own, whose write lock the transaction already
        holds, so there is nothing to take."""
        if self.is_postgresql:
            conn.execute("SELECT pg_advisory_xact_lock(?)", [lock_key(name)])

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """One statement in its own write transaction; the number of rows it changed."""
        with self.write() as conn:
            return conn.execute(sql, args).rowcount

    @contextmanager
    def read_only(self) -> Iterator[Connection]:
        """A short-lived read connection, closed (or given back to the pool) at the end of the block."""
        if self.is_postgresql:
            with self._pooled() as conn:
                yield conn
            return
        conn = self.connect()
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _pooled(self) -> Iterator[Connection]:
        """A pool connection for reads (inside a READ ONLY transaction for a read-only Database)."""
        with self._pool.connection(timeout=self.busy_timeout) as raw:
            conn = Connection(raw, self.dialect)
            if not self.read_only_mode:
                yield conn
                return
            conn.execute("BEGIN READ ONLY")
            try:
                yield conn
            finally:
                if not conn.closed and conn.in_transaction:
                    conn.execute("ROLLBACK")

    def close(self) -> None:
        """Close this Database's own SQLite connections (PostgreSQL pools live as long as the process)."""
        with self._write_lock:
            if self._write_conn is not None:
                self._write_conn.close()
                self._write_conn = None
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self._local = threading.local()
