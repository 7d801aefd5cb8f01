"""Canary review: ratings per version decide promote / rollback / wait, and the registry records why."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.base_model import BaseModelInfo
from adapters.registry import Registry
from tests.lora_factory import write_lora, write_tiny_base
from trainer.config import PromotionPolicy
from trainer.promotion import review_canary

POLICY = PromotionPolicy(mode="canary", canary_min_feedback=20)


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    base = write_tiny_base(tmp_path / "base")
    registry = Registry(tmp_path / "r.db", tmp_path / "adapters", BaseModelInfo.from_dir(base), 8)
    registry.register("bot", write_lora(tmp_path / "a1", base, seed=1), alias="production")
    registry.register("bot", write_lora(tmp_path / "a2", base, seed=2), alias="canary")
    return registry


def counts(prod: tuple[int, int], canary: tuple[int, int]) -> list[dict]:
    return [{"adapter": "bot", "adapter_version": 1, "up": prod[0], "down": prod[1]},
            {"adapter": "bot", "adapter_version": 2, "up": canary[0], "down": canary[1]}]


def test_waits_for_enough_ratings(registry: Registry):
    assert review_canary(registry, counts((30, 10), (5, 5)), "bot", POLICY).verdict == "wait"
    assert registry.alias_version("bot", "canary") == 2


def test_promotes_a_canary_that_is_not_worse(registry: Registry):
    decision = review_canary(registry, counts((30, 20), (35, 15)), "bot", POLICY)
    assert decision.verdict == "promote"
    assert registry.alias_version("bot", "production") == 2 and registry.alias_version("bot", "canary") is None
    assert "canary not worse" in registry.history("bot", "production")[-1].reason


def test_rolls_back_a_worse_canary(registry: Registry):
    decision = review_canary(registry, counts((45, 5), (10, 40)), "bot", POLICY)
    assert decision.verdict == "rollback"
    assert registry.alias_version("bot", "production") == 1 and registry.alias_version("bot", "canary") is None
    assert "canary worse" in registry.history("bot", "canary")[-1].reason
