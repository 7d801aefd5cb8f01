"""One vocabulary of ratings and roles: the wire types, the store's checks and the table agree on it."""

from __future__ import annotations

import sqlite3

import pytest

from feedback.errors import InvalidFeedback
from feedback.schema import SCHEMA
from feedback.store import FeedbackStore
from feedback.vocabulary import RATINGS, ROLES
from server.feedback_protocol import FeedbackRequest, PairMessage


def test_wire_types_accept_exactly_the_vocabulary() -> None:
    assert tuple(FeedbackRequest.model_json_schema()["properties"]["rating"]["enum"]) == RATINGS
    assert tuple(PairMessage.model_json_schema()["properties"]["role"]["enum"]) == ROLES


def test_the_table_accepts_exactly_the_ratings() -> None:
    conn = sqlite3.connect(":memory:")
    conn.executescript(SCHEMA)
    insert = "INSERT INTO feedback (id, completion_id, rating, choice_index, created_at) VALUES (?, 'c', ?, 0, 0)"
    for i, rating in enumerate(RATINGS):
        conn.execute(insert, [f"fb_{i}", rating])
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(insert, ["fb_x", "meh"])


@pytest.mark.parametrize("role", ["tool", "developer", "robot"])
def test_a_pair_prompt_with_a_role_outside_the_vocabulary_is_refused(store: FeedbackStore, role: str) -> None:
    with pytest.raises(InvalidFeedback) as e:
        store.add_pair(prompt=[{"role": role, "content": "Hi"}], chosen="Hello.", rejected="Go away.")
    assert "prompt[0].role must be one of system, user, assistant" in str(e.value)


@pytest.mark.parametrize("role", ROLES)
def test_every_role_of_the_vocabulary_is_stored(store: FeedbackStore, role: str) -> None:
    pair = store.add_pair(prompt=[{"role": role, "content": "Hi"}], chosen="Hello.", rejected="Go away.").record
    assert pair.prompt[0]["role"] == role
