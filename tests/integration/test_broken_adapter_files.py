"""A live version's weights truncated before vLLM first loads them: 503 adapter_broken, the rest serves."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.integration.conftest import Gateway

pytestmark = pytest.mark.integration
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def upload(gateway: Gateway, name: str, folder: Path, alias: str | None) -> None:
    files = {part: (folder / f"{part}.{ext}").read_bytes()
             for part, ext in (("adapter_config", "json"), ("adapter_model", "safetensors"))}
    with gateway.http() as http:
        r = http.post(f"/admin/adapters/{name}/versions", files=files, data={"alias": alias} if alias else {})
    assert r.status_code == 201, r.text


def ask(gateway: Gateway, adapter: str | None) -> str:
    extra = {"adapter": adapter} if adapter else {}
    r = gateway.client().chat.completions.create(model="base", messages=FRANCE, max_tokens=8, temperature=0,
                                                 extra_body=extra)
    return r.choices[0].message.content


def test_truncated_weights_are_503_adapter_broken_while_others_serve(gateway: Gateway, peft_adapters: list[Path]):
    upload(gateway, "whole", peft_adapters[0], "production")
    upload(gateway, "cut", peft_adapters[1], None)  # registered, not loaded into vLLM yet
    weights = Path(gateway.env["FLYWHEEL_DATA_DIR"]) / "adapters" / "cut" / "v1" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(openai.APIStatusError) as broken:
        ask(gateway, "cut@1")
    assert broken.value.status_code == 503 and broken.value.code == "adapter_broken"
    assert "cut@1 is broken" in broken.value.message and "truncated" in broken.value.message
    with gateway.http() as http:
        shown = http.get("/admin/adapters/cut").json()["versions"][0]
    assert shown["status"] == "broken" and "truncated" in shown["status_reason"]
    assert ask(gateway, None) and ask(gateway, "whole")  # the base model and the other adapter serve
