"""Admin API, keys, and hot-swap: moves by this or another process reach serving; failed loads never move."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from adapters.base_model import BaseModelInfo
from adapters.registry import Registry
from flywheel.settings import Settings
from tests.fake_engine import FakeEngine
from tests.gateway.conftest import start
from tests.gateway.test_chat_routes import HI, register
from tests.lora_factory import write_lora


def served_by(client: TestClient, adapter: str = "bot") -> str:
    return client.post("/v1/chat/completions", json={"messages": HI, "adapter": adapter}).json()["adapter"]


def test_promote_and_rollback_over_http(client: TestClient, base_dir: Path, tmp_path: Path):
    for seed in (1, 2):
        assert register(client, "bot", write_lora(tmp_path / f"a{seed}", base_dir, seed=seed), None).status_code == 201
    assert client.post("/admin/adapters/bot/promote", json={"version": 1}).status_code == 200
    assert served_by(client) == "bot@1"
    r = client.post("/admin/adapters/bot/promote", json={"version": 2, "reason": "better"},
                    headers={"x-flywheel-actor": "alice"})
    assert r.json() | {"at": 0} == {"adapter": "bot", "alias": "production", "from_version": 1, "to_version": 2,
                                    "actor": "alice", "reason": "better", "at": 0}
    assert served_by(client) == "bot@2"  # effective at once for the process that moved it
    assert client.post("/admin/adapters/bot/rollback", json={}).json()["to_version"] == 1
    assert served_by(client) == "bot@1"
    shown = client.get("/admin/adapters/bot").json()
    assert shown["aliases"] == {"production": 1} and [v["version"] for v in shown["versions"]] == [1, 2]
    assert len(client.get("/admin/adapters/bot/history").json()) == 3


def test_move_by_another_process_reaches_the_gateway(client: TestClient, settings: Settings, base_dir: Path,
                                                     tmp_path: Path):
    other = Registry(settings.registry_db, settings.adapters_dir, BaseModelInfo.from_dir(base_dir), 8)
    other.register("bot", write_lora(tmp_path / "a1", base_dir, seed=1), alias="production")
    other.register("bot", write_lora(tmp_path / "a2", base_dir, seed=2))
    deadline = time.time() + 60  # poll period 0.05 s; the 2 s target is a benchmark
    while client.post("/v1/chat/completions", json={"messages": HI, "adapter": "bot"}).status_code != 200:
        assert time.time() < deadline
        time.sleep(0.05)
    other.promote("bot", 2, actor="cli")
    deadline = time.time() + 60
    while served_by(client) != "bot@2":
        assert time.time() < deadline, "promotion did not reach the running gateway"
        time.sleep(0.05)


def test_version_that_fails_to_load_leaves_the_alias(client: TestClient, engine: FakeEngine, settings: Settings,
                                                     base_dir: Path, tmp_path: Path):
    register(client, "bot", write_lora(tmp_path / "a1", base_dir, seed=1))
    register(client, "bot", write_lora(tmp_path / "a2", base_dir, seed=2), None)
    engine.fail_paths.add(str(settings.adapters_dir / "bot" / "v2"))
    r = client.post("/admin/adapters/bot/promote", json={"version": 2})
    assert r.status_code == 409 and "broken weights" in r.json()["error"]["message"]
    assert served_by(client) == "bot@1"
    # the same move made behind the gateway's back is undone, with the reason recorded
    other = Registry(settings.registry_db, settings.adapters_dir, BaseModelInfo.from_dir(base_dir), 8)
    other.promote("bot", 2)
    deadline = time.time() + 60
    while other.alias_version("bot", "production") != 1:
        assert time.time() < deadline
        time.sleep(0.05)
    assert other.history("bot")[-1].reason.startswith("load failed")
    assert served_by(client) == "bot@1"


@pytest.mark.parametrize(("breakage", "message"), [
    ("config", "adapter_config.json is not valid JSON"),
    ("weights", "weights do not load"),
])
def test_broken_upload_is_400_and_registers_nothing(client: TestClient, base_dir: Path, tmp_path: Path,
                                                    breakage: str, message: str):
    folder = write_lora(tmp_path / "a", base_dir)
    target = folder / ("adapter_config.json" if breakage == "config" else "adapter_model.safetensors")
    target.write_bytes(b"\x00garbage")
    r = register(client, "bot", folder)
    assert r.status_code == 400 and message in r.json()["error"]["message"]
    assert client.get("/admin/adapters").json() == []


def test_admin_errors(client: TestClient, base_dir: Path, tmp_path: Path):
    assert client.get("/admin/adapters/ghost").status_code == 404
    assert client.post("/admin/adapters/ghost/promote", json={}).status_code == 404
    register(client, "bot", write_lora(tmp_path / "a", base_dir), None)
    assert client.post("/admin/adapters/bot/promote", json={}).json()["error"]["code"] == "conflict"
    assert client.post("/admin/adapters/bot/rollback", json={}).status_code == 409
    assert client.post("/admin/adapters/bot/promote", json={"version": "x"}).status_code == 400
    assert client.put("/admin/adapters/bot/aliases/7", json={"version": 1}).status_code == 400


def test_binding_beyond_loopback_needs_keys(tmp_path: Path):
    with pytest.raises(ValueError, match="refusing to bind"):
        Settings(host="0.0.0.0").check_bind()
    Settings(host="0.0.0.0", allow_insecure=True).check_bind()
    Settings(host="0.0.0.0", api_keys="k", admin_key="a").check_bind()
    Settings(host="127.0.0.1").check_bind()


def test_training_runs_are_queued_for_the_watcher(client: TestClient, base_dir: Path, tmp_path: Path):
    assert client.get("/admin/training/runs").json() == []
    r = client.post("/admin/training/runs", json={"adapter": "ghost"})
    assert r.status_code == 404 and "neither registered" in r.json()["error"]["message"]
    assert client.post("/admin/training/runs", json={"adapter": "../x"}).status_code == 400
    register(client, "bot", write_lora(tmp_path / "a", base_dir))
    run = client.post("/admin/training/runs", json={"adapter": "bot"})
    assert run.status_code == 202 and run.json()["status"] == "queued"
    assert client.get(f"/admin/training/runs/{run.json()['id']}").json()["adapter"] == "bot"
    assert [r["id"] for r in client.get("/admin/training/runs?adapter=bot").json()] == [run.json()["id"]]
    again = client.post("/admin/training/runs", json={"adapter": "bot", "reason": "new corrections"},
                        headers={"x-flywheel-actor": "ana"})  # still waiting: the same request, who and why kept
    assert again.status_code == 202 and again.json()["id"] == run.json()["id"]
    assert [(q["by"], q["reason"]) for q in again.json()["metrics"]["requests"]] == [("ana", "new corrections")]
    assert client.post("/admin/training/runs", json={"adapter": "bot", "reason": "x" * 501}).status_code == 400
    assert len(client.get("/admin/training/runs?adapter=bot").json()) == 1
    missing = client.get("/admin/training/runs/999")
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "no training run 999"


def test_canary_gets_a_share_of_the_bare_name_traffic(tmp_path: Path, base_dir: Path, engine: FakeEngine):
    settings = Settings(data_dir=tmp_path / "d", model_path=base_dir, registry_poll_seconds=0.05,
                        max_lora_rank=8, train_lora_rank=8, canary_share=0.3)
    for client in start(settings, engine):
        register(client, "bot", write_lora(tmp_path / "a1", base_dir, seed=1))
        register(client, "bot", write_lora(tmp_path / "a2", base_dir, seed=2), alias="canary")
        served = [served_by(client) for _ in range(200)]
        assert 30 <= served.count("bot@2") <= 90  # 30% of 200, far outside chance either way
        assert served_by(client, "bot@production") == "bot@1"  # naming the alias skips the split
