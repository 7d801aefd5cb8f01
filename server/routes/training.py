"""/admin/training/runs: what the trainer is doing, and asking it for a run.

The gateway never trains (invariant 4): a POST queues a run in the runs table and the trainer
watcher (its own process) picks it up on its next poll.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from adapters.names import NAME_RE
from server.admin_protocol import MAX_ID
from server.auth import require_admin
from server.errors import error_responses
from server.routes.admin import actor_of
from server.state import StateDep
from server.training_requests import queue_run

router = APIRouter(prefix="/admin/training", dependencies=[Depends(require_admin)],
                   responses=error_responses(401, 403, 503))


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    adapter: str = Field(pattern=NAME_RE.pattern, description="The adapter to train.")
    reason: str = Field("", max_length=500, description="Why: kept with the run beside who asked "
                        "(the x-flywheel-actor header).")


@router.get("/runs", responses=error_responses(400))
async def list_runs(state: StateDep, adapter: str | None = None, limit: int = Query(50, ge=1, le=1000)) -> list[dict]:
    return [asdict(run) for run in state.runs.list(adapter, limit)]


@router.get("/runs/{run_id}", responses=error_responses(400, 404))
async def show_run(run_id: Annotated[int, Path(ge=1, le=MAX_ID)], state: StateDep) -> dict:
    return asdict(state.runs.get(run_id))


@router.post("/runs", status_code=202, responses=error_responses(400, 404))
async def request_run(body: RunRequest, state: StateDep, request: Request) -> dict:
    """Queue a training run for an adapter (or return the one already waiting); the trainer watcher starts it."""
    return asdict(await asyncio.to_thread(queue_run, state, body.adapter, actor_of(request), body.reason))
