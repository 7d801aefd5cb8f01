"""The resolver follows the registry in one query, and its move back after a failed load never undoes a newer move."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from fastapi.testclient import TestClient

from adapters.base_model import BaseModelInfo
from adapters.registry import Registry
from flywheel.settings import Settings
from server.errors import AdapterLoadFailed
from tests.fake_engine import FakeEngine
from tests.gateway.test_admin_routes import served_by
from tests.gateway.test_chat_routes import HI, register
from tests.lora_factory import write_lora


def test_a_move_made_while_a_version_fails_to_load_stands(client: TestClient, engine: FakeEngine,
                                                          settings: Settings, base_dir: Path, tmp_path: Path):
    # An operator promotes v3 while the gateway is still finding out that v2 cannot load: the gateway's move
    # back (to v1, where it saw the alias) must not undo the operator's v3.
    for seed in (1, 2, 3):
        register(client, "bot", write_lora(tmp_path / f"a{seed}", base_dir, seed=seed), "production" if seed == 1
                 else None)
    assert served_by(client) == "bot@1"
    operator = Registry(settings.registry_db, settings.adapters_dir, BaseModelInfo.from_dir(base_dir), 8)
    broken, load = str(settings.adapters_dir / "bot" / "v2"), engine.load_adapter

    async def load_while_the_operator_moves(adapter) -> None:
        if adapter.path == broken:
            operator.promote("bot", 3, actor="alice", reason="v3 instead")  # lands during the failing load
            raise AdapterLoadFailed(f"cannot load {adapter.name}: broken weights")
        await load(adapter)

    engine.load_adapter = load_while_the_operator_moves
    operator.promote("bot", 2, actor="bob")  # behind the gateway's back: its poller loads v2
    deadline = time.time() + 60
    while served_by(client) != "bot@3":
        assert time.time() < deadline, operator.history("bot")
        time.sleep(0.05)
    assert operator.alias_version("bot", "production") == 3
    moves = [(e.from_version, e.to_version, e.actor) for e in operator.history("bot", "production")]
    assert moves[-2:] == [(1, 2, "bob"), (2, 3, "alice")], moves  # no "load failed" move back after alice's


def test_aliased_versions_are_every_alias_with_its_version(settings: Settings, base_dir: Path, tmp_path: Path):
    registry = Registry(settings.registry_db, settings.adapters_dir, BaseModelInfo.from_dir(base_dir), 8)
    for name in ("a", "b"):
        registry.register(name, write_lora(tmp_path / f"{name}1", base_dir, seed=1), alias="production")
        registry.register(name, write_lora(tmp_path / f"{name}2", base_dir, seed=2), alias="canary")
    registry.remove_alias("b", "canary", expected=2)
    registry.remove_alias("b", "canary", expected=None)  # already gone, as expected: nothing to do

    found = registry.aliased_versions()

    assert {k: v.version for k, v in found.items()} == {("a", "production"): 1, ("a", "canary"): 2,
                                                        ("b", "production"): 1}
    assert found[("a", "canary")] == registry.get_version("a", 2)
    assert {k: v for k, v in registry.aliases().items()} == {k: v.version for k, v in found.items()}


def test_a_slow_registry_stalls_the_poll_not_the_requests(client: TestClient):
    # On PostgreSQL every registry read is a network round trip; a database that hangs must not freeze the
    # event loop that serves requests and streams. The poller's read is held here until the chat has answered.
    registry = client.app.state.flywheel.resolver.registry
    entered, release, read = threading.Event(), threading.Event(), registry.change_token

    def hanging_read():
        entered.set()
        release.wait(60)
        return read()

    registry.change_token = hanging_read
    try:
        assert entered.wait(10), "the poller never read the registry"
        answers = []
        chat = threading.Thread(target=lambda: answers.append(client.post("/v1/chat/completions",
                                                                         json={"messages": HI}).status_code))
        chat.start()
        chat.join(30)
        assert answers == [200], "a chat request waited for the registry poll: the event loop was blocked"
        assert not release.is_set()  # the poll is still inside its read
    finally:
        release.set()
        registry.change_token = read
