"""The feedback store's tables (SQLite and PostgreSQL) and the conversions between rows and records.

`user` is a reserved word in PostgreSQL, so the column is always written quoted (`"user"`), which SQLite
reads as the same column.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from feedback.records import CompletionRecord, FeedbackRecord, PairRecord
from flywheel.migrations import Migration

SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    id TEXT PRIMARY KEY,
    adapter TEXT,                 -- NULL: the base model
    adapter_version INTEGER,
    model TEXT NOT NULL,
    messages TEXT NOT NULL,       -- JSON list of {role, content}
    params TEXT NOT NULL,         -- JSON object
    choices TEXT NOT NULL,        -- JSON list of {index, text, finish_reason}
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    "user" TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS completions_adapter ON completions (adapter, adapter_version, created_at);
CREATE INDEX IF NOT EXISTS completions_created ON completions (created_at);
CREATE TABLE IF NOT EXISTS feedback (
    id TEXT PRIMARY KEY,
    client_id TEXT UNIQUE,        -- the client's feedback_id: repeats are ignored
    completion_id TEXT NOT NULL,
    adapter TEXT,
    adapter_version INTEGER,
    rating TEXT NOT NULL CHECK (rating IN ('up', 'down')),  -- feedback/vocabulary.py RATINGS
    choice_index INTEGER NOT NULL,
    comment TEXT,
    correction TEXT,
    "user" TEXT,
    created_at REAL NOT NULL,
    replaced INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS feedback_target ON feedback (completion_id, choice_index, "user");
CREATE INDEX IF NOT EXISTS feedback_adapter ON feedback (adapter, created_at);
CREATE TABLE IF NOT EXISTS pairs (
    id TEXT PRIMARY KEY,
    client_id TEXT UNIQUE,
    adapter TEXT,
    adapter_version INTEGER,
    prompt TEXT NOT NULL,         -- JSON list of {role, content}
    chosen TEXT NOT NULL,
    rejected TEXT NOT NULL,
    chosen_completion_id TEXT,
    chosen_choice_index INTEGER,
    rejected_completion_id TEXT,
    rejected_choice_index INTEGER,
    "user" TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS pairs_adapter ON pairs (adapter, created_at);
CREATE INDEX IF NOT EXISTS pairs_completions ON pairs (chosen_completion_id, rejected_completion_id);
"""
_SQLITE_STATEMENTS = tuple(s.strip() for s in SCHEMA.split(";") if s.strip())
MIGRATIONS = (Migration(1, _SQLITE_STATEMENTS),)  # PostgreSQL's spelling: Dialect.ddl (8-byte floats)

COMPLETION_COLUMNS = (
    "id, adapter, adapter_version, model, messages, params, choices, prompt_tokens, "
    'completion_tokens, latency_ms, "user", created_at'
)
FEEDBACK_COLUMNS = (
    "id, client_id, completion_id, adapter, adapter_version, rating, choice_index, comment, correction, "
    '"user", created_at, replaced'
)
PAIR_COLUMNS = (
    "id, client_id, adapter, adapter_version, prompt, chosen, rejected, chosen_completion_id, "
    'chosen_choice_index, rejected_completion_id, rejected_choice_index, "user", created_at'
)


def completion_row(rec: CompletionRecord) -> tuple:
    """The completions-table values of a record, in COMPLETION_COLUMNS order."""
    return (
        rec.id, rec.adapter, rec.adapter_version, rec.model, json.dumps(rec.messages, ensure_ascii=False),
        json.dumps(rec.params, ensure_ascii=False), json.dumps(rec.choices, ensure_ascii=False),
        rec.prompt_tokens, rec.completion_tokens, rec.latency_ms, rec.user, rec.created_at,
    )  # fmt: skip


def completion_from_row(row: Sequence) -> CompletionRecord:
    """A CompletionRecord from a row selected with COMPLETION_COLUMNS."""
    (id_, adapter, version, model, messages, params, choices, ptok, ctok, latency, user, created) = row
    return CompletionRecord(
        id=id_, adapter=adapter, adapter_version=version, model=model, messages=json.loads(messages),
        params=json.loads(params), choices=json.loads(choices), prompt_tokens=ptok, completion_tokens=ctok,
        latency_ms=latency, user=user, created_at=created,
    )  # fmt: skip


def feedback_row(rec: FeedbackRecord) -> tuple:
    """The feedback-table values of a record, in FEEDBACK_COLUMNS order."""
    return (
        rec.id, rec.feedback_id, rec.completion_id, rec.adapter, rec.adapter_version, rec.rating,
        rec.choice_index, rec.comment, rec.correction, rec.user, rec.created_at, int(rec.replaced),
    )  # fmt: skip


def feedback_from_row(row: Sequence) -> FeedbackRecord:
    """A FeedbackRecord from a row selected with FEEDBACK_COLUMNS."""
    (id_, client_id, cid, adapter, version, rating, index, comment, correction, user, created, replaced) = row
    return FeedbackRecord(
        id=id_, completion_id=cid, adapter=adapter, adapter_version=version, rating=rating,
        choice_index=index, comment=comment, correction=correction, user=user, created_at=created,
        feedback_id=client_id, replaced=bool(replaced),
    )  # fmt: skip


def pair_row(rec: PairRecord) -> tuple:
    """The pairs-table values of a record, in PAIR_COLUMNS order."""
    return (
        rec.id, rec.feedback_id, rec.adapter, rec.adapter_version, json.dumps(rec.prompt, ensure_ascii=False),
        rec.chosen, rec.rejected, rec.chosen_completion_id, rec.chosen_choice_index,
        rec.rejected_completion_id, rec.rejected_choice_index, rec.user, rec.created_at,
    )  # fmt: skip


def pair_from_row(row: Sequence) -> PairRecord:
    """A PairRecord from a row selected with PAIR_COLUMNS."""
    (id_, client_id, adapter, version, prompt, chosen, rejected, ccid, cidx, rcid, ridx, user, created) = row
    return PairRecord(
        id=id_, adapter=adapter, adapter_version=version, prompt=json.loads(prompt), chosen=chosen,
        rejected=rejected, user=user, created_at=created, chosen_completion_id=ccid, chosen_choice_index=cidx,
        rejected_completion_id=rcid, rejected_choice_index=ridx, feedback_id=client_id,
    )  # fmt: skip


def upsert_updates(columns: str, key: str = "id") -> str:
    """`col = excluded.col, ...` for an `ON CONFLICT (key) DO UPDATE SET` of these columns (SQLite's INSERT
    OR REPLACE in a spelling PostgreSQL reads too)."""
    names = [c.strip() for c in columns.split(",") if c.strip() != key]
    return ", ".join(f"{n} = excluded.{n}" for n in names)


def placeholders(columns: str) -> str:
    """`?, ?, ...` for an INSERT of these columns."""
    return ", ".join("?" * len(columns.split(",")))
