"""The `flywheel` command line: help, clear errors for bad settings, and the adapter commands end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from flywheel.cli import app
from flywheel.default_model import ModelUnavailable, check_model_dir
from tests.lora_factory import write_lora, write_tiny_base

runner = CliRunner()


def test_help_lists_every_command_group():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "model", "adapters", "feedback", "train", "bench"):
        assert command in result.output


def test_missing_model_is_a_clear_error_naming_the_setting(tmp_path: Path):
    with pytest.raises(ModelUnavailable, match="FLYWHEEL_MODEL_PATH"):
        check_model_dir(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailable, match=r"lacks config\.json"):
        check_model_dir(tmp_path / "empty")
    result = runner.invoke(app, ["adapters", "list"], env={"FLYWHEEL_MODEL_PATH": str(tmp_path / "nowhere"),
                                                           "FLYWHEEL_DATA_DIR": str(tmp_path / "data")})
    assert result.exit_code == 1 and "FLYWHEEL_MODEL_PATH" in result.output


def test_invalid_settings_are_reported(tmp_path: Path):
    result = runner.invoke(app, ["adapters", "list"], env={"FLYWHEEL_MAX_LORAS": "lots"})
    assert result.exit_code != 0 and "max_loras" in result.output.lower()


def test_adapter_commands_end_to_end(tmp_path: Path):
    base = write_tiny_base(tmp_path / "base")
    env = {"FLYWHEEL_MODEL_PATH": str(base), "FLYWHEEL_DATA_DIR": str(tmp_path / "data"),
           "FLYWHEEL_MAX_LORA_RANK": "8", "FLYWHEEL_TRAIN_LORA_RANK": "8"}

    def flywheel(*args: str) -> str:
        result = runner.invoke(app, list(args), env=env)
        assert result.exit_code == 0, result.output
        return result.output

    for seed in (1, 2):
        flywheel("adapters", "register", "bot", str(write_lora(tmp_path / f"a{seed}", base, seed=seed)))
    flywheel("adapters", "promote", "bot", "--version", "1")
    assert "production v1 -> v2" in flywheel("adapters", "promote", "bot", "--version", "2", "--reason", "better")
    assert "production v2 -> v1" in flywheel("adapters", "rollback", "bot")
    assert "bot" in flywheel("adapters", "list")
    shown = flywheel("adapters", "show", "bot")
    assert "v1" in shown and "v2" in shown
    assert "better" in flywheel("adapters", "history", "bot")

    broken = write_lora(tmp_path / "broken", base, rank=4, config_overrides={"r": 64, "use_dora": True})
    result = runner.invoke(app, ["adapters", "register", "bot", str(broken)], env=env)
    assert result.exit_code == 1
    assert "nothing was registered" in result.output and "DoRA" in result.output and "max_lora_rank" in result.output
    unknown = runner.invoke(app, ["adapters", "promote", "ghost", "--version", "1"], env=env)
    assert unknown.exit_code == 1 and "not registered" in unknown.output
