"""Staging copies left by killed registrations: the registry deletes those whose owner died on this host, only those.

The names carry the owner's host and pid (flywheel/scratch.py). A killed registration is
tests/trainer/test_trainer_sigkill.py's.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from adapters.registry import STAGING, Registry
from flywheel.scratch import owned_name

UUID = "0123456789abcdef0123456789abcdef"


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_registry_opening_deletes_the_staging_copies_of_dead_pids_on_this_host_only(tmp_path: Path) -> None:
    adapters, host, dead = tmp_path / "adapters", socket.gethostname(), dead_pid()
    folders = {
        "dead here": adapters / f"{STAGING}{UUID}-{host}-{dead}",
        "live here": adapters / owned_name(STAGING, UUID),
        "dead elsewhere": adapters / f"{STAGING}{UUID}-other-host-{dead}",
        "a host named like this one plus a suffix": adapters / f"{STAGING}{UUID}-{host}-1-{dead}",
        "an older release's, owner unknown": adapters / f"{STAGING}{UUID}",
        "a version": adapters / "support" / "v1",
    }
    for folder in folders.values():
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(b"weights")

    Registry(tmp_path / "registry.db", adapters, None)

    assert [what for what, folder in folders.items() if not folder.exists()] == ["dead here"]
    assert folders["live here"].name.endswith(f"-{host}-{os.getpid()}")
