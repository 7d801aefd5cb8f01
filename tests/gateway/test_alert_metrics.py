"""The metrics the alert rules and the dashboard read, scraped from the real app with the fake engine."""

from __future__ import annotations

import threading
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from adapters.runs import RunStore
from flywheel.settings import Settings
from server.app import create_app
from server.state_metrics import StateCollector
from tests.fake_engine import FakeEngine
from tests.feedback.test_feedback_faults import PAGE_FILLER, fill_disk, free_disk
from tests.gateway.test_chat_routes import HI, register
from tests.gateway.test_engine_faults import wait_for
from tests.lora_factory import write_lora


def scrape(client: TestClient) -> dict[tuple[str, frozenset], float]:
    """Every sample of /metrics: (name, labels) -> value."""
    samples = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def rate_answers(client: TestClient, adapter: str, ratings: str) -> None:
    """One served answer per letter of `ratings` (u: up, d: down), each rated."""
    for letter in ratings:
        served = client.post("/v1/chat/completions", json={"messages": HI, "adapter": adapter}).json()
        rating = {"u": "up", "d": "down"}[letter]
        r = client.post("/v1/feedback", json={"completion_id": served["id"], "rating": rating})
        assert r.status_code == 201, r.text


def test_engine_ready_follows_the_engine(settings: Settings, engine: FakeEngine):
    stopped = threading.Event()
    with TestClient(create_app(settings, lambda _: engine, stop_process=stopped.set)) as client:
        wait_for(lambda: client.get("/ready").status_code == 200, "ready")
        assert value(scrape(client), "flywheel_engine_ready") == 1
        engine.dead = True
        wait_for(lambda: client.get("/ready").status_code == 503, "/ready to fail")
        assert value(scrape(client), "flywheel_engine_ready") == 0


def test_a_version_is_compared_with_the_one_it_replaced(client: TestClient, base_dir: Path, tmp_path: Path):
    assert register(client, "bot", write_lora(tmp_path / "a1", base_dir, seed=1)).status_code == 201
    wait_for(lambda: client.post("/v1/chat/completions", json={"messages": HI, "adapter": "bot"}).status_code == 200,
             "bot@1 served")
    rate_answers(client, "bot", "uuud")
    first = scrape(client)
    assert value(first, "flywheel_version_up_rate", adapter="bot", alias="production", version="1",
                 role="current") == 0.75
    assert value(first, "flywheel_alias_version", adapter="bot", alias="production") == 1
    assert not [k for k in first if k[0] == "flywheel_version_up_rate" and ("role", "previous") in k[1]]

    assert register(client, "bot", write_lora(tmp_path / "a2", base_dir, seed=2), None).status_code == 201
    assert client.post("/admin/adapters/bot/promote", json={"version": 2}).status_code == 200
    wait_for(lambda: client.post("/v1/chat/completions", json={"messages": HI, "adapter": "bot"}).json()["adapter"]
             == "bot@2", "bot@2 served")
    rate_answers(client, "bot", "udd")
    after = scrape(client)  # the promote invalidated the cached readings
    current = {"adapter": "bot", "alias": "production", "version": "2", "role": "current"}
    previous = {"adapter": "bot", "alias": "production", "version": "1", "role": "previous"}
    assert value(after, "flywheel_version_up_rate", **current) == 1 / 3
    assert value(after, "flywheel_version_ratings", **current) == 3
    assert value(after, "flywheel_version_up_rate", **previous) == 0.75
    assert value(after, "flywheel_version_ratings", **previous) == 4
    assert value(after, "flywheel_alias_version", adapter="bot", alias="production") == 2
    assert value(after, "flywheel_alias_moves_total", adapter="bot", alias="production") == 2
    # The per-version rating counter the dashboard's up-rate panel reads (counted by the gateway).
    assert value(after, "flywheel_feedback_total", adapter="bot", version="2", rating="down") == 2


def test_training_run_outcomes_and_failure_streaks(client: TestClient, settings: Settings):
    runs = RunStore(settings.trainer_db)  # another process's view, as the trainer writes it
    for adapter, outcomes in {"bot": ["succeeded", "failed", "failed", "failed"],
                              "helper": ["failed", "rejected"]}.items():
        for outcome in outcomes:
            runs.finish(runs.create(adapter, "running"), outcome)
    runs.create("bot")  # queued: no outcome yet, the streak stands
    samples = scrape(client)
    assert value(samples, "flywheel_training_runs", adapter="bot", status="failed") == 3
    assert value(samples, "flywheel_training_runs", adapter="bot", status="succeeded") == 1
    assert value(samples, "flywheel_training_runs", adapter="bot", status="queued") == 1
    assert value(samples, "flywheel_training_consecutive_failures", adapter="bot") == 3
    assert value(samples, "flywheel_training_consecutive_failures", adapter="helper") == 0
    runs.finish(runs.create("bot", "running"), "succeeded")
    assert value(scrape(client), "flywheel_training_consecutive_failures", adapter="bot") == 0


def test_a_feedback_store_that_refuses_writes_shows(client: TestClient):
    store = client.app.state.flywheel.feedback
    served = client.post("/v1/chat/completions", json={"messages": HI}).json()
    store.flush()
    healthy = scrape(client)
    assert value(healthy, "flywheel_feedback_store_failing") == 0
    assert value(healthy, "flywheel_feedback_store_failed_batches_total") == 0
    fill_disk(store._write_conn)
    r = client.post("/v1/feedback", json={"completion_id": served["id"], "rating": "up", "comment": PAGE_FILLER})
    assert r.status_code == 503, r.text
    refusing = scrape(client)
    assert value(refusing, "flywheel_feedback_store_failing") == 1
    assert value(refusing, "flywheel_feedback_store_failed_batches_total") == 1
    free_disk(store._write_conn)
    r = client.post("/v1/feedback", json={"completion_id": served["id"], "rating": "up", "comment": PAGE_FILLER})
    assert r.status_code == 201, r.text
    recovered = scrape(client)
    assert value(recovered, "flywheel_feedback_store_failing") == 0
    assert value(recovered, "flywheel_feedback_store_failed_batches_total") == 1  # a counter: the alert's window


def test_metrics_answer_while_the_run_store_is_unreadable(client: TestClient):
    client.app.state.flywheel.runs.db.execute("DROP TABLE runs")  # every read of the run store now fails
    samples = scrape(client)
    assert value(samples, "flywheel_engine_ready") == 1
    assert not [k for k in samples if k[0] == "flywheel_training_runs"]


def test_cached_readings_refresh_after_their_period(client: TestClient, base_dir: Path, tmp_path: Path):
    clock = [0.0]
    collector = StateCollector(client.app.state.flywheel, refresh_seconds=15, clock=lambda: clock[0])

    def ratings() -> float:
        family = next(f for f in collector.collect() if f.name == "flywheel_version_ratings")
        return {s.labels["role"]: s.value for s in family.samples}["current"]

    assert register(client, "bot", write_lora(tmp_path / "a1", base_dir, seed=1)).status_code == 201
    wait_for(lambda: client.post("/v1/chat/completions", json={"messages": HI, "adapter": "bot"}).status_code == 200,
             "bot@1 served")
    assert ratings() == 0
    rate_answers(client, "bot", "ud")
    assert ratings() == 0  # cached: no alias moved and the period has not passed
    clock[0] += 15
    assert ratings() == 2
