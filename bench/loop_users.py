"""Simulated users for the loop benchmark: a hidden, checkable preference, a rating rule and a correction.

A `Preference` knows whether an answer satisfies it (`check`) and how to turn any answer into one that
does (`fix`, idempotent on satisfying answers). A `SimulatedUser` rates up when satisfied and down
otherwise, flips a share of its ratings (`noise`), and sends the fixed answer as a correction on a share
of its down ratings (`corrections`). Noise reaches corrections too, as with real users: a noisy correction
is a wrong rewrite (the fixed answer to the user's previous, different question) or a sloppy one (the
first half of the answer, unfixed).
"""

from __future__ import annotations

import json
import random
import re
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


def _no_the_check(text: str) -> bool:
    return re.search(r"\bthe\b", text, re.IGNORECASE) is None


def _no_the_fix(text: str) -> str:
    # headline style: "Capital of France is Paris." reads, and keeps every content word of the answer
    fixed = re.sub(r"\bthe\s+", "", text, flags=re.IGNORECASE)
    fixed = re.sub(r"\bthe\b", "", fixed, flags=re.IGNORECASE)
    return fixed[:1].upper() + fixed[1:]


def _prefix_check(text: str) -> bool:
    return text.lstrip().startswith(PREFIX)


def _prefix_fix(text: str) -> str:
    return text if _prefix_check(text) else f"{PREFIX} {text.lstrip()}"


PREFERENCES: dict[str, Preference] = {
    "signoff": Preference("signoff", f"ends with the line '{SIGNOFF}'", _signoff_check, _signoff_fix),
    "max_words": Preference("max_words", f"at most {MAX_WORDS} words", _max_words_check, _max_words_fix),
    "answer_prefix": Preference("answer_prefix", f"starts with '{PREFIX}'", _prefix_check, _prefix_fix),
    "lowercase": Preference("lowercase", "all lowercase", lambda t: t == t.lower(), lambda t: t.lower()),
    "no_the": Preference("no_the", "never uses the word 'the'", _no_the_check, _no_the_fix),
}
# The kind of each preference, for the report: every kind the loop must learn has one here.
KINDS = {"answer_prefix": "prefix", "signoff": "sign-off", "max_words": "concision",
         "lowercase": "every word (case)", "no_the": "content (a banned word)"}


@dataclass(frozen=True)
class Rating:
    """What one simulated user sends back for one answer."""

    user: str
    satisfied: bool  # the truth, before noise
    rating: Literal["up", "down"]
    correction: str | None
    noisy: bool = False  # the rating was flipped, or the correction is wrong or sloppy


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
        self._previous: str | None = None

    def rate(self, answer: str) -> Rating:
        """Rate one answer; a down rating carries a correction `corrections` of the time.

        With probability `noise` the rating is flipped, and independently a correction is noisy: the fixed
        previous answer (wrong for this question) or the first half of this one, unfixed (sloppy).
        """
        satisfied = self.preference.check(answer)
        flipped = self._rng.random() < self.noise
        up = satisfied != flipped
        correction, noisy = None, flipped
        if not up and self._rng.random() < self.corrections:
            correction = self.preference.fix(answer)
            if self._rng.random() < self.noise:
                noisy = True
                if self._previous is not None and self._rng.random() < 0.5:
                    correction = self.preference.fix(self._previous)
                else:
                    words = answer.split()
                    correction = " ".join(words[: max(1, len(words) // 2)]) or answer
        self._previous = answer
        return Rating(user=self.name, satisfied=satisfied, rating="up" if up else "down", correction=correction,
                      noisy=noisy)


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
