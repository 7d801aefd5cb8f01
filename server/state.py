"""What the running gateway holds, and the `Annotated` dependencies routes use to reach it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from adapters.registry import Registry
from adapters.runs import RunStore
from feedback.store import FeedbackStore
from flywheel.settings import Settings
from server.chat import ChatHandler
from server.engine import Engine
from server.errors import EngineUnavailable
from server.metrics import Metrics
from server.resolver import AdapterResolver


@dataclass
class GatewayState:
    settings: Settings
    registry: Registry
    metrics: Metrics
    feedback: FeedbackStore
    runs: RunStore
    engine: Engine | None = None
    resolver: AdapterResolver | None = None
    chat: ChatHandler | None = None
    ready: bool = False
    startup_error: str | None = None  # why the engine is not serving: failed to start, or died
    engine_died: bool = False  # the gateway shuts down and `flywheel serve` exits non-zero

    def __post_init__(self) -> None:
        self.metrics.watch(self)  # engine readiness, aliases, runs and store health, read at scrape time


async def get_state(request: Request) -> GatewayState:
    return request.app.state.flywheel


async def get_chat(request: Request) -> ChatHandler:
    state = request.app.state.flywheel
    if not state.ready or state.chat is None:
        reason = state.startup_error or "the engine is still warming up; poll /ready"
        raise EngineUnavailable(reason)
    return state.chat


async def get_resolver(request: Request) -> AdapterResolver:
    await get_chat(request)  # same readiness rule
    return request.app.state.flywheel.resolver


StateDep = Annotated[GatewayState, Depends(get_state)]
ChatDep = Annotated[ChatHandler, Depends(get_chat)]
ResolverDep = Annotated[AdapterResolver, Depends(get_resolver)]
