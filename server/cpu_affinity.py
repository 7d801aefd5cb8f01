"""Keep the API off the engine's cores (CPU serving).

vLLM's CPU worker binds its compute threads to all cores but `reserve_cpu_num` (1 by default) and leaves
that reserve for the API server. Nothing pins the API server, though, so the kernel is free to run the
HTTP event loop, the feedback writer and vLLM's engine-core process on the worker's cores, where every
time slice they take is one the forward pass waits for. Once the engine is up, `keep_off_engine_cores`
finds the cores the worker bound itself to and pins this process's threads and vLLM's engine-core process
to the remaining ones. Where the worker is not bound (GPU, or binding turned off) it does nothing.

vLLM's engine-core process would busy-wait on the worker's shared-memory queue (0.94 of a core during
chat, measured); `vllm_plugins/engine_wait.py` makes it sleep instead, so the API has the reserved core nearly
to itself.
The engine core on the worker's core (it only runs between the worker's steps) made no difference that
stood out of the run-to-run spread in `flywheel bench feedback`, so it stays beside the API.
"""

from __future__ import annotations

import logging
import os

import psutil  # a dependency of vLLM

logger = logging.getLogger(__name__)

WORKER_NAME = "VLLM::Worker"  # vLLM names its processes (`VLLM::EngineCore`, `VLLM::Worker[_TPn]`)


def engine_cores(pid: int | None = None) -> set[int]:
    """Cores that vLLM's workers under `pid` (default: this process) are bound to, if narrower than all."""
    everything = set(os.sched_getaffinity(0))
    bound: set[int] = set()
    for proc in _vllm_processes(pid):
        try:
            if proc.name().startswith(WORKER_NAME):
                cores = set(proc.cpu_affinity())
                bound |= cores if cores < everything else set()
        except psutil.Error:
            continue
    return bound


def keep_off_engine_cores() -> set[int]:
    """Pin this process's threads and vLLM's engine-core process off the worker's cores; returns the cores
    they now run on (empty when nothing was pinned)."""
    others = pin_off_engine_cores()
    if not others:
        return set()
    for proc in _vllm_processes():  # the engine-core process, not the workers
        try:
            if not proc.name().startswith(WORKER_NAME):
                proc.cpu_affinity(sorted(others))
        except psutil.Error:
            continue
    logger.info("API and engine-core process pinned to CPU(s) %s, off the engine worker's cores", sorted(others))
    return others


def pin_off_engine_cores(pid: int | None = None) -> set[int]:
    """Pin this process's threads off the cores of the vLLM worker under `pid` (default: this process);
    returns the cores they now run on (empty when the worker is not bound or nothing would be left)."""
    engine = engine_cores(pid)
    others = set(os.sched_getaffinity(0)) - engine
    if not engine or not others:
        return set()
    pin_this_process(others)
    return others


def pin_this_process(cores: set[int]) -> None:
    """Pin every thread of this process to `cores`; threads started later inherit their creator's mask."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cores)
        except OSError:  # a thread that just ended
            pass


def _vllm_processes(pid: int | None = None) -> list[psutil.Process]:
    """vLLM's processes under `pid` (they rename themselves `VLLM::...`), not the trainer watcher's."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    out = []
    for child in children:
        try:
            if child.name().startswith("VLLM::"):
                out.append(child)
        except psutil.Error:
            continue
    return out
