"""The process's PostgreSQL connection pools: one `psycopg_pool.ConnectionPool` per URL, shared by every store
of the process (the trainer builds a `Registry` per poll: they all reuse one pool), closed at exit.

psycopg is imported only when a pool is opened, so the SQLite default needs none of it.
"""

from __future__ import annotations

import atexit
import threading
from typing import Any

from flywheel.database_errors import DatabaseUnreachable
from flywheel.location import describe

_pools: dict[str, Any] = {}
_pools_lock = threading.Lock()
POOL_MAX_SIZE = 10
POOL_CONNECT_TIMEOUT_S = 30.0


def pool_for(url: str) -> Any:
    """The process's pool for `url`, opened on first use; DatabaseUnreachable when the server does not answer."""
    with _pools_lock:
        pool = _pools.get(url)
        if pool is None or pool.closed:
            from psycopg_pool import ConnectionPool

            pool = ConnectionPool(url, min_size=1, max_size=POOL_MAX_SIZE, kwargs={"autocommit": True},
                                  open=True, name=f"flywheel {describe(url)}")
            try:
                pool.wait(timeout=POOL_CONNECT_TIMEOUT_S)
            except Exception as e:  # psycopg_pool.PoolTimeout: say which server, not just "incomplete"
                pool.close()
                raise DatabaseUnreachable(
                    f"cannot connect to PostgreSQL at {describe(url)} within {POOL_CONNECT_TIMEOUT_S:g} s"
                    " (FLYWHEEL_DATABASE_URL): is the server up and the URL right?"
                ) from e
            _pools[url] = pool
        return pool


def close_pools(url: str | None = None) -> None:
    """Close the pool of `url` (every pool when None); the next use opens a new one."""
    with _pools_lock:
        for key in [k for k in _pools if url is None or k == url]:
            _pools.pop(key).close()


atexit.register(close_pools)
