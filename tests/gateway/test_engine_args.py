"""The engine's arguments: every pass-through setting reaches vLLM's AsyncEngineArgs, declared once (no engine)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
from vllm.engine.arg_utils import AsyncEngineArgs

from flywheel.dtype import resolve_dtype
from flywheel.settings import Settings
from server.engine import engine_args

# What server/engine.py copied by hand before the settings carried their vLLM name: still passed, unchanged.
PASSED_BEFORE = ("served_model_name", "max_model_len", "max_loras", "max_cpu_loras", "max_lora_rank", "max_num_seqs",
                 "gpu_memory_utilization", "enforce_eager")


def test_every_marked_setting_is_an_engine_argument_of_vllm():
    marked = Settings().engine_args()
    assert set(PASSED_BEFORE) | {"tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"} == set(marked)
    assert set(marked) <= {f.name for f in fields(AsyncEngineArgs)}


def test_settings_reach_vllm_with_their_values(tmp_path: Path):
    settings = Settings(model_path=tmp_path, served_model_name="smol", max_model_len=512, max_loras=3,
                        max_cpu_loras=5, max_lora_rank=32, max_num_seqs=7, gpu_memory_utilization=0.5,
                        enforce_eager=False, tensor_parallel_size=4, pipeline_parallel_size=2, data_parallel_size=3)
    args = engine_args(settings)
    assert isinstance(args, AsyncEngineArgs)
    for name in PASSED_BEFORE:
        assert getattr(args, name) == getattr(settings, name), name
    assert (args.tensor_parallel_size, args.pipeline_parallel_size, args.data_parallel_size) == (4, 2, 3)
    # what Flywheel decides itself
    assert args.model == str(tmp_path)
    assert args.dtype == resolve_dtype(settings.dtype, "serving").name
    assert args.enable_lora is True
    assert args.enable_log_requests is False


def test_parallel_sizes_are_read_from_their_flywheel_variables(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FLYWHEEL_TENSOR_PARALLEL_SIZE", "2")
    monkeypatch.setenv("FLYWHEEL_PIPELINE_PARALLEL_SIZE", "3")
    monkeypatch.setenv("FLYWHEEL_DATA_PARALLEL_SIZE", "4")
    monkeypatch.setenv("FLYWHEEL_MAX_LORAS", "2")
    args = engine_args(Settings())
    assert (args.tensor_parallel_size, args.pipeline_parallel_size, args.data_parallel_size, args.max_loras) == (
        2, 3, 4, 2)


def test_the_defaults_are_one_device_as_before():
    args = engine_args(Settings())
    assert (args.tensor_parallel_size, args.pipeline_parallel_size, args.data_parallel_size) == (1, 1, 1)


@pytest.mark.parametrize("name", ["tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"])
def test_a_parallel_size_below_one_is_refused(name: str):
    with pytest.raises(ValueError, match=name):
        Settings(**{name: 0})
