"""Two gateway processes, each with its own real vLLM engine, on one PostgreSQL, behave as one (issue 16).

Gateways A and B share the database (`FLYWHEEL_DATABASE_URL`) and the adapter files: each has its own data
directory, whose `adapters` folder is a link to one shared folder, as every replica mounts one shared volume
(docs/kubernetes.md, "Adapter files"). Versions registered through A are served by B; an alias move made
through A's admin API, B's admin API or the `flywheel adapters` CLI is served by both; a feedback id sent to
both is stored once. Moves are awaited with a generous deadline: the 2 s target is `flywheel bench replicas`'
(docs/bench_replicas.md), not a test's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import openai
import psycopg
import pytest

from bench.swap import upload_version
from tests.integration.conftest import Gateway, free_port, gateway_env, launch, stop
from tests.lora_factory import write_lora
from tests.postgres import empty_database

pytestmark = pytest.mark.integration

HI = [{"role": "user", "content": "Hi"}]
PROPAGATION_DEADLINE = 90  # seconds; a poll period is 0.25 s here, but two engines share two busy cores


@pytest.fixture(scope="module")
def replicas(postgres_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Gateway]]:
    """Gateways A and B, started one after the other (each engine start takes the cores for a while)."""
    empty_database(postgres_database)
    root = tmp_path_factory.mktemp("replicas")
    shared = root / "shared-adapters"
    shared.mkdir()
    procs, gateways = [], []
    try:
        for name in ("a", "b"):
            data = root / f"data-{name}"
            data.mkdir()
            (data / "adapters").symlink_to(shared, target_is_directory=True)
            env = {**gateway_env(data, free_port()), "FLYWHEEL_DATABASE_URL": postgres_database}
            proc, gateway = launch(env, root / f"gateway-{name}.log")
            procs.append(proc)
            gateways.append(gateway)
        yield gateways[0], gateways[1]
    finally:  # whatever failed, no engine is left running
        for proc in procs:
            stop(proc)


def served(gateway: Gateway, adapter: str = "bot") -> str | None:
    """The version `adapter` answers with on this gateway (`name@N`), or None while it has no production."""
    try:
        raw = gateway.client().chat.completions.with_raw_response.create(
            model=adapter, messages=HI, max_tokens=1, temperature=0)
    except openai.NotFoundError:
        return None
    body = raw.parse()
    assert body.adapter == raw.headers["x-flywheel-adapter"], (body.adapter, raw.headers)
    return body.adapter


def wait_served(gateway: Gateway, expected: str) -> None:
    deadline = time.monotonic() + PROPAGATION_DEADLINE  # eventually, not a speed check
    while (got := served(gateway)) != expected:
        assert time.monotonic() < deadline, f"{gateway.url} still serves {got}, not {expected}"
        time.sleep(0.2)


def test_a_move_through_either_gateway_or_the_cli_is_served_by_both(
    replicas: tuple[Gateway, Gateway], tmp_path: Path
) -> None:
    a, b = replicas
    folders = [write_lora(tmp_path / f"v{seed}", a.model_dir, seed=seed) for seed in (1, 2, 3)]
    registered = a.cli("adapters", "register", "bot", str(folders[0]))
    assert registered.returncode == 0, registered.stderr
    with a.http() as http:
        assert upload_version(http, "bot", folders[1]) == 2
    registered = a.cli("adapters", "register", "bot", str(folders[2]))
    assert registered.returncode == 0, registered.stderr

    with a.http() as http:  # through A's admin API
        assert http.post("/admin/adapters/bot/promote", json={"version": 1}).status_code == 200
    assert served(a) == "bot@1"  # the admin call loads the version before it answers
    wait_served(b, "bot@1")

    with b.http() as http:  # through B's admin API
        assert http.post("/admin/adapters/bot/promote", json={"version": 2}).status_code == 200
    assert served(b) == "bot@2"
    wait_served(a, "bot@2")

    moved = b.cli("adapters", "promote", "bot", "--version", "3")  # a third process: neither gateway
    assert moved.returncode == 0, moved.stderr
    wait_served(a, "bot@3")
    wait_served(b, "bot@3")
    for gateway in (a, b):  # nothing went to SQLite; both logged the moves from the one registry
        assert not list(Path(gateway.env["FLYWHEEL_DATA_DIR"]).glob("*.db"))
        with gateway.http() as http:
            history = http.get("/admin/adapters/bot/history").json()
        moves = [(e["to_version"], e["actor"] == "cli") for e in history if e["alias"] == "production"]
        assert moves == [(1, False), (2, False), (3, True)]


def test_one_feedback_id_sent_to_both_gateways_is_stored_once(
    replicas: tuple[Gateway, Gateway], postgres_database: str
) -> None:
    a, b = replicas
    completion = b.client().chat.completions.create(model="base", messages=HI, max_tokens=2, temperature=0)
    body = {"completion_id": completion.id, "rating": "up", "feedback_id": "replica-client-1"}
    with a.http() as to_a, b.http() as to_b:
        deadline = time.monotonic() + PROPAGATION_DEADLINE
        # B logs its completions fire and forget (committed within its flush interval): until then A answers 404
        while (first := to_a.post("/v1/feedback", json=body)).status_code == 404:
            assert time.monotonic() < deadline, first.text
            time.sleep(0.2)
        again = to_b.post("/v1/feedback", json=body)
    assert first.status_code == 201 and again.status_code == 201, (first.text, again.text)
    assert again.json()["id"] == first.json()["id"]  # the repeat answers with the first record
    with psycopg.connect(postgres_database) as conn:
        rows = conn.execute("SELECT count(*) FROM feedback WHERE client_id = %s", [body["feedback_id"]]).fetchone()
    assert rows[0] == 1
