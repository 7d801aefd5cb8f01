"""Hygiene rules applied before feedback becomes training data: normalisation, conflicts, per-user caps,
length bounds, de-duplication and the held-out split. Each rule is a small pure function over
`Example`s or signals so it can be tested alone."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

T = TypeVar("T")
ConflictPolicy = Literal["majority", "drop"]


def normalise(text: str) -> str:
    """Case- and whitespace-insensitive form of a text, for duplicate and conflict detection."""
    return " ".join(text.casefold().split())


def prompt_key(messages: list[dict]) -> str:
    """A canonical string for a prompt: roles plus normalised contents."""
    return json.dumps([[m.get("role"), normalise(str(m.get("content") or ""))] for m in messages])


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces, unicode kept) for hashing and exact comparison."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def is_held_out(messages: list[dict], fraction: float) -> bool:
    """Deterministic split by sha256 of the normalised prompt: one prompt always lands on one side."""
    digest = hashlib.sha256(prompt_key(messages).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


@dataclass
class Example:
    """One training row in TRL's columns, with the ids of the feedback it came from."""

    row: dict  # prompt + completion | chosen + rejected | completion + label
    sources: set[str] = field(default_factory=set)
    weight: int = 1  # how many times the row goes into train (after de-duplication)

    def answers(self) -> list[str]:
        """The assistant texts of this row (completion, or chosen and rejected)."""
        return [m["content"] for col in ("completion", "chosen", "rejected") for m in self.row.get(col, [])]


def resolve_conflicts(
    items: list[T], key: Callable[[T], Hashable], label: Callable[[T], bool], policy: ConflictPolicy
) -> tuple[list[T], int]:
    """Keep items whose (prompt, answer) group agrees. `majority` keeps the majority label's items and
    drops the rest (a tie drops the group); `drop` drops every group with any disagreement.
    Returns the kept items and how many were dropped."""
    groups: dict[Hashable, list[T]] = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    kept, dropped = [], 0
    for group in groups.values():
        votes = Counter(label(item) for item in group)
        if len(votes) == 1:
            kept += group
            continue
        if policy == "majority" and votes[True] != votes[False]:
            winner = votes[True] > votes[False]
            kept += [item for item in group if label(item) == winner]
            dropped += votes[not winner]
        else:
            dropped += len(group)
    order = {id(item): i for i, item in enumerate(items)}
    return sorted(kept, key=lambda item: order[id(item)]), dropped


def cap_per_user(
    items: list[T], user: Callable[[T], str | None], cap: int | None, seed: int
) -> tuple[list[T], int]:
    """At most `cap` items per non-anonymous user, chosen by a seeded draw; returns kept items and the
    number dropped. Anonymous items (user None) are not capped: they are not one person."""
    if cap is None:
        return items, 0
    by_user: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        if (name := user(item)) is not None:
            by_user[name].append(i)
    rng = random.Random(seed)
    drop: set[int] = set()
    for name in sorted(by_user):
        indexes = by_user[name]
        if len(indexes) > cap:
            drop.update(set(indexes) - set(rng.sample(indexes, cap)))
    return [item for i, item in enumerate(items) if i not in drop], len(drop)


def filter_length(
    examples: list[Example],
    min_chars: int,
    max_chars: int | None,
    count_tokens: Callable[[str], int] | None = None,
    max_tokens: int | None = None,
) -> tuple[list[Example], int, int]:
    """Drop rows with an answer shorter than `min_chars` or a prompt + answer longer than the bound
    (`max_tokens` when a token counter is given, else `max_chars`). Returns kept, too short, too long."""
    kept, short, long = [], 0, 0
    for ex in examples:
        answers = ex.answers()
        prompt = "\n".join(m["content"] for m in ex.row["prompt"])
        longest = max((len(a) for a in answers), default=0)
        if any(len(a.strip()) < min_chars for a in answers):
            short += 1
        elif count_tokens is not None and max_tokens is not None:
            if max(count_tokens(prompt + "\n" + a) for a in answers) > max_tokens:
                long += 1
            else:
                kept.append(ex)
        elif max_chars is not None and len(prompt) + longest > max_chars:
            long += 1
        else:
            kept.append(ex)
    return kept, short, long


def _normalised_row(row: dict) -> str:
    def norm(value: Any) -> Any:
        if isinstance(value, str):
            return normalise(value)
        if isinstance(value, list):
            return [norm(v) for v in value]
        if isinstance(value, dict):
            return {k: norm(v) for k, v in value.items()}
        return value

    return canonical_json(norm(row))


def _absorb(kept: Example, duplicate: Example) -> None:
    """The kept example takes over a duplicate's lineage and, if larger, its weight."""
    kept.sources |= duplicate.sources
    kept.weight = max(kept.weight, duplicate.weight)


def deduplicate(examples: Iterable[Example]) -> tuple[list[Example], int, int]:
    """Drop exact duplicates, then duplicates up to case and whitespace; the first kept absorbs the
    lineage (and the larger weight) of its duplicates. Returns kept, exact duplicates, normalised duplicates."""
    exact: dict[str, Example] = {}
    normal: dict[str, Example] = {}
    kept, n_exact, n_normal = [], 0, 0
    for ex in examples:
        key = canonical_json(ex.row)
        if key in exact:
            _absorb(exact[key], ex)
            n_exact += 1
            continue
        nkey = _normalised_row(ex.row)
        if nkey in normal:
            _absorb(normal[nkey], ex)
            n_normal += 1
            continue
        exact[key] = normal[nkey] = ex
        kept.append(ex)
    return kept, n_exact, n_normal
