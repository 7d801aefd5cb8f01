"""Training sets from feedback: SFT, DPO and KTO in TRL's conversational format, with hygiene applied.

The trainer hands `TrainingSet.train` straight to TRL, so the columns are exactly TRL's:
  SFT {"prompt", "completion"} · DPO {"prompt", "chosen", "rejected"} · KTO {"prompt", "completion", "label"}
where "prompt" is a list of chat messages and each answer column is one assistant message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import datasets

from feedback.examples import (
    Correction,
    Preference,
    Thumb,
    dpo_examples,
    explicit_prompts,
    kto_examples,
    sft_examples,
)
from feedback.hygiene import (
    ConflictPolicy,
    Example,
    canonical_json,
    cap_per_user,
    deduplicate,
    filter_length,
    is_held_out,
    normalise,
    prompt_key,
    resolve_conflicts,
)
from feedback.queries import StoreQueries
from feedback.records import PairRecord, RatedAnswer
from feedback.scrubbing import Scrubber

logger = logging.getLogger(__name__)

Kind = Literal["sft", "dpo", "kto"]
_MESSAGES = datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")})
FEATURES: dict[str, datasets.Features] = {
    "sft": datasets.Features({"prompt": _MESSAGES, "completion": _MESSAGES}),
    "dpo": datasets.Features({"prompt": _MESSAGES, "chosen": _MESSAGES, "rejected": _MESSAGES}),
    "kto": datasets.Features({"prompt": _MESSAGES, "completion": _MESSAGES, "label": datasets.Value("bool")}),
}


@dataclass
class ExportOptions:
    """How feedback is filtered and split on its way to a training set."""

    min_chars: int = 1
    """Drop rows with an answer shorter than this many characters (whitespace stripped)."""
    max_chars: int | None = 16_000
    """Drop rows whose prompt plus answer is longer than this many characters (ignored with a tokenizer)."""
    tokenizer: Any = None
    """Optional Hugging Face tokenizer; with `max_tokens` the length bound counts its tokens instead."""
    max_tokens: int | None = None
    """Drop rows whose prompt plus answer is longer than this many tokens (needs `tokenizer`)."""
    per_user_cap: int | None = None
    """At most this many ratings/pairs from one user, so one user cannot dominate (None: no cap)."""
    held_out_fraction: float = 0.1
    """Share of prompts kept out of training for evaluation, chosen by a hash of the normalised prompt."""
    conflict_policy: ConflictPolicy = "majority"
    """Conflicting ratings of one (prompt, answer): "majority" keeps the majority label (a tie drops the
    group), "drop" drops every rating of that answer."""
    correction_weight: int = 2
    """How many times each correction goes into the SFT set: a written correction is stronger evidence
    than a thumb, so wrongly up-rated answers (noise) cannot outvote it."""
    replay: list[dict] | None = None
    """Earlier training rows (same kind and columns) mixed into train against forgetting."""
    seed: int = 0
    """Seed for the per-user cap draw and the order of train rows."""

    def __post_init__(self) -> None:
        problems = []
        if self.min_chars < 0:
            problems.append("min_chars must be >= 0")
        if self.max_chars is not None and self.max_chars < max(1, self.min_chars):
            problems.append("max_chars must be >= min_chars and positive")
        if self.max_tokens is not None and (self.tokenizer is None or self.max_tokens < 1):
            problems.append("max_tokens needs a tokenizer and must be positive")
        if self.per_user_cap is not None and self.per_user_cap < 1:
            problems.append("per_user_cap must be >= 1 (or None for no cap)")
        if not 0.0 <= self.held_out_fraction < 1.0:
            problems.append("held_out_fraction must be in [0, 1)")
        if self.correction_weight < 1:
            problems.append("correction_weight must be >= 1")
        if self.conflict_policy not in ("majority", "drop"):
            problems.append("conflict_policy must be 'majority' or 'drop'")
        if problems:
            raise ValueError("invalid export options: " + "; ".join(problems))


@dataclass
class TrainingSet:
    """A training set for one adapter and method, with its held-out part, lineage and hygiene report."""

    kind: Kind
    adapter: str
    train: datasets.Dataset
    held_out: datasets.Dataset
    feedback_ids: list[str]  # the ratings and pairs it was built from (lineage)
    dataset_hash: str  # sha256 of the canonical JSON of the train rows, in order
    report: dict = field(default_factory=dict)


def build_training_set(
    store: StoreQueries,
    adapter: str,
    kind: Kind,
    options: ExportOptions | None = None,
    *,
    since: float | None = None,
) -> TrainingSet:
    """Build an SFT, DPO or KTO set from the feedback on every version of `adapter` (since a time)."""
    if kind not in FEATURES:
        raise ValueError(f"kind must be one of {', '.join(FEATURES)}, got {kind!r}")
    opts = options or ExportOptions()
    report: dict[str, Any] = {"adapter": adapter, "kind": kind, "since": since}
    examples = _examples(store, adapter, kind, opts, since, report)
    examples = _clean(examples, opts, report)

    held = [ex for ex in examples if is_held_out(ex.row["prompt"], opts.held_out_fraction)]
    train = [ex for ex in examples if not is_held_out(ex.row["prompt"], opts.held_out_fraction)]
    mixed, exact, normalised = deduplicate([*train, *_replay_examples(opts.replay, kind)])
    report.update(replay=len(mixed) - len(train), replay_duplicates=exact + normalised)
    mixed = [ex for ex in mixed for _ in range(ex.weight)]
    report["weighted_copies"] = len(mixed) - len(train) - report["replay"]
    random.Random(opts.seed).shuffle(mixed)  # mix replay rows in; seeded, so the hash is reproducible
    train_rows = [ex.row for ex in mixed]
    report.update(train=len(train_rows), held_out=len(held))

    logger.info("built %s set for %s: %d train, %d held out", kind, adapter, len(train_rows), len(held))
    return TrainingSet(
        kind=kind,
        adapter=adapter,
        train=_dataset(train_rows, kind),
        held_out=_dataset([ex.row for ex in held], kind),
        feedback_ids=sorted({source for ex in examples for source in ex.sources}),
        dataset_hash=hashlib.sha256(canonical_json(train_rows).encode("utf-8")).hexdigest(),
        report=report,
    )


def _examples(
    store: StoreQueries, adapter: str, kind: Kind, opts: ExportOptions, since: float | None, report: dict
) -> list[Example]:
    """Load ratings and pairs, cap per user, scrub, resolve conflicts, and build the kind's rows."""
    rated, pairs = store.rated_answers(adapter, since), store.pairs(adapter, since)
    report["raw"] = {"ratings": len(rated), "pairs": len(pairs)}
    rated, pairs = _trainable_shapes(rated, pairs, report)
    signals, report["capped"] = cap_per_user([*rated, *pairs], _user, opts.per_user_cap, opts.seed)
    scrubber = Scrubber()
    thumbs, corrections, preferences = _scrub(signals, scrubber)
    report["scrubbed"] = dict(scrubber.counts)
    thumbs, report["conflicts_dropped"] = resolve_conflicts(
        thumbs, lambda t: (prompt_key(t.prompt), normalise(t.answer)), lambda t: t.up, opts.conflict_policy
    )
    report["prompts_with_explicit_evidence"] = len(explicit_prompts(corrections, preferences))
    if kind == "sft":
        examples = sft_examples(thumbs, corrections, opts.correction_weight)
    elif kind == "kto":
        examples = kto_examples(thumbs, corrections)
    else:
        examples = dpo_examples(thumbs, corrections, preferences)
    report["examples"] = len(examples)
    return examples


def _clean(examples: list[Example], opts: ExportOptions, report: dict) -> list[Example]:
    """Apply the length bounds, then exact and normalised de-duplication."""
    count_tokens = None
    if opts.tokenizer is not None and opts.max_tokens is not None:
        count_tokens = lambda text: len(opts.tokenizer.encode(text, add_special_tokens=False))  # noqa: E731
    examples, report["too_short_dropped"], report["too_long_dropped"] = filter_length(
        examples, opts.min_chars, opts.max_chars, count_tokens, opts.max_tokens
    )
    examples, exact, normalised = deduplicate(examples)
    report.update(
        duplicates_dropped=exact + normalised, duplicates_exact=exact, duplicates_normalised=normalised
    )
    return examples


def _has_tool_turn(messages: list[dict]) -> bool:
    return any(m.get("role") == "tool" or m.get("tool_calls") for m in messages)


def _trainable_shapes(
    rated: list[RatedAnswer], pairs: list[PairRecord], report: dict
) -> tuple[list[RatedAnswer], list[PairRecord]]:
    """Leave out, and count, the feedback the sets' columns cannot carry faithfully.

    - Raw-prompt completions (`/v1/completions`) were served without a chat template: as a chat row the model
      would learn an exchange it never had (`raw_prompt_dropped`).
    - Tool-call turns (an answer that called a tool, or a prompt holding tool calls or tool results): the rows'
      messages are {role, content}, so the calls would be lost and the row would teach a wrong answer
      (`tool_turns_dropped`).
    """
    raw = [r for r in rated if r.endpoint == "completions"]
    tools = [r for r in rated if r.endpoint != "completions" and (r.tool_calls or _has_tool_turn(r.prompt))]
    tool_pairs = [p for p in pairs if _has_tool_turn(p.prompt)]
    report["raw_prompt_dropped"] = len(raw)
    report["tool_turns_dropped"] = len(tools) + len(tool_pairs)
    left_out = {id(s) for s in [*raw, *tools, *tool_pairs]}
    if left_out:
        logger.info("export left out %d raw-prompt and %d tool-call signals", len(raw), len(tools) + len(tool_pairs))
    return [r for r in rated if id(r) not in left_out], [p for p in pairs if id(p) not in left_out]


def _user(signal: RatedAnswer | PairRecord) -> str | None:
    return signal.feedback.user if isinstance(signal, RatedAnswer) else signal.user


def _scrub(
    signals: list[RatedAnswer | PairRecord], scrubber: Scrubber
) -> tuple[list[Thumb], list[Correction], list[Preference]]:
    """Scrubbed thumbs, corrections and explicit pairs from stored ratings and pairs."""
    thumbs, corrections, preferences = [], [], []
    for s in signals:
        if isinstance(s, RatedAnswer):
            prompt, answer, fb = scrubber.scrub_messages(s.prompt), scrubber.scrub(s.answer), s.feedback
            thumbs.append(Thumb(prompt, answer, fb.rating == "up", fb.id))
            if fb.correction and fb.correction.strip():
                corrections.append(Correction(prompt, answer, scrubber.scrub(fb.correction), fb.id))
        else:  # a PairRecord
            prompt = scrubber.scrub_messages(s.prompt)
            preferences.append(Preference(prompt, scrubber.scrub(s.chosen), scrubber.scrub(s.rejected), s.id))
    return thumbs, corrections, preferences


def _replay_examples(rows: list[dict] | None, kind: Kind) -> list[Example]:
    """Earlier training rows, checked to have this kind's columns and kept to exactly those."""
    columns = set(FEATURES[kind])
    out = []
    for i, row in enumerate(rows or []):
        if not columns <= set(row):
            raise ValueError(f"replay row {i} lacks {sorted(columns - set(row))} for a {kind} set")
        out.append(Example({c: row[c] for c in FEATURES[kind]}))
    return out


def _dataset(rows: list[dict], kind: Kind) -> datasets.Dataset:
    # from_dict with explicit features keeps the columns (and their types) even when there are no rows.
    columns = {name: [row[name] for row in rows] for name in FEATURES[kind]}
    return datasets.Dataset.from_dict(columns, features=FEATURES[kind])


def write_jsonl(
    training_set: TrainingSet, path: Path, *, split: Literal["train", "held_out"] = "train"
) -> int:
    """Write one split as JSON lines (atomically: a reader never sees half a file); returns the row count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = training_set.train if split == "train" else training_set.held_out
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return len(rows)


def count_usable_since(store: StoreQueries, adapter: str, since: float | None) -> int:
    """Ratings plus pairs stored for `adapter` since a time: the trainer's cheap "is there enough new
    feedback" check (before hygiene, which only a full build can apply)."""
    return store.count_signals(adapter, since)
