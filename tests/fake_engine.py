"""A deterministic stand-in for vLLM, for fast route tests only (integration tests use the real engine).

It takes the same `EngineCall` (with vLLM's own parsed request) and answers in vLLM's response and SSE
shapes, so Flywheel's layer (adapters, header, `adapter` field, log, metrics) is tested without an engine;
vLLM's own request handling is covered by tests/integration/test_serving.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from server.engine import AdapterHandle, EngineCall, Served, engine_error
from server.errors import AdapterLoadFailed, EngineUnavailable, PromptTooLong


class FakeEngine:
    """Answers `<adapter name or 'base'> says: <word lengths of the prompt>`, one word per token."""

    max_model_len = 64

    def __init__(self) -> None:
        self.loaded: list[str] = []
        self.fail_paths: set[str] = set()
        self.delay = 0.0
        self.dead = False  # set to play an engine that died under the gateway
        self.calls: list[EngineCall] = []

    @staticmethod
    def _prompt(call: EngineCall) -> list[int]:
        request = call.request
        if call.endpoint == "completion":
            texts = [request.prompt] if isinstance(request.prompt, str) else [str(request.prompt)]
        else:
            texts = [m.get("content") if isinstance(m.get("content"), str) else "" for m in request.messages]
        return [len(w) for text in texts for w in (text or "").split()] + [0, 0]

    async def serve(self, call: EngineCall) -> Served:
        if self.dead:
            raise EngineUnavailable("the inference engine has stopped")
        self.calls.append(call)
        prompt = self._prompt(call)
        if len(prompt) >= self.max_model_len:
            raise PromptTooLong(f"the prompt ({len(prompt)} tokens) exceeds the maximum context length", "messages")
        request = call.request
        room = self.max_model_len - len(prompt)
        limit = min(request.max_tokens or room, room)  # vLLM clamps max_tokens to the room left
        try:  # vLLM's own checks of the sampling parameters (temperature range, n >= 1, ...)
            request.to_sampling_params(limit, {})
        except Exception as e:
            raise engine_error(e) from e
        words = [call.adapter.name if call.adapter else "base", "says"] + [str(i) for i in prompt[:-2]]
        words = words[:limit]
        finish = "stop" if len(words) < limit else "length"
        call.prompt_tokens = len(prompt)
        events = self._events(call, words, finish)
        if request.stream:
            return Served(events=events)
        async for _ in events:
            pass
        text = " ".join(words)
        n = request.n or 1
        if call.endpoint == "chat":
            choices = [{"index": i, "message": {"role": "assistant", "content": text, "tool_calls": []},
                        "logprobs": None, "finish_reason": finish} for i in range(n)]
        else:
            choices = [{"index": i, "text": text, "logprobs": None, "finish_reason": finish} for i in range(n)]
        return Served(body={"id": self._id(call), "object": self._object(call, False), "created": int(time.time()),
                            "model": call.model, "choices": choices, "usage": self._usage(call)})

    def _id(self, call: EngineCall) -> str:
        return ("chatcmpl-" if call.endpoint == "chat" else "cmpl-") + call.request.request_id

    @staticmethod
    def _object(call: EngineCall, chunk: bool) -> str:
        return ("chat.completion" + (".chunk" if chunk else "")) if call.endpoint == "chat" else "text_completion"

    @staticmethod
    def _usage(call: EngineCall) -> dict:
        return {"prompt_tokens": call.prompt_tokens, "completion_tokens": call.completion_tokens,
                "total_tokens": call.prompt_tokens + call.completion_tokens}

    async def _events(self, call: EngineCall, words: list[str], finish: str) -> AsyncIterator[str]:
        n = call.request.n or 1

        def event(choices: list[dict], usage: dict | None = None) -> str:
            body = {"id": self._id(call), "object": self._object(call, True), "created": int(time.time()),
                    "model": call.model, "choices": choices}
            if usage:
                body["usage"] = usage
            return f"data: {json.dumps(body)}\n\n"

        for position, word in enumerate(words):
            await asyncio.sleep(self.delay)
            if call.first_token_at is None:
                call.first_token_at = time.perf_counter()
            if position == len(words) - 1 and position:  # as vLLM's stats: decode time over tokens after the first
                call.time_per_output_token = (time.perf_counter() - call.first_token_at) / position
            call.completion_tokens += n
            text = (" " if position else "") + word
            last = position == len(words) - 1
            if call.endpoint == "chat":  # as vLLM: the role comes with the first token
                delta = {"role": "assistant", "content": text} if position == 0 else {"content": text}
                choices = [{"index": i, "delta": delta, "finish_reason": finish if last else None}
                           for i in range(n)]
            else:
                choices = [{"index": i, "text": text, "finish_reason": finish if last else None} for i in range(n)]
            yield event(choices)
        options = call.request.stream_options
        if options and options.include_usage:
            yield event([], self._usage(call))
        yield "data: [DONE]\n\n"

    async def load_adapter(self, adapter: AdapterHandle) -> None:
        if adapter.path in self.fail_paths:
            raise AdapterLoadFailed(f"cannot load {adapter.name}: broken weights")
        self.loaded.append(adapter.name)

    async def check_health(self) -> None:
        if self.dead:
            raise RuntimeError("EngineCore died")

    def shutdown(self) -> None:
        return None
