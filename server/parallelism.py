"""The engine's parallel layout (tensor x pipeline x data parallel), checked against the machine before vLLM starts.

vLLM 0.32 runs every layout with LoRA: tensor and pipeline parallel split one engine over several workers, and
data parallel starts independent engines for a dense model (`vllm/v1/engine/core.py`, "Non-MoE DP ranks are
completely independent") behind one load-balancing client that sends `add_lora` to every engine
(`DPLBAsyncMPClient.call_utility_async`). Each worker needs a device of its own: a GPU, or on a CPU one NUMA node.
vLLM's own checks come late or speak in its terms (a world size larger than the GPUs, a failed assert in a worker
process, or for data parallel only an index error), so this one runs first and names Flywheel's settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from flywheel.settings import Settings

# How vLLM's CPU backend places its workers, from VLLM_CPU_OMP_THREADS_BIND (`vllm/utils/ompmultiprocessing.py`).
CpuBinding = Literal["auto", "manual", "nobind", "simulated"]


@dataclass(frozen=True)
class Devices:
    """What the engine's workers can be placed on here, counted as vLLM counts them."""

    platform: str  # vLLM's device name: "cuda", "rocm", "cpu", ...
    count: int  # GPUs visible; on a CPU, NUMA nodes (auto binding), CPU sets listed (manual) or cores (simulated)
    cpu_binding: CpuBinding | None = None  # CPU only


def workers(settings: Settings) -> int:
    """How many worker processes (each on a device of its own) the settings ask vLLM for."""
    return settings.tensor_parallel_size * settings.pipeline_parallel_size * settings.data_parallel_size


def _asked(settings: Settings) -> str:
    return (f"FLYWHEEL_TENSOR_PARALLEL_SIZE={settings.tensor_parallel_size} x "
            f"FLYWHEEL_PIPELINE_PARALLEL_SIZE={settings.pipeline_parallel_size} x "
            f"FLYWHEEL_DATA_PARALLEL_SIZE={settings.data_parallel_size} = {workers(settings)} workers")


def check_parallelism(settings: Settings, devices: Devices) -> None:
    """Raise ValueError, naming the settings and what this machine has, when the layout cannot start here."""
    need = workers(settings)
    if devices.platform != "cpu":
        if need > devices.count:
            raise ValueError(
                f"{_asked(settings)} need {need} {devices.platform} devices, but {devices.count} "
                f"{'is' if devices.count == 1 else 'are'} visible here; lower those settings or make more devices "
                "visible (CUDA_VISIBLE_DEVICES)"
            )
        return
    # vLLM's CPU backend runs tensor and pipeline parallel over gloo with its shared-memory communicator
    # (`vllm/distributed/device_communicators/cpu_communicator.py`) and binds each worker's OpenMP threads to CPUs
    # of its own: under the default auto binding, worker N gets the N-th NUMA node, and vLLM asserts in the worker
    # when there are too few (`OMPProcessManager._get_autobind_cpu_ids`).
    if devices.cpu_binding == "nobind" or need == 1:
        return
    if devices.cpu_binding == "manual":
        if need != devices.count:
            raise ValueError(
                f"{_asked(settings)}, but VLLM_CPU_OMP_THREADS_BIND lists {devices.count} CPU set(s) "
                "('|'-separated, one per worker); list exactly one per worker or change those settings"
            )
        return
    if need > devices.count:
        where = ("CPU cores (VLLM_CPU_SIM_MULTI_NUMA)" if devices.cpu_binding == "simulated"
                 else "NUMA node(s) (vLLM binds each CPU worker to a NUMA node of its own)")
        raise ValueError(
            f"{_asked(settings)}, but this machine has {devices.count} {where}; lower those settings, or bind the "
            "workers yourself with one CPU set per worker in VLLM_CPU_OMP_THREADS_BIND (for example '0-7|8-15')"
        )
