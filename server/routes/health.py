"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from server.state import StateDep

router = APIRouter()


@router.get("/health")
async def health() -> dict:
    """Answers while the process lives."""
    return {"status": "ok"}


READY = {"type": "object",
         "properties": {"status": {"enum": ["starting", "failed"]}, "error": {"type": ["string", "null"]}}}


@router.get("/ready", responses={503: {"description": "Not ready yet, or failed: `error` says why.",
                                       "content": {"application/json": {"schema": READY}}}})
async def ready(state: StateDep) -> JSONResponse:
    """200 only once the engine has warmed up and the adapters are loaded."""
    if state.ready:
        return JSONResponse({"status": "ready"})
    status = "failed" if state.startup_error else "starting"
    return JSONResponse({"status": status, "error": state.startup_error}, status_code=503)


@router.get("/metrics", response_class=Response,
            responses={200: {"description": "Prometheus' text exposition format.",
                             "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}})
async def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
