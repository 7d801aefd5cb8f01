"""vLLM's processes end when the gateway dies, however it dies (`kill -9` included).

vLLM's engine-core process is a child of the gateway. Its worker watches the engine core (a death pipe),
but the engine core watches nobody: after a `kill -9` of the gateway it lived on, its worker finishing
abandoned requests at 92% of a core, and a supervisor that restarts the gateway (systemd, Kubernetes,
compose) would start a second engine beside it every time.

This plugin, which vLLM loads in every process it starts, gives each of the gateway's vLLM processes a
daemon thread that checks its parent every `POLL_S`. Once the parent is gone (the process was re-parented),
the process asks itself to stop with SIGTERM, vLLM's own shutdown path (it releases its shared memory and
sockets), and SIGKILLs itself if that has not finished within `GRACE_S`.

Linux's parent-death signal (PR_SET_PDEATHSIG) is not used: it fires when the parent *thread* that started
the child ends, and the gateway starts vLLM from a worker thread (`asyncio.to_thread`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

logger = logging.getLogger(__name__)

GATEWAY_PID_ENV = "FLYWHEEL_GATEWAY_PID"  # set by server/engine.py; vLLM's processes inherit it
POLL_S = 0.5
GRACE_S = 5.0

_watching = False


def register() -> None:
    """vLLM plugin entry point: in a vLLM process started by the gateway, end the process with its parent."""
    global _watching
    gateway = os.environ.get(GATEWAY_PID_ENV)
    if _watching or not gateway or int(gateway) == os.getpid():
        return  # vLLM loads plugins more than once in a process; the gateway itself needs no guard
    _watching = True
    threading.Thread(target=_watch, args=(os.getppid(),), name="flywheel-orphan-guard", daemon=True).start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_S)
    logger.warning("parent process %d is gone: stopping this vLLM process (pid %d)", parent, os.getpid())
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACE_S)
    os.kill(os.getpid(), signal.SIGKILL)
