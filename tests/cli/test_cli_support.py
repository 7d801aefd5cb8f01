"""The three command lines share one settings loader and one error line (flywheel/cli_support.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from feedback.cli import app as feedback_app
from flywheel.cli import app as flywheel_app
from trainer.cli import app as train_app

runner = CliRunner()


@pytest.mark.parametrize(("app", "args"), [(flywheel_app, ["adapters", "list"]), (feedback_app, ["stats"]),
                                           (train_app, ["runs"])], ids=["flywheel", "feedback", "train"])
def test_invalid_settings_are_one_red_line_and_exit_1(app, args: list[str]):
    result = runner.invoke(app, args, env={"FLYWHEEL_MAX_LORAS": "lots"})
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: invalid settings:") and "max_loras" in result.output
    assert "Traceback" not in result.output


def test_the_shared_module_loads_no_project_module_beyond_what_settings_loads():
    code = ("import sys; import flywheel.settings; before = set(sys.modules); import flywheel.cli_support; "
            "print(sorted(m for m in set(sys.modules) - before "
            "if m.split('.')[0] in ('flywheel', 'trainer', 'server', 'adapters', 'feedback', 'bench')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "['flywheel.cli_support']"
