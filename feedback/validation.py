"""Checks on client-supplied feedback. Each collects every problem so one error says all there is to fix."""

from __future__ import annotations

import re

from feedback.errors import InvalidFeedback
from feedback.vocabulary import RATINGS, ROLES

MAX_COMMENT_CHARS = 4_000
MAX_CORRECTION_CHARS = 32_000
MAX_ANSWER_CHARS = 32_000
MAX_PROMPT_MESSAGES = 256
FEEDBACK_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# C0 controls except tab, newline and carriage return: they are never meaningful text and NUL breaks
# many downstream tools (C strings, some JSONL readers).
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def text_problems(name: str, value: object, max_chars: int, *, required: bool = False) -> list[str]:
    """Problems with one free-text field: type, length, NUL/control characters, lone surrogates."""
    if value is None:
        return [f"{name} is required"] if required else []
    if not isinstance(value, str):
        return [f"{name} must be a string, got {type(value).__name__}"]
    problems = []
    if required and not value.strip():
        problems.append(f"{name} must not be empty")
    if len(value) > max_chars:
        problems.append(f"{name} is {len(value):,} characters; send at most {max_chars:,}")
        return problems  # no point scanning a megabyte for more
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        problems.append(f"{name} contains a lone surrogate (invalid unicode); send valid UTF-8 text")
    if _CONTROL_RE.search(value):
        problems.append(f"{name} contains NUL or other control characters; remove them")
    return problems


def rating_problems(rating: object) -> list[str]:
    """Problems with a rating value."""
    if rating not in RATINGS:
        return [f"rating must be {' or '.join(map(repr, RATINGS))}, got {rating!r}"]
    return []


def feedback_id_problems(feedback_id: object) -> list[str]:
    """Problems with a client idempotency key."""
    if feedback_id is None:
        return []
    if not isinstance(feedback_id, str) or not FEEDBACK_ID_RE.match(feedback_id):
        return ["feedback_id must be 1-128 characters of letters, digits, '.', '_', ':' or '-'"]
    return []


def index_problems(name: str, value: object) -> list[str]:
    """Problems with a choice index (a non-negative int; bool is not accepted)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return [f"{name} must be a non-negative integer, got {value!r}"]
    return []


def messages_problems(messages: object) -> list[str]:
    """Problems with a prompt given as chat messages."""
    if not isinstance(messages, list) or not messages:
        return ["prompt must be a non-empty list of {role, content} messages"]
    if len(messages) > MAX_PROMPT_MESSAGES:
        return [f"prompt has {len(messages)} messages; send at most {MAX_PROMPT_MESSAGES}"]
    problems = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            problems.append(f"prompt[{i}] must be an object with role and content")
            continue
        if message.get("role") not in ROLES:
            problems.append(f"prompt[{i}].role must be one of {', '.join(ROLES)}")
        problems += text_problems(
            f"prompt[{i}].content", message.get("content"), MAX_CORRECTION_CHARS, required=True
        )
    return problems


def raise_if(problems: list[str]) -> None:
    """Raise InvalidFeedback listing all problems, if there are any."""
    if problems:
        raise InvalidFeedback(problems)
