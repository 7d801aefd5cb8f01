"""Storage faults over HTTP: a full feedback disk and a locked registry answer 503, and chat keeps serving."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from fastapi.testclient import TestClient

from adapters.base_model import BaseModelInfo
from adapters.registry import Registry
from flywheel.settings import Settings
from server.metrics import Metrics
from server.resolver import AdapterResolver
from tests.adapters.test_registry_busy import locked_by_another_process
from tests.fake_engine import FakeEngine
from tests.feedback.test_feedback_faults import PAGE_FILLER, fill_disk, free_disk
from tests.gateway.test_admin_routes import served_by
from tests.gateway.test_chat_routes import HI
from tests.lora_factory import write_lora


def wait_for(condition, what: str, seconds: float = 10) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, what
        time.sleep(0.02)


def assert_503(response, code: str, *words: str) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == ("service_unavailable", code)
    for word in words:
        assert word in error["message"], error["message"]


def test_a_full_feedback_disk_answers_503_and_chat_keeps_serving(client: TestClient, caplog):
    store = client.app.state.flywheel.feedback
    served = client.post("/v1/chat/completions", json={"messages": HI}).json()
    store.flush()
    fill_disk(store._write_conn)
    r = client.post("/v1/feedback", json={"completion_id": served["id"], "rating": "up", "comment": PAGE_FILLER})
    assert_503(r, "feedback_store_unavailable", "cannot write", "disk is full", "free space")
    r = client.post("/v1/feedback/pairs", json={"prompt": HI, "chosen": PAGE_FILLER, "rejected": "Go away."})
    assert_503(r, "feedback_store_unavailable", "nothing was stored")
    with caplog.at_level(logging.WARNING, logger="feedback.writer"):
        long_prompt = [{"role": "user", "content": "x" * 5000}]  # its log row needs a new page: it cannot be kept
        assert client.post("/v1/chat/completions", json={"messages": long_prompt}).status_code == 200
        wait_for(lambda: store._writer.writes_dropped == 1, "the completion log row was not dropped")
    assert "completion-log rows (dropped)" in caplog.text
    free_disk(store._write_conn)  # the disk recovers: the same process writes again
    r = client.post("/v1/feedback", json={"completion_id": served["id"], "rating": "up", "comment": PAGE_FILLER})
    assert r.status_code == 201, r.text
    assert client.get(f"/v1/feedback/{r.json()['id']}").json()["comment"] == PAGE_FILLER
    again = client.post("/v1/chat/completions", json={"messages": long_prompt}).json()
    assert client.post("/v1/feedback", json={"completion_id": again["id"], "rating": "down"}).status_code == 201


def test_a_locked_registry_answers_503_to_moves_and_keeps_serving(
    client: TestClient, settings: Settings, base_dir: Path, tmp_path: Path
):
    state = client.app.state.flywheel
    state.registry = Registry(settings.registry_db, settings.adapters_dir, BaseModelInfo.from_dir(base_dir), 8,
                              busy_timeout=0.3)  # what the admin routes use; the default would wait 5 s
    state.registry.register("bot", write_lora(tmp_path / "a1", base_dir, seed=1), alias="production")
    state.registry.register("bot", write_lora(tmp_path / "a2", base_dir, seed=2))
    wait_for(lambda: client.post("/v1/chat/completions", json={"messages": HI, "adapter": "bot"}).status_code == 200,
             "bot never reached the gateway")
    with locked_by_another_process(settings.registry_db):
        r = client.post("/admin/adapters/bot/promote", json={"version": 2})
        assert_503(r, "registry_busy", "locked by another process", "retry")
        r = client.post("/admin/adapters/bot/rollback", json={"to": 1})
        assert_503(r, "registry_busy")
        for _ in range(5):  # chat resolves from memory all along, across several polls
            assert served_by(client) == "bot@1"
            time.sleep(0.05)
        assert client.get("/admin/adapters/bot").json()["aliases"] == {"production": 1}  # reads go on (WAL)
    assert client.post("/admin/adapters/bot/promote", json={"version": 2}).status_code == 200
    assert served_by(client) == "bot@2"


def test_a_poll_that_finds_the_registry_locked_keeps_the_last_aliases(
    settings: Settings, base_dir: Path, tmp_path: Path, caplog
):
    """The poller's own write (moving back an alias that cannot load) meets the lock: it warns and goes on."""
    base = BaseModelInfo.from_dir(base_dir)
    registry = Registry(settings.registry_db, settings.adapters_dir, base, 8, busy_timeout=0.3)
    cli = Registry(settings.registry_db, settings.adapters_dir, base, 8)
    cli.register("bot", write_lora(tmp_path / "a1", base_dir, seed=1), alias="production")
    cli.register("bot", write_lora(tmp_path / "a2", base_dir, seed=2))
    engine = FakeEngine()
    engine.fail_paths.add(str(settings.adapters_dir / "bot" / "v2"))

    async def scenario() -> None:
        resolver = AdapterResolver(registry, engine, Metrics(), poll_seconds=0.05, canary_share=0)
        await resolver.start()
        assert (await resolver.resolve("bot")).version == 1
        cli.promote("bot", 2)  # to a version that cannot load: the poller will want to move the alias back
        with locked_by_another_process(settings.registry_db):  # no await since the move: no poll has seen it
            deadline = time.monotonic() + 60
            while "registry poll" not in caplog.text:
                assert time.monotonic() < deadline, "the poll never met the lock"
                started = time.monotonic()
                assert (await resolver.resolve("bot")).version == 1  # from memory, at once
                assert time.monotonic() - started < 0.1
                await asyncio.sleep(0.05)
            assert resolver._task is not None and not resolver._task.done()  # the poll loop lives on
        deadline = time.monotonic() + 60
        while cli.alias_version("bot", "production") != 1:  # freed: the next round moves the alias back
            assert time.monotonic() < deadline, "the poller did not retry its move once the lock was freed"
            await asyncio.sleep(0.05)
        assert (await resolver.resolve("bot")).version == 1
        await resolver.stop()

    with caplog.at_level(logging.WARNING, logger="server.resolver"):
        asyncio.run(scenario())
    assert "locked by another process" in caplog.text
