"""A throwaway PostgreSQL server from Debian's package, on a free local port: for the tests and the benchmarks.

`running_postgres()` runs `initdb` and `pg_ctl` in a temp folder (as the unprivileged `nobody` when run as
root: PostgreSQL refuses to run as root), yields the server's URL and stops it on the way out. The product
never starts a server: it is given one by `FLYWHEEL_DATABASE_URL` (docs/architecture.md, "The stores").
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
from contextlib import contextmanager
from pathlib import Path

INSTALL = "apt-get install -y postgresql (Debian's PostgreSQL server)"


class PostgresMissing(RuntimeError):
    """The server's programs (initdb, pg_ctl) are not installed; the message says how to install them."""


def server_bindir() -> Path:
    """The newest installed PostgreSQL's bin folder (Debian keeps one per major version)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    if initdb := shutil.which("initdb"):
        return Path(initdb).parent
    raise PostgresMissing(f"the PostgreSQL server (initdb, pg_ctl) is not installed; run `{INSTALL}`")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "nobody", "--", *command] if os.geteuid() == 0 else command


@contextmanager
def running_postgres(max_connections: int = 200) -> Iterator[str]:
    """A running server's URL with no database named (`postgresql://flywheel@127.0.0.1:PORT`); stopped after."""
    bindir = server_bindir()
    root = Path(tempfile.mkdtemp(prefix="flywheel-postgres-"))  # not under pytest's tmp: root-only folders above
    data, log = root / "data", root / "server.log"
    data.mkdir()
    if os.geteuid() == 0:
        for path in (root, data):
            shutil.chown(path, "nobody", "nogroup")
    try:
        subprocess.run(_as_server_user([str(bindir / "initdb"), "-D", str(data), "-U", "flywheel", "--auth=trust",
                                        "-E", "UTF8", "--locale=C"]), check=True, capture_output=True)
        # fsync off: a throwaway server; nothing here measures durability
        port = _free_port()
        options = (f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
                   f" -c max_connections={max_connections}")
        subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                                        "-w", "-t", "60", "start"]), check=True, capture_output=True)
        try:
            yield f"postgresql://flywheel@127.0.0.1:{port}"
        finally:
            from flywheel.postgres_pools import close_pools

            close_pools()  # this process's pools, before their server goes
            subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                                            "stop"]), capture_output=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def create_database(server_url: str, name: str) -> str:
    """(Re)create the empty database `name` on the server; its URL."""
    import psycopg

    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"database name {name!r}: lower-case letters, digits and '_' only")
    with psycopg.connect(f"{server_url}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return f"{server_url}/{name}"
