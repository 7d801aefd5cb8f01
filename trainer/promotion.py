"""The canary decision: promote the candidate, roll it back, or wait for more ratings.

A one-sided two-proportion z-test of "the candidate's up-rate is lower than production's". The candidate
is promoted unless that test is significant at `canary_alpha`; it is rolled back when it is. This is a
non-inferiority check with no margin: a candidate that is merely as good as production gets promoted.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

from adapters.names import CANARY, PRODUCTION
from adapters.registry import Registry
from trainer.config import PromotionPolicy

logger = logging.getLogger(__name__)

Verdict = Literal["wait", "promote", "rollback"]


@dataclass(frozen=True)
class CanaryDecision:
    """What to do with the canary, the test's p-value, and a reason for the audit log."""

    verdict: Verdict
    p_value: float | None
    reason: str


def _normal_cdf(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def decide_canary(
    production_up: int, production_rated: int, candidate_up: int, candidate_rated: int, policy: PromotionPolicy
) -> CanaryDecision:
    """Compare the up-rates of production and candidate once both have `canary_min_feedback` ratings."""
    need = policy.canary_min_feedback
    if production_rated < need or candidate_rated < need:
        return CanaryDecision(
            "wait", None, f"ratings: production {production_rated}, candidate {candidate_rated} (need {need} each)"
        )
    p_prod, p_cand = production_up / production_rated, candidate_up / candidate_rated
    pooled = (production_up + candidate_up) / (production_rated + candidate_rated)
    se = math.sqrt(pooled * (1 - pooled) * (1 / production_rated + 1 / candidate_rated))
    p_value = 0.5 if se == 0 else _normal_cdf((p_cand - p_prod) / se)  # small when the candidate is worse
    rates = f"up-rate candidate {p_cand:.1%} vs production {p_prod:.1%}, one-sided p={p_value:.3f}"
    if p_value < policy.canary_alpha:
        return CanaryDecision("rollback", p_value, f"canary worse: {rates} < alpha {policy.canary_alpha}")
    return CanaryDecision("promote", p_value, f"canary not worse: {rates}")


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
    counts = {row["adapter_version"]: row for row in rating_counts if row["adapter"] == adapter}

    def up_and_rated(version: int) -> tuple[int, int]:
        row = counts.get(version, {})
        return int(row.get("up") or 0), int(row.get("up") or 0) + int(row.get("down") or 0)

    decision = decide_canary(*up_and_rated(production), *up_and_rated(canary), policy)
    if decision.verdict == "promote":
        registry.promote(adapter, canary, actor="trainer", reason=decision.reason)
        registry.remove_alias(adapter, CANARY, actor="trainer", reason=f"promoted v{canary}")
    elif decision.verdict == "rollback":
        registry.remove_alias(adapter, CANARY, actor="trainer", reason=decision.reason)
    if decision.verdict != "wait":
        logger.info("%s canary v%d: %s (%s)", adapter, canary, decision.verdict, decision.reason)
    return decision
