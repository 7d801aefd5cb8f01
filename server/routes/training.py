"""/admin/training/runs: what the trainer is doing, and asking it for a run.

The gateway never trains (invariant 4): a POST queues a run in the runs table and the trainer
watcher (its own process) picks it up on its next poll.
"""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict

from adapters.names import check_name
from server.auth import require_admin
from server.errors import BadRequest
from server.state import StateDep

router = APIRouter(prefix="/admin/training", dependencies=[Depends(require_admin)])


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    adapter: str


@router.get("/runs")
async def list_runs(state: StateDep, adapter: str | None = None, limit: int = Query(50, ge=1, le=1000)) -> list[dict]:
    return [asdict(run) for run in state.runs.list(adapter, limit)]


@router.get("/runs/{run_id}")
async def show_run(run_id: int, state: StateDep) -> dict:
    return asdict(state.runs.get(run_id))


@router.post("/runs", status_code=202)
async def request_run(body: RunRequest, state: StateDep) -> dict:
    """Queue a training run for an adapter (or return the one already waiting); the trainer watcher starts it."""
    check_name(body.adapter)
    if body.adapter not in state.registry.adapters() and not state.feedback.count_signals(body.adapter):
        raise BadRequest(f"adapter {body.adapter!r} is neither registered nor has any feedback to train on", "adapter")
    run_id = state.runs.queue(body.adapter)
    return asdict(state.runs.get(run_id))
