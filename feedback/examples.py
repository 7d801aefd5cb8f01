"""Turning signals (thumbs, corrections, pairs) into SFT, DPO and KTO rows in TRL's conversational format:
SFT {"prompt", "completion"} · DPO {"prompt", "chosen", "rejected"} · KTO {"prompt", "completion", "label"}

Explicit evidence outranks thumbs. A correction is an answer the user wrote; a thumb is one click, and
clicks are noisy (misclicks, mood, a rater skimming). So on a prompt that has a correction, the correction
is the SFT target and its up-rated answers are not; on a prompt with a correction or an explicit pair, the
thumbs are not turned into inferred up-vs-down pairs. Corrections also count `correction_weight` times in
SFT, so a minority of wrongly up-rated answers cannot outvote them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from feedback.hygiene import Example, normalise, prompt_key


@dataclass(frozen=True)
class Thumb:
    """A scrubbed up/down rating of one answer."""

    prompt: list[dict]
    answer: str
    up: bool
    source: str  # the feedback id


@dataclass(frozen=True)
class Correction:
    """A scrubbed better answer written for an answer the user saw."""

    prompt: list[dict]
    answer: str  # the answer it corrects
    correction: str
    source: str


@dataclass(frozen=True)
class Preference:
    """A scrubbed explicit pair."""

    prompt: list[dict]
    chosen: str
    rejected: str
    source: str  # the pair id


def assistant(text: str) -> list[dict]:
    """One assistant turn, as TRL expects a completion."""
    return [{"role": "assistant", "content": text}]


def explicit_prompts(corrections: list[Correction], pairs: list[Preference]) -> set[str]:
    """Normalised prompts that have explicit evidence: a correction or an explicit pair."""
    return {prompt_key(c.prompt) for c in corrections} | {prompt_key(p.prompt) for p in pairs}


def sft_examples(thumbs: list[Thumb], corrections: list[Correction], correction_weight: int = 1) -> list[Example]:
    """Corrections (the correction's text is the completion, weighted) and up-rated answers to prompts
    nobody corrected."""
    corrected = {prompt_key(c.prompt) for c in corrections}
    rows = [
        Example({"prompt": c.prompt, "completion": assistant(c.correction)}, {c.source}, correction_weight)
        for c in corrections
    ]
    rows += [
        Example({"prompt": t.prompt, "completion": assistant(t.answer)}, {t.source})
        for t in thumbs
        if t.up and prompt_key(t.prompt) not in corrected
    ]
    return rows


def kto_examples(thumbs: list[Thumb], corrections: list[Correction]) -> list[Example]:
    """Every thumb with its label; a correction is a desirable completion too."""
    rows = [
        Example({"prompt": t.prompt, "completion": assistant(t.answer), "label": t.up}, {t.source})
        for t in thumbs
    ]
    rows += [
        Example({"prompt": c.prompt, "completion": assistant(c.correction), "label": True}, {c.source})
        for c in corrections
    ]
    return rows


def dpo_examples(thumbs: list[Thumb], corrections: list[Correction], pairs: list[Preference]) -> list[Example]:
    """Explicit pairs; each correction beats the answer it corrects; and, on prompts without explicit
    evidence, every up-rated answer beats every down-rated answer to the same (normalised) prompt."""
    rows = [_pair(p.prompt, p.chosen, p.rejected, {p.source}) for p in pairs]
    rows += [
        _pair(c.prompt, c.correction, c.answer, {c.source})
        for c in corrections
        if normalise(c.correction) != normalise(c.answer)
    ]
    explicit = explicit_prompts(corrections, pairs)
    by_prompt: dict[str, list[Thumb]] = defaultdict(list)
    for t in thumbs:
        if prompt_key(t.prompt) not in explicit:
            by_prompt[prompt_key(t.prompt)].append(t)
    for group in by_prompt.values():
        ups, downs = _distinct(t for t in group if t.up), _distinct(t for t in group if not t.up)
        for key, up in ups.items():
            for down in (d for k, d in downs.items() if k != key):
                rows.append(_pair(up.prompt, up.text, down.text, up.sources | down.sources))
    return rows


@dataclass
class _Answer:
    prompt: list[dict]
    text: str
    sources: set[str]


def _distinct(thumbs: Iterable[Thumb]) -> dict[str, _Answer]:
    """Answers keyed by normalised text, so each distinct answer is paired once (with all its ratings)."""
    out: dict[str, _Answer] = {}
    for t in thumbs:
        key = normalise(t.answer)
        if key in out:
            out[key].sources.add(t.source)
        else:
            out[key] = _Answer(t.prompt, t.answer, {t.source})
    return out


def _pair(prompt: list[dict], chosen: str, rejected: str, sources: set[str]) -> Example:
    return Example({"prompt": prompt, "chosen": assistant(chosen), "rejected": assistant(rejected)}, sources)
