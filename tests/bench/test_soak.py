"""bench/soak*.py: the report's math on tiny inline series, and a short soak against the real gateway."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.hardware import Hardware
from bench.servers import REPO, EngineFlags
from bench.soak import SoakConfig
from bench.soak_page import markdown, write_soak
from bench.soak_report import (
    ChatRecord,
    FeedbackWindow,
    Sample,
    SoakReport,
    SwapEvent,
    error_kind,
    growth,
    p99_flatness,
    windows,
)
from bench.soak_traffic import sample_times, swap_plan


def _config(**overrides) -> SoakConfig:
    sizes = {"duration_s": 40.0, "window_s": 10.0, "warmup_s": 10.0, "swap_every_s": 15.0} | overrides
    return SoakConfig(flags=EngineFlags(model_dir=Path("m")), **sizes)


def _sample(t: float, gateway: float, engine: float = 2000.0, fds: int = 50) -> Sample:
    return Sample(t_s=t, gateway_rss_mib=gateway, engine_rss_mib=engine, gateway_fds=fds, engine_fds=100,
                  feedback_wal_kib=64.0, registry_wal_kib=8.0, processes={"VLLM::EngineCore": engine})


def _records(latencies_by_window: list[list[float]], window_s: float = 10.0) -> list[ChatRecord]:
    return [ChatRecord(start_s=i * window_s + 1 + j * 0.1, latency_ms=ms, ttft_ms=ms / 10, target="base")
            for i, window in enumerate(latencies_by_window) for j, ms in enumerate(window)]


def _report(records: list[ChatRecord], samples: list[Sample], **kwargs) -> SoakReport:
    hardware = Hardware("cpu", 2, 24.0, "none", "3.11", "torch", "vllm", "today", (0.0, 0.0, 0.0))
    return SoakReport(hardware, _config(), records, samples, **kwargs)


def test_error_kinds_are_short_classes():
    assert error_kind("HTTP 503: overloaded") == "HTTP 503"
    assert error_kind("ReadTimeout: timed out") == "ReadTimeout"
    assert error_kind("{'message': 'engine died', 'type': 'internal_error'}") == "error event in the stream"
    assert error_kind("something odd") == "other"


def test_windows_bucket_by_start_and_the_partial_last_joins_the_one_before():
    records = [ChatRecord(0.5, 100, 10, "base"), ChatRecord(9.9, 300, 30, "soak0"),
               ChatRecord(10.2, 200, 20, "base"), ChatRecord(24.0, 400, 40, "base"),
               ChatRecord(12.0, 0, 0, "base", error="HTTP 500: boom")]
    out = windows(records, window_s=10, duration_s=25, warmup_s=10)
    assert [(w.start_s, w.end_s, w.warmup, w.requests, w.errors) for w in out] == [(0, 10, True, 2, 0),
                                                                                 (10, 25, False, 3, 1)]
    assert out[0].p50_ms == 200.0 and out[1].p99_ms == pytest.approx(398.0)  # the failed request has no latency
    assert windows([], 10, 5, 0)[0].requests == 0  # shorter than a window: one window, empty


def test_growth_runs_from_the_end_of_the_warmup_to_the_last_sample():
    series = [(0.0, 50.0), (10.0, 100.0), (20.0, 102.0), (30.0, 104.0)]
    assert growth(series, warmup_s=10) == 0.04  # the warm-up's climb from 50 is left out
    assert growth(series, warmup_s=0) == pytest.approx(1.08)
    assert growth(series, warmup_s=30) is None  # one sample after the warm-up: nothing to compare


def test_p99_is_flat_when_the_last_window_stays_within_the_factor_of_the_first_after_warmup():
    out = windows(_records([[900] * 5, [100] * 5, [500] * 5, [140] * 5]), 10, 40, 10)
    first, last, ratio = p99_flatness(out)
    assert (first.index, last.index, ratio) == (1, 3, 1.4)  # window 0 (warm-up, 900 ms) does not count
    assert p99_flatness(out[:2]) == (None, None, None)


def test_targets_pass_and_fail():
    flat = _records([[100] * 5] * 4)
    steady = [_sample(t, 1000 + t / 10) for t in range(0, 41, 5)]  # +0.3% after the warm-up
    report = _report(flat, steady, swaps=[SwapEvent(15.0, "promote", 2, 20.0)])
    assert report.targets() == {"zero_errors": True, "rss_growth_under_5_percent": True, "p99_flat": True}
    leaking = [_sample(t, 1000 + 3 * t) for t in range(0, 41, 5)]  # 1030 -> 1120 MiB: +8.7%
    slower = _records([[100] * 5, [100] * 5, [100] * 5, [200] * 5])
    failed = [SwapEvent(15.0, "promote", 2, 20.0, error="HTTP 404: no such version")]
    report = _report(slower, leaking, swaps=failed, other_errors=["NotReady: /ready answered 503"],
                     feedback=[FeedbackWindow(0.0, 90, 3, 9.0, 2.0, 5.0, "ConnectionResetError: reset")])
    assert report.targets() == {"zero_errors": False, "rss_growth_under_5_percent": False, "p99_flat": False}
    assert report.errors() == {"promote: HTTP 404": 1, "NotReady": 1, "feedback: ConnectionResetError": 3}


def test_first_served_is_the_first_new_version_token_after_the_swap():
    records = [ChatRecord(14.0, 500, 100, "soak0", served_by="soak0@2"),  # before the call: not it
               ChatRecord(15.5, 500, 300, "soak0", served_by="soak0@1"),  # the old version
               ChatRecord(16.0, 500, 200, "soak0", served_by="soak0@2")]
    report = _report(records, [], swaps=[SwapEvent(15.0, "promote", 2, 20.0), SwapEvent(30.0, "rollback", 1, 9.0)])
    assert report.first_served_ms() == [1200.0, None]


def test_the_json_page_and_plot_are_written(tmp_path: Path):
    report = _report(_records([[100, 120]] * 4), [_sample(t, 1000) for t in range(0, 41, 5)],
                     swaps=[SwapEvent(15.0, "promote", 2, 20.0), SwapEvent(30.0, "rollback", 1, 9.0)])
    report.config.out_dir = tmp_path
    files = write_soak(report)
    assert [f.name for f in files] == ["bench_soak.json", "bench_soak.md", "bench_soak.png"]
    data = json.loads(files[0].read_text())
    assert data["passed"] and data["rss_growth"] == {"gateway": 0.0, "engine": 0.0}
    assert data["drift_after_warmup"]["gateway_fds"] == 0
    assert "## Result: PASS" in markdown(report) and "nice 5" in markdown(report)
    assert files[2].read_bytes()[:4] == b"\x89PNG"


def test_the_schedules_stay_inside_the_run():
    assert swap_plan(60, 20) == [(20, "promote", 2), (40, "rollback", 1)]
    assert sample_times(10, 3) == [0, 3, 6, 9, 10]
    assert sample_times(9, 3) == [0, 3, 6, 9]


def test_config_errors_name_the_flag():
    with pytest.raises(ValueError, match="--warmup"):
        _config(warmup_s=40.0)
    with pytest.raises(ValueError, match="--adapter-ranks"):
        _config(adapter_ranks=(32,))


@pytest.mark.integration
def test_a_short_soak_against_the_real_gateway(tmp_path: Path):
    """30 s of 8 streams over the base model and 3 adapters, feedback beside them, a promote and a rollback."""
    cmd = [sys.executable, "-m", "flywheel", "bench", "soak", "--duration", "30", "--concurrency", "8",
           "--max-tokens", "16", "--window", "10", "--warmup", "10", "--swap-every", "10", "--sample-every", "2",
           "--feedback-rate", "20", "--completions", "4", "--out", str(tmp_path / "out"),
           "--work-dir", str(tmp_path / "work")]  # 4 rated completions: each is served one at a time before the soak
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    log = tmp_path / "work" / "gateway.log"
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:] + (log.read_text()[-3000:]
                                                                             if log.exists() else "")
    data = json.loads((tmp_path / "out" / "bench_soak.json").read_text())
    assert data["errors"] == {}, data["errors"]
    for key in ("hardware", "config", "windows", "samples", "swaps", "feedback_windows", "rss_growth",
                "drift_after_warmup", "p99_flatness", "targets", "passed", "requests_by_target"):
        assert key in data
    assert set(data["requests_by_target"]) == {"base", "soak0", "soak1", "soak2"}
    assert len(data["windows"]) == 3 and all(w["requests"] > 0 for w in data["windows"])
    samples = data["samples"]
    assert len(samples) >= 12  # every 2 s over 30 s
    assert all(s["gateway_rss_mib"] > 0 and s["engine_rss_mib"] > 0 and s["gateway_fds"] > 0 for s in samples)
    assert any(name.startswith("VLLM::") for name in samples[-1]["processes"])
    assert samples[-1]["feedback_wal_kib"] > 0  # the feedback was written
    assert [(s["action"], s["version"], s["error"]) for s in data["swaps"]] == [("promote", 2, None),
                                                                               ("rollback", 1, None)]
    assert data["swaps"][0]["first_served_ms"] is not None  # the promoted version answered
    assert data["feedback_windows"] and sum(f["submitted"] for f in data["feedback_windows"]) > 0
    assert data["rss_growth"]["gateway"] is not None and data["rss_growth"]["engine"] is not None
    assert set(data["targets"]) == {"zero_errors", "rss_growth_under_5_percent", "p99_flat"}
    assert (tmp_path / "out" / "bench_soak.md").exists() and (tmp_path / "out" / "bench_soak.png").exists()
