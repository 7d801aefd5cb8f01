"""POST /v1/chat/completions and GET /v1/models."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from server.auth import require_user
from server.disconnect import unless_disconnected
from server.protocol import ChatCompletionRequest, ModelCard, ModelList
from server.state import ChatDep, ResolverDep, StateDep

router = APIRouter(prefix="/v1", dependencies=[Depends(require_user)])
ADAPTER_HEADER = "X-Flywheel-Adapter"


CLIENT_CLOSED = 499  # nginx's status for "the client went away"; nobody receives it, but the access log does


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, chat: ChatDep, request: Request):
    prepared = await chat.prepare(body)
    headers = {ADAPTER_HEADER: prepared.adapter_label or ""}
    if body.stream:  # a stream stops on a disconnect by itself (StreamingResponse)
        return StreamingResponse(chat.stream(prepared), media_type="text/event-stream", headers=headers)
    finished, response = await unless_disconnected(request, chat.complete(prepared))
    if not finished:
        return Response(status_code=CLIENT_CLOSED)
    return JSONResponse(response.model_dump(), headers=headers)


@router.get("/models")
async def list_models(state: StateDep, resolver: ResolverDep) -> ModelList:
    now = int(time.time())
    base = state.settings.served_model_name
    cards = [ModelCard(id=base, created=now, root=str(state.settings.resolved_model_path))]
    for name, version in sorted(resolver.production_versions().items()):
        cards.append(ModelCard(id=name, created=int(version.created_at), root=base, parent=base,
                               version=version.version))
    return ModelList(data=cards)
