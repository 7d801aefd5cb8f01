"""`flywheel bench dtype`: a tiny real run writes a table whose `auto` column matches the dtype rule."""

from __future__ import annotations

import json
from pathlib import Path

from bench.dtype import DTYPES, DtypeConfig, run_dtype_bench
from flywheel.dtype import choose_dtype


def test_a_tiny_run_measures_every_dtype_and_names_the_auto_choice(tmp_path: Path):
    report = run_dtype_bench(DtypeConfig(rounds=2, seconds_per_measure=0.01), tmp_path)
    data = json.loads((tmp_path / "bench_dtype.json").read_text())
    assert data["auto"] == choose_dtype("auto").name
    for case, by_dtype in data["gflops"].items():
        assert set(by_dtype) == set(DTYPES) and all(len(v) == 2 and min(v) > 0 for v in by_dtype.values())
        assert 0 < data["auto_vs_fastest"][case] <= 1
    assert report.auto in (tmp_path / "bench_dtype.md").read_text()
