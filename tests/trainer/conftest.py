"""Fixtures for the trainer tests: the default model (or a skip) and settings on a temp dir."""

from __future__ import annotations

from pathlib import Path

import pytest
from trainer_samples import default_model_path, tiny_gate, tiny_lora, tiny_train

from trainer.config import TrainerSettings


@pytest.fixture(scope="session")
def model_path() -> Path:
    path = default_model_path()
    if not (path / "config.json").is_file():
        pytest.skip(f"default model not found at {path}; run `flywheel model prepare` or set FLYWHEEL_TEST_MODEL")
    return path


@pytest.fixture
def trainer_settings(tmp_path: Path, model_path: Path) -> TrainerSettings:
    return TrainerSettings(
        model_path=model_path,
        registry_db=tmp_path / "registry.db",
        adapters_dir=tmp_path / "adapters",
        feedback_db=tmp_path / "feedback.db",
        runs_db=tmp_path / "trainer.db",
        work_dir=tmp_path,
        lora=tiny_lora(),
        train=tiny_train(),
        gate=tiny_gate(),
    )
