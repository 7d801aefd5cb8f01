"""POST /v1/chat/completions, POST /v1/completions and GET /v1/models."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from server.auth import require_user
from server.chat import ChatHandler
from server.disconnect import unless_disconnected
from server.engine import Endpoint
from server.errors import error_responses
from server.protocol import ChatCompletionBody, CompletionBody, FlywheelFields, ModelCard, ModelList
from server.state import ChatDep, ResolverDep, StateDep

router = APIRouter(prefix="/v1", dependencies=[Depends(require_user)])
DOCUMENTED = {"chat": ChatCompletionBody, "completion": CompletionBody}
SELF_CHECKED = {"adapter"}  # the resolver says what is wrong with a name (invalid_name), or that it is unknown
ADAPTER_HEADER = "X-Flywheel-Adapter"
CLIENT_CLOSED = 499  # nginx's status for "the client went away"; nobody receives it, but the access log does
STREAM = {"text/event-stream": {"schema": {"description": "Each event's data: a chunk object; `[DONE]` last."}}}
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The completion (JSON), or its chunks as server-sent events when `stream` is true.",
          "content": {"application/json": {"schema": {"type": "object"}}, **STREAM}},
    **error_responses(400, 401, 404, 409, 429, 503),
}


def integral(value: Any) -> Any:
    """JSON Schema's `integer` includes 4.0, which pydantic's strict mode refuses: make such floats ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [integral(v) for v in value]
    if isinstance(value, dict):
        return {k: integral(v) for k, v in value.items()}
    return value


def check_documented(endpoint: Endpoint, body: dict) -> None:
    """The documented fields, as the OpenAPI document types them (strict: no `"n": "2"`); the rest is vLLM's."""
    model = DOCUMENTED[endpoint]
    fields = {k: integral(v) for k, v in body.items() if k in model.model_fields}
    try:
        model.model_validate_json(json.dumps(fields), strict=True)
    except ValidationError as e:
        errors = [e for e in e.errors(include_url=False, include_context=False)
                  if e["loc"][0] in fields and not (e["loc"][0] in SELF_CHECKED and fields[e["loc"][0]])]
        if errors:
            raise RequestValidationError(errors) from None


async def serve(endpoint: Endpoint, body: dict, chat: ChatHandler, request: Request) -> Response:
    """One completion, streamed or not; the header names the adapter version that served it."""
    check_documented(endpoint, body)
    prepared = await chat.prepare(endpoint, body)
    headers = {ADAPTER_HEADER: prepared.adapter_label or ""}
    if body.get("stream"):  # a stream stops on a disconnect by itself (StreamingResponse)
        return StreamingResponse(await chat.stream(prepared), media_type="text/event-stream", headers=headers)
    finished, response = await unless_disconnected(request, chat.complete(prepared))
    if not finished:
        return Response(status_code=CLIENT_CLOSED)
    return JSONResponse(response, headers=headers)


@router.post("/chat/completions", responses=RESPONSES)
async def chat_completions(body: FlywheelFields, chat: ChatDep, request: Request) -> Response:
    """OpenAI chat completions, served by vLLM's own serving class on the resolved adapter version."""
    return await serve("chat", body.model_dump(exclude_unset=True), chat, request)


@router.post("/completions", responses=RESPONSES)
async def completions(body: FlywheelFields, chat: ChatDep, request: Request) -> Response:
    """OpenAI (legacy) text completions: a raw prompt, no chat template."""
    return await serve("completion", body.model_dump(exclude_unset=True), chat, request)


@router.get("/models", responses=error_responses(401, 503))
async def list_models(state: StateDep, resolver: ResolverDep) -> ModelList:
    """The base model, each adapter (its production version), and each version with its lineage."""
    base = state.settings.served_model_name
    limit = state.settings.max_model_len
    cards = [ModelCard(id=base, root=str(state.settings.resolved_model_path), max_model_len=limit)]
    for name, version in sorted(resolver.production_versions().items()):
        parent = f"{name}@{version.parent_version}" if version.parent_version else base
        cards.append(ModelCard(id=name, created=int(version.created_at), root=base, parent=parent,
                               version=version.version, max_model_len=limit))
    return ModelList(data=cards)
