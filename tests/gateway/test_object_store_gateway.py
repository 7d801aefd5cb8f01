"""The gateway on an object store (FLYWHEEL_ADAPTER_STORE): fetch on first use, 503 adapter_unavailable for a
missing object with the version left ready, adapter_broken for a tampered one. Fake engine, real S3-API server.

The server is moto's standalone server (tests/s3_server.py): MinIO is not installable here, and moto's is the
only S3-API server the package registries offer; the gateway's boto3 talks to it over HTTP. A "second replica"
is a gateway started on the same registry after the first stopped, with the cache emptied: a fresh host.
"""

from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient

from flywheel.settings import Settings
from tests.fake_engine import FakeEngine
from tests.gateway.conftest import start
from tests.gateway.test_chat_routes import HI, register
from tests.lora_factory import write_lora
from tests.s3_server import AdapterStore

WEIGHTS = "adapter_model.safetensors"


def store_settings(tmp_path: Path, base_dir: Path, store: AdapterStore) -> Settings:
    return Settings(data_dir=tmp_path / "data", model_path=base_dir, registry_poll_seconds=0.05, max_lora_rank=8,
                    train_lora_rank=8, adapter_store=store.url, adapter_store_endpoint=store.endpoint)


def gateway(settings: Settings, engine: FakeEngine):
    return contextmanager(start)(settings, engine)


def chat(client: TestClient, adapter: str):
    return client.post("/v1/chat/completions", json={"messages": HI, "adapter": adapter})


def status_of(client: TestClient, name: str, number: int) -> str:
    return client.get(f"/admin/adapters/{name}").json()["versions"][number - 1]["status"]


def weights_key(store: AdapterStore, number: int) -> str:
    return f"{store.prefix}/bot/v{number}/{WEIGHTS}"


def test_a_fresh_replica_fetches_the_aliased_version_and_serves_it(
    adapter_store: AdapterStore, base_dir: Path, tmp_path: Path
):
    settings = store_settings(tmp_path, base_dir, adapter_store)
    lora = write_lora(tmp_path / "lora", base_dir, seed=4)
    with gateway(settings, FakeEngine()) as one:
        assert register(one, "bot", lora).status_code == 201
        assert chat(one, "bot").json()["adapter"] == "bot@1"
    assert not (settings.adapters_dir / "bot").exists()  # the files went to the store, not a shared folder
    shutil.rmtree(settings.adapter_cache_dir)  # a fresh host: nothing cached

    engine = FakeEngine()
    with gateway(settings, engine) as two:
        answer = chat(two, "bot")
        assert answer.status_code == 200 and answer.json()["adapter"] == "bot@1", answer.text
    folder = settings.adapter_cache_dir / "bot" / "v1"
    assert engine.loaded == ["bot@1"]
    assert (folder / WEIGHTS).read_bytes() == (lora / WEIGHTS).read_bytes()


def test_a_missing_object_is_503_on_this_replica_and_the_version_stays_ready(
    adapter_store: AdapterStore, base_dir: Path, tmp_path: Path
):
    settings = store_settings(tmp_path, base_dir, adapter_store)
    with gateway(settings, FakeEngine()) as one:
        assert register(one, "bot", write_lora(tmp_path / "lora", base_dir)).status_code == 201
    good = adapter_store.client.get_object(Bucket=adapter_store.bucket, Key=weights_key(adapter_store, 1))
    good = good["Body"].read()
    adapter_store.client.delete_object(Bucket=adapter_store.bucket, Key=weights_key(adapter_store, 1))
    shutil.rmtree(settings.adapter_cache_dir)

    with gateway(settings, FakeEngine()) as two:
        for ref in ("bot", "bot@1"):
            r = chat(two, ref)
            assert r.status_code == 503, r.text
            error = r.json()["error"]
            assert error["code"] == "adapter_unavailable" and error["type"] == "service_unavailable"
            assert "bot@1 cannot be fetched to this replica" in error["message"]
            assert "is missing from the adapter store" in error["message"]
        assert status_of(two, "bot", 1) == "ready"  # nothing written to the registry
        assert two.get("/admin/adapters/bot").json()["aliases"]["production"] == 1

        adapter_store.client.put_object(Bucket=adapter_store.bucket, Key=weights_key(adapter_store, 1), Body=good)
        deadline = time.monotonic() + 60  # the next request (or poll) tries again
        while (r := chat(two, "bot")).status_code != 200:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.05)
        assert r.json()["adapter"] == "bot@1"


def test_a_tampered_object_marks_the_version_broken(adapter_store: AdapterStore, base_dir: Path, tmp_path: Path):
    settings = store_settings(tmp_path, base_dir, adapter_store)
    with gateway(settings, FakeEngine()) as client:
        assert register(client, "bot", write_lora(tmp_path / "a", base_dir, seed=1)).status_code == 201
        assert register(client, "bot", write_lora(tmp_path / "b", base_dir, seed=2), None).status_code == 201
        key = weights_key(adapter_store, 2)
        data = bytearray(adapter_store.client.get_object(Bucket=adapter_store.bucket, Key=key)["Body"].read())
        data[-8:] = bytes(b ^ 0xFF for b in data[-8:])
        adapter_store.client.put_object(Bucket=adapter_store.bucket, Key=key, Body=bytes(data))

        r = chat(client, "bot@2")
        assert r.status_code == 503 and r.json()["error"]["code"] == "adapter_broken", r.text
        assert "in the adapter store" in r.json()["error"]["message"]
        assert status_of(client, "bot", 2) == "broken"
        assert not (settings.adapter_cache_dir / "bot" / "v2").exists()
        promote = client.post("/admin/adapters/bot/promote", json={"version": 2})
        assert promote.status_code in (409, 503), promote.text  # a broken version takes no alias
        assert chat(client, "bot").json()["adapter"] == "bot@1"  # the other version serves on


def test_a_cached_copy_changed_on_this_host_is_fetched_again_and_the_version_stays_ready(
    adapter_store: AdapterStore, base_dir: Path, tmp_path: Path
):
    # Another process on this host (its own cache of the same folder) may evict or rewrite a cached copy after
    # this one checked it: the store's files are intact, so that must not mark the version broken for every host.
    settings = store_settings(tmp_path, base_dir, adapter_store)
    lora = write_lora(tmp_path / "lora", base_dir, seed=5)
    with gateway(settings, FakeEngine()) as one:
        assert register(one, "bot", lora).status_code == 201
        assert chat(one, "bot").json()["adapter"] == "bot@1"
        cached = settings.adapter_cache_dir / "bot" / "v1" / WEIGHTS
        cached.write_bytes(b"not the weights")  # the next request's stat check sees the change and re-checks
        r = chat(one, "bot")
        assert r.status_code == 200 and r.json()["adapter"] == "bot@1", r.text
        assert status_of(one, "bot", 1) == "ready"
        assert cached.read_bytes() == (lora / WEIGHTS).read_bytes()  # fetched again from the store
