"""The suite on several pytest-xdist workers (`make test` runs two): each worker's engines get cores of their own.

A real engine computes on one core and leaves the other to its API, so one stream of tests keeps a 2-core
machine half idle; two streams fill it. Two engines left to vLLM's automatic binding would both bind their
workers to the same core, though (all cores but the reserved one), and halve each other's speed. Each
xdist worker therefore names its own share of the cores in `VLLM_CPU_OMP_THREADS_BIND` (the variable vLLM
reads; `server/engine.py` counts it as a manual binding), inherited by every gateway, `vllm serve` and
trainer it starts, and one torch thread per core in that share.

Tests are handed out one at a time (`--dist load`), so a module's fixtures (the session's real gateway
included) may start once on each worker. Keeping files together (`--dist loadfile`) was slower here: 864 s
against 788 s for the whole suite on 2 cores, 2026-12-08, as the long files then end the run on one worker.
(xdist's `loadgroup` cannot help: it renames test ids through an attribute that pytest 9 no longer reads.)
"""

from __future__ import annotations

import os


def worker_index() -> int | None:
    """This xdist worker's number (gw0 -> 0), or None outside xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(name[2:]) if name.startswith("gw") else None


def forget_terminal_size() -> None:
    """xdist's workers start with COLUMNS=80 and LINES=24 in their environment, which rich's module-level
    consoles (flywheel/cli.py) fix as their size at import; a CLI test that sets a wider COLUMNS would then
    see its tables cut. A worker has no terminal: leave the size to each test, as in one stream."""
    if worker_index() is not None:
        os.environ.pop("COLUMNS", None)
        os.environ.pop("LINES", None)


def share_cores() -> None:
    """Give this worker's engines and torch threads its own slice of the allowed cores."""
    index, workers = worker_index(), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    cores = sorted(os.sched_getaffinity(0))
    if index is None or workers < 2 or len(cores) < workers or "VLLM_CPU_OMP_THREADS_BIND" in os.environ:
        return  # one stream, too few cores to split, or an operator's own binding: leave vLLM's choice
    size = len(cores) // workers
    mine = cores[index * size:(index + 1) * size]
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, mine))
    os.environ["OMP_NUM_THREADS"] = str(len(mine))  # trainers and reference models the tests start
    import torch

    torch.set_num_threads(len(mine))
