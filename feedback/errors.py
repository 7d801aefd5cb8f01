"""Typed feedback errors. The server maps each to an HTTP status in one place; no HTTP here."""

from __future__ import annotations


class FeedbackError(Exception):
    """Base class of everything the feedback package raises on purpose."""


class CompletionNotFound(FeedbackError):
    """The completion id is unknown: never served, served with `store: false`, or expired (HTTP 404)."""


class FeedbackNotFound(FeedbackError):
    """No rating or pair has this id (HTTP 404)."""


class InvalidFeedback(FeedbackError):
    """The submission is malformed; `problems` lists every reason, each saying what to fix (HTTP 400)."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("feedback rejected: " + "; ".join(self.problems))
