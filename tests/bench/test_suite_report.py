"""bench/suite_report.py: which gateway the naive PEFT server is compared with."""

from __future__ import annotations

from pathlib import Path

from bench.hardware import Hardware
from bench.load import LoadSummary
from bench.servers import EngineFlags
from bench.suite import SuiteConfig
from bench.suite_report import MixedResult, SuiteReport, markdown


def _result(server: str, adapters: int, max_loras: int | None, tokens_per_s: float) -> MixedResult:
    summary = LoadSummary(requests=8, errors=0, wall_s=1.0, tokens_out=int(tokens_per_s),
                          output_tokens_per_s=tokens_per_s, requests_per_s=8.0, ttft_p50_ms=1.0, ttft_p99_ms=1.0,
                          itl_p50_ms=1.0, itl_p99_ms=1.0, latency_p50_ms=1.0, latency_p99_ms=1.0)
    return MixedResult(server, adapters, max_loras, summary)


def _report(*mixed: MixedResult) -> SuiteReport:
    hardware = Hardware("cpu", 2, 24.0, "none", "3.11", "torch", "vllm", "today", (0.0, 0.0, 0.0))
    return SuiteReport(hardware, SuiteConfig(flags=EngineFlags(model_dir=Path("m"))), mixed=list(mixed))


def test_the_peft_server_meets_the_gateway_configured_for_its_adapters():
    report = _report(_result("gateway", 16, 4, 40.0), _result("gateway", 16, 16, 80.0), _result("peft", 16, None, 16.0))
    value, gw, _ = report.peft_ratio()
    assert gw.max_loras == 16 and value == 5.0
    assert report.peft_ratios() == [(4, 2.5), (16, 5.0)]
    assert "5.0x with max_loras 16" in markdown(report) and "2.5x with max_loras 4" in markdown(report)
    assert report.peft_ratio("peft-batched") == (None, None, None) and "its own adapter" in markdown(report)


def test_the_batched_peft_variant_is_compared_with_the_same_gateway():
    report = _report(_result("gateway", 16, 16, 80.0), _result("peft", 16, None, 16.0),
                     _result("peft-batched", 16, None, 40.0))
    value, gw, peft = report.peft_ratio("peft-batched")
    assert (value, gw.max_loras, peft.server) == (2.0, 16, "peft-batched")
    assert report.as_dict()["gateway_over_peft_batched"] == 2.0 and report.as_dict()["gateway_over_peft"] == 5.0
    assert "the gateway with max_loras 16 is 2.0x it" in markdown(report)


def test_without_a_gateway_sized_for_them_the_main_one_is_used():
    report = _report(_result("gateway", 16, 4, 40.0), _result("peft", 16, None, 16.0))
    value, gw, _ = report.peft_ratio()
    assert gw.max_loras == 4 and value == 2.5
    assert _report(_result("gateway", 16, 4, 40.0)).peft_ratio() == (None, None, None)
