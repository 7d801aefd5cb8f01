"""Wire types of the feedback API. Field rules (lengths, unicode) are checked by the feedback store."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from adapters.names import NAME_RE
from feedback.validation import FEEDBACK_ID_RE, MAX_ANSWER_CHARS, MAX_COMMENT_CHARS, MAX_CORRECTION_CHARS
from feedback.vocabulary import Rating, Role
from server.protocol import MAX_N

# The store's text rules (feedback/validation.py) as JSON Schema, so the OpenAPI document allows only what it
# stores; the store checks them itself and reports every problem at once (so they are not pydantic rules here).
_TEXT = r"[^\x00-\x08\x0b\x0c\x0e-\x1f]"  # no C0 control characters but tab, newline, carriage return
TEXT = f"^{_TEXT}*$"
NON_BLANK = rf"^{_TEXT}*[^\s\x00-\x08\x0b\x0c\x0e-\x1f]{_TEXT}*$"


def text(max_chars: int, pattern: str = TEXT) -> dict:
    return {"json_schema_extra": {"pattern": pattern, "maxLength": max_chars}}


class FeedbackRequest(BaseModel):
    """POST /v1/feedback: a thumbs up/down on one answer, optionally with a comment or a better answer."""

    model_config = ConfigDict(extra="forbid")

    completion_id: str = Field(max_length=128)
    rating: Rating
    choice_index: int = Field(0, ge=0, le=MAX_N - 1, strict=True)
    comment: str | None = Field(None, **text(MAX_COMMENT_CHARS))
    correction: str | None = Field(None, **text(MAX_CORRECTION_CHARS))
    user: str | None = Field(None, max_length=256, json_schema_extra={"pattern": TEXT})
    feedback_id: str | None = Field(None, description="Client idempotency key: a repeat returns the first result.",
                                    json_schema_extra={"pattern": FEEDBACK_ID_RE.pattern})


class PairMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    content: str = Field(**text(MAX_CORRECTION_CHARS, NON_BLANK))


class PairRequest(BaseModel):
    """POST /v1/feedback/pairs: two completion ids, or a prompt with two (different) texts."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [
        {"required": ["chosen_completion_id", "rejected_completion_id"],
         "not": {"anyOf": [{"required": ["prompt"]}, {"required": ["chosen"]}, {"required": ["rejected"]}]}},
        {"required": ["prompt", "chosen", "rejected"],
         "not": {"anyOf": [{"required": ["chosen_completion_id"]}, {"required": ["rejected_completion_id"]}]}},
    ]})

    chosen_completion_id: str | None = Field(None, max_length=128)
    rejected_completion_id: str | None = Field(None, max_length=128)
    chosen_choice_index: int = Field(0, ge=0, le=MAX_N - 1, strict=True)
    rejected_choice_index: int = Field(0, ge=0, le=MAX_N - 1, strict=True)
    prompt: list[PairMessage] | None = Field(None, min_length=1, max_length=256)
    chosen: str | None = Field(None, **text(MAX_ANSWER_CHARS, NON_BLANK))
    rejected: str | None = Field(None, **text(MAX_ANSWER_CHARS, NON_BLANK))
    adapter: str | None = Field(None, max_length=64, json_schema_extra={"pattern": NAME_RE.pattern})
    user: str | None = Field(None, max_length=256, json_schema_extra={"pattern": TEXT})
    feedback_id: str | None = Field(None, json_schema_extra={"pattern": FEEDBACK_ID_RE.pattern})
