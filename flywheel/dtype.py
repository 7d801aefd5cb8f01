"""The compute dtype, chosen by the hardware: one rule for serving, training and gate scoring.

`auto` means bfloat16 only where the hardware runs it natively: a GPU that supports it, or a CPU with
AVX512-BF16 or AMX instructions. Elsewhere (an AVX2-only CPU, say) torch emulates bf16 matmuls, which run
several times slower than float32 (measured in docs/bench_dtype.md), so `auto` picks float32 there, and
float16 on a GPU without bf16. An explicit dtype always wins.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

logger = logging.getLogger(__name__)

DtypeSetting = Literal["auto", "bfloat16", "float16", "float32"]
AUTO = "auto"


@dataclass(frozen=True)
class Hardware:
    """The facts the choice depends on, as torch reports them."""

    cuda: bool
    cuda_bf16: bool = False
    cpu_avx512_bf16: bool = False
    cpu_amx: bool = False
    cpu_capability: str = "unknown"  # torch.backends.cpu.get_cpu_capability(): DEFAULT, AVX2, AVX512, ...

    @classmethod
    def detect(cls) -> Hardware:
        """Ask torch about this machine (cheap; no GPU memory is touched)."""
        import torch

        if torch.cuda.is_available():
            return cls(cuda=True, cuda_bf16=torch.cuda.is_bf16_supported())
        return cls(
            cuda=False,
            cpu_avx512_bf16=torch.cpu._is_avx512_bf16_supported(),  # what vLLM's CPU backend checks too
            cpu_amx=torch.cpu._is_amx_tile_supported(),
            cpu_capability=torch.backends.cpu.get_cpu_capability(),
        )

    @property
    def native_bf16(self) -> bool:
        return self.cuda_bf16 if self.cuda else self.cpu_avx512_bf16 or self.cpu_amx


@dataclass(frozen=True)
class DtypeChoice:
    """A concrete dtype name (bfloat16, float16, float32) and why it was chosen."""

    name: str
    reason: str

    def torch_dtype(self):  # -> torch.dtype (torch is imported lazily: this module is imported by settings users)
        import torch

        return getattr(torch, self.name)


def choose_dtype(setting: str, hardware: Hardware | None = None) -> DtypeChoice:
    """Resolve a dtype setting; `auto` follows the hardware (detected when not given)."""
    if setting != AUTO:
        return DtypeChoice(setting, "set explicitly")
    hw = hardware or Hardware.detect()
    if hw.cuda:
        if hw.cuda_bf16:
            return DtypeChoice("bfloat16", "auto: this GPU supports bf16")
        return DtypeChoice("float16", "auto: this GPU has no bf16 support")
    if hw.native_bf16:
        has = "AMX" if hw.cpu_amx else "AVX512-BF16"
        return DtypeChoice("bfloat16", f"auto: this CPU ({hw.cpu_capability}) runs bf16 natively ({has})")
    return DtypeChoice(
        "float32",
        f"auto: this CPU ({hw.cpu_capability}) has no native bf16 (no AVX512-BF16 or AMX), where bf16 is emulated",
    )


def resolve_dtype(setting: str, what: str, hardware: Hardware | None = None) -> DtypeChoice:
    """`choose_dtype`, logged at INFO with what it is for (serving, training, gate scoring)."""
    choice = choose_dtype(setting, hardware)
    logger.info("%s dtype: %s (%s)", what, choice.name, choice.reason)
    return choice
