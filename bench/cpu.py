"""CPU seconds a server spent during a load, split into its API process and its engine process(es).

On 2 cores every CPU second the API process spends is one the engine cannot, so this is where a
gateway's overhead shows before its throughput does.
"""

from __future__ import annotations

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


def keep_clients_off_engine(server_pid: int) -> list[int]:
    """Pin this process (and the load generators it spawns later) off the cores the server's engine worker is
    bound to, as the gateway pins its own API; returns the cores the clients run on ([] when nothing pinned).

    Otherwise the kernel schedules the load generators onto the worker's core and the benchmark measures their
    interference with the forward pass rather than the gateway's."""
    return sorted(pin_off_engine_cores(server_pid))
