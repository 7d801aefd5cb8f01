"""Scrubbing of personal data and secrets from text before it becomes training data.

Each finding is replaced by a placeholder ([EMAIL], [PHONE], [CARD], [API_KEY]) and counted, so an
export report says how much was removed. The patterns lean towards precision: a scrubbed ordinary
number or word damages a training example, so card numbers must pass the Luhn check, phone numbers
need a country code, parentheses or a 10+ digit grouped form, and long tokens must mix digits and
letters.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

KINDS = ("email", "phone", "card", "api_key")
PLACEHOLDERS = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]", "api_key": "[API_KEY]"}

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# Vendor-prefixed keys: OpenAI/Anthropic/Stripe (sk-, pk-, rk-), AWS, GitHub, Slack, Hugging Face.
_PREFIXED_KEY = re.compile(
    r"\b(?:(?:sk|pk|rk)[-_][A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}|hf_[A-Za-z0-9]{30,})"
)
_HEX_TOKEN = re.compile(r"\b[0-9a-fA-F]{32,}\b")
_BASE64_TOKEN = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{32,}={0,2}")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){1,4}(?!\w)"
)


def luhn_valid(digits: str) -> bool:
    """True when a digit string passes the Luhn checksum used by payment card numbers."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _is_card(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _is_phone(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    if not 7 <= len(digits) <= 15:
        return False
    if match.startswith("+") or "(" in match:
        return len(digits) >= 8
    return len(digits) >= 10 and len(re.findall(r"[ .-]", match)) >= 2


def _is_random_token(match: str) -> bool:
    # Long runs of one case of letters (a German compound, a URL slug) are words, not keys.
    return bool(re.search(r"\d", match) and re.search(r"[a-z]", match) and re.search(r"[A-Z]", match))


_RULES: list[tuple[str, re.Pattern, Callable[[str], bool] | None]] = [
    ("api_key", _PREFIXED_KEY, None),
    ("api_key", _HEX_TOKEN, lambda m: bool(re.search(r"\d", m) and re.search(r"[a-fA-F]", m))),
    ("api_key", _BASE64_TOKEN, _is_random_token),
    ("email", _EMAIL, None),
    ("card", _CARD, _is_card),
    ("phone", _PHONE, _is_phone),
]


class Scrubber:
    """Replaces personal data and secrets with placeholders and counts what it replaced, by kind."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter({kind: 0 for kind in KINDS})

    def scrub(self, text: str) -> str:
        """The text with every finding replaced by its placeholder."""
        for kind, pattern, accept in _RULES:
            text = pattern.sub(lambda m, k=kind, a=accept: self._replace(m, k, a), text)
        return text

    def scrub_messages(self, messages: list[dict]) -> list[dict]:
        """Chat messages reduced to role and scrubbed content (TRL's conversational format)."""
        return [
            {"role": str(m.get("role")), "content": self.scrub(str(m.get("content") or ""))} for m in messages
        ]

    def _replace(self, match: re.Match, kind: str, accept: Callable[[str], bool] | None) -> str:
        if accept is not None and not accept(match.group(0)):
            return match.group(0)
        self.counts[kind] += 1
        return PLACEHOLDERS[kind]
