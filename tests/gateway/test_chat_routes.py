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
    assert body["choices"][0]["message"]["content"] == "base says 5 5"
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
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "base"}  # role with the first token
    assert {c["adapter"] for c in chunks} == {None}
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
    ({"messages": HI, "n": 9}, 400, "invalid_parameter"),
    ({"messages": HI, "adapter": 7}, 400, "invalid_parameter"),
    ({"messages": HI, "store": "maybe"}, 400, "invalid_parameter"),
    ({"messages": HI, "modalities": ["audio"]}, 400, "bad_request"),
    ({"messages": HI, "documents": [{"title": "t", "text": "x"}]}, 400, "bad_request"),
    ({"messages": HI, "request_id": "mine"}, 400, "bad_request"),
    ({"messages": [{"role": "user", "content": "word " * 80}]}, 400, "context_length_exceeded"),
])
def test_bad_requests_get_openai_errors(client: TestClient, body: dict, status: int, code: str):
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"] and error["type"]
    if code == "bad_request":  # the parameter at fault is named (vLLM names some only in the message)
        named = [key for key in body if key == error["param"] or key in error["message"]]
        assert named, error


def test_only_temperature_0_is_greedy_and_answers_one_choice(client: TestClient):
    # vLLM raises a temperature in (0, 0.01) to 0.01, so such a request samples and may ask for several choices;
    # the OpenAPI document says the same (the contract test sends such bodies)
    greedy = client.post("/v1/chat/completions", json={"messages": HI, "temperature": 0, "n": 2})
    assert greedy.status_code == 400 and "greedy" in greedy.json()["error"]["message"], greedy.text
    tiny = client.post("/v1/chat/completions", json={"messages": HI, "temperature": 1e-308, "n": 2})
    assert tiny.status_code == 200 and len(tiny.json()["choices"]) == 2, tiny.text


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


def test_the_log_keeps_the_request_and_answer_as_served(client: TestClient):
    store = client.app.state.flywheel.feedback
    body = {"messages": HI, "max_tokens": 3, "user": "ann", "response_format": {"type": "json_object"}}
    r = client.post("/v1/chat/completions", json=body).json()
    with client.stream("POST", "/v1/chat/completions", json={"messages": HI, "stream": True}) as s:
        first = json.loads(next(line for line in list(s.iter_lines()) if line.startswith("data: "))[6:])
    store.flush()
    logged, streamed = store.get_completion(r["id"]), store.get_completion(first["id"])
    assert logged.messages == HI and logged.user == "ann"
    assert logged.params["response_format"] == {"type": "json_object"}
    assert logged.choices == [{"index": 0, "text": "base says 5", "finish_reason": "length"}]
    assert logged.completion_tokens == 3 and logged.params["endpoint"] == "chat.completions"
    assert streamed.choices[0]["text"] == "base says 5 5"
    assert client.post("/v1/chat/completions", json={"messages": HI, "store": False}).status_code == 200


def test_legacy_completions_resolve_adapters_and_are_logged(client: TestClient, base_dir: Path, tmp_path: Path):
    register(client, "bot", write_lora(tmp_path / "a1", base_dir))
    r = client.post("/v1/completions", json={"prompt": "hello there", "model": "bot", "max_tokens": 8})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "bot@1 says 5 5" and body["adapter"] == "bot@1"
    assert r.headers["x-flywheel-adapter"] == "bot@1"
    with client.stream("POST", "/v1/completions", json={"prompt": "hi", "stream": True}) as s:
        events = [line[6:] for line in s.iter_lines() if line.startswith("data: ")]
    assert "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]) == "base says 2"
    store = client.app.state.flywheel.feedback
    store.flush()
    logged = store.get_completion(body["id"])
    assert logged.adapter == "bot" and logged.params["endpoint"] == "completions"
    assert logged.messages == [{"role": "user", "content": "hello there"}]
    assert client.post("/v1/completions", json={"prompt": "x", "adapter": "ghost"}).status_code == 404
    assert client.post("/v1/completions", json={"prompt": "x", "messages": HI}).json()["error"]["param"] == "messages"


def test_tool_call_history_is_accepted_and_logged(client: TestClient):
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    messages = [{"role": "user", "content": "weather?"}, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    r = client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 2})
    assert r.status_code == 200, r.text
    store = client.app.state.flywheel.feedback
    store.flush()
    logged = store.get_completion(r.json()["id"])
    assert logged.messages[1] == {"role": "assistant", "content": "", "tool_calls": [call]}
    assert logged.messages[2] == {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}


def test_models_carry_lineage(client: TestClient, base_dir: Path, tmp_path: Path):
    register(client, "bot", write_lora(tmp_path / "a1", base_dir))
    cards = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert cards["base"]["root"] == str(base_dir) and cards["base"]["parent"] is None
    assert cards["bot"]["root"] == "base" and cards["bot"]["parent"] == "base" and cards["bot"]["version"] == 1
    assert cards["bot"]["object"] == "model" and cards["bot"]["max_model_len"] > 0


def test_tool_call_history_as_the_openai_client_echoes_it(client: TestClient):
    """The strict check of documented fields takes what clients send back: a response message with its extras."""
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    history = [{"role": "user", "content": "Weather in Paris?"},
               {"role": "assistant", "content": None, "tool_calls": [call], "annotations": []},
               {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
               {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]}]
    tool = {"type": "function", "function": {"name": "get_weather", "strict": True,
                                             "parameters": {"type": "object", "properties": {}}}}
    r = client.post("/v1/chat/completions", json={"messages": history, "tools": [tool], "tool_choice": "auto"})
    assert r.status_code == 200, r.text
