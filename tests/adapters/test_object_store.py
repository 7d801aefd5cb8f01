"""Adapter files in an object store (adapters/object_store.py), against a real S3-API server over HTTP.

The server is moto's standalone server (tests/s3_server.py): MinIO is not installable here, and moto's is the
only S3-API server the package registries offer. Real boto3 talks to it over HTTP on a local port.

Two `Registry` objects on one registry database, each with a cache of its own, are two replicas: what one
registers the other fetches, checks and reads. The shared-folder default is covered by the other registry tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.base_model import BaseModelInfo
from adapters.errors import AdapterUnavailable, FilesMismatch
from adapters.files import SharedFolder
from adapters.folder_cache import FolderCache
from adapters.integrity import verify
from adapters.object_store import ObjectStoreFiles
from adapters.registry import Registry
from tests.lora_factory import write_lora, write_tiny_base
from tests.s3_server import AdapterStore, free_port

SERVED = ("adapter_config.json", "adapter_model.safetensors")


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    return write_tiny_base(tmp_path / "base")


def replica(tmp_path: Path, base_dir: Path, store: AdapterStore, name: str, endpoint: str | None = None,
            max_bytes: int = 1 << 30) -> Registry:
    files = ObjectStoreFiles.from_url(store.url, tmp_path / name / "cache", max_bytes=max_bytes,
                                      endpoint_url=endpoint or store.endpoint)
    return Registry(tmp_path / "registry.db", tmp_path / name / "adapters", BaseModelInfo.from_dir(base_dir),
                    max_rank=8, files=files)


def test_a_version_registered_on_one_replica_is_fetched_and_checked_by_another(
    adapter_store: AdapterStore, base_dir: Path, tmp_path: Path
):
    one, two = (replica(tmp_path, base_dir, adapter_store, n) for n in ("one", "two"))
    source = write_lora(tmp_path / "lora", base_dir, seed=3)
    registered = one.register("bot", source, alias="production")
    assert adapter_store.keys() == [f"team/adapters/bot/v1/{f}" for f in SERVED]
    assert not (tmp_path / "one" / "adapters" / "bot").exists()  # nothing in a shared folder, no staging left
    assert not list((tmp_path / "one" / "adapters").iterdir())

    version = two.resolve("bot")
    assert version.id == registered.id and version.path == tmp_path / "two" / "cache" / "bot" / "v1"
    assert not version.path.exists()  # the second replica's cache is empty until it needs the version
    folder = two.files.local_folder(version)
    assert folder == version.path
    for name in SERVED:
        assert (folder / name).read_bytes() == (source / name).read_bytes()
    assert verify(version) == []
    assert not [p for p in folder.parent.parent.iterdir() if p.name.startswith(".")]  # no fetch folder left
    assert two.files.local_folder(version) == folder  # cached: no second download


def test_an_upload_that_fails_registers_nothing(adapter_store: AdapterStore, base_dir: Path, tmp_path: Path):
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    down = replica(tmp_path, base_dir, adapter_store, "down", endpoint=closed)
    with pytest.raises(AdapterUnavailable, match="nothing was registered"):
        down.register("bot", write_lora(tmp_path / "lora", base_dir))
    assert down.adapters() == [] and adapter_store.keys() == []
    assert not list((tmp_path / "down" / "adapters").iterdir())  # the staging copy is gone


def test_a_missing_object_is_unavailable_and_a_tampered_one_a_mismatch(
    adapter_store: AdapterStore, base_dir: Path, tmp_path: Path
):
    one, two = (replica(tmp_path, base_dir, adapter_store, n) for n in ("one", "two"))
    one.register("bot", write_lora(tmp_path / "lora", base_dir))
    weights = "team/adapters/bot/v1/adapter_model.safetensors"
    good = adapter_store.client.get_object(Bucket=adapter_store.bucket, Key=weights)["Body"].read()
    version = two.get_version("bot", 1)

    adapter_store.client.delete_object(Bucket=adapter_store.bucket, Key=weights)
    with pytest.raises(AdapterUnavailable, match="adapter_model.safetensors is missing from the adapter store"):
        two.files.local_folder(version)
    assert not version.path.exists()

    tampered = bytearray(good)
    tampered[-8:] = bytes(b ^ 0xFF for b in tampered[-8:])
    adapter_store.client.put_object(Bucket=adapter_store.bucket, Key=weights, Body=bytes(tampered))
    with pytest.raises(FilesMismatch, match="does not match the sha256 recorded at registration"):
        two.files.local_folder(version)
    assert not version.path.exists()  # a mismatching fetch never lands in the cache

    adapter_store.client.put_object(Bucket=adapter_store.bucket, Key=weights, Body=good)
    assert verify(two.get_version("bot", 1)) != []  # still absent: nothing was fetched by the failures
    assert two.files.local_folder(version).is_dir() and verify(version) == []


def test_a_cached_copy_that_differs_on_disk_is_fetched_again(
    adapter_store: AdapterStore, base_dir: Path, tmp_path: Path
):
    one = replica(tmp_path, base_dir, adapter_store, "one")
    version = one.register("bot", write_lora(tmp_path / "lora", base_dir))
    one.files.local_folder(version)
    (version.path / "adapter_model.safetensors").write_bytes(b"not the weights")  # this disk's fault, not the store's
    again = replica(tmp_path, base_dir, adapter_store, "one")  # a restarted process, same cache folder
    assert again.files.local_folder(version) == version.path and verify(version) == []


def test_the_cache_evicts_the_least_recently_used_versions_past_its_bytes(
    adapter_store: AdapterStore, base_dir: Path, tmp_path: Path
):
    one = replica(tmp_path, base_dir, adapter_store, "one")
    for i in range(3):
        one.register("bot", write_lora(tmp_path / f"l{i}", base_dir, seed=i))
    two = replica(tmp_path, base_dir, adapter_store, "two")
    versions = two.versions("bot")
    first = two.files.local_folder(versions[0])
    one_version = sum(p.stat().st_size for p in first.iterdir())
    two.files.cache.max_bytes = 2 * one_version  # room for two versions
    two.files.local_folder(versions[1])
    two.files.local_folder(versions[0])  # used again: v2 is now the least recently used
    two.files.local_folder(versions[2])
    cached = sorted(p.name for p in (tmp_path / "two" / "cache" / "bot").iterdir())
    assert cached == ["v1", "v3"]
    assert two.files.cache.used_bytes == 2 * one_version
    assert two.files.local_folder(versions[1]).is_dir()  # an evicted version is fetched again when asked for
    assert not versions[0].path.exists()  # and v1, least recently used by then, made room for it


def test_the_cache_counts_what_an_earlier_process_left(tmp_path: Path):
    root = tmp_path / "cache"
    for rel, size in (("a/v1", 10), ("b/v1", 20)):
        (root / rel).mkdir(parents=True)
        (root / rel / "adapter_model.safetensors").write_bytes(b"x" * size)
    cache = FolderCache(root, max_bytes=25)
    assert cache.used_bytes == 30 and "a/v1" in cache
    (root / "c" / "v1").mkdir(parents=True)
    (root / "c" / "v1" / "adapter_model.safetensors").write_bytes(b"x" * 5)
    cache.add("c/v1")  # 35 bytes: the oldest goes
    assert "a/v1" not in cache and not (root / "a" / "v1").exists() and cache.used_bytes == 25


def test_the_shared_folder_stays_the_default(base_dir: Path, tmp_path: Path):
    registry = Registry(tmp_path / "registry.db", tmp_path / "adapters", BaseModelInfo.from_dir(base_dir), max_rank=8)
    assert isinstance(registry.files, SharedFolder)
    version = registry.register("bot", write_lora(tmp_path / "lora", base_dir))
    assert version.path == tmp_path / "adapters" / "bot" / "v1" == registry.files.local_folder(version)
