"""The foundation layer imports no service: the canary decision, which the console shows, loads no trainer module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_the_canary_decision_loads_no_trainer_module() -> None:
    code = ("import sys; import flywheel.canary, flywheel.promotion; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('trainer', 'server')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_trainer_recipe_and_the_canary_share_one_policy() -> None:
    from flywheel.canary import policy_of
    from flywheel.settings import Settings
    from trainer.config import PromotionPolicy

    policy = policy_of(Settings(canary_min_feedback=7))
    assert isinstance(policy, PromotionPolicy) and policy.canary_min_feedback == 7
