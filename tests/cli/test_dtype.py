"""dtype `auto`: bf16 only where the hardware runs it natively; an explicit setting wins; every user follows it."""

from __future__ import annotations

import pytest
import torch

from flywheel.dtype import Hardware, choose_dtype
from flywheel.settings import Settings
from trainer.config import TrainConfig
from trainer.qlora import compute_dtype

AVX2 = Hardware(cuda=False, cpu_capability="AVX2")
AVX512_NO_BF16 = Hardware(cuda=False, cpu_capability="AVX512")
AVX512_BF16 = Hardware(cuda=False, cpu_avx512_bf16=True, cpu_capability="AVX512")
AMX = Hardware(cuda=False, cpu_amx=True, cpu_capability="AVX512")


@pytest.mark.parametrize(("hardware", "expected"), [
    (AVX2, "float32"),
    (AVX512_NO_BF16, "float32"),
    (AVX512_BF16, "bfloat16"),
    (AMX, "bfloat16"),
    (Hardware(cuda=True, cuda_bf16=True), "bfloat16"),
    (Hardware(cuda=True, cuda_bf16=False), "float16"),
])
def test_auto_follows_the_hardware(hardware: Hardware, expected: str):
    choice = choose_dtype("auto", hardware)
    assert choice.name == expected
    assert choice.reason.startswith("auto:")


def test_the_reason_names_what_is_missing_on_a_cpu_without_bf16():
    assert "no native bf16" in choose_dtype("auto", AVX2).reason
    assert "AVX2" in choose_dtype("auto", AVX2).reason
    assert "AVX512-BF16" in choose_dtype("auto", AVX512_BF16).reason


@pytest.mark.parametrize("explicit", ["bfloat16", "float16", "float32"])
def test_an_explicit_setting_wins_on_any_hardware(explicit: str):
    for hardware in (AVX2, AVX512_BF16, Hardware(cuda=True, cuda_bf16=False)):
        assert choose_dtype(explicit, hardware).name == explicit


def test_this_machine_matches_what_torch_reports():
    hardware = Hardware.detect()
    expected = "bfloat16" if (hardware.cpu_avx512_bf16 or hardware.cpu_amx or hardware.cuda_bf16) else None
    name = choose_dtype("auto").name
    assert name == (expected or ("float16" if hardware.cuda else "float32"))
    assert choose_dtype("auto").torch_dtype() == getattr(torch, name)


def test_settings_default_to_auto_and_refuse_unknown_dtypes(monkeypatch: pytest.MonkeyPatch):
    assert Settings().dtype == "auto"
    monkeypatch.setenv("FLYWHEEL_DTYPE", "float32")
    assert Settings().dtype == "float32"
    monkeypatch.setenv("FLYWHEEL_DTYPE", "fp8")
    with pytest.raises(ValueError, match="dtype"):
        Settings()


def test_training_follows_the_setting_and_never_trains_fp16_on_a_cpu():
    assert compute_dtype(TrainConfig(dtype="float32")) == torch.float32
    assert compute_dtype(TrainConfig(dtype="bfloat16")) == torch.bfloat16
    assert compute_dtype(TrainConfig(dtype="auto")) == choose_dtype("auto").torch_dtype()
    if not torch.cuda.is_available():
        assert compute_dtype(TrainConfig(dtype="float16")) == torch.float32
    with pytest.raises(ValueError, match="dtype"):
        TrainConfig(dtype="half")
