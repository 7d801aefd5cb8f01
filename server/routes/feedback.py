"""POST /v1/feedback, POST /v1/feedback/pairs, GET /v1/feedback/{id}.

Submissions await the store's group commit on the event loop (no thread-pool trip per request, which
would contend with chat streaming for the GIL); they answer 201 only once the row is committed.
"""

from __future__ import annotations

import time
from dataclasses import asdict

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from feedback.records import FeedbackRecord
from server.auth import require_user
from server.feedback_protocol import FeedbackRequest, PairRequest
from server.state import StateDep

router = APIRouter(prefix="/v1/feedback", dependencies=[Depends(require_user)])


def _body(record) -> dict:
    kind = "feedback" if isinstance(record, FeedbackRecord) else "feedback.pair"
    return {"object": kind, **asdict(record)}


@router.post("", status_code=201)
async def submit_feedback(body: FeedbackRequest, state: StateDep) -> JSONResponse:
    started = time.time()
    record = await state.feedback.add_feedback_async(**body.model_dump())
    if record.created_at >= started:  # an idempotent repeat returns the first record: count it once
        state.metrics.observe_feedback(record.adapter or "", str(record.adapter_version or ""), record.rating)
    return JSONResponse(_body(record), status_code=201)


@router.post("/pairs", status_code=201)
async def submit_pair(body: PairRequest, state: StateDep) -> JSONResponse:
    fields = body.model_dump()
    if body.prompt is not None:
        fields["prompt"] = [m.model_dump() for m in body.prompt]
    started = time.time()
    record = await state.feedback.add_pair_async(**fields)
    if record.created_at >= started:
        state.metrics.observe_feedback(record.adapter or "", str(record.adapter_version or ""), "pair")
    return JSONResponse(_body(record), status_code=201)


@router.get("/{feedback_id}")
async def read_feedback(feedback_id: str, state: StateDep) -> dict:
    return _body(state.feedback.get_feedback(feedback_id))
