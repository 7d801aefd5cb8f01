"""A real PostgreSQL server for the tests: Debian's package, started once per session on a free local port.

`postgres_server` runs `initdb` and `pg_ctl` in a temp folder (as the unprivileged `nobody` when the
tests run as root: PostgreSQL refuses to run as root) and stops it at the end of the session. Each test
module gets a database of its own (`postgres_database`); `store_location` hands a test either an SQLite
file or that database (emptied first), so one test module runs against both stores. No skipping: a
machine without the server fails with the command that installs it.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

INSTALL = "apt-get install -y postgresql (Debian's PostgreSQL server)"
BACKENDS = ("sqlite", "postgresql")


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    if initdb := shutil.which("initdb"):
        return Path(initdb).parent
    pytest.fail(f"the PostgreSQL server (initdb, pg_ctl) is not installed; run `{INSTALL}`", pytrace=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "nobody", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a running server (no database named): `postgresql://flywheel@127.0.0.1:PORT`."""
    bindir = _bindir()
    root = Path(tempfile.mkdtemp(prefix="flywheel-postgres-"))  # not pytest's tmp: root-only folders above it
    data, log = root / "data", root / "server.log"
    data.mkdir()
    if os.geteuid() == 0:
        for path in (root, data):
            shutil.chown(path, "nobody", "nogroup")
    subprocess.run(_as_server_user([str(bindir / "initdb"), "-D", str(data), "-U", "flywheel", "--auth=trust",
                                    "-E", "UTF8", "--locale=C"]), check=True, capture_output=True)
    port = _free_port()
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                                    "-w", "-t", "60", "start"]), check=True, capture_output=True)
    try:
        yield f"postgresql://flywheel@127.0.0.1:{port}"
    finally:
        from flywheel.database import close_pools

        close_pools()
        subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_database(postgres_server: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database for one test module; its URL."""
    import psycopg

    name = "t_" + re.sub(r"\W", "_", request.module.__name__.rsplit(".", 1)[-1]).lower()[:50]
    with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    url = f"{postgres_server}/{name}"
    yield url
    from flywheel.database import close_pools

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
