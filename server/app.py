"""The FastAPI application: wiring only. `create_app(settings)` is the one place the gateway is assembled."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from adapters.base_model import BaseModelInfo
from adapters.files import adapter_files
from adapters.registry import Registry
from adapters.runs import RunStore
from feedback.store import FeedbackStore
from flywheel.settings import Settings
from server import openapi
from server.chat import ChatHandler
from server.console import routes as console
from server.cpu_affinity import keep_off_engine_cores
from server.engine import Engine, EngineCall, parse_request
from server.errors import install_error_handlers
from server.metrics import Metrics
from server.resolver import AdapterResolver
from server.routes import admin, chat, feedback, health, training
from server.state import GatewayState

logger = logging.getLogger(__name__)

EngineFactory = Callable[[Settings], Engine]


def vllm_engine(settings: Settings) -> Engine:
    from server.engine import VLLMEngine

    return VLLMEngine(settings)


async def warm_up(engine: Engine) -> None:
    """One tiny chat completion, so the first client does not pay for lazy initialisation."""
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "temperature": 0}
    await engine.serve(EngineCall("chat", parse_request("chat", body), None, "warmup"))


async def start_engine(state: GatewayState, factory: EngineFactory) -> None:
    """Build and warm the engine in the background; /health answers meanwhile, /ready after."""
    try:
        engine = await asyncio.to_thread(factory, state.settings)
        state.engine = engine
        await warm_up(engine)
        state.resolver = AdapterResolver(state.registry, engine, state.metrics, state.settings.registry_poll_seconds,
                                         state.settings.canary_share)
        await state.resolver.start()
        state.chat = ChatHandler(
            engine, state.resolver, state.metrics,
            served_model_name=state.settings.served_model_name,
            max_inflight=state.settings.max_inflight_requests,
            record=state.feedback.record_completion,
        )
        # Move the millions of start-up objects (torch, transformers, vLLM) out of the collector's reach:
        # otherwise each full collection walks them all and stalls the event loop for ~0.4 s under load
        # (seen as the p99 of `flywheel bench feedback`). vLLM's engine core does the same (v1/engine/core.py).
        gc.collect()
        gc.freeze()
        if state.settings.pin_api_cpus:
            keep_off_engine_cores()
        state.ready = True
        logger.info("gateway ready: %d adapter aliases loaded", len(state.resolver.production_versions()))
    except Exception as e:  # keep the process up so /ready can say why
        state.startup_error = f"engine failed to start: {e}"
        logger.exception("engine failed to start")


ENGINE_CHECK_SECONDS = 1.0
DEAD_ENGINE_LINGER_SECONDS = 2.0  # answer 503 (and /ready false) this long before exiting


async def watch_engine(state: GatewayState, stop_process: Callable[[], None]) -> None:
    """Once the engine dies under the gateway: /ready false, requests 503, then a shutdown that exits non-zero.

    A gateway without its engine cannot recover in place; exiting lets a supervisor (systemd, Kubernetes)
    start a fresh one, and server/vllm_plugins/orphan_guard.py makes sure nothing of the dead engine is left behind.
    """
    while not state.ready:
        if state.startup_error:
            return  # never started: the process stays up so /ready can say why
        await asyncio.sleep(ENGINE_CHECK_SECONDS)
    while True:
        try:
            await state.engine.check_health()
        except Exception as e:  # vLLM's EngineDeadError, or anything else that says it cannot serve
            reason = str(e) or type(e).__name__
            break
        await asyncio.sleep(ENGINE_CHECK_SECONDS)
    state.ready, state.engine_died = False, True
    state.startup_error = f"the inference engine died ({reason}); the gateway is exiting so it can be restarted"
    logger.error("%s", state.startup_error)
    await asyncio.sleep(DEAD_ENGINE_LINGER_SECONDS)
    stop_process()


def _sigterm_self() -> None:
    """Ask uvicorn for its graceful shutdown (it handles SIGTERM), as a supervisor would."""
    os.kill(os.getpid(), signal.SIGTERM)


async def enforce_retention(state: GatewayState, every_seconds: float = 3600) -> None:
    """Delete old unrated completions once an hour, off the event loop."""
    days = state.settings.feedback_retention_days
    while days:
        try:
            deleted = await asyncio.to_thread(state.feedback.delete_completions_older_than, days * 86400)
        except Exception:  # a full or locked disk must not end retention for good: the next hour retries
            logger.warning("retention: deleting old completions failed; retrying in %.0fs", every_seconds,
                           exc_info=True)
        else:
            if deleted:
                logger.info("retention: deleted %d completions older than %g days", deleted, days)
        await asyncio.sleep(every_seconds)


def create_app(
    settings: Settings, engine_factory: EngineFactory = vllm_engine, stop_process: Callable[[], None] = _sigterm_self
) -> FastAPI:
    """Assemble the gateway. Stores open now; the engine starts when the app does."""
    base = BaseModelInfo.from_dir(settings.resolved_model_path)
    if settings.admin_disabled:
        logger.warning("/admin refuses every request: FLYWHEEL_API_KEYS is set but FLYWHEEL_ADMIN_KEY is not")
    state = GatewayState(
        settings=settings,
        registry=Registry(settings.registry_db, settings.adapters_dir, base, settings.max_lora_rank,
                          files=adapter_files(settings)),
        metrics=Metrics(),
        feedback=FeedbackStore(settings.feedback_db),
        runs=RunStore(settings.trainer_db),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(start_engine(state, engine_factory), name="engine-start"),
                 asyncio.create_task(enforce_retention(state), name="retention"),
                 asyncio.create_task(watch_engine(state, stop_process), name="engine-watch")]
        yield
        for task in tasks:
            task.cancel()
        if state.resolver:
            await state.resolver.stop()
        state.feedback.close()
        if state.engine:
            state.engine.shutdown()

    app = FastAPI(title="Flywheel", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible gateway with hot-swappable LoRA adapters and a feedback loop.")
    app.state.flywheel = state
    install_error_handlers(app)
    app.add_middleware(feedback.FeedbackFastPath)  # the hottest route's requests, past routing
    for module in (health, chat, feedback, admin, training, console):
        app.include_router(module.router)
    openapi.install(app)
    return app
