"""Scratch folders that name the process owning them, so a killed process's leftovers can be cleared safely.

A process killed by SIGKILL (or by the kernel's out-of-memory killer) runs no `finally`: the folder it was
filling stays. Its name says whose it was, `<prefix><tag>-<host>-<pid>`, so the next process can tell a
leftover from a live process's folder. A folder is a leftover when its host is this host and its pid is
dead: the same test the runs store applies to a lock holder and an orphaned run (adapters/runs.py). A
folder of another host is never touched, since its owner may be alive: the adapters folder is shared by
every replica (docs/kubernetes.md). docs/architecture.md, "The loop", says which folders these are.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
from pathlib import Path

logger = logging.getLogger(__name__)


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists on this host and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:  # a killed child that nobody reaped yet is a zombie: dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def owned_name(prefix: str, tag: str) -> str:
    """The name of a folder this process owns: `<prefix><tag>-<host>-<pid>`; `tag` has no '-'."""
    if "-" in tag:
        raise ValueError(f"tag {tag!r} must not contain '-'")
    return f"{prefix}{tag}-{socket.gethostname()}-{os.getpid()}"


def clear_dead(parent: Path, prefix: str) -> list[Path]:
    """Delete the folders under `parent` named by `owned_name(prefix, ...)` whose owner died on this host.

    Returns the folders deleted. Names of another form (an older release's, another host's) are left.
    """
    pattern = re.compile(re.escape(prefix) + r"[^-]+-(?P<host>.+)-(?P<pid>\d+)")
    host, cleared = socket.gethostname(), []
    for path in Path(parent).glob(f"{prefix}*"):
        owner = pattern.fullmatch(path.name)
        if owner is None or owner["host"] != host or pid_alive(int(owner["pid"])):
            continue
        shutil.rmtree(path, ignore_errors=True)
        if path.exists():
            logger.warning("could not delete %s, left by dead pid %s", path, owner["pid"])
            continue
        logger.warning("deleted %s, left by pid %s, which died before removing it", path, owner["pid"])
        cleared.append(path)
    return cleared
