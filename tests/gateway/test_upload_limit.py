"""An adapter upload over the size limit is refused with 413 in OpenAI's error format, not read cut short."""

from __future__ import annotations

from pathlib import Path

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
