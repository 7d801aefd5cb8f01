"""The deploy checks run the real `promtool`; a machine without it fails them, saying how to install it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
INSTALL_HINT = (
    "promtool is not on PATH. Install it from Debian's `prometheus` package: "
    "`sudo apt-get install -y prometheus` (.ci/run does this on CI), or put the promtool binary of a "
    "Prometheus release (https://prometheus.io/download/) on PATH."
)


@pytest.fixture(scope="session")
def promtool() -> str:
    """The promtool binary; a missing one is a failure, not a skip: CI must check the rules."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    return path


def run_promtool(promtool: str, *args: str | Path) -> subprocess.CompletedProcess:
    """Run promtool and return its result; the caller asserts on the exit status with the output shown."""
    return subprocess.run([promtool, *map(str, args)], capture_output=True, text=True, timeout=120)
