"""Read-only views of one adapter's feedback for browsing: recent ratings (scrubbed) and counts over time.

Text is scrubbed exactly as the exports scrub it (`feedback.scrubbing.Scrubber`): what an operator
reads in the console is what a training set would contain. Each call opens its own read-only
connection (`Database(read_only=True)`, the opener `FeedbackReader` uses too), so nothing here can
write or hold up the store's writer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from feedback.queries import CORRECTED, DOWN, UP
from feedback.scrubbing import Scrubber
from feedback.stats import RatingCounts
from flywheel.database import Database
from flywheel.location import Location

BUCKET_SECONDS = {"hour": 3600, "day": 86400}


@dataclass(frozen=True)
class RecentRating:
    """One rating as the console shows it: scrubbed prompt, answer, comment and correction."""

    id: str
    adapter: str | None
    adapter_version: int | None
    rating: str
    prompt: str
    answer: str
    comment: str
    correction: str
    created_at: float


@dataclass(frozen=True)
class Bucket(RatingCounts):
    """Ratings and completions of one version in one hour or day (`start`: the bucket's first second, UTC)."""

    start: float
    completions: int
    up: int
    down: int
    corrections: int


def _last_user_text(messages: list[dict]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    return ""


class FeedbackTimeline:
    """Recent ratings and per-bucket counts of one adapter's versions, from the feedback database."""

    def __init__(self, feedback_db: Location):
        self.feedback_db = feedback_db
        self._db = Database(feedback_db, read_only=True, busy_timeout=5)

    def recent(self, adapter: str, version: int | None = None, offset: int = 0,
               limit: int = 25) -> tuple[list[RecentRating], int]:
        """The newest ratings of `adapter` (of one version, when given), scrubbed, and how many there are."""
        where, args = "f.adapter = ?", [adapter]
        if version is not None:
            where, args = where + " AND f.adapter_version = ?", [*args, version]
        with self._db.read_only() as conn:
            (total,) = conn.execute(f"SELECT COUNT(*) FROM feedback f WHERE {where}", args).fetchone()
            rows = conn.execute(
                "SELECT f.id, f.adapter, f.adapter_version, f.rating, f.choice_index, f.comment, f.correction,"
                " f.created_at, c.messages, c.choices FROM feedback f LEFT JOIN completions c ON c.id = f.completion_id"
                f" WHERE {where} ORDER BY f.created_at DESC, f.id DESC LIMIT ? OFFSET ?", [*args, limit, offset],
            ).fetchall()
        scrub = Scrubber().scrub
        result = []
        for id_, name, v, rating, index, comment, correction, at, messages, choices in rows:
            answers = {c.get("index"): c.get("text") or "" for c in json.loads(choices or "[]")}
            result.append(RecentRating(
                id=id_, adapter=name, adapter_version=v, rating=rating,
                prompt=scrub(_last_user_text(json.loads(messages or "[]"))), answer=scrub(answers.get(index, "")),
                comment=scrub(comment or ""), correction=scrub(correction or ""), created_at=at,
            ))
        return result, total

    def buckets(self, adapter: str, version: int, unit: str = "hour", limit: int = 168) -> list[Bucket]:
        """Counts per hour or day for one version, the newest `limit` buckets with any traffic, oldest first."""
        size = BUCKET_SECONDS[unit]
        start = self._db.dialect.bucket_of("created_at", size)
        where, args = "adapter = ? AND adapter_version = ?", [adapter, version]
        with self._db.read_only() as conn:
            ratings = conn.execute(
                f"SELECT {start} AS b, {UP}, {DOWN}, {CORRECTED} FROM feedback WHERE {where}"
                " GROUP BY b ORDER BY b DESC LIMIT ?", [*args, limit],
            ).fetchall()
            volume = dict(conn.execute(
                f"SELECT {start} AS b, COUNT(*) FROM completions WHERE {where} GROUP BY b ORDER BY b DESC LIMIT ?",
                [*args, limit],
            ).fetchall())
        counts = {b: (up or 0, down or 0, fixes or 0) for b, up, down, fixes in ratings}
        starts = sorted(set(counts) | set(volume))[-limit:]
        return [Bucket(float(b), volume.get(b, 0), *counts.get(b, (0, 0, 0))) for b in starts]
