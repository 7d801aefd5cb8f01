"""Chat and (legacy) text completions: Flywheel's layer around vLLM's OpenAI serving classes.

vLLM does the request handling (templating, sampling, structured outputs, tools, logprobs, SSE framing; see
server/vllm_serving.py). This layer adds what Flywheel is for: the adapter version a request is served by
(`adapter`, `model`, `name@version`, aliases, canary), the `adapter` field in every response and chunk,
admission control, metrics, and the completion log that feedback refers to. No FastAPI here: a route, a test
or a benchmark can drive `ChatHandler`. Everything a client can get wrong fails in `prepare` or in the
engine's set-up (before the first byte of a stream), so a client always gets a proper status code.
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
from server.engine import Endpoint, Engine, EngineCall, parse_request, request_fields
from server.errors import BadRequest, ModelNotFound, Overloaded
from server.metrics import Metrics
from server.protocol import MAX_N, REFUSED, ROLES
from server.resolver import AdapterResolver, handle_for
from server.transcript import Transcript

logger = logging.getLogger(__name__)
ID_PREFIX = {"chat": "chatcmpl-", "completion": "cmpl-"}


@dataclass
class Prepared:
    """A validated request, bound to the adapter version it will be served by."""

    id: str
    body: dict  # the client's body without Flywheel's own fields (what the log keeps)
    call: EngineCall
    version: AdapterVersion | None
    store: bool
    started: float = field(default_factory=time.perf_counter)
    transcript: Transcript = field(default_factory=Transcript)

    @property
    def adapter_label(self) -> str | None:
        return self.version.lora_name if self.version else None

    @property
    def metric_labels(self) -> tuple[str, str]:
        return (self.version.adapter, str(self.version.version)) if self.version else ("", "")


def check_parameters(endpoint: Endpoint, body: dict) -> None:
    """400 naming the first parameter the gateway does not honour; vLLM would ignore unknown ones silently."""
    unknown = sorted(set(body) - request_fields(endpoint))
    if unknown:
        raise BadRequest(f"unsupported parameter {unknown[0]!r}: neither OpenAI's API as vLLM serves it nor "
                         "Flywheel's `adapter`/`store`", unknown[0])
    for name, why in REFUSED.items():
        if body.get(name) not in (None, [], {}, ""):
            raise BadRequest(f"parameter {name!r} is not supported here: {why}", name)
    messages = body.get("messages") if endpoint == "chat" else None
    if messages == []:
        raise BadRequest("messages must hold at least one message", "messages")
    if isinstance(messages, list):  # vLLM renders any role into the template; OpenAI's API knows these
        roles = {m.get("role") for m in messages if isinstance(m, dict)} - ROLES
        if roles:
            raise BadRequest(f"unknown message role {sorted(map(str, roles))[0]!r}; use one of {sorted(ROLES)}",
                             "messages")
    n = body.get("n")
    if isinstance(n, int) and n > MAX_N:
        raise BadRequest(f"n is {n}; this gateway answers at most {MAX_N} choices per request", "n")


class ChatHandler:
    """Serves chat and text completions for the base model and every registered adapter."""

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

    async def _adapter_for(self, adapter: str | None, model: str | None) -> AdapterVersion | None:
        if adapter:
            return await self.resolver.resolve(adapter)
        if model in (None, "", self.served_model_name):
            return None
        try:  # `model` naming an adapter works too, as in vLLM
            return await self.resolver.resolve(model)
        except InvalidName:
            raise ModelNotFound(
                f"model {model!r} is neither the base model {self.served_model_name!r} nor an adapter", "model"
            ) from None

    async def prepare(self, endpoint: Endpoint, body: dict) -> Prepared:
        """Validate and bind the request; raises a typed error for anything a client got wrong."""
        if self.inflight >= self.max_inflight:
            raise Overloaded(f"{self.inflight} requests in flight (limit {self.max_inflight}); retry shortly")
        body = dict(body)
        adapter, store = body.pop("adapter", None), body.pop("store", True)
        if adapter is not None and not isinstance(adapter, str):
            raise BadRequest("adapter must be a string: `name`, `name@<version>` or `name@<alias>`", "adapter")
        if not isinstance(store, bool):
            raise BadRequest("store must be true or false", "store")
        check_parameters(endpoint, body)
        key = uuid.uuid4().hex  # vLLM names the response `chatcmpl-<request_id>`; the log uses the same id
        request = parse_request(endpoint, {**body, "request_id": key})
        version = await self._adapter_for(adapter, request.model)
        model = version.adapter if version else self.served_model_name
        call = EngineCall(endpoint, request, handle_for(version) if version else None, model)
        return Prepared(ID_PREFIX[endpoint] + key, body, call, version, store)

    async def complete(self, p: Prepared) -> dict:
        """Serve a non-streamed request to the end: the response body, with Flywheel's `adapter`."""
        self._begin()
        status = "error"
        try:
            body = (await self.engine.serve(p.call)).body
            body["adapter"] = p.adapter_label
            p.transcript.add_body(body)
            status = "ok"
            return body
        except asyncio.CancelledError:  # the client went away: vLLM aborts the request in the engine
            status = "aborted"
            raise
        finally:
            self._end(p, status)

    async def stream(self, p: Prepared) -> AsyncIterator[str]:
        """Start a streamed request (errors raise here, before any byte is sent); returns its events."""
        self._begin()
        try:
            events = (await self.engine.serve(p.call)).events
        except BaseException:
            self._end(p, "error")
            raise
        return self._relay(p, events)

    async def _relay(self, p: Prepared, events: AsyncIterator[str]) -> AsyncIterator[str]:
        """vLLM's events, each chunk carrying Flywheel's `adapter`; logged and counted once the stream ends."""
        label = json.dumps(p.adapter_label)
        status = "error"
        try:
            async for event in events:
                p.transcript.add_event(event)
                if event.startswith("data: {"):
                    event = f'data: {{"adapter":{label},' + event[7:]
                yield event
            status = "error" if p.transcript.failed else "ok"
        except (asyncio.CancelledError, GeneratorExit):  # the client went away: vLLM aborts the request
            status = "aborted"
            raise
        finally:
            if hasattr(events, "aclose"):
                await events.aclose()
            self._end(p, status)

    def _begin(self) -> None:
        self.inflight += 1
        self.metrics.inflight.inc()

    def _end(self, p: Prepared, status: str) -> None:
        self.inflight -= 1
        self.metrics.inflight.dec()
        labels, call = p.metric_labels, p.call
        self.metrics.requests.labels(*labels, status).inc()
        self.metrics.latency.labels(*labels).observe(time.perf_counter() - p.started)
        if call.first_token_at is not None:
            self.metrics.ttft.labels(*labels).observe(call.first_token_at - p.started)
        if call.time_per_output_token is not None:
            self.metrics.time_per_output_token.labels(*labels).observe(call.time_per_output_token)
        self.metrics.prompt_tokens.labels(*labels).inc(call.prompt_tokens)
        self.metrics.completion_tokens.labels(*labels).inc(call.completion_tokens)
        if status == "ok":
            self._log(p)

    def _log(self, p: Prepared) -> None:
        if self.record is None or not p.store:
            return
        body = p.body
        if p.call.endpoint == "chat":
            messages = [logged_message(m) for m in body.get("messages", [])]
        else:  # a raw prompt: no chat template applied; `params.endpoint` tells exports apart
            prompt = body.get("prompt")
            messages = [{"role": "user", "content": prompt if isinstance(prompt, str) else json.dumps(prompt)}]
        params = {k: v for k, v in body.items() if k not in ("messages", "prompt", "model", "user")}
        params["endpoint"] = "chat.completions" if p.call.endpoint == "chat" else "completions"
        self.record(CompletionRecord(
            id=p.id,
            adapter=p.version.adapter if p.version else None,
            adapter_version=p.version.version if p.version else None,
            model=p.call.model,
            messages=messages,
            params=params,
            choices=p.transcript.choices(),
            prompt_tokens=p.call.prompt_tokens,
            completion_tokens=p.call.completion_tokens,
            latency_ms=(time.perf_counter() - p.started) * 1000,
            user=body.get("user"),
            created_at=time.time(),
        ))


def logged_message(message: dict) -> dict:
    """A request message as the log keeps it: role, text content, and its tool calls or tool call id."""
    content = message.get("content")
    if isinstance(content, list):  # content parts: the text ones, joined (the model is text-only)
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    row = {"role": message.get("role"), "content": content or ""}
    for key in ("name", "tool_calls", "tool_call_id"):
        if message.get(key):
            row[key] = message[key]
    return row
