"""What a completion answered, gathered from a response body or its stream, for the completion log.

The log keeps answers as vLLM sent them: text, and tool calls as OpenAI shapes (`id`, `type`, `function`
with `name` and JSON `arguments`), so a structured output or a tool call is stored exactly as the client got it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class Answer:
    """One choice: its text, tool calls and finish reason."""

    index: int
    text: str = ""
    finish_reason: str | None = None
    tool_calls: list[dict] = field(default_factory=list)

    def as_record(self) -> dict:
        row: dict = {"index": self.index, "text": self.text, "finish_reason": self.finish_reason}
        if self.tool_calls:
            row["tool_calls"] = self.tool_calls
        return row


class Transcript:
    """The choices of one completion, from a whole body (`add_body`) or stream chunks (`add_event`)."""

    def __init__(self) -> None:
        self.answers: dict[int, Answer] = {}
        self.failed = False  # an error arrived inside the stream

    def _answer(self, index: int) -> Answer:
        return self.answers.setdefault(index, Answer(index))

    def add_body(self, body: dict) -> None:
        """A non-streamed chat or completion response."""
        for choice in body.get("choices") or []:
            answer = self._answer(choice["index"])
            message = choice.get("message")
            answer.text = (message.get("content") if message else choice.get("text")) or ""
            answer.tool_calls = [_call(c) for c in (message or {}).get("tool_calls") or []]
            answer.finish_reason = choice.get("finish_reason")

    def add_event(self, event: str) -> None:
        """One server-sent event (`data: {...}`) of a chat or completion stream."""
        if not event.startswith("data: {"):
            return  # [DONE], or anything else that is not a chunk
        chunk = json.loads(event[6:])
        if "error" in chunk:
            self.failed = True
            return
        for choice in chunk.get("choices") or []:
            answer = self._answer(choice["index"])
            delta = choice.get("delta")
            answer.text += (delta.get("content") if delta is not None else choice.get("text")) or ""
            for part in (delta or {}).get("tool_calls") or []:
                _merge(answer.tool_calls, part)
            answer.finish_reason = choice.get("finish_reason") or answer.finish_reason

    def choices(self) -> list[dict]:
        return [self.answers[i].as_record() for i in sorted(self.answers)]


def _call(call: dict) -> dict:
    function = call.get("function") or {}
    return {"id": call.get("id"), "type": call.get("type", "function"),
            "function": {"name": function.get("name"), "arguments": function.get("arguments") or ""}}


def _merge(calls: list[dict], part: dict) -> None:
    """Add one streamed tool-call delta (vLLM sends the id and name first, then pieces of the arguments)."""
    index = part.get("index", len(calls))
    while len(calls) <= index:
        calls.append({"id": None, "type": "function", "function": {"name": None, "arguments": ""}})
    call, function = calls[index], part.get("function") or {}
    call["id"] = part.get("id") or call["id"]
    call["function"]["name"] = function.get("name") or call["function"]["name"]
    call["function"]["arguments"] += function.get("arguments") or ""
