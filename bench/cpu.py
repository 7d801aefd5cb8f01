"""CPU seconds a server spent during a load, split into its API process and its engine process(es).

On 2 cores every CPU second the API process spends is one the engine cannot, so this is where a
gateway's overhead shows before its throughput does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import psutil  # a dependency of vLLM

from server.cpu_affinity import pin_off_engine_cores


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds (user + system) of a server's top process and of all its descendants."""

    api_s: float
    engine_s: float

    def __sub__(self, other: CpuUse) -> CpuUse:
        return CpuUse(round(self.api_s - other.api_s, 2), round(self.engine_s - other.engine_s, 2))


def _seconds(proc: psutil.Process) -> float:
    try:
        times = proc.cpu_times()
        return times.user + times.system
    except psutil.NoSuchProcess:  # a short-lived helper that is already gone
        return 0.0


def cpu_use(pid: int) -> CpuUse:
    """CPU used so far by process `pid` and by its live descendants (vLLM's engine core)."""
    top = psutil.Process(pid)
    return CpuUse(_seconds(top), sum(_seconds(child) for child in top.children(recursive=True)))


CLIENT_NICE = 5  # the load generators' CPU priority below the server's


def keep_clients_off_engine(server_pid: int) -> list[int]:
    """Pin this process (and the load generators it spawns later) off the cores the server's engine worker is
    bound to, as the gateway pins its own API, and lower their CPU priority by `CLIENT_NICE`; returns the cores
    the clients run on ([] when nothing pinned).

    Otherwise the kernel schedules the load generators onto the worker's core and the benchmark measures their
    interference with the forward pass rather than the gateway's. The lower priority stands in for clients on
    other machines: on the core they share with the API, the gateway's threads run first and the clients take
    what is left. At equal priority, time-slicing with the clients held up the API's event loop for 10 to
    35 ms at a time (measured): paced feedback p99 57 to 66 ms, against 33 to 47 ms with the clients at nice
    5, at the same chat throughput."""
    cores = sorted(pin_off_engine_cores(server_pid))
    os.nice(CLIENT_NICE)
    return cores
