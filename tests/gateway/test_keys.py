"""Keys, set the way an operator sets them (environment variables), checked on every route of the app."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from flywheel.settings import Settings
from tests.fake_engine import FakeEngine
from tests.gateway.conftest import start
from tests.gateway.test_chat_routes import HI

OPEN = {"/health", "/ready", "/metrics"}
CONSOLE_OPEN = ("/console/login", "/console/static/")  # its login form (the key comes in the form: tests/console)


def routes(client: TestClient) -> list[tuple[str, str]]:
    """(method, path) of every route the app serves, with path parameters filled in."""
    found = []
    for route in client.app.routes:
        path = getattr(route, "path", "")
        if path.startswith(("/docs", "/openapi", "/redoc")) or not getattr(route, "methods", None):
            continue
        filled = path.replace("{name}", "bot").replace("{alias}", "canary").replace("{run_id}", "1")
        filled = filled.replace("{feedback_id}", "fb-1")
        found += [(m, filled) for m in sorted(route.methods - {"HEAD"})]
    assert {p.split("/")[1] for _, p in found} >= {"v1", "admin", "health", "metrics"}, found
    return found


def bearer(key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"} if key else {}


@pytest.fixture
def env_settings(tmp_path: Path, base_dir: Path, monkeypatch: pytest.MonkeyPatch):
    def make(**env: str) -> Settings:
        monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(tmp_path / "d"))
        monkeypatch.setenv("FLYWHEEL_MODEL_PATH", str(base_dir))
        for name, value in env.items():
            monkeypatch.setenv(f"FLYWHEEL_{name.upper()}", value)
        return Settings(_env_file=None)

    return make


@pytest.mark.parametrize(("raw", "keys"), [
    ("userkey1", ["userkey1"]),
    ("k1,k2", ["k1", "k2"]),
    (" k1 , k2 ,", ["k1", "k2"]),
    ('["k1", "k2"]', ["k1", "k2"]),
])
def test_keys_from_the_environment_in_the_documented_form(env_settings, raw: str, keys: list[str]):
    assert env_settings(api_keys=raw).api_keys == keys


def test_an_empty_admin_key_is_refused_at_start(env_settings):
    with pytest.raises(ValueError, match="FLYWHEEL_ADMIN_KEY"):
        env_settings(admin_key=" ")


def test_every_route_needs_the_key_it_documents(env_settings, engine: FakeEngine):
    for client in start(env_settings(api_keys="u1,u2", admin_key="boss"), engine):
        for method, path in routes(client):
            status = {key: client.request(method, path, headers=bearer(key)).status_code
                      for key in (None, "wrong", "u1", "boss")}
            if path in OPEN or (method == "GET" and path.startswith(CONSOLE_OPEN)):
                assert 401 not in status.values(), (method, path, status)
            elif path.startswith(CONSOLE_OPEN):
                assert set(status.values()) == {401}, (method, path, status)  # a login without the key in its form
            elif path.startswith(("/admin", "/console")):
                assert status[None] == status["wrong"] == status["u1"] == 401, (method, path, status)
                assert status["boss"] != 401, (method, path, status)
            else:
                assert status[None] == status["wrong"] == 401, (method, path, status)
                assert status["u1"] != 401 and status["boss"] != 401, (method, path, status)
        chat = client.post("/v1/chat/completions", json={"messages": HI}, headers=bearer("u2"))
        assert chat.status_code == 200
        refused = client.post("/v1/chat/completions", json={"messages": HI})
        assert refused.json()["error"]["code"] == "invalid_api_key"


def test_admin_is_never_open_once_user_keys_are_set(env_settings, engine: FakeEngine):
    for client in start(env_settings(api_keys="userkey1"), engine):
        for method, path in routes(client):
            if not path.startswith("/admin"):
                continue
            for key in (None, "userkey1", "guess"):
                r = client.request(method, path, headers=bearer(key))
                assert r.status_code == 403, (method, path, key, r.status_code)
                assert "FLYWHEEL_ADMIN_KEY" in r.json()["error"]["message"]
        assert client.get("/health").status_code == 200
        ok = client.post("/v1/chat/completions", json={"messages": HI}, headers=bearer("userkey1"))
        assert ok.status_code == 200


def test_with_no_keys_at_all_everything_is_open_on_loopback(env_settings, engine: FakeEngine):
    for client in start(env_settings(), engine):
        assert client.get("/admin/adapters").status_code == 200
        assert client.post("/v1/chat/completions", json={"messages": HI}).status_code == 200
