"""A real PostgreSQL server for the tests: Debian's package, started once per session on a free local port.

`postgres_server` starts one with bench/postgres.py's `running_postgres` (`initdb` and `pg_ctl` in a temp
folder, as `nobody` when the tests run as root) and stops it at the end of the session. Each test
module gets a database of its own (`postgres_database`); `store_location` hands a test either an SQLite
file or that database (emptied first), so one test module runs against both stores. No skipping: a
machine without the server fails with the command that installs it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.postgres import PostgresMissing, create_database, running_postgres, server_bindir

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a running server (no database named): `postgresql://flywheel@127.0.0.1:PORT`."""
    try:
        server_bindir()
    except PostgresMissing as e:  # no skipping: the failure says what to install
        pytest.fail(str(e), pytrace=False)
    with running_postgres() as url:
        yield url


@pytest.fixture(scope="module")
def postgres_database(postgres_server: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database for one test module; its URL."""
    name = "t_" + re.sub(r"\W", "_", request.module.__name__.rsplit(".", 1)[-1]).lower()[:50]
    url = create_database(postgres_server, name)
    yield url
    from flywheel.postgres_pools import close_pools

    close_pools(url)


def empty_database(url: str) -> None:
    """Drop every table of the database: the next store to open it creates its schema afresh."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        if tables:
            conn.execute("DROP TABLE " + ", ".join(tables) + " CASCADE")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each test that uses it runs once on SQLite and once on PostgreSQL."""
    return request.param


@pytest.fixture
def store_location(backend: str, tmp_path: Path, request: pytest.FixtureRequest):
    """A factory: `store_location("registry.db")` is that SQLite file in tmp_path, or the module's PostgreSQL
    database, emptied before the test (all three stores share it, as in production)."""
    if backend == "sqlite":
        return lambda filename: tmp_path / filename
    url = request.getfixturevalue("postgres_database")
    empty_database(url)
    return lambda filename: url
