"""bench/profile_stacks.py: py-spy's raw stacks sorted into a decode step's categories."""

from __future__ import annotations

from bench.profile_stacks import CATEGORIES, category, parse

LINEAR = "apply (vllm/model_executor/layers/linear.py:200)"
LORA = "add_lora_linear (server/vllm_plugins/lora_ops.py:90)"
ENGINE = 'process 42:"VLLM::EngineCore"'
RAW = "\n".join([
    f"{ENGINE};run_busy_loop (/venv/vllm/v1/engine/core.py:10);forward (/venv/vllm/lora/layers/base.py:5);{LORA} 7",
    f"{ENGINE};forward (/venv/vllm/lora/layers/base.py:5);{LINEAR} 5",
    f"{ENGINE};forward (vllm/v1/attention/backends/cpu_attn.py:300) 3",
    f"{ENGINE};schedule (/venv/vllm/v1/core/sched/scheduler.py:9) 1",
    'process 7:"python -m flywheel serve";handle (/repo/server/chat.py:1) 4',
    "garbage line without a count",
])


def test_the_innermost_known_frame_decides():
    assert category(["run (/venv/vllm/v1/engine/core.py:1)", LORA]) == "lora shrink/expand"
    assert category([LORA, LINEAR]) == "base matmuls"  # a base matmul called from inside a LoRA layer
    assert category(["main (x.py:1)"]) == "other"


def test_parse_groups_samples_by_process():
    processes = parse(RAW)
    assert set(processes) == {42, 7}
    engine = processes[42]
    assert engine.command == "VLLM::EngineCore" and engine.total == 16
    share = engine.share()
    assert set(share) == set(CATEGORIES) and abs(sum(share.values()) - 1) < 1e-9
    assert share["lora shrink/expand"] == 7 / 16 and share["base matmuls"] == 5 / 16
    assert share["attention"] == 3 / 16 and share["scheduler/IPC"] == 1 / 16
    assert processes[7].total == 4


def test_without_subprocesses_everything_is_pid_zero():
    assert parse(f"{LINEAR} 3")[0].by_category["base matmuls"] == 3
