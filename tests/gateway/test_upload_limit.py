"""An adapter upload over the size limit is refused with 413 in OpenAI's error format, not read cut short.

A body past the limit is refused before it is read (a Content-Length past it) or while it is read (a chunked
body): the raw ASGI calls below count how much of the body the gateway asked for.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from fastapi.testclient import TestClient

from server.app import create_app
from tests.fake_engine import FakeEngine
from tests.gateway.conftest import start
from tests.gateway.test_chat_routes import register
from tests.lora_factory import write_lora


def test_an_upload_over_the_limit_is_413_and_registers_nothing(settings, engine: FakeEngine, base_dir: Path,
                                                                tmp_path: Path):
    small = settings.model_copy(update={"max_upload_mib": 1})  # the limit is 512 MiB; no test writes that much
    folder = write_lora(tmp_path / "lora", base_dir, seed=1)
    assert (folder / "adapter_model.safetensors").stat().st_size <= 1024 * 1024
    for client in start(small, engine):
        assert register(client, "bot", folder, None).status_code == 201  # under the limit: registered
        files = {"adapter_config": (folder / "adapter_config.json").read_bytes(),
                 "adapter_model": b"\0" * (1024 * 1024 + 1)}
        r = client.post("/admin/adapters/bot/versions", files=files)
        assert r.status_code == 413, r.text
        assert r.json()["error"]["code"] == "payload_too_large" and "1 MiB" in r.json()["error"]["message"]
        assert [v["version"] for v in client.get("/admin/adapters/bot").json()["versions"]] == [1]
        upload = client.get("/openapi.json").json()["paths"]["/admin/adapters/{name}/versions"]["post"]
        assert "413" in upload["responses"]


MIB = 1024 * 1024
BOUNDARY = "flywheel-test-boundary"
CHUNK = 64 * 1024


def _post_raw(client: TestClient, headers: dict[str, str], chunks: list[bytes],
              path: str = "/admin/adapters/bot/versions") -> tuple[int, dict, int]:
    """POST `chunks` as the body, straight into the ASGI app; the status, the JSON answer and the chunks it read."""
    pulled = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal pulled
        if pulled == len(chunks):
            return {"type": "http.disconnect"}
        pulled += 1
        return {"type": "http.request", "body": chunks[pulled - 1], "more_body": pulled < len(chunks)}

    async def send(message: dict) -> None:
        sent.append(message)

    async def call() -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "headers": [(k.lower().encode(), v.encode()) for k, v in {"host": "testserver", **headers}.items()],
                 "client": ("127.0.0.1", 50000), "server": ("testserver", 80), "state": {}}
        await client.app(scope, receive, send)

    client.portal.call(call)  # on the event loop the app's lifespan started on
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body), pulled


def _multipart(config: bytes, weights: bytes) -> bytes:
    """The two files as a multipart/form-data body with BOUNDARY."""
    parts = (("adapter_config", "adapter_config.json", config), ("adapter_model", "adapter_model.safetensors", weights))
    body = b"".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
        for name, filename, data in parts
    )
    return body + f"--{BOUNDARY}--\r\n".encode()


def _chunks(body: bytes) -> list[bytes]:
    return [body[i:i + CHUNK] for i in range(0, len(body), CHUNK)]


def test_a_content_length_past_the_limit_is_413_before_the_body_is_read(settings, engine: FakeEngine):
    small = settings.model_copy(update={"max_upload_mib": 1})
    for client in start(small, engine):
        headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}", "content-length": str(64 * MIB)}
        status, answer, pulled = _post_raw(client, headers, [b"x" * CHUNK] * 4)  # far less than it declares
        assert status == 413 and answer["error"]["code"] == "payload_too_large", answer
        assert "1 MiB" in answer["error"]["message"] and pulled == 0
        assert client.get("/admin/adapters").json() == []


def test_a_chunked_body_past_the_limit_is_413_once_it_passes_it(settings, engine: FakeEngine, base_dir: Path,
                                                                tmp_path: Path):
    small = settings.model_copy(update={"max_upload_mib": 1})
    folder = write_lora(tmp_path / "lora", base_dir, seed=1)
    config, weights = (folder / "adapter_config.json").read_bytes(), (folder / "adapter_model.safetensors").read_bytes()
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}  # no Content-Length: a chunked body
    for client in start(small, engine):
        chunks = _chunks(_multipart(config, b"\0" * (8 * MIB)))
        status, answer, pulled = _post_raw(client, headers, chunks)
        assert status == 413 and answer["error"]["code"] == "payload_too_large", answer
        assert pulled * CHUNK <= 2 * MIB + CHUNK < len(chunks) * CHUNK  # stopped just past limit + framing allowance
        assert client.get("/admin/adapters").json() == []
        status, answer, _ = _post_raw(client, headers, _chunks(_multipart(config, weights)))
        assert status == 201 and answer["version"] == 1, answer  # a chunked upload under the limit registers


def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(settings, engine: FakeEngine):
    keyed = settings.model_copy(update={"admin_key": "admin-secret"})
    for client in start(keyed, engine):
        headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}", "content-length": str(CHUNK)}
        status, answer, pulled = _post_raw(client, headers, [b"x" * CHUNK])
        assert status == 401 and answer["error"]["code"] == "invalid_api_key" and pulled == 0


def test_under_uvicorn_a_declared_length_past_the_limit_is_answered_before_any_body_is_sent(settings,
                                                                                         engine: FakeEngine):
    small = settings.model_copy(update={"max_upload_mib": 1})
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(small, lambda _: engine), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, name="upload-limit-gateway", daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started:
            assert time.time() < deadline and thread.is_alive(), "the gateway did not start"
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:  # the headers only, no body
            conn.sendall(b"POST /admin/adapters/bot/versions HTTP/1.1\r\nHost: gateway\r\n"
                         b"Content-Type: multipart/form-data; boundary=" + BOUNDARY.encode() + b"\r\n"
                         b"Content-Length: " + str(64 * MIB).encode() + b"\r\n\r\n")
            answer = conn.recv(65536)
        assert answer.startswith(b"HTTP/1.1 413 "), answer
        assert b'"code":"payload_too_large"' in answer
        assert httpx.get(f"http://127.0.0.1:{port}/admin/adapters", timeout=10).json() == []
    finally:
        server.should_exit = True
        thread.join(timeout=10)
