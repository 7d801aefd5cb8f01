"""The read side of the store that exports and stats use; FeedbackStore inherits it."""

from __future__ import annotations

import json

from feedback.records import PairRecord, RatedAnswer
from feedback.schema import FEEDBACK_COLUMNS, PAIR_COLUMNS, feedback_from_row, pair_from_row
from flywheel.dialect import SQLITE, Dialect

# Counts that read the same in SQLite and PostgreSQL (which cannot SUM a boolean)
UP = "SUM(CASE WHEN rating = 'up' THEN 1 ELSE 0 END)"
DOWN = "SUM(CASE WHEN rating = 'down' THEN 1 ELSE 0 END)"
CORRECTED = "SUM(CASE WHEN correction IS NOT NULL AND correction != '' THEN 1 ELSE 0 END)"


def _where(adapter: str | None, since: float | None, alias: str = "") -> tuple[str, list]:
    clauses, args = ["1 = 1"], []
    if adapter is not None:
        clauses.append(f"{alias}adapter = ?")
        args.append(adapter)
    if since is not None:
        clauses.append(f"{alias}created_at >= ?")
        args.append(since)
    return " AND ".join(clauses), args


class StoreQueries:
    """Reads for exports and stats. Needs `_read(sql, args) -> list[tuple]` from the concrete store."""

    dialect = Dialect(SQLITE)  # the concrete store sets its database's

    def _read(self, sql: str, args: tuple | list = ()) -> list[tuple]:
        raise NotImplementedError

    def rated_answers(self, adapter: str, since: float | None = None) -> list[RatedAnswer]:
        """Every rating on `adapter` (all versions) since a time, with its prompt and answer, oldest first."""
        where, args = _where(adapter, since, "f.")
        columns = ", ".join(f"f.{c.strip()}" for c in FEEDBACK_COLUMNS.split(","))
        rows = self._read(
            f"SELECT {columns}, c.params, c.messages, c.choices FROM feedback f"
            " JOIN completions c ON c.id = f.completion_id"
            f" WHERE {where} ORDER BY f.created_at, f.id",
            args,
        )
        result = []
        for row in rows:
            rec = feedback_from_row(row[:-3])
            params = json.loads(row[-3]) if row[-3] else {}
            choice = {c.get("index"): c for c in json.loads(row[-1])}.get(rec.choice_index, {})
            result.append(RatedAnswer(rec, json.loads(row[-2]), choice.get("text") or "",
                                      params.get("endpoint", "chat.completions"), choice.get("tool_calls") or []))
        return result

    def pairs(self, adapter: str, since: float | None = None) -> list[PairRecord]:
        """Every preference pair for `adapter` since a time, oldest first."""
        where, args = _where(adapter, since)
        rows = self._read(f"SELECT {PAIR_COLUMNS} FROM pairs WHERE {where} ORDER BY created_at, id", args)
        return [pair_from_row(r) for r in rows]

    def count_signals(self, adapter: str, since: float | None = None) -> int:
        """Ratings plus pairs stored for `adapter` since a time."""
        where, args = _where(adapter, since)
        feedback = f"SELECT COUNT(*) FROM feedback WHERE {where}"
        pairs = f"SELECT COUNT(*) FROM pairs WHERE {where}"
        rows = self._read(f"SELECT ({feedback}) + ({pairs})", args + args)
        return rows[0][0]

    def completion_counts(self, adapter: str | None = None, by_day: bool = False) -> list[dict]:
        """Completions per (adapter, version[, day])."""
        return self._grouped("completions", "COUNT(*) AS completions", adapter, by_day)

    def rating_counts(self, adapter: str | None = None, by_day: bool = False,
                      since: float | None = None) -> list[dict]:
        """Up, down and correction counts per (adapter, version[, day]), of ratings made at `since` or later."""
        aggregates = f"{UP} AS up, {DOWN} AS down, {CORRECTED} AS corrections"
        return self._grouped("feedback", aggregates, adapter, by_day, since)

    def pair_counts(self, adapter: str | None = None, by_day: bool = False) -> list[dict]:
        """Pairs per (adapter, version[, day])."""
        return self._grouped("pairs", "COUNT(*) AS pairs", adapter, by_day)

    def _grouped(self, table: str, aggregates: str, adapter: str | None, by_day: bool,
                 since: float | None = None) -> list[dict]:
        where, args = _where(adapter, since)
        day = self.dialect.day_of("created_at") if by_day else "NULL"
        sql = (
            f"SELECT adapter, adapter_version, {day} AS day, {aggregates} FROM {table} WHERE {where}"
            " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        )
        names = ["adapter", "adapter_version", "day"] + [
            a.rsplit(" AS ", 1)[1] for a in aggregates.split(", ")
        ]
        return [dict(zip(names, row, strict=True)) for row in self._read(sql, args)]
