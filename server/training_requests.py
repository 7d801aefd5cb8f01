"""Asking the trainer for a run: the one path the admin API's POST and the console's button share.

The gateway never trains (invariant 4, docs/architecture.md): it queues a run in the runs table, and the
trainer watcher (its own process) starts it at its next poll. Who asked and why are kept with the run.
"""

from __future__ import annotations

from adapters.errors import AdapterNotFound
from adapters.names import check_name
from adapters.runs import Run
from server.state import GatewayState


def queue_run(state: GatewayState, adapter: str, by: str = "", reason: str = "") -> Run:
    """The adapter's waiting run (a new one if none waits); AdapterNotFound for a name with nothing to train on.

    Blocking (store reads and a write): call it on a thread from the event loop.
    """
    adapter = check_name(adapter)
    if adapter not in state.registry.adapters() and not state.feedback.count_signals(adapter):
        raise AdapterNotFound(f"adapter {adapter!r} is neither registered nor has any feedback to train on")
    return state.runs.get(state.runs.queue(adapter, by, reason))
