"""Engine faults: a dead engine turns the gateway unready and stops it; an abandoned request is cancelled."""

from __future__ import annotations

import asyncio
import threading
import time

from fastapi.testclient import TestClient

from flywheel.settings import Settings
from server.app import create_app
from server.disconnect import unless_disconnected
from tests.fake_engine import FakeEngine
from tests.gateway.test_chat_routes import HI


def wait_for(condition, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_dead_engine_fails_ready_answers_503_and_stops_the_gateway(settings: Settings, engine: FakeEngine):
    stopped = threading.Event()
    with TestClient(create_app(settings, lambda _: engine, stop_process=stopped.set)) as client:
        wait_for(lambda: client.get("/ready").status_code == 200, "ready")
        assert client.post("/v1/chat/completions", json={"messages": HI}).status_code == 200
        engine.dead = True
        wait_for(lambda: client.get("/ready").status_code == 503, "/ready to fail")
        ready = client.get("/ready").json()
        assert ready["status"] == "failed" and "engine died" in ready["error"]
        r = client.post("/v1/chat/completions", json={"messages": HI})
        assert r.status_code == 503 and r.json()["error"]["code"] == "engine_unavailable"
        assert "restarted" in r.json()["error"]["message"]
        assert not stopped.is_set()  # it lingers so clients and probes see the 503 first
        wait_for(stopped.is_set, "the gateway to stop itself")
        assert client.app.state.flywheel.engine_died


class Disconnecting:
    """An ASGI request whose client goes away after `after` seconds."""

    def __init__(self, after: float):
        self.after = after

    async def receive(self) -> dict:
        await asyncio.sleep(self.after)
        return {"type": "http.disconnect"}


def test_an_abandoned_request_is_cancelled_and_a_finished_one_is_returned():
    cancelled = asyncio.Event()

    async def forever() -> str:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    async def quick() -> str:
        return "answer"

    async def scenario() -> None:
        assert await unless_disconnected(Disconnecting(0.05), forever()) == (False, None)
        assert cancelled.is_set()
        assert await unless_disconnected(Disconnecting(3600), quick()) == (True, "answer")

    asyncio.run(asyncio.wait_for(scenario(), timeout=30))
