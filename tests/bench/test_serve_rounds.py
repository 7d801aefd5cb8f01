"""bench/serve.py and bench/serve_report.py: the round orders, median/spread/worst, ratios and the page."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from bench.hardware import Hardware
from bench.load import LoadSummary
from bench.serve import ServeConfig, ServeReport, Turn, round_order
from bench.serve_report import SERVERS, Spread, markdown, ratio_result, summary_data
from bench.servers import EngineFlags, plugins_loaded


def test_every_server_holds_every_place_equally_often():
    orders = [round_order(SERVERS, r) for r in range(6)]
    assert orders[:4] == [("vllm-stock", "vllm-plugins", "gateway"), ("gateway", "vllm-plugins", "vllm-stock"),
                          ("vllm-plugins", "gateway", "vllm-stock"), ("vllm-stock", "gateway", "vllm-plugins")]
    assert len(set(orders)) == 6  # all six orders of three servers
    assert all(count == 2 for count in Counter((s, o.index(s)) for o in orders for s in o).values())
    places = {s: sum(o.index(s) for o in orders[:4]) for s in SERVERS}  # 4 rounds: the same place sum each
    assert len(set(places.values())) == 1
    assert [round_order(("a", "b"), r) for r in range(4)] == [("a", "b"), ("b", "a"), ("b", "a"), ("a", "b")]


def test_the_worst_round_is_the_lowest_throughput_or_the_highest_latency():
    assert Spread.of([100.0, 120.0, 90.0, 110.0]) == Spread(105.0, 90.0, 120.0, 90.0, 4)
    assert Spread.of([30.0, 50.0, 40.0], higher_is_better=False) == Spread(40.0, 30.0, 50.0, 50.0, 3)
    assert Spread.of([]) is None
    assert Spread.of([221.84, 9.5]).cell() == "115.7 / 9.500 (9.500-221.8)"


def _summary(tokens_per_s: float, ttft: float = 900.0) -> LoadSummary:
    return LoadSummary(requests=32, errors=0, wall_s=10.0, tokens_out=2048, output_tokens_per_s=tokens_per_s,
                       requests_per_s=3.2, ttft_p50_ms=ttft, ttft_p99_ms=ttft * 1.1, itl_p50_ms=60.0,
                       itl_p99_ms=80.0, latency_p50_ms=4000.0, latency_p99_ms=4500.0)


# output tokens/s per server, (base, adapter) for each of 4 rounds
SPEEDS = {"vllm-stock": [(150, 60), (160, 64), (140, 56), (155, 62)],
          "vllm-plugins": [(200, 100), (210, 104), (190, 96), (205, 98)],
          "gateway": [(210, 105), (200, 110), (196, 90), (215, 108)]}


def _report() -> ServeReport:
    hardware = Hardware("cpu", 2, 24.0, "none", "3.11", "torch", "vllm", "today", (2.5, 2.0, 1.5))
    report = ServeReport(hardware, ServeConfig(flags=EngineFlags(model_dir=Path("m"))),
                         load_average_at_end=(3.0, 2.5, 2.0))
    plugins = {"vllm-stock": [], "vllm-plugins": ["flywheel_cpu_lora_ops"], "gateway": ["flywheel_cpu_lora_ops"]}
    for r in range(4):
        order = round_order(SERVERS, r)
        report.orders.append(order)
        for place, server in enumerate(order, 1):
            base, adapter = SPEEDS[server][r]
            report.turns.append(Turn(server, r + 1, place, (2.0, 2.0, 2.0), 30.0, _summary(float(base)),
                                     _summary(float(adapter), ttft=1300.0 + r), {}, plugins[server]))
    return report


def test_ratios_are_of_medians_with_the_rounds_worst_beside_them():
    report = _report()
    result = ratio_result(report, ("gateway", "adapter"), ("vllm-stock", "adapter"))
    assert result["median_ratio"] == round(106.5 / 61.0, 3)
    assert result["per_round"] == [round(105 / 60, 3), round(110 / 64, 3), round(90 / 56, 3), round(108 / 62, 3)]
    assert result["worst_round"] == round(90 / 56, 3)
    data = summary_data(report)
    assert data["ratios"]["gateway_vs_plugins_base"]["median_ratio"] == round(205.0 / 202.5, 3)
    assert data["spreads"]["gateway"]["adapter"]["ttft_p50_ms"] == {"median": 1301.5, "low": 1300.0,
                                                                    "high": 1303.0, "worst": 1303.0, "rounds": 4}
    assert data["plugins"] == {"vllm-stock": [], "vllm-plugins": ["flywheel_cpu_lora_ops"],
                               "gateway": ["flywheel_cpu_lora_ops"]}
    json.dumps(report.as_dict(), default=str)  # the JSON file's content serializes


def test_the_page_has_three_columns_the_rounds_and_the_conditions():
    page = markdown(_report())
    assert "| metric | stock vLLM | vLLM + Flywheel plugins | gateway |" in page
    assert "| output tokens/s | 152.5 / 140.0 (140.0-160.0) | 202.5 / 190.0 (190.0-210.0) |" in page
    assert "gateway / stock vLLM, 1 adapter | 1.746x | 1.607-1.750 | >= 1.5x | met (worst round met) |" in page
    assert "adapter / base on the gateway | 0.520x" in page and "NOT met" in page
    assert "2. gateway -> vLLM + Flywheel plugins -> stock vLLM" in page
    assert '  - stock vLLM (`VLLM_PLUGINS=""`): none' in page
    assert "  - vLLM + Flywheel plugins (`VLLM_PLUGINS` unset): `flywheel_cpu_lora_ops`" in page
    assert "load average when the run started: 2.50, 2.00, 1.50" in page and "run ended: 3.00" in page
    assert "## Errors" not in page and "## Hot-swap latency" not in page


LOG = """\
(EngineCore pid=1) DEBUG 12-07 14:54:38 [__init__.py:52] Available plugins for group vllm.general_plugins:
(EngineCore pid=1) DEBUG 12-07 14:54:38 [__init__.py:54] - lora_filesystem_resolver -> vllm.plugins.a:register
(EngineCore pid=1) DEBUG 12-07 14:54:38 [__init__.py:54] - flywheel_cpu_lora_ops -> server.lora_ops:register
{last}
(EngineCore pid=1) INFO 12-07 14:54:38 [core.py:133] Initializing a V1 LLM engine
"""


def test_the_plugins_vllm_loaded_are_read_from_its_log():
    unset = "(EngineCore pid=1) DEBUG 12-07 14:54:38 [__init__.py:59] All plugins in this group will be loaded. Set"
    assert plugins_loaded(LOG.format(last=unset)) == ["flywheel_cpu_lora_ops", "lora_filesystem_resolver"]
    assert plugins_loaded(LOG.format(last="")) == []  # VLLM_PLUGINS="": listed, none loaded
    allowed = "(EngineCore pid=1) DEBUG 12-07 14:54:38 [__init__.py:65] Loading plugin flywheel_cpu_lora_ops"
    assert plugins_loaded(LOG.format(last=allowed)) == ["flywheel_cpu_lora_ops"]
    assert plugins_loaded("INFO nothing about plugins") is None


def test_a_run_stopped_early_says_so():
    report = _report()
    report.config.rounds = 6
    assert "in 4 of 6 planned rounds (the run stopped early)" in markdown(report)
    report.config.rounds = 4
    assert "in 4 rounds, the order rotated" in markdown(report)
