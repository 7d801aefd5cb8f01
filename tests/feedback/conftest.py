"""Fixtures for the feedback tests: a store on a temporary database and a completion factory."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator

import pytest

from feedback.records import CompletionRecord
from feedback.store import FeedbackStore

_ids = itertools.count()


@pytest.fixture
def store(store_location) -> Iterator[FeedbackStore]:
    """A store on SQLite and, in a second run of the test, on PostgreSQL."""
    with FeedbackStore(store_location("feedback.db")) as s:
        yield s


@pytest.fixture
def make_completion() -> Callable[..., CompletionRecord]:
    """Build a CompletionRecord; `answers` become its choices."""

    def make(
        prompt: str | list[dict] = "What is the capital of France?",
        answers: str | list[str] = "Paris.",
        *,
        adapter: str | None = "bot",
        version: int | None = 1,
        user: str | None = None,
        id: str | None = None,
        created_at: float | None = None,
    ) -> CompletionRecord:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        answers = [answers] if isinstance(answers, str) else answers
        return CompletionRecord(
            id=id or f"chatcmpl-{next(_ids)}",
            adapter=adapter,
            adapter_version=version,
            model="base",
            messages=messages,
            params={"temperature": 0.7},
            choices=[{"index": i, "text": a, "finish_reason": "stop"} for i, a in enumerate(answers)],
            prompt_tokens=10,
            completion_tokens=5,
            latency_ms=12.5,
            user=user,
            created_at=time.time() if created_at is None else created_at,
        )

    return make


@pytest.fixture
def rate(store: FeedbackStore, make_completion: Callable[..., CompletionRecord]) -> Callable[..., str]:
    """Record a one-answer completion and rate it; returns the feedback id."""

    def rate(
        prompt: str,
        answer: str,
        rating: str = "up",
        *,
        user: str | None = None,
        correction: str | None = None,
        adapter: str | None = "bot",
        version: int | None = 1,
    ) -> str:
        rec = make_completion(prompt, answer, adapter=adapter, version=version)
        store.record_completion(rec)
        return store.add_feedback(rec.id, rating, user=user, correction=correction).record.id

    return rate
