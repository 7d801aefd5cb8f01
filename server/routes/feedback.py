"""POST /v1/feedback, POST /v1/feedback/pairs, GET /v1/feedback/{id}.

Submissions await the store's group commit on the event loop (no thread-pool trip per request, which
would contend with chat streaming for the GIL); they answer 201 only once the row is committed.

`POST /v1/feedback` is the hottest write path (every answer can be rated). It is declared below like every
other route (so routing answers its other methods with 405 and the OpenAPI document describes it, the body
from `FeedbackRequest` by server/openapi.py), but its endpoint reads the request itself instead of through
FastAPI's dependency and body machinery, and `FeedbackFastPath` hands it its requests before FastAPI's
exception, exit-stack and routing layers. Each of the two costs more server CPU than the rating itself:
docs/bench_feedback.md has the runs before and after.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Path
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from feedback.records import FeedbackRecord
from server.auth import require_user
from server.errors import error_responses, to_response
from server.feedback_protocol import FeedbackRequest, PairRequest
from server.state import GatewayState, StateDep

router = APIRouter(prefix="/v1/feedback", responses=error_responses(400, 401, 404, 503))
USER_KEY = [Depends(require_user)]
STORED = "The stored record (a repeated feedback_id: the first one)."


def _body(record) -> dict:
    kind = "feedback" if isinstance(record, FeedbackRecord) else "feedback.pair"
    return {"object": kind, **vars(record)}  # shallow: dataclasses.asdict deep-copied every field (~25 µs)


@router.post("", status_code=201, responses={201: {"description": STORED}})
async def submit_feedback(request: Request) -> Response:
    """Rate one answer of a served completion; 201 with the stored record once it is committed."""
    await require_user(request)  # here, not in `dependencies`: FeedbackFastPath calls this past FastAPI
    try:
        body = FeedbackRequest.model_validate_json(await request.body())
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_url=False)) from None
    state: GatewayState = request.app.state.flywheel
    stored = await state.feedback.add_feedback_async(**body.model_dump())
    record = stored.record
    if stored.created:  # an idempotent repeat returns the first record: count it once
        state.metrics.observe_feedback(record.adapter or "", str(record.adapter_version or ""), record.rating)
    content = json.dumps(_body(record), ensure_ascii=False).encode("utf-8")
    return Response(content, status_code=201, media_type="application/json")


SUBMIT_FEEDBACK: APIRoute = next(route for route in router.routes if route.endpoint is submit_feedback)


class FeedbackFastPath:
    """ASGI middleware: the requests `SUBMIT_FEEDBACK` serves go straight to its endpoint, past the exception,
    exit-stack and routing layers that every other request goes through. Errors are mapped by the same
    `to_response` as everywhere else; anything it cannot answer still reaches Starlette's outermost error
    middleware."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["path"] != SUBMIT_FEEDBACK.path
                or scope["method"] not in SUBMIT_FEEDBACK.methods):
            await self.app(scope, receive, send)
            return
        try:
            response = await submit_feedback(Request(scope, receive))
        except Exception as exc:  # noqa: BLE001 - to_response maps every exception, a 500 included
            response = to_response(exc)
        await response(scope, receive, send)


@router.post("/pairs", status_code=201, dependencies=USER_KEY, responses={201: {"description": STORED}})
async def submit_pair(body: PairRequest, state: StateDep) -> JSONResponse:
    """Prefer one answer over another: two served completions, or a prompt with two texts."""
    fields = body.model_dump()
    if body.prompt is not None:
        fields["prompt"] = [m.model_dump() for m in body.prompt]
    stored = await state.feedback.add_pair_async(**fields)
    record = stored.record
    if stored.created:
        state.metrics.observe_feedback(record.adapter or "", str(record.adapter_version or ""), "pair")
    return JSONResponse(_body(record), status_code=201)


@router.get("/{feedback_id}", dependencies=USER_KEY, responses=error_responses(405))
async def read_feedback(
    feedback_id: Annotated[str, Path(description="A server id (`fb_...`, `pair_...`) or the client's feedback_id. "
                                                 "`pairs` is the path of POST /v1/feedback/pairs: GET there is 405.")],
    state: StateDep,
) -> dict:
    """A stored rating or pair."""
    if feedback_id == "pairs":  # no listing of pairs: a user key would read every user's (the handler adds Allow)
        raise HTTPException(405)
    return _body(state.feedback.get_feedback(feedback_id))
