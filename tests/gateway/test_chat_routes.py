"""Chat routes: OpenAI shapes, adapter selection, streaming, and every bad input as a 4xx OpenAI error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.lora_factory import write_lora

HI = [{"role": "user", "content": "hello there"}]


def register(client: TestClient, name: str, folder: Path, alias: str | None = "production"):
    files = {"adapter_config": (folder / "adapter_config.json").read_bytes(),
             "adapter_model": (folder / "adapter_model.safetensors").read_bytes()}
    return client.post(f"/admin/adapters/{name}/versions", files=files, data={"alias": alias} if alias else {})


def test_base_model_chat(client: TestClient):
    r = client.post("/v1/chat/completions", json={"messages": HI, "max_tokens": 10})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "base says 5 5"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8}
    assert body["adapter"] is None and r.headers["x-flywheel-adapter"] == ""


def test_adapter_by_field_by_model_and_pinned(client: TestClient, base_dir: Path, tmp_path: Path):
    assert register(client, "bot", write_lora(tmp_path / "a1", base_dir, seed=1)).status_code == 201
    assert register(client, "bot", write_lora(tmp_path / "a2", base_dir, seed=2), alias=None).status_code == 201
    by_field = client.post("/v1/chat/completions", json={"messages": HI, "adapter": "bot"}).json()
    by_model = client.post("/v1/chat/completions", json={"messages": HI, "model": "bot"}).json()
    pinned = client.post("/v1/chat/completions", json={"messages": HI, "adapter": "bot@2"})
    assert by_field["adapter"] == by_model["adapter"] == "bot@1"
    assert by_field["choices"][0]["message"]["content"].startswith("bot@1 says")
    assert pinned.json()["adapter"] == "bot@2" and pinned.headers["x-flywheel-adapter"] == "bot@2"
    models = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert models == ["base", "bot"]


def test_streaming_with_usage(client: TestClient):
    body = {"messages": HI, "stream": True, "n": 2, "stream_options": {"include_usage": True}}
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["index"] for c in chunks[0]["choices"]} == {0, 1}
    text = "".join(c["delta"].get("content") or "" for ch in chunks for c in ch["choices"] if c["index"] == 1)
    assert text == "base says 5 5"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 8
    assert len({c["id"] for c in chunks}) == 1


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"messages": HI, "adapter": "ghost"}, 404, "adapter_not_found"),
    ({"messages": HI, "adapter": "../../etc/passwd"}, 400, "invalid_name"),
    ({"messages": HI, "model": "org/other-model"}, 404, "model_not_found"),
    ({"messages": HI, "model": "ghost"}, 404, "adapter_not_found"),
    ({"messages": []}, 400, "invalid_parameter"),
    ({"messages": "hello"}, 400, "invalid_parameter"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, 400, "invalid_parameter"),
    ({"messages": HI, "temperature": "hot"}, 400, "invalid_parameter"),
    ({"messages": HI, "temperature": 3}, 400, "invalid_parameter"),
    ({"messages": HI, "n": 0}, 400, "invalid_parameter"),
    ({"messages": HI, "max_tokens": -1}, 400, "invalid_parameter"),
    ({"messages": HI, "stop": ["a", "b", "c", "d", "e"]}, 400, "invalid_parameter"),
    ({"messages": [{"role": "user", "content": "word " * 80}]}, 400, "context_length_exceeded"),
    ({"messages": HI, "max_tokens": 500}, 400, "context_length_exceeded"),
])
def test_bad_requests_get_openai_errors(client: TestClient, body: dict, status: int, code: str):
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"] and error["type"]


def test_malformed_json_is_400(client: TestClient):
    r = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_overload_is_429(client: TestClient):
    client.app.state.flywheel.chat.inflight = 10**6
    r = client.post("/v1/chat/completions", json={"messages": HI})
    assert r.status_code == 429 and r.json()["error"]["code"] == "overloaded"
    client.app.state.flywheel.chat.inflight = 0


def test_metrics_are_labelled_by_adapter_and_version(client: TestClient, base_dir: Path, tmp_path: Path):
    register(client, "bot", write_lora(tmp_path / "a1", base_dir))
    client.post("/v1/chat/completions", json={"messages": HI, "adapter": "bot"})
    text = client.get("/metrics").text
    assert 'flywheel_requests_total{adapter="bot",status="ok",version="1"} 1.0' in text
    assert "flywheel_time_to_first_token_seconds_bucket" in text
    assert 'flywheel_adapter_loads_total{adapter="bot",result="ok",version="1"} 1.0' in text
