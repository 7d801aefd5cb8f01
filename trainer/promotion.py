"""Applying the canary decision to the registry: promote the canary, drop it, or leave it running.

The decision itself (a one-sided two-proportion z-test) is `flywheel/canary.py`, shared with the gateway's
console, which shows what this review would do now.
"""

from __future__ import annotations

import logging

from adapters.names import CANARY, PRODUCTION
from adapters.registry import Registry
from flywheel.canary import CanaryDecision, decide_canary, tally
from trainer.config import PromotionPolicy

__all__ = ["CanaryDecision", "decide_canary", "review_canary"]

logger = logging.getLogger(__name__)


def review_canary(
    registry: Registry, rating_counts: list[dict], adapter: str, policy: PromotionPolicy
) -> CanaryDecision:
    """Apply the canary decision to the registry: promote the canary, drop it, or leave it running.

    `rating_counts` are the feedback store's per-version counts for the adapter (`rating_counts(adapter)`).
    Both moves land in the audit log with the test's numbers as the reason.
    """
    canary, production = registry.alias_version(adapter, CANARY), registry.alias_version(adapter, PRODUCTION)
    if canary is None or production is None:
        return CanaryDecision("wait", None, "no canary running")
    prod, cand = tally(rating_counts, adapter, production), tally(rating_counts, adapter, canary)
    decision = decide_canary(prod.up, prod.rated, cand.up, cand.rated, policy)
    if decision.verdict == "promote":
        registry.promote(adapter, canary, actor="trainer", reason=decision.reason)
        registry.remove_alias(adapter, CANARY, actor="trainer", reason=f"promoted v{canary}")
    elif decision.verdict == "rollback":
        registry.remove_alias(adapter, CANARY, actor="trainer", reason=decision.reason)
    if decision.verdict != "wait":
        logger.info("%s canary v%d: %s (%s)", adapter, canary, decision.verdict, decision.reason)
    return decision
