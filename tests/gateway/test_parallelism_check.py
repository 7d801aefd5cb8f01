"""The engine's parallel layout is checked against the machine's devices before vLLM starts."""

from __future__ import annotations

import pytest

from flywheel.settings import Settings
from server.engine import VLLMEngine, devices
from server.parallelism import Devices, check_parallelism


def layout(tp: int = 1, pp: int = 1, dp: int = 1) -> Settings:
    return Settings(tensor_parallel_size=tp, pipeline_parallel_size=pp, data_parallel_size=dp)


@pytest.mark.parametrize(("tp", "pp", "dp"), [(1, 1, 1), (2, 1, 1), (2, 2, 1), (1, 2, 2), (4, 1, 1)])
def test_a_layout_that_fits_the_gpus_passes(tp: int, pp: int, dp: int):
    check_parallelism(layout(tp, pp, dp), Devices("cuda", 4))


def test_more_gpus_than_visible_names_the_settings_and_the_count():
    with pytest.raises(ValueError) as e:
        check_parallelism(layout(tp=2, pp=2, dp=2), Devices("cuda", 4))
    message = str(e.value)
    for part in ("FLYWHEEL_TENSOR_PARALLEL_SIZE=2", "FLYWHEEL_PIPELINE_PARALLEL_SIZE=2",
                 "FLYWHEEL_DATA_PARALLEL_SIZE=2", "need 8 cuda devices", "4 are visible"):
        assert part in message


def test_data_parallel_counts_its_own_devices():
    check_parallelism(layout(tp=2), Devices("cuda", 2))
    with pytest.raises(ValueError, match="1 is visible"):
        check_parallelism(layout(dp=2), Devices("cuda", 1))


def test_on_a_cpu_each_worker_needs_a_numa_node_under_auto_binding():
    check_parallelism(layout(tp=2), Devices("cpu", 2, "auto"))
    check_parallelism(layout(pp=2), Devices("cpu", 2, "auto"))
    with pytest.raises(ValueError) as e:
        check_parallelism(layout(tp=2), Devices("cpu", 1, "auto"))
    assert "FLYWHEEL_TENSOR_PARALLEL_SIZE=2" in str(e.value)
    assert "1 NUMA node(s)" in str(e.value)
    assert "VLLM_CPU_OMP_THREADS_BIND" in str(e.value)


def test_on_a_cpu_manual_binding_needs_one_cpu_set_per_worker():
    check_parallelism(layout(tp=2), Devices("cpu", 2, "manual"))
    for listed in (1, 3):
        with pytest.raises(ValueError, match=f"lists {listed} CPU set"):
            check_parallelism(layout(tp=2), Devices("cpu", listed, "manual"))


def test_on_a_cpu_simulated_numa_nodes_need_a_core_per_worker():
    check_parallelism(layout(tp=2), Devices("cpu", 2, "simulated"))
    with pytest.raises(ValueError, match="2 CPU cores"):
        check_parallelism(layout(tp=2, dp=2), Devices("cpu", 2, "simulated"))


def test_on_a_cpu_unbound_or_single_worker_layouts_pass():
    check_parallelism(layout(tp=4), Devices("cpu", 0, "nobind"))
    check_parallelism(layout(), Devices("cpu", 1, "auto"))


def test_this_machine_is_counted_as_vllm_counts_it():
    here = devices()
    assert here.count >= 1 or here.cpu_binding == "nobind"
    check_parallelism(layout(), here)  # the default layout fits any machine


def test_the_engine_refuses_a_layout_before_starting_vllm(monkeypatch: pytest.MonkeyPatch):
    here = devices()
    if here.cpu_binding == "nobind":
        pytest.skip("CPU threads unbound: vLLM places any number of workers")
    for name in ("FLYWHEEL_GATEWAY_PID", "VLLM_CPU_KVCACHE_SPACE", "FLYWHEEL_ENGINE_SPIN_WAIT"):
        monkeypatch.delenv(name, raising=False)  # VLLMEngine sets them; restored after the test
    too_many = here.count + 1
    with pytest.raises(ValueError, match=f"FLYWHEEL_TENSOR_PARALLEL_SIZE={too_many}"):
        VLLMEngine(layout(tp=too_many))
