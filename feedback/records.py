"""The stored shapes: a served completion, a rating on one of its answers, and a preference pair."""

from __future__ import annotations

from dataclasses import dataclass, field

from feedback.vocabulary import Rating


def choice_indexes(choices: list[dict]) -> list[int]:
    """The indexes of stored choices (a choice without one is numbered by its position)."""
    return [int(c.get("index", i)) for i, c in enumerate(choices)]


@dataclass(frozen=True)
class CompletionRef:
    """What a rating needs to know about its completion: who answered, and which choices exist."""

    adapter: str | None
    adapter_version: int | None
    choice_indexes: tuple[int, ...]


@dataclass(frozen=True)
class CompletionRecord:
    """One served chat completion, as the gateway answered it."""

    id: str
    adapter: str | None  # None: the base model answered
    adapter_version: int | None
    model: str
    messages: list[dict]  # the request's messages, each {"role", "content"}
    params: dict  # sampling parameters (temperature, top_p, max_tokens, n, ...)
    choices: list[dict]  # each {"index", "text", "finish_reason"}
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    user: str | None
    created_at: float

    def answer(self, choice_index: int) -> str:
        """The text of one choice; raises IndexError when there is no such choice."""
        for choice in self.choices:
            if choice.get("index") == choice_index:
                return str(choice.get("text") or "")
        raise IndexError(choice_index)

    def choice_indexes(self) -> list[int]:
        """The indexes of this completion's choices."""
        return choice_indexes(self.choices)

    def ref(self) -> CompletionRef:
        """The part of this record a rating needs."""
        return CompletionRef(self.adapter, self.adapter_version, tuple(self.choice_indexes()))


@dataclass(frozen=True)
class FeedbackRecord:
    """A thumbs up/down on one choice of a completion, with an optional comment or correction."""

    id: str  # "fb_" + random hex, assigned by the store
    completion_id: str
    adapter: str | None
    adapter_version: int | None
    rating: Rating
    choice_index: int
    comment: str | None
    correction: str | None  # a better answer written by the user
    user: str | None
    created_at: float
    feedback_id: str | None = None  # the client's idempotency key, if it sent one
    replaced: bool = False  # True when this rating replaced the same user's earlier one


@dataclass(frozen=True)
class PairRecord:
    """A preferred and a rejected answer to the same prompt."""

    id: str  # "pair_" + random hex
    adapter: str | None
    adapter_version: int | None
    prompt: list[dict]
    chosen: str
    rejected: str
    user: str | None
    created_at: float
    chosen_completion_id: str | None = None
    chosen_choice_index: int | None = None
    rejected_completion_id: str | None = None
    rejected_choice_index: int | None = None
    feedback_id: str | None = None


@dataclass(frozen=True)
class RatedAnswer:
    """A rating joined with the prompt and answer it rates: what exports read."""

    feedback: FeedbackRecord
    prompt: list[dict] = field(default_factory=list)
    answer: str = ""
    endpoint: str = "chat.completions"  # or "completions": a raw prompt, served without a chat template
    tool_calls: list[dict] = field(default_factory=list)  # the rated answer's tool calls, if it made any
