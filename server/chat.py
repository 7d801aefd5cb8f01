"""Chat completions: turn an OpenAI request into an engine call and the engine's output into a response.

No FastAPI here: `ChatHandler` is a plain class that a route, a test or a benchmark can drive.
Everything that can fail for a bad request (adapter, length, parameters) fails in `prepare`, before
the first byte of a stream is sent, so a client always gets a proper status code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from adapters.errors import InvalidName
from adapters.version import AdapterVersion
from feedback.records import CompletionRecord
from server.engine import Engine, GenerationUpdate, Sampling
from server.errors import GatewayError, ModelNotFound, Overloaded, PromptTooLong
from server.metrics import Metrics
from server.protocol import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ChunkChoice,
    DeltaMessage,
    ResponseMessage,
    Usage,
)
from server.resolver import AdapterResolver, handle_for

logger = logging.getLogger(__name__)


@dataclass
class PreparedChat:
    """A validated request, bound to the adapter version it will be served by."""

    id: str
    request: ChatCompletionRequest
    messages: list[dict]
    prompt_ids: list[int]
    sampling: Sampling
    version: AdapterVersion | None
    model: str
    started: float = field(default_factory=time.perf_counter)
    # filled in while the engine runs
    texts: dict[int, str] = field(default_factory=dict)
    finish: dict[int, str | None] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def usage(self) -> Usage:
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens,
                     total_tokens=self.prompt_tokens + self.completion_tokens)

    @property
    def adapter_label(self) -> str | None:
        return self.version.lora_name if self.version else None

    @property
    def metric_labels(self) -> tuple[str, str]:
        return (self.version.adapter, str(self.version.version)) if self.version else ("", "")


class ChatHandler:
    """Serves chat completions for the base model and every registered adapter."""

    def __init__(
        self,
        engine: Engine,
        resolver: AdapterResolver,
        metrics: Metrics,
        *,
        served_model_name: str,
        max_inflight: int,
        record: Callable[[CompletionRecord], None] | None = None,
    ):
        self.engine = engine
        self.resolver = resolver
        self.metrics = metrics
        self.served_model_name = served_model_name
        self.max_inflight = max_inflight
        self.record = record
        self.inflight = 0

    async def _adapter_for(self, request: ChatCompletionRequest) -> AdapterVersion | None:
        if request.adapter:
            return await self.resolver.resolve(request.adapter)
        if request.model in (None, "", self.served_model_name):
            return None
        try:  # `model` naming an adapter works too, as in vLLM
            return await self.resolver.resolve(request.model)
        except InvalidName:
            raise ModelNotFound(
                f"model {request.model!r} is neither the base model {self.served_model_name!r} nor an adapter",
                "model",
            ) from None

    async def prepare(self, request: ChatCompletionRequest) -> PreparedChat:
        """Validate and bind the request; raises a typed error for anything a client got wrong."""
        if self.inflight >= self.max_inflight:
            raise Overloaded(f"{self.inflight} requests in flight (limit {self.max_inflight}); retry shortly")
        version = await self._adapter_for(request)
        messages = [{"role": m.role if m.role != "developer" else "system", "content": m.text()}
                    for m in request.messages]
        prompt_ids = self.engine.encode_chat(messages)
        limit = self.engine.max_model_len
        if len(prompt_ids) >= limit:
            raise PromptTooLong(
                f"the prompt is {len(prompt_ids)} tokens; this model takes at most {limit} tokens in all", "messages"
            )
        room = limit - len(prompt_ids)
        max_tokens = request.token_limit or room
        if max_tokens > room:
            raise PromptTooLong(
                f"prompt ({len(prompt_ids)} tokens) + max_tokens ({max_tokens}) exceeds the model's {limit} tokens",
                "max_tokens",
            )
        sampling = Sampling(
            max_tokens=max_tokens, temperature=request.temperature, top_p=request.top_p,
            presence_penalty=request.presence_penalty, frequency_penalty=request.frequency_penalty,
            stop=request.stop, seed=request.seed, n=request.n,
        )
        model = version.adapter if version else self.served_model_name
        return PreparedChat(f"chatcmpl-{uuid.uuid4().hex}", request, messages, prompt_ids, sampling, version, model)

    async def _run(self, chat: PreparedChat) -> AsyncIterator[GenerationUpdate]:
        """Drive the engine, accumulating into `chat` and keeping metrics right on every exit path."""
        self.inflight += 1
        self.metrics.inflight.inc()
        labels, status, first = chat.metric_labels, "error", True
        chat.prompt_tokens = len(chat.prompt_ids)
        try:
            handle = handle_for(chat.version) if chat.version else None
            async for update in self.engine.generate(chat.prompt_ids, chat.sampling, chat.id, handle):
                if first and any(d.new_tokens for d in update.deltas):
                    self.metrics.ttft.labels(*labels).observe(time.perf_counter() - chat.started)
                    first = False
                chat.prompt_tokens = update.prompt_tokens
                for d in update.deltas:
                    chat.texts[d.index] = chat.texts.get(d.index, "") + d.text
                    chat.completion_tokens += d.new_tokens
                    chat.finish[d.index] = d.finish_reason or chat.finish.get(d.index)
                yield update
            status = "ok"
        except (asyncio.CancelledError, GeneratorExit):  # the client went away: the engine aborts the request
            status = "aborted"
            raise
        finally:
            self.inflight -= 1
            self.metrics.inflight.dec()
            self.metrics.requests.labels(*labels, status).inc()
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - chat.started)
            self.metrics.prompt_tokens.labels(*labels).inc(chat.prompt_tokens)
            self.metrics.completion_tokens.labels(*labels).inc(chat.completion_tokens)
            if status == "ok":
                self._log(chat)

    def _log(self, chat: PreparedChat) -> None:
        if self.record is None or not chat.request.store:
            return
        s = chat.sampling
        self.record(CompletionRecord(
            id=chat.id,
            adapter=chat.version.adapter if chat.version else None,
            adapter_version=chat.version.version if chat.version else None,
            model=chat.model,
            messages=chat.messages,
            params={"temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens, "n": s.n,
                    "stop": s.stop, "seed": s.seed},
            choices=[{"index": i, "text": chat.texts.get(i, ""), "finish_reason": chat.finish.get(i)}
                     for i in range(s.n)],
            prompt_tokens=chat.prompt_tokens,
            completion_tokens=chat.completion_tokens,
            latency_ms=(time.perf_counter() - chat.started) * 1000,
            user=chat.request.user,
            created_at=time.time(),
        ))

    async def complete(self, chat: PreparedChat) -> ChatCompletionResponse:
        """Run to the end and return one response."""
        async for _ in self._run(chat):
            pass
        return ChatCompletionResponse(
            id=chat.id,
            model=chat.model,
            choices=[Choice(index=i, message=ResponseMessage(content=chat.texts.get(i, "")),
                            finish_reason=chat.finish.get(i)) for i in range(chat.sampling.n)],
            usage=chat.usage(),
            adapter=chat.adapter_label,
        )

    async def stream(self, chat: PreparedChat) -> AsyncIterator[str]:
        """Server-sent events: a role chunk, content chunks, finish chunks, optional usage, [DONE]."""
        created = int(time.time())

        def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> str:
            body = ChatCompletionChunk(id=chat.id, created=created, model=chat.model, choices=choices,
                                       usage=usage, adapter=chat.adapter_label)
            return f"data: {body.model_dump_json(exclude_none=True)}\n\n"

        yield chunk([ChunkChoice(index=i, delta=DeltaMessage(role="assistant", content=""))
                     for i in range(chat.sampling.n)])
        try:
            async for update in self._run(chat):
                choices = [ChunkChoice(index=d.index, delta=DeltaMessage(content=d.text or None),
                                       finish_reason=d.finish_reason)
                           for d in update.deltas if d.text or d.finish_reason]
                if choices:
                    yield chunk(choices)
        except GatewayError as e:  # the status line is already sent; report the error in the stream
            yield f"data: {json.dumps({'error': {'message': str(e), 'type': e.type, 'code': e.code}})}\n\n"
        else:
            options = chat.request.stream_options
            if options and options.include_usage:
                yield chunk([], chat.usage())
        yield "data: [DONE]\n\n"
