"""The promotion policy: what happens to a candidate that passed the gate, and the canary test's knobs.

Declared in the foundation layer, not in `trainer/config.py` beside the other recipe dataclasses, because
both services read it and may not import each other (docs/architecture.md, "Package dependencies"): the
trainer applies it (`trainer/promotion.py`) and the console shows what the canary decision
(`flywheel/canary.py`) would say now. `trainer/config.py` re-exports it with the rest of the recipe, and
`flywheel/settings.py` generates its FLYWHEEL_ knobs from it like the others'.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

PromotionMode = Literal["manual", "auto", "canary"]
PROMOTION_MODES: tuple[PromotionMode, ...] = get_args(PromotionMode)


@dataclass
class PromotionPolicy:
    """What happens to a candidate that passed the gate."""

    mode: PromotionMode = field(
        default="manual",
        metadata={"help": "manual: an operator promotes; auto: promote on a passed gate; canary: traffic split."},
    )
    canary_share: float = field(
        default=0.1, metadata={"help": "canary: share of the adapter's traffic sent to the candidate."}
    )
    canary_min_feedback: int = field(
        default=50, metadata={"help": "canary: ratings needed on each version before deciding."}
    )
    canary_alpha: float = field(
        default=0.05,
        metadata={"help": "canary: significance of the one-sided test 'candidate up-rate is worse'."},
    )

    def __post_init__(self) -> None:
        if self.mode not in PROMOTION_MODES:
            raise ValueError(f"promotion mode {self.mode!r} must be manual, auto or canary")
        if not 0 < self.canary_share < 1:
            raise ValueError(f"canary_share={self.canary_share} must be in (0, 1)")
        if self.canary_min_feedback < 1 or not 0 < self.canary_alpha < 1:
            raise ValueError(f"canary_min_feedback={self.canary_min_feedback} must be >= 1 and "
                             f"canary_alpha={self.canary_alpha} in (0, 1)")
