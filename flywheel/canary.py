"""The canary decision: promote the canary, roll it back, or wait for more ratings (pure arithmetic).

A one-sided two-proportion z-test of "the canary's up-rate is lower than production's". The canary is
promoted unless that test is significant at `canary_alpha`; it is rolled back when it is. This is a
non-inferiority check with no margin: a canary that is merely as good as production gets promoted.

Both versions are counted over the same window: the ratings made since the canary alias last moved to
the canary. Production's older ratings came from other traffic (another hour, another mix of users, maybe
before a prompt change), so comparing the canary with production's whole history would test "now against
then" rather than "canary against production", and a production with a long good past would roll back
canaries that are as good as it is today.

It lives in the foundation layer because two services need the same answer and may not import each
other (docs/architecture.md, "Package dependencies"): the trainer applies it (`trainer/promotion.py`)
and the gateway's console shows what it would decide now (`server/console/`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from flywheel.promotion import PromotionPolicy

if TYPE_CHECKING:
    from flywheel.settings import Settings

Verdict = Literal["wait", "promote", "rollback"]


@dataclass(frozen=True)
class CanaryDecision:
    """What to do with the canary, the test's p-value, and a reason for the audit log."""

    verdict: Verdict
    p_value: float | None
    reason: str


@dataclass(frozen=True)
class Tally:
    """Up ratings out of up-and-down ratings of one version."""

    up: int
    rated: int

    @property
    def up_rate(self) -> float | None:
        return self.up / self.rated if self.rated else None


def tally(rating_counts: list[dict], adapter: str, version: int) -> Tally:
    """One version's tally from the feedback store's per-version counts (`StoreQueries.rating_counts`)."""
    for row in rating_counts:
        if row["adapter"] == adapter and row["adapter_version"] == version:
            up, down = int(row.get("up") or 0), int(row.get("down") or 0)
            return Tally(up, up + down)
    return Tally(0, 0)


class RatingSource(Protocol):
    """The feedback store, or its read-only reader: per-version rating counts (`StoreQueries.rating_counts`)."""

    def rating_counts(self, adapter: str | None = None, by_day: bool = False,
                      since: float | None = None) -> list[dict]: ...


class AliasMove(Protocol):
    """One entry of the registry's alias history (`adapters.version.AliasEvent`)."""

    to_version: int | None
    at: float


@dataclass(frozen=True)
class CanaryReview:
    """Both versions' tallies since the canary started, and the decision they give."""

    production: Tally
    canary: Tally
    since: float | None  # when the canary alias moved to this version (None: not in the history)
    decision: CanaryDecision


def canary_started(moves: Iterable[AliasMove], canary: int) -> float | None:
    """When the canary alias last moved to `canary`, from its history (oldest first)."""
    started = None
    for move in moves:
        started = move.at if move.to_version == canary else started
    return started


def review(source: RatingSource, moves: Iterable[AliasMove], adapter: str, production: int | None, canary: int,
           policy: PromotionPolicy) -> CanaryReview:
    """Tally production and the canary over the ratings since the canary started, and decide.

    Without a production version there is nothing to compare with: the canary's tally, and "wait".
    """
    since = canary_started(moves, canary)
    counts = source.rating_counts(adapter, since=since)
    cand = tally(counts, adapter, canary)
    if production is None:
        return CanaryReview(Tally(0, 0), cand, since,
                            CanaryDecision("wait", None, "no production version to compare the canary with"))
    prod = tally(counts, adapter, production)
    return CanaryReview(prod, cand, since, decide_canary(prod.up, prod.rated, cand.up, cand.rated, policy))


def policy_of(settings: Settings) -> PromotionPolicy:
    """The promotion policy the trainer's watcher reviews canaries with, from the same settings."""
    return settings.recipe(PromotionPolicy)


def _normal_cdf(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def _waiting(production_rated: int, candidate_rated: int, need: int) -> str:
    short = [f"{need - n} more on {who}" for who, n in (("production", production_rated),
                                                         ("the canary", candidate_rated)) if n < need]
    return (f"needs {' and '.join(short)} (ratings: production {production_rated}, "
            f"canary {candidate_rated}; {need} each before deciding)")


def decide_canary(
    production_up: int, production_rated: int, candidate_up: int, candidate_rated: int,
    policy: PromotionPolicy,
) -> CanaryDecision:
    """Compare the up-rates of production and the canary once both have `canary_min_feedback` ratings."""
    need = policy.canary_min_feedback
    if production_rated < need or candidate_rated < need:
        return CanaryDecision("wait", None, _waiting(production_rated, candidate_rated, need))
    p_prod, p_cand = production_up / production_rated, candidate_up / candidate_rated
    pooled = (production_up + candidate_up) / (production_rated + candidate_rated)
    se = math.sqrt(pooled * (1 - pooled) * (1 / production_rated + 1 / candidate_rated))
    p_value = 0.5 if se == 0 else _normal_cdf((p_cand - p_prod) / se)  # small when the canary is worse
    rates = f"up-rate canary {p_cand:.1%} vs production {p_prod:.1%}, one-sided p={p_value:.3f}"
    if p_value < policy.canary_alpha:
        return CanaryDecision("rollback", p_value, f"canary worse: {rates} < alpha {policy.canary_alpha}")
    return CanaryDecision("promote", p_value, f"canary not worse: {rates}")
