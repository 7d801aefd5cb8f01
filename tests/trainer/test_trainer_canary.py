"""Canary review: ratings per version since the canary started decide promote / rollback / wait, and the
registry records why. Real registry, real feedback store."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.base_model import BaseModelInfo
from adapters.registry import Registry
from feedback.records import CompletionRecord
from feedback.store import FeedbackStore
from flywheel.canary import canary_started
from tests.lora_factory import write_lora, write_tiny_base
from trainer.config import PromotionPolicy
from trainer.promotion import review_canary

POLICY = PromotionPolicy(mode="canary", canary_min_feedback=20)
_ids = itertools.count()


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    base = write_tiny_base(tmp_path / "base")
    registry = Registry(tmp_path / "r.db", tmp_path / "adapters", BaseModelInfo.from_dir(base), 8)
    registry.register("bot", write_lora(tmp_path / "a1", base, seed=1), alias="production")
    registry.register("bot", write_lora(tmp_path / "a2", base, seed=2))
    return registry


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FeedbackStore]:
    with FeedbackStore(tmp_path / "feedback.db") as s:
        yield s


def rate(store: FeedbackStore, version: int, up: int, down: int) -> None:
    """`up` up and `down` down ratings of answers that `version` served."""
    for rating in ["up"] * up + ["down"] * down:
        rec = CompletionRecord(id=f"chatcmpl-{next(_ids)}", adapter="bot", adapter_version=version, model="base",
                               messages=[{"role": "user", "content": "Hi?"}], params={},
                               choices=[{"index": 0, "text": "Hello.", "finish_reason": "stop"}],
                               prompt_tokens=3, completion_tokens=2, latency_ms=1.0, user=None, created_at=time.time())
        store.record_completion(rec)
        store.add_feedback(rec.id, rating)


def start_canary(registry: Registry, version: int = 2) -> None:
    time.sleep(0.01)  # ratings made before this instant are outside the canary's window
    registry.set_alias("bot", "canary", version, reason="canary test")


def test_waits_for_enough_ratings(registry: Registry, store: FeedbackStore):
    start_canary(registry)
    rate(store, 1, 30, 10)
    rate(store, 2, 5, 5)
    assert review_canary(registry, store, "bot", POLICY).verdict == "wait"
    assert registry.alias_version("bot", "canary") == 2


def test_promotes_a_canary_that_is_not_worse(registry: Registry, store: FeedbackStore):
    start_canary(registry)
    rate(store, 1, 30, 20)
    rate(store, 2, 35, 15)
    decision = review_canary(registry, store, "bot", POLICY)
    assert decision.verdict == "promote"
    assert registry.alias_version("bot", "production") == 2 and registry.alias_version("bot", "canary") is None
    assert "canary not worse" in registry.history("bot", "production")[-1].reason


def test_rolls_back_a_worse_canary(registry: Registry, store: FeedbackStore):
    start_canary(registry)
    rate(store, 1, 45, 5)
    rate(store, 2, 10, 40)
    decision = review_canary(registry, store, "bot", POLICY)
    assert decision.verdict == "rollback"
    assert registry.alias_version("bot", "production") == 1 and registry.alias_version("bot", "canary") is None
    assert "canary worse" in registry.history("bot", "canary")[-1].reason


def test_production_is_compared_over_the_canary_s_window_only(registry: Registry, store: FeedbackStore):
    rate(store, 1, 0, 100)  # production's bad past, before the canary: over all time it would be 25/125 = 20%
    start_canary(registry)
    rate(store, 1, 25, 0)
    rate(store, 2, 15, 10)
    decision = review_canary(registry, store, "bot", POLICY)
    assert decision.verdict == "rollback"
    assert "canary 60.0% vs production 100.0%" in decision.reason


def test_the_window_starts_at_the_canary_s_latest_move_to_its_version(registry: Registry):
    start_canary(registry)
    first = registry.history("bot", "canary")[-1].at
    registry.remove_alias("bot", "canary", reason="stop")
    start_canary(registry)
    moves = registry.history("bot", "canary")
    assert canary_started(moves, 2) == moves[-1].at > first
    assert canary_started(moves, 1) is None
