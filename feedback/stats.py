"""Feedback statistics per adapter version (and optionally per day): volume, ratings, up-rate."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from feedback.queries import StoreQueries


class RatingCounts:
    """What `up` and `down` rating counts imply: how many ratings, and the share that is up (one definition
    for every count of ratings: a version's stats here, a time bucket's in feedback/timeline.py)."""

    up: int
    down: int

    @property
    def ratings(self) -> int:
        """Up plus down ratings."""
        return self.up + self.down

    @property
    def up_rate(self) -> float | None:
        """Share of ratings that are up; None when there are no ratings."""
        return self.up / self.ratings if self.ratings else None


@dataclass
class VersionStats(RatingCounts):
    """Counts for one adapter version (adapter None: the base model), over all time or one UTC day."""

    adapter: str | None
    adapter_version: int | None
    day: str | None = None  # "YYYY-MM-DD" (UTC) when bucketed by day
    completions: int = 0
    up: int = 0
    down: int = 0
    corrections: int = 0
    pairs: int = 0

    def as_dict(self) -> dict:
        """Plain dict, with the derived ratings and up_rate included."""
        return {**asdict(self), "ratings": self.ratings, "up_rate": self.up_rate}


def version_stats(
    store: StoreQueries, adapter: str | None = None, *, by_day: bool = False
) -> list[VersionStats]:
    """Stats per (adapter, version[, day]) for one adapter or all, sorted by adapter, version, day."""
    table: dict[tuple, VersionStats] = {}

    def entry(row: dict) -> VersionStats:
        key = (row["adapter"], row["adapter_version"], row["day"])
        if key not in table:
            table[key] = VersionStats(*key)
        return table[key]

    for row in store.completion_counts(adapter, by_day):
        entry(row).completions = row["completions"]
    for row in store.rating_counts(adapter, by_day):
        stats = entry(row)
        stats.up, stats.down, stats.corrections = row["up"] or 0, row["down"] or 0, row["corrections"] or 0
    for row in store.pair_counts(adapter, by_day):
        entry(row).pairs = row["pairs"]

    def order(key: tuple) -> tuple:  # the base model and unknown versions (None) sort first
        adapter, version, day = key
        return (adapter is not None, adapter or "", version is not None, version or 0, day or "")

    return [table[key] for key in sorted(table, key=order)]
