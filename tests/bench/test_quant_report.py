"""`flywheel bench quant`'s page: medians over every measured step, the worst and best round, the ratio."""

from __future__ import annotations

from pathlib import Path

from bench.hardware import Hardware
from bench.quant import QuantReport, write_report
from bench.train_baseline import StageTiming


def timing(side: str, stage: str, round_: int, steps: list[float]) -> StageTiming:
    ordered = sorted(steps)
    return StageTiming(side, stage, round_, sum(steps) / len(steps), ordered[len(ordered) // 2], steps)


def test_rows_and_page(tmp_path: Path) -> None:
    hardware = Hardware("cpu", 2, 24.0, "none", "3.11", "torch", "vllm", "today", (0.0, 0.0, 0.0))
    report = QuantReport({"r": 16, "alpha": 32, "batch_size": 4, "max_length": 256, "threads": 1, "steps": 3,
                          "warmup": 1, "rounds": 2}, hardware, "16-bit base")
    for round_ in (1, 2):
        for stage, slow in (("sft", 6.0), ("dpo", 12.0)):
            report.timings += [timing("4-bit NF4 base", stage, round_, [slow + round_] * 3),
                               timing("16-bit base", stage, round_, [slow / 2] * 3)]
    report.footprint_mib = {"4-bit NF4 base": 120.0, "16-bit base": 270.0}
    rows = {(r[0], r[1]): r for r in report.rows()}
    assert rows[("sft", "4-bit NF4 base")][2:] == [7.5, "8.000-7.000", "2.50x"]
    assert rows[("dpo", "16-bit base")][2:] == [6.0, "6.000-6.000", "1.00x"]
    json_path, md_path = write_report(report, tmp_path)
    page = md_path.read_text()
    assert "**16-bit base** on this machine" in page and "4-bit NF4 base 120.0 MiB" in page
    assert json_path.exists()
