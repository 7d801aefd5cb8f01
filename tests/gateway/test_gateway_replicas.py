"""Two gateways (fake engines) on one PostgreSQL behave as one: alias moves and idempotent feedback ids."""

from __future__ import annotations

import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

from flywheel.settings import Settings
from tests.fake_engine import FakeEngine
from tests.gateway.conftest import start
from tests.gateway.test_chat_routes import HI, register
from tests.lora_factory import write_lora
from tests.postgres import empty_database


def test_two_gateways_on_one_postgresql_serve_one_registry_and_one_feedback_log(
    postgres_database: str, base_dir: Path, tmp_path: Path
) -> None:
    empty_database(postgres_database)
    settings = Settings(data_dir=tmp_path / "data", model_path=base_dir, registry_poll_seconds=0.05, max_lora_rank=8,
                        train_lora_rank=8, database_url=postgres_database)
    with ExitStack() as stack:
        one = stack.enter_context(_gateway(settings))
        two = stack.enter_context(_gateway(settings))
        for seed in (1, 2):
            assert register(one, "bot", write_lora(tmp_path / f"a{seed}", base_dir, seed=seed), None).status_code == 201
        assert one.post("/admin/adapters/bot/promote", json={"version": 1}).status_code == 200
        assert _served(two) == "bot@1"
        assert one.post("/admin/adapters/bot/promote", json={"version": 2}).status_code == 200
        deadline = time.monotonic() + 30  # eventually, not a speed check (the 2 s target is a benchmark's)
        while _served(two) != "bot@2":  # the other replica's poller picks the move up
            assert time.monotonic() < deadline, "the move never reached the second gateway"
            time.sleep(0.05)

        completion = two.post("/v1/chat/completions", json={"messages": HI, "adapter": "bot"}).json()
        body = {"completion_id": completion["id"], "rating": "up", "feedback_id": "client-1"}
        deadline = time.monotonic() + 30  # eventually, not a speed check (the 2 s target is a benchmark's)
        # The completion was logged by the other gateway, fire and forget (committed within its flush
        # interval): until then this one answers 404 and stores nothing.
        while (first := one.post("/v1/feedback", json=body)).status_code == 404:
            assert time.monotonic() < deadline, first.text
            time.sleep(0.05)
        again = two.post("/v1/feedback", json=body)
        assert first.status_code == 201 and again.status_code in (200, 201), (first.text, again.text)
        assert again.json()["id"] == first.json()["id"]
    assert not list((tmp_path / "data").glob("*.db"))  # nothing went to SQLite


def _gateway(settings: Settings):
    return contextmanager(start)(settings, FakeEngine())


def _served(client) -> str:
    r = client.post("/v1/chat/completions", json={"messages": HI, "adapter": "bot"})
    assert r.status_code == 200, r.text
    return r.json()["adapter"]
