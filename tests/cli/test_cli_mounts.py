"""The packages' sub-commands are mounted for good: one whose import breaks stops `flywheel`, loudly."""

from __future__ import annotations

import subprocess
import sys

from flywheel.cli import app

BROKEN_TRAINER_CLI = """
import runpy, sys

class Broken:  # what a bug in trainer/cli.py's imports looks like to flywheel/cli.py
    def find_spec(self, name, path=None, target=None):
        if name == "trainer.cli":
            raise ImportError("trainer.cli is broken on purpose")

sys.meta_path.insert(0, Broken())
sys.argv = ["flywheel", "--help"]
runpy.run_module("flywheel", run_name="__main__")
"""


def test_every_package_command_is_mounted():
    assert {group.name for group in app.registered_groups} >= {"model", "adapters", "feedback", "train", "bench"}


def test_a_broken_sub_command_import_fails_flywheel_with_its_error():
    done = subprocess.run([sys.executable, "-c", BROKEN_TRAINER_CLI], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0, done.stdout  # not a --help without `train`
    assert "ImportError: trainer.cli is broken on purpose" in done.stderr
