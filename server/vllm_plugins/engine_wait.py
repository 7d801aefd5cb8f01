"""On the CPU, let vLLM's engine-core process sleep while its worker runs a step, instead of spinning.

vLLM's processes hand work to each other through shared-memory queues. A reader of such a queue
(`shm_broadcast.SpinCondition`) spins on `sched_yield()` for a second after each message it read, and only
then sleeps on a ZeroMQ notification from the writer. While chat runs there is always a message within the
second, so the engine-core process spins through every model step its worker computes, on a core it
shares with the gateway's API (the worker has its own).

On a GPU a step takes milliseconds and spinning buys latency; on the CPU a step takes tens of milliseconds
and a free core is the scarce thing. So this plugin, which vLLM loads in each process it starts, makes the
engine core's readers sleep on the notification while they wait (idle readers and the worker's keep vLLM's
behaviour). vLLM's notifications are lossy (a high-water mark of 1 and a conflating reader: a test reader
that slept on them missed 45 of every 46 and stalled until vLLM's 5 s re-check), so notification sockets
are made reliable here: a deeper queue on the writer, drained by the reader at each wake. A reader still
looks at the shared memory every `ACTIVE_POLL_MS` in case one is lost.

Measured on 2 cores during 16 chat streams: the engine core at 0.02 of a core instead of 0.94, and chat
at full speed beside feedback traffic (docs/bench_feedback.md). CPU platform only;
`FLYWHEEL_ENGINE_SPIN_WAIT=true` (the setting `engine_spin_wait`, passed on by server/engine.py through the
environment, which vLLM's processes inherit) keeps vLLM's spinning.
"""

from __future__ import annotations

import functools
import logging
import os
import time

logger = logging.getLogger(__name__)

SPIN_WAIT_ENV = "FLYWHEEL_ENGINE_SPIN_WAIT"
ENGINE_CORE_TITLE = "::EngineCore"  # vLLM titles this process `VLLM::EngineCore` (`_DPn` with data parallel)
NOTIFY_QUEUE = 1000  # notifications a writer keeps for a reader that has not drained them (then drops)
ACTIVE_POLL_MS = 20  # the longest a waiting reader sleeps before it looks at the shared memory anyway


def register() -> None:
    """vLLM plugin entry point (CPU platform only): in the engine-core process, readers that sleep on reliable
    notifications instead of spinning; elsewhere, writers that notify the engine core reliably."""
    if os.environ.get(SPIN_WAIT_ENV, "0").lower() in ("1", "true", "yes"):
        return
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    from vllm.distributed.device_communicators import shm_broadcast

    spin_condition = shm_broadcast.SpinCondition
    if getattr(spin_condition.__init__, "_flywheel", False):
        return  # vLLM loads plugins more than once in a process
    engine_core = _is_engine_core()
    vllm_init = spin_condition.__init__

    @functools.wraps(vllm_init)
    def init(self, is_reader: bool, context, notify_address: str, busy_loop_s: float = 1) -> None:
        # the engine core's readers, and the writers they read from (the worker's): reliable notifications;
        # the worker's readers keep spinning on vLLM's (a reliable queue nobody drains would only fill up)
        setup = _reliable_init if is_reader == engine_core else vllm_init
        setup(self, is_reader, context, notify_address, busy_loop_s)

    init._flywheel = True
    spin_condition.__init__ = init
    if engine_core:
        spin_condition.wait = sleeping_wait(spin_condition.wait)
        logger.debug("flywheel: the engine core sleeps while its worker computes (server.vllm_plugins.engine_wait)")


def _is_engine_core() -> bool:
    try:
        import setproctitle  # vLLM titles its processes with it
    except ImportError:
        return False
    return ENGINE_CORE_TITLE in setproctitle.getproctitle()


def _reliable_init(self, is_reader: bool, context, notify_address: str, busy_loop_s: float = 1) -> None:
    """vLLM's `SpinCondition.__init__` (vllm 0.32) with a notification queue of `NOTIFY_QUEUE` on the writer
    and no conflation on the reader, which `sleeping_wait` drains instead."""
    import zmq
    from vllm.utils.network_utils import get_open_zmq_inproc_path

    self.is_reader = is_reader
    if is_reader:
        self.last_read = time.monotonic()
        self.busy_loop_s = busy_loop_s
        self.local_notify_socket = context.socket(zmq.SUB)
        self.local_notify_socket.setsockopt(zmq.RCVHWM, NOTIFY_QUEUE)
        self.local_notify_socket.setsockopt_string(zmq.SUBSCRIBE, "")
        self.local_notify_socket.connect(notify_address)
        # another thread of the reader's process wakes it for shutdown through this pair
        cancel_path = get_open_zmq_inproc_path()
        self.write_cancel_socket = context.socket(zmq.PAIR)
        self.write_cancel_socket.bind(cancel_path)
        self.read_cancel_socket = context.socket(zmq.PAIR)
        self.read_cancel_socket.connect(cancel_path)
        self.poller = zmq.Poller()
        self.poller.register(self.read_cancel_socket, zmq.POLLIN)
        self.poller.register(self.local_notify_socket, zmq.POLLIN)
    else:
        self.local_notify_socket = context.socket(zmq.PUB)
        self.local_notify_socket.setsockopt(zmq.SNDHWM, NOTIFY_QUEUE)
        self.local_notify_socket.bind(notify_address)
        self.last_read = 0
        self.busy_loop_s = 0
        self.read_cancel_socket = None
        self.write_cancel_socket = None
        self.poller = None


def sleeping_wait(vllm_wait):
    """`SpinCondition.wait` that sleeps on the notification socket (`ACTIVE_POLL_MS` at most) where vLLM's
    would spin, and drains every notification it finds; `vllm_wait` still handles an idle reader."""
    import zmq

    @functools.wraps(vllm_wait)
    def wait(self, timeout_ms: int | None = None) -> None:
        if time.monotonic() > self.last_read + self.busy_loop_s:
            return vllm_wait(self, timeout_ms)
        bound = ACTIVE_POLL_MS if timeout_ms is None else min(timeout_ms, ACTIVE_POLL_MS)
        events = dict(self.poller.poll(timeout=bound))
        if self.local_notify_socket in events:
            try:
                while True:
                    self.local_notify_socket.recv(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                pass

    return wait
