"""A run's training data: the SFT, DPO and KTO sets with their held-out parts and lineage, and its screening.

Training functions take these datasets directly; only `from_feedback` knows the feedback package, so
the trainer can be tested on inline rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset

from flywheel import database

logger = logging.getLogger(__name__)

ANSWER_COLUMNS = {"sft": ("completion",), "dpo": ("chosen", "rejected"), "kto": ("completion",)}


@dataclass(frozen=True)
class HeldOut:
    """Held-out feedback for the gate, in TRL conversational format."""

    pairs: Sequence[dict] = ()  # {"prompt": [msgs], "chosen": [msgs], "rejected": [msgs]}
    answers: Sequence[dict] = ()  # up-rated {"prompt": [msgs], "completion": [msgs]}


@dataclass
class TrainingData:
    """Everything one run trains and evaluates on."""

    sft: Dataset | None = None
    dpo: Dataset | None = None
    kto: Dataset | None = None
    held_out: HeldOut = field(default_factory=HeldOut)
    feedback_ids: list[str] = field(default_factory=list)
    dataset_hash: str = ""
    report: dict = field(default_factory=dict)

    def rows(self, kind: str) -> int:
        """Number of train rows of one kind."""
        ds = getattr(self, kind)
        return 0 if ds is None else len(ds)

    @classmethod
    def from_rows(
        cls,
        sft: list[dict] | None = None,
        dpo: list[dict] | None = None,
        kto: list[dict] | None = None,
        held_out: HeldOut | None = None,
        feedback_ids: list[str] | None = None,
    ) -> TrainingData:
        """Build from inline rows in TRL conversational format (tests, scripts)."""
        sets = {k: Dataset.from_list(v) if v else None for k, v in (("sft", sft), ("dpo", dpo), ("kto", kto))}
        digest = hashlib.sha256(json.dumps([sft, dpo, kto], sort_keys=True, default=str).encode()).hexdigest()
        return cls(**sets, held_out=held_out or HeldOut(), feedback_ids=feedback_ids or [], dataset_hash=digest)


def from_feedback(feedback_db: Path, adapter: str, since: float | None = None) -> TrainingData:
    """Export the adapter's feedback into SFT, DPO and KTO sets (held-out parts feed the gate)."""
    from feedback.export import build_training_set  # feedback is optional for the training core
    from feedback.reader import FeedbackReader

    if not database.exists(feedback_db, "feedback"):
        return TrainingData()  # nothing rated yet: the run is refused for lack of data, like an empty store
    with FeedbackReader(feedback_db) as store:
        built = {kind: build_training_set(store, adapter, kind, since=since) for kind in ("sft", "dpo", "kto")}
    held = HeldOut(pairs=list(built["dpo"].held_out), answers=list(built["sft"].held_out))
    ids = sorted({i for s in built.values() for i in s.feedback_ids})
    digest = hashlib.sha256("".join(s.dataset_hash for s in built.values()).encode()).hexdigest()
    return TrainingData(
        sft=built["sft"].train,
        dpo=built["dpo"].train,
        kto=built["kto"].train,
        held_out=held,
        feedback_ids=ids,
        dataset_hash=digest,
        report={k: s.report for k, s in built.items()},
    )


def adapters_with_feedback(feedback_db: Path) -> list[str]:
    """Adapter names that have ratings or pairs (the base model's feedback, adapter None, is skipped)."""
    from feedback.reader import FeedbackReader

    if not database.exists(feedback_db, "feedback"):
        return []
    with FeedbackReader(feedback_db) as store:
        rows = [*store.rating_counts(), *store.pair_counts()]
    return sorted({r["adapter"] for r in rows if r.get("adapter")})


def _text_of(messages: object) -> str | None:
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "content" in m for m in messages):
        return None
    return "".join(str(m.get("content") or "") for m in messages)


def _screen_rows(kind: str, ds: Dataset, max_chars: int) -> list[str]:
    problems: list[str] = []
    for i, row in enumerate(ds):
        prompt = _text_of(row.get("prompt"))
        answers = [_text_of(row.get(c)) for c in ANSWER_COLUMNS[kind]]
        if prompt is None or any(a is None for a in answers):
            problems.append(f"{kind} row {i} is not in conversational format (lists of role/content messages)")
        elif any(not a.strip() for a in answers):
            problems.append(f"{kind} row {i} has an empty answer")
        elif len(prompt) + sum(len(a) for a in answers) > max_chars:
            problems.append(f"{kind} row {i} is absurdly long (> {max_chars} characters)")
        elif kind == "dpo" and answers[0].strip() == answers[1].strip():
            problems.append(f"dpo row {i} has identical chosen and rejected answers")
        if len(problems) >= 5:
            problems.append("(further rows not checked)")
            break
    return problems


def screen(data: TrainingData, preference: str | None, max_chars: int) -> list[str]:
    """Every reason to refuse this data (empty, malformed, absurd lengths, one-label KTO); [] when usable."""
    if not any(data.rows(k) for k in ANSWER_COLUMNS):
        return ["no usable feedback: the SFT, DPO and KTO sets are all empty"]
    problems: list[str] = []
    for kind in ANSWER_COLUMNS:
        ds = getattr(data, kind)
        if ds is not None and len(ds):
            problems += _screen_rows(kind, ds, max_chars)
    if preference == "kto" and data.kto is not None:
        labels = {bool(x) for x in data.kto["label"]}
        if len(labels) == 1:
            problems.append(
                f"kto set has only {'desirable' if labels.pop() else 'undesirable'} examples (all one label)"
            )
    return problems
