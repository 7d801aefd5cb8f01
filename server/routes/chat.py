"""POST /v1/chat/completions, POST /v1/completions and GET /v1/models."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from server.auth import require_user
from server.chat import ChatHandler
from server.disconnect import unless_disconnected
from server.engine import Endpoint
from server.protocol import ErrorResponse, FlywheelFields, ModelCard, ModelList
from server.state import ChatDep, ResolverDep, StateDep

router = APIRouter(prefix="/v1", dependencies=[Depends(require_user)])
ADAPTER_HEADER = "X-Flywheel-Adapter"
CLIENT_CLOSED = 499  # nginx's status for "the client went away"; nobody receives it, but the access log does
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 409, 429, 503)
}
RESPONSES = {200: {"content": {"application/json": {}, "text/event-stream": {}}}, **ERRORS}


async def serve(endpoint: Endpoint, body: dict, chat: ChatHandler, request: Request) -> Response:
    """One completion, streamed or not; the header names the adapter version that served it."""
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


@router.get("/models")
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
