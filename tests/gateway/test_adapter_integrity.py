"""Files of a live version deleted or corrupted: 503 adapter_broken for it, the registry says broken, others serve."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from adapters.base_model import BaseModelInfo
from adapters.registry import Registry
from flywheel.settings import Settings
from server.errors import AdapterLoadFailed
from tests.adapters.test_registry_busy import locked_by_another_process
from tests.fake_engine import FakeEngine
from tests.gateway.conftest import start
from tests.gateway.test_chat_routes import HI, register
from tests.lora_factory import write_lora

WEIGHTS = "adapter_model.safetensors"


def chat(client: TestClient, adapter: str | None):
    return client.post("/v1/chat/completions", json={"messages": HI, **({"adapter": adapter} if adapter else {})})


def version_of(client: TestClient, name: str, number: int) -> dict:
    return client.get(f"/admin/adapters/{name}").json()["versions"][number - 1]


def flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(len(data) - 64, len(data)):  # inside the tensor data: the header still parses
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def two_adapters(client: TestClient, base_dir: Path, tmp_path: Path) -> None:
    for name, seed in (("bot", 1), ("other", 2)):
        assert register(client, name, write_lora(tmp_path / name, base_dir, seed=seed)).status_code == 201
        assert chat(client, name).status_code == 200  # loaded and serving


@pytest.mark.parametrize("breakage", ["folder deleted", "weights deleted", "weights corrupted", "config corrupted"])
def test_broken_live_version_is_503_and_marked_broken(client: TestClient, settings: Settings, base_dir: Path,
                                                      tmp_path: Path, breakage: str):
    two_adapters(client, base_dir, tmp_path)
    folder = settings.adapters_dir / "bot" / "v1"
    if breakage == "folder deleted":
        shutil.rmtree(folder)
    elif breakage == "weights deleted":
        (folder / WEIGHTS).unlink()
    elif breakage == "weights corrupted":
        flip_bytes(folder / WEIGHTS)
    else:
        (folder / "adapter_config.json").write_text('{"r": 4')
    for ref in ("bot", "bot@production", "bot@1"):  # by name, alias and pinned version
        r = chat(client, ref)
        assert r.status_code == 503, (ref, r.text)
        error = r.json()["error"]
        assert error["code"] == "adapter_broken" and error["type"] == "service_unavailable"
        assert "bot@1 is broken" in error["message"] and "roll back" in error["message"]
        assert str(settings.adapters_dir) not in error["message"]  # no file paths in answers
    shown = version_of(client, "bot", 1)
    assert shown["status"] == "broken" and shown["status_reason"]
    assert chat(client, "other").json()["adapter"] == "other@1"  # other adapters are unaffected
    assert chat(client, None).status_code == 200
    # an alias cannot be moved onto it, and the refusal says why
    r = client.put("/admin/adapters/bot/aliases/canary", json={"version": 1})
    assert r.status_code == 503 and r.json()["error"]["code"] == "adapter_broken"


def test_the_reason_names_what_is_wrong(client: TestClient, settings: Settings, base_dir: Path, tmp_path: Path):
    two_adapters(client, base_dir, tmp_path)
    weights = settings.adapters_dir / "bot" / "v1" / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])
    assert "truncated" in chat(client, "bot").json()["error"]["message"]
    assert "truncated" in version_of(client, "bot", 1)["status_reason"]


def test_rollback_to_a_healthy_version_serves_it(client: TestClient, settings: Settings, base_dir: Path,
                                                 tmp_path: Path):
    register(client, "bot", write_lora(tmp_path / "a1", base_dir, seed=1))
    register(client, "bot", write_lora(tmp_path / "a2", base_dir, seed=2))  # production: v2
    assert chat(client, "bot").json()["adapter"] == "bot@2"
    flip_bytes(settings.adapters_dir / "bot" / "v2" / WEIGHTS)
    assert chat(client, "bot").json()["error"]["code"] == "adapter_broken"  # production stays on it: 503
    r = client.post("/admin/adapters/bot/rollback", json={"reason": "v2 files corrupted"})
    assert r.status_code == 200 and r.json()["to_version"] == 1
    assert chat(client, "bot").json()["adapter"] == "bot@1"
    assert client.post("/admin/adapters/bot/promote", json={"version": 2}).status_code == 503  # still broken


def test_restored_files_serve_again_after_verify(client: TestClient, settings: Settings, base_dir: Path,
                                                 tmp_path: Path):
    two_adapters(client, base_dir, tmp_path)
    weights = settings.adapters_dir / "bot" / "v1" / WEIGHTS
    good = weights.read_bytes()
    weights.unlink()
    assert chat(client, "bot").status_code == 503
    assert client.post("/admin/adapters/bot/versions/1/verify").json()["status"] == "broken"
    weights.write_bytes(good)
    assert chat(client, "bot").status_code == 503  # restored files alone do not serve: an operator verifies
    verified = client.post("/admin/adapters/bot/versions/1/verify", headers={"x-flywheel-actor": "alice"})
    assert verified.status_code == 200 and verified.json() | {"status_reason": ""} == verified.json()
    assert verified.json()["status"] == "ready"
    assert chat(client, "bot").json()["adapter"] == "bot@1"
    assert client.post("/admin/adapters/bot/versions/9/verify").status_code == 404


def test_files_broken_before_the_first_load(client: TestClient, engine: FakeEngine, settings: Settings,
                                            base_dir: Path, tmp_path: Path):
    register(client, "bot", write_lora(tmp_path / "a1", base_dir, seed=1))
    register(client, "bot", write_lora(tmp_path / "a2", base_dir, seed=2), alias=None)  # never loaded
    flip_bytes(settings.adapters_dir / "bot" / "v2" / WEIGHTS)
    r = chat(client, "bot@2")
    assert r.status_code == 503 and r.json()["error"]["code"] == "adapter_broken"
    assert "bot@2" not in engine.loaded  # checked before the engine read it
    # a promote by another process is undone by the gateway, like any version that cannot load
    other = Registry(settings.registry_db, settings.adapters_dir, BaseModelInfo.from_dir(base_dir), 8)
    register(client, "bot", write_lora(tmp_path / "a3", base_dir, seed=3), alias=None)
    flip_bytes(settings.adapters_dir / "bot" / "v3" / WEIGHTS)
    other.promote("bot", 3)
    deadline = time.time() + 60
    while other.alias_version("bot", "production") != 1:
        assert time.time() < deadline
        time.sleep(0.05)
    assert other.get_version("bot", 3).status == "broken"
    assert chat(client, "bot").json()["adapter"] == "bot@1"


def test_chat_answers_while_an_admin_write_waits_on_a_locked_registry(client: TestClient, settings: Settings,
                                                                      base_dir: Path, tmp_path: Path):
    register(client, "bot", write_lora(tmp_path / "a1", base_dir, seed=1))
    register(client, "bot", write_lora(tmp_path / "a2", base_dir, seed=2), alias=None)
    assert chat(client, "bot@2").status_code == 200  # loaded: the promote below only waits on the registry
    promoted: list = []
    with locked_by_another_process(settings.registry_db):
        mover = threading.Thread(target=lambda: promoted.append(
            client.post("/admin/adapters/bot/promote", json={"version": 2})))
        mover.start()
        time.sleep(0.2)  # let the promote reach the lock; the checks below hold however long this takes
        answers = [chat(client, ref).status_code for ref in ("bot", "bot@1", None)]
        waiting = mover.is_alive()
    mover.join(30)
    assert answers == [200, 200, 200]
    assert waiting, "chat waited behind the admin write"  # answered while the promote still waited
    assert promoted[0].status_code in (200, 503)  # lock freed in time, or registry_busy after the timeout


class ChangesUnderTheEngine(FakeEngine):
    """Plays files that change as vLLM reads them: the load fails, and the files no longer match."""

    async def load_adapter(self, adapter) -> None:
        if adapter.name == "bot@2":
            flip_bytes(Path(adapter.path) / WEIGHTS)
            raise AdapterLoadFailed(f"vLLM could not load {adapter.name}: SafetensorError: invalid header")
        await super().load_adapter(adapter)


def test_a_load_failure_on_changed_files_is_broken_not_409(settings: Settings, base_dir: Path, tmp_path: Path):
    for client in start(settings, ChangesUnderTheEngine()):
        register(client, "bot", write_lora(tmp_path / "a1", base_dir, seed=1))
        register(client, "bot", write_lora(tmp_path / "a2", base_dir, seed=2), alias=None)
        r = chat(client, "bot@2")
        assert r.status_code == 503 and r.json()["error"]["code"] == "adapter_broken"
        assert version_of(client, "bot", 2)["status"] == "broken"
        assert chat(client, "bot").json()["adapter"] == "bot@1"
