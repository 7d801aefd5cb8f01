"""FLYWHEEL_TRAIN_LOAD_IN_4BIT: auto loads the base in 4-bit on a CUDA GPU only; an explicit value wins."""

from __future__ import annotations

import pytest
import torch

from flywheel.settings import Settings
from trainer.config import TrainConfig
from trainer.qlora import use_4bit


@pytest.mark.parametrize("cuda", [True, False])
def test_auto_follows_the_gpu_and_explicit_values_win(cuda: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert use_4bit("auto") is cuda
    assert use_4bit(True) is True and use_4bit(False) is False


@pytest.mark.parametrize(("env", "value"), [("auto", "auto"), ("true", True), ("false", False), ("0", False)])
def test_the_setting_takes_auto_or_a_boolean(env: str, value: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_TRAIN_LOAD_IN_4BIT", env)
    assert Settings().recipe(TrainConfig).load_in_4bit == value
    assert Settings.model_fields["train_load_in_4bit"].default == "auto"


def test_anything_else_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_TRAIN_LOAD_IN_4BIT", "sometimes")
    with pytest.raises(ValueError, match="train_load_in_4bit"):
        Settings()
    with pytest.raises(ValueError, match="load_in_4bit"):
        TrainConfig(load_in_4bit="yes")  # type: ignore[arg-type]
