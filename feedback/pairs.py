"""Turning a pair submission (two completion ids, or a prompt and two texts) into stored pair fields."""

from __future__ import annotations

from collections.abc import Callable

from adapters.names import NAME_RE
from feedback.records import CompletionRecord
from feedback.validation import (
    MAX_ANSWER_CHARS,
    feedback_id_problems,
    index_problems,
    messages_problems,
    raise_if,
    text_problems,
)


def _prompt_key(messages: list[dict]) -> list[tuple[str, str]]:
    """What makes two prompts the same: roles and contents, whitespace-trimmed."""
    return [(str(m.get("role")), " ".join(str(m.get("content", "")).split())) for m in messages]


def resolve_pair(
    get_completion: Callable[[str], CompletionRecord],
    *,
    chosen_completion_id: str | None,
    rejected_completion_id: str | None,
    chosen_choice_index: int,
    rejected_choice_index: int,
    prompt: list[dict] | None,
    chosen: str | None,
    rejected: str | None,
    adapter: str | None,
    user: str | None,
    feedback_id: str | None,
) -> dict:
    """Validate a pair submission and return the PairRecord fields it determines (raises InvalidFeedback,
    or CompletionNotFound for an unknown id)."""
    common = text_problems("user", user, 256) + feedback_id_problems(feedback_id)
    if chosen_completion_id is not None or rejected_completion_id is not None:
        problems = common + index_problems("chosen_choice_index", chosen_choice_index)
        problems += index_problems("rejected_choice_index", rejected_choice_index)
        if chosen_completion_id is None or rejected_completion_id is None:
            problems.append("give both chosen_completion_id and rejected_completion_id, or neither")
        if prompt is not None or chosen is not None or rejected is not None:
            problems.append("give either two completion ids or prompt + chosen + rejected texts, not both")
        raise_if(problems)
        return _from_completions(
            get_completion(chosen_completion_id), chosen_choice_index,
            get_completion(rejected_completion_id), rejected_choice_index,
        )  # fmt: skip
    problems = common + messages_problems(prompt)
    problems += text_problems("chosen", chosen, MAX_ANSWER_CHARS, required=True)
    problems += text_problems("rejected", rejected, MAX_ANSWER_CHARS, required=True)
    if adapter is not None and (not isinstance(adapter, str) or not NAME_RE.match(adapter)):
        problems.append("adapter must be 1-64 letters, digits, '-' or '_', starting with a letter or digit")
    if not problems and chosen.strip() == rejected.strip():
        problems.append("chosen and rejected are the same text; a pair needs two different answers")
    raise_if(problems)
    return {
        "adapter": adapter,
        "adapter_version": None,
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
    }


def _from_completions(
    chosen: CompletionRecord, chosen_index: int, rejected: CompletionRecord, rejected_index: int
) -> dict:
    problems = []
    for name, rec, index in (("chosen", chosen, chosen_index), ("rejected", rejected, rejected_index)):
        if index not in rec.choice_indexes():
            problems.append(
                f"{name}_choice_index {index} is out of range: completion {rec.id} has {rec.choice_indexes()}"
            )
    if _prompt_key(chosen.messages) != _prompt_key(rejected.messages):
        problems.append(
            "the two completions answer different prompts; a pair needs two answers to one prompt"
        )
    raise_if(problems)
    chosen_text, rejected_text = chosen.answer(chosen_index), rejected.answer(rejected_index)
    if chosen_text.strip() == rejected_text.strip():
        raise_if(["chosen and rejected are the same text; a pair needs two different answers"])
    same_version = chosen.adapter == rejected.adapter and chosen.adapter_version == rejected.adapter_version
    return {
        "adapter": chosen.adapter if chosen.adapter is not None else rejected.adapter,
        "adapter_version": chosen.adapter_version if same_version else None,
        "prompt": chosen.messages,
        "chosen": chosen_text,
        "rejected": rejected_text,
        "chosen_completion_id": chosen.id,
        "chosen_choice_index": chosen_index,
        "rejected_completion_id": rejected.id,
        "rejected_choice_index": rejected_index,
    }
