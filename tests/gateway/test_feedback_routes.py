"""Feedback over HTTP: ratings on served completions, pairs, read-back, and 4xx for bad input."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.gateway.test_chat_routes import HI


def chat(client: TestClient, **extra) -> dict:
    r = client.post("/v1/chat/completions", json={"messages": HI, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def test_rate_a_served_completion_and_read_it_back(client: TestClient):
    completion = chat(client, user="u1")
    r = client.post("/v1/feedback", json={"completion_id": completion["id"], "rating": "up", "user": "u1",
                                          "feedback_id": "client-1"})
    assert r.status_code == 201, r.text
    record = r.json()
    assert record["rating"] == "up" and record["id"].startswith("fb_")
    again = client.post("/v1/feedback", json={"completion_id": completion["id"], "rating": "down",
                                              "feedback_id": "client-1"})
    assert again.json()["id"] == record["id"] and again.json()["rating"] == "up"
    assert client.get(f"/v1/feedback/{record['id']}").json()["completion_id"] == completion["id"]
    metrics = client.get("/metrics").text
    assert 'flywheel_feedback_total{adapter="",rating="up",version=""} 1.0' in metrics  # the repeat is not counted
    assert 'flywheel_feedback_up_rate{adapter="",version=""} 1.0' in metrics


def test_pairs_from_two_choices(client: TestClient):
    completion = chat(client, n=2)
    r = client.post("/v1/feedback/pairs", json={"chosen_completion_id": completion["id"], "chosen_choice_index": 1,
                                                "rejected_completion_id": completion["id"]})
    assert r.status_code == 400  # the fake engine's two choices are identical: nothing to prefer
    pair = {"prompt": HI, "chosen": "Hi!", "rejected": "Go away.", "feedback_id": "pair-1"}
    r = client.post("/v1/feedback/pairs", json=pair)
    assert r.status_code == 201 and r.json()["id"].startswith("pair_")
    again = client.post("/v1/feedback/pairs", json={**pair, "chosen": "Hello!"})
    assert again.status_code == 201 and again.json()["id"] == r.json()["id"]
    assert 'flywheel_feedback_total{adapter="",rating="pair",version=""} 1.0' in client.get("/metrics").text


def test_bad_feedback(client: TestClient):
    completion = chat(client)
    cases = [
        ({"completion_id": completion["id"], "rating": "meh"}, 400),
        ({"completion_id": "chatcmpl-nope", "rating": "up"}, 404),
        ({"completion_id": completion["id"], "rating": "up", "comment": "x" * 2_000_000}, 400),
        ({"completion_id": completion["id"], "rating": "up", "choice_index": 3}, 400),
        ({"completion_id": completion["id"], "rating": "up", "comment": "a\x00b"}, 400),
        ({"completion_id": completion["id"]}, 400),
    ]
    for body, status in cases:
        r = client.post("/v1/feedback", json=body)
        assert r.status_code == status, (body.keys(), r.text)
        assert "error" in r.json()
    assert client.get("/v1/feedback/fb_missing").status_code == 404
    assert client.post("/v1/feedback", content=b"{not json", headers={"content-type": "application/json"}
                       ).status_code == 400
    assert client.get("/v1/feedback").status_code == 405  # past the fast path, the route still answers
    assert "/v1/feedback" in client.get("/openapi.json").json()["paths"]


def test_an_unexpected_failure_is_a_500_in_openai_format(client: TestClient, monkeypatch):
    completion = chat(client)

    def broken(**_):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(client.app.state.flywheel.feedback, "add_feedback_async", broken)
    r = client.post("/v1/feedback", json={"completion_id": completion["id"], "rating": "up"})
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
    assert "disk on fire" not in r.text  # the details go to the log, not to the client


def test_store_false_keeps_a_completion_out_of_the_log(client: TestClient):
    completion = chat(client, store=False)
    r = client.post("/v1/feedback", json={"completion_id": completion["id"], "rating": "up"})
    assert r.status_code == 404
