"""Wire types of the feedback API. Field rules (lengths, unicode) are checked by the feedback store."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from feedback.vocabulary import Rating, Role


class FeedbackRequest(BaseModel):
    """POST /v1/feedback: a thumbs up/down on one answer, optionally with a comment or a better answer."""

    model_config = ConfigDict(extra="forbid")

    completion_id: str = Field(max_length=128)
    rating: Rating
    choice_index: int = Field(0, ge=0)
    comment: str | None = None
    correction: str | None = None
    user: str | None = Field(None, max_length=256)
    feedback_id: str | None = Field(None, description="Client idempotency key: a repeat returns the first result.")


class PairMessage(BaseModel):
    role: Role
    content: str


class PairRequest(BaseModel):
    """POST /v1/feedback/pairs: two completion ids, or a prompt with two texts."""

    model_config = ConfigDict(extra="forbid")

    chosen_completion_id: str | None = Field(None, max_length=128)
    rejected_completion_id: str | None = Field(None, max_length=128)
    chosen_choice_index: int = Field(0, ge=0)
    rejected_choice_index: int = Field(0, ge=0)
    prompt: list[PairMessage] | None = None
    chosen: str | None = None
    rejected: str | None = None
    adapter: str | None = Field(None, max_length=64)
    user: str | None = Field(None, max_length=256)
    feedback_id: str | None = None
