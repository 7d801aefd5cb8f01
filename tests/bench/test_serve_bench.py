"""`flywheel bench serve` end to end: one short round of the three real servers, and which plugins each loaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.servers import REPO

FLYWHEEL_PLUGINS = {"flywheel_cpu_engine_wait", "flywheel_cpu_lora_ops", "flywheel_orphan_guard"}


@pytest.mark.integration
def test_one_round_of_stock_vllm_vllm_with_plugins_and_the_gateway(tmp_path: Path):
    cmd = [sys.executable, "-m", "flywheel", "bench", "serve", "--rounds", "1", "--concurrency", "2",
           "--requests", "2", "--adapter-requests", "2", "--max-tokens", "4", "--swaps", "1",
           "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work")]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads((tmp_path / "out" / "bench_serve.json").read_text())
    assert data["orders"] == [["vllm-stock", "vllm-plugins", "gateway"]]
    turns = {t["server"]: t for t in data["turns"]}
    for server, turn in turns.items():
        assert turn["error"] is None, (server, turn["error"])
        for load in ("base", "adapter"):
            assert turn[load]["errors"] == 0 and turn[load]["tokens_out"] > 0, (server, load, turn[load])
    # VLLM_PLUGINS="" lists the installed plugins and loads none of them; unset, vLLM loads them all
    assert data["plugins"]["vllm-stock"] == []
    assert FLYWHEEL_PLUGINS <= set(data["plugins"]["vllm-plugins"])
    assert FLYWHEEL_PLUGINS <= set(data["plugins"]["gateway"])
    assert data["swap"]["api_ms"] and data["swap"]["registry_ms"]
    assert data["ratios"]["gateway_vs_stock_adapter"]["median_ratio"] > 0
    page = (tmp_path / "out" / "bench_serve.md").read_text()
    assert "| metric | stock vLLM | vLLM + Flywheel plugins | gateway |" in page
