"""A registry file locked by another process: writes fail with RegistryBusy after the busy timeout, reads go on."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from adapters.base_model import BaseModelInfo
from adapters.errors import RegistryBusy
from adapters.registry import Registry
from tests.adapters.test_registry import snapshot
from tests.lora_factory import write_lora, write_tiny_base

_HOLD = (
    "import sqlite3, sys\n"
    "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    "conn.execute('BEGIN EXCLUSIVE')\n"
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"  # hold the lock until the test closes our stdin
)


@contextmanager
def locked_by_another_process(db: Path) -> Iterator[None]:
    """Another process holds `BEGIN EXCLUSIVE` on `db` until the block ends."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.stdin.close()
        holder.wait(10)


def test_writes_time_out_with_registry_busy_while_reads_go_on(tmp_path: Path):
    base_dir = write_tiny_base(tmp_path / "base")
    base = BaseModelInfo.from_dir(base_dir)
    db, adapters = tmp_path / "registry.db", tmp_path / "adapters"
    registry = Registry(db, adapters, base, max_rank=8, busy_timeout=0.5)
    registry.register("bot", write_lora(tmp_path / "a1", base_dir, seed=1), alias="production")
    registry.register("bot", write_lora(tmp_path / "a2", base_dir, seed=2))
    third = write_lora(tmp_path / "a3", base_dir, seed=3)
    before = snapshot(registry, adapters)
    writes = {
        "promote": lambda: registry.promote("bot", 2),
        "rollback": lambda: registry.rollback("bot", to=2),
        "set_alias": lambda: registry.set_alias("bot", "canary", 2),
        "register": lambda: registry.register("bot", third, alias="candidate"),
        "mark_broken": lambda: registry.mark_broken("bot", 1, "weights missing"),
    }
    with locked_by_another_process(db):
        for name, write in writes.items():
            started = time.monotonic()
            with pytest.raises(RegistryBusy, match="locked by another process.*retry"):
                write()
            assert 0.4 < time.monotonic() - started < 5, name  # the bounded busy timeout, not forever
        assert registry.resolve("bot").version == 1  # readers are not blocked by a writer (WAL)
        assert registry.aliases() == {("bot", "production"): 1}
    assert snapshot(registry, adapters) == before  # nothing half-written: no row, no folder, no staging
    assert registry.promote("bot", 2).to_version == 2  # the same connection writes again once freed
    assert registry.register("bot", third).version == 3


def test_the_default_busy_timeout_is_bounded(tmp_path: Path):
    base = BaseModelInfo.from_dir(write_tiny_base(tmp_path / "base"))
    registry = Registry(tmp_path / "registry.db", tmp_path / "adapters", base)
    assert 0 < registry.busy_timeout <= 10
