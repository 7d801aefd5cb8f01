"""Applying the canary decision to the registry: promote the canary, drop it, or leave it running.

The decision itself (a one-sided two-proportion z-test) is `flywheel/canary.py`, shared with the gateway's
console, which shows what this review would do now.
"""

from __future__ import annotations

import logging

from adapters.names import CANARY, PRODUCTION
from adapters.registry import Registry
from flywheel.canary import CanaryDecision, RatingSource, decide_canary, review
from trainer.config import PromotionPolicy

__all__ = ["CanaryDecision", "decide_canary", "review_canary"]

logger = logging.getLogger(__name__)


def review_canary(registry: Registry, ratings: RatingSource, adapter: str, policy: PromotionPolicy) -> CanaryDecision:
    """Apply the canary decision to the registry: promote the canary, drop it, or leave it running.

    `ratings` is the feedback store (or its reader); both versions are counted over the ratings made since
    the canary started (flywheel/canary.py says why). Both moves land in the audit log with the test's
    numbers as the reason.
    """
    canary, production = registry.alias_version(adapter, CANARY), registry.alias_version(adapter, PRODUCTION)
    if canary is None or production is None:
        return CanaryDecision("wait", None, "no canary running")
    decision = review(ratings, registry.history(adapter, CANARY), adapter, production, canary, policy).decision
    if decision.verdict == "promote":
        registry.promote(adapter, canary, actor="trainer", reason=decision.reason)
        registry.remove_alias(adapter, CANARY, actor="trainer", reason=f"promoted v{canary}")
    elif decision.verdict == "rollback":
        registry.remove_alias(adapter, CANARY, actor="trainer", reason=decision.reason)
    if decision.verdict != "wait":
        logger.info("%s canary v%d: %s (%s)", adapter, canary, decision.verdict, decision.reason)
    return decision
