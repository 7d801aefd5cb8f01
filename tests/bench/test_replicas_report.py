"""`flywheel bench replicas`' page: the time to the other replica(s), the 2 s target, misses and failed streams."""

from __future__ import annotations

import json
from pathlib import Path

from bench.hardware import Hardware
from bench.replicas_report import Move, ReplicasConfig, ReplicasReport, StreamsResult, summary_rows, write_page
from bench.servers import EngineFlags


def move(index: int, via: str, a: float | None, b: float | None, error: str | None = None) -> Move:
    return Move(index=index, via=via, version=index + 1, call_s=0.2, error=error,
                reported_s={"A": a and a - 0.05, "B": b and b - 0.05}, answered_s={"A": a, "B": b})


def test_the_other_replica_counts_and_a_miss_fails_the_target(tmp_path: Path) -> None:
    hardware = Hardware("cpu", 2, 24.0, "none", "3.11", "torch", "vllm", "today", (0.0, 0.0, 0.0))
    moves = [move(1, "admin API of A", 0.1, 0.6), move(2, "admin API of B", 2.5, 0.1),
             move(3, "CLI", 0.4, 0.9), move(4, "CLI", 0.3, None)]
    streams = StreamsResult()
    streams.add(None)
    config = ReplicasConfig(flags=EngineFlags(model_dir=tmp_path), moves=4, note="shared machine", out_dir=tmp_path)
    report = ReplicasReport(config, hardware, moves, streams)

    assert [m.to_others_s() for m in moves] == [0.6, 2.5, 0.9, None]  # the mover's own replica is left out
    rows = {row[0]: row for row in summary_rows(report)}
    assert rows["CLI"][1:6] == [2, 0.9, 0.9, "missed", "1/2"]
    assert rows["all"][5] == "2/4"
    assert report.targets() == {"moves_within_2s_99pct": False, "zero_failed_requests": True}
    assert report.verdict().endswith("FAIL")

    json_path, md_path = write_page(report)
    page = md_path.read_text()
    assert "**Run note.** shared machine" in page and "flywheel bench replicas --moves 4" in page
    assert json.loads(json_path.read_text())["within_target"] == 2
