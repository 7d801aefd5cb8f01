"""Simulated users for the loop benchmark: a hidden, checkable preference, a rating rule and a correction.

A `Preference` knows whether an answer satisfies it (`check`) and how to turn any answer into one that
does (`fix`, idempotent on satisfying answers). A `SimulatedUser` rates up when satisfied and down
otherwise, flips a share of its ratings (`noise`), and sends the fixed answer as a correction on a share
of its down ratings (`corrections`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Literal

SIGNOFF = "-- Flywheel"
PREFIX = "Answer:"
MAX_WORDS = 15  # SmolLM2-135M usually writes 30+ words at max_tokens 48, so the base rate is low


@dataclass(frozen=True)
class Preference:
    """A hidden preference: `check(answer)` says whether it is met, `fix(answer)` makes it met."""

    name: str
    description: str
    check: Callable[[str], bool]
    fix: Callable[[str], str]


def _signoff_fix(text: str) -> str:
    return text if _signoff_check(text) else f"{text.rstrip()}\n\n{SIGNOFF}"


def _signoff_check(text: str) -> bool:
    return text.rstrip().endswith(SIGNOFF)


def _max_words_check(text: str) -> bool:
    return len(text.split()) <= MAX_WORDS


def _max_words_fix(text: str) -> str:
    if _max_words_check(text):
        return text
    # keep the first sentence when it fits: a cut mid-sentence would teach the model to stop mid-sentence
    first = text.strip().split(". ")[0].rstrip(".") + "."
    if len(first.split()) <= MAX_WORDS:
        return first
    return " ".join(text.split()[:MAX_WORDS]).rstrip(",;:") + "."


def _prefix_check(text: str) -> bool:
    return text.lstrip().startswith(PREFIX)


def _prefix_fix(text: str) -> str:
    return text if _prefix_check(text) else f"{PREFIX} {text.lstrip()}"


PREFERENCES: dict[str, Preference] = {
    "signoff": Preference("signoff", f"ends with the line '{SIGNOFF}'", _signoff_check, _signoff_fix),
    "max_words": Preference("max_words", f"at most {MAX_WORDS} words", _max_words_check, _max_words_fix),
    "answer_prefix": Preference("answer_prefix", f"starts with '{PREFIX}'", _prefix_check, _prefix_fix),
    "lowercase": Preference("lowercase", "all lowercase", lambda t: t == t.lower(), lambda t: t.lower()),
}


@dataclass(frozen=True)
class Rating:
    """What one simulated user sends back for one answer."""

    user: str
    satisfied: bool  # the truth, before noise
    rating: Literal["up", "down"]
    correction: str | None


@dataclass
class SimulatedUser:
    """Rates answers by a hidden preference, with flipped ratings (`noise`) and corrections on down ratings."""

    name: str
    preference: Preference
    noise: float = 0.0
    corrections: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.noise <= 1 or not 0 <= self.corrections <= 1:
            raise ValueError(f"noise={self.noise} and corrections={self.corrections} must be in [0, 1]")
        self._rng = random.Random(f"{self.name}-{self.seed}")

    def rate(self, answer: str) -> Rating:
        """Rate one answer; a down rating carries the fixed answer as a correction `corrections` of the time."""
        satisfied = self.preference.check(answer)
        up = satisfied != (self._rng.random() < self.noise)
        correction = None
        if not up and self._rng.random() < self.corrections:
            correction = self.preference.fix(answer)
        return Rating(user=self.name, satisfied=satisfied, rating="up" if up else "down", correction=correction)


def users(preference: str, count: int, noise: float, corrections: float, seed: int = 0) -> list[SimulatedUser]:
    """`count` users sharing one hidden preference (the store caps and conflicts work per user)."""
    if preference not in PREFERENCES:
        raise ValueError(f"preference={preference!r} must be one of {', '.join(PREFERENCES)}")
    return [SimulatedUser(f"sim{i}", PREFERENCES[preference], noise, corrections, seed) for i in range(count)]


def load_prompts(split: Literal["train", "heldout"]) -> list[str]:
    """The shipped prompt set (bench/data/prompts.jsonl), one split of it."""
    raw = resources.files("bench").joinpath("data/prompts.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in raw.splitlines() if line.strip()]
    return [r["prompt"] for r in rows if r["split"] == split]
