"""Database errors in one vocabulary: SQLite's result code names, which PostgreSQL's errors are mapped onto.

The stores catch `database_errors()` and classify what they caught with `error_name` (or `is_busy`), so
a full disk, a read-only database, a lock held past the busy timeout or a server that went away reads the
same on an SQLite file and on PostgreSQL. Each store turns those names into its own typed errors
(`RegistryBusy`, the feedback store's `StoreUnavailable`, ...); this module only names them. psycopg is
never imported here: its classes are looked up only once a store has imported it.
"""

from __future__ import annotations

import sqlite3
import sys

# PostgreSQL SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html) by the SQLite
# primary result code that means the same to a store, so callers classify one vocabulary.
UNREACHABLE = "DATABASE_UNREACHABLE"  # PostgreSQL only: the server is down or the connection broke
_SQLSTATE_AS_SQLITE = {
    "53100": "SQLITE_FULL",  # disk_full
    "25006": "SQLITE_READONLY",  # read_only_sql_transaction
    "42501": "SQLITE_PERM",  # insufficient_privilege
    "55P03": "SQLITE_BUSY",  # lock_not_available: lock_timeout ran out
    "57014": "SQLITE_BUSY",  # query_canceled (a statement timeout)
    "53300": "SQLITE_BUSY",  # too_many_connections
    "57P01": UNREACHABLE,  # admin_shutdown
}


class DatabaseUnreachable(ConnectionError):
    """The PostgreSQL server of a URL cannot be reached when a store first opens it."""


def error_name(exc: BaseException) -> str:
    """SQLite's result code name of a database error (`SQLITE_BUSY`, `SQLITE_FULL_...`), or the equivalent of
    PostgreSQL's (`UNREACHABLE` when the server cannot be reached); '' when it is none of them."""
    name = getattr(exc, "sqlite_errorname", None)
    if name:
        return name
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate in _SQLSTATE_AS_SQLITE:
        return _SQLSTATE_AS_SQLITE[sqlstate]
    if type(exc).__module__.startswith("psycopg") and type(exc).__name__ in ("OperationalError", "PoolTimeout"):
        if type(exc).__name__ == "PoolTimeout":
            return "SQLITE_BUSY"
        return UNREACHABLE
    if sqlstate is not None and sqlstate.startswith("08"):  # connection_exception
        return UNREACHABLE
    return ""


def is_busy(exc: BaseException) -> bool:
    """The write lock stayed taken past the busy timeout (SQLite busy or locked; PostgreSQL lock timeout)."""
    return error_name(exc).startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))


def database_errors() -> tuple[type[BaseException], ...]:
    """The exception classes a database call may raise (psycopg's only once it is in use)."""
    errors: list[type[BaseException]] = [sqlite3.Error]
    if "psycopg" in sys.modules:
        errors.append(sys.modules["psycopg"].Error)
    if "psycopg_pool" in sys.modules:
        errors.append(sys.modules["psycopg_pool"].PoolTimeout)
    return tuple(errors)
