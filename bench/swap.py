"""Hot-swap latency: from a promote to the first response that reports the new version.

Two ways to promote: the admin HTTP call (the gateway loads the version, then moves the alias), and
a registry move made by another process, as the CLI or the trainer do (the gateway's poller notices
it within `FLYWHEEL_REGISTRY_POLL_SECONDS`). Each promote goes to a freshly registered version, so
every swap includes loading new weights into vLLM, as a real promotion does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from adapters.names import Alias
from bench.load import percentile


@dataclass
class SwapResult:
    """Swap latencies in milliseconds, per way of promoting."""

    swaps_per_way: int
    poll_seconds: float
    api_ms: list[float] = field(default_factory=list)
    registry_ms: list[float] = field(default_factory=list)

    def stats(self) -> dict[str, float]:
        """p50/p99 per way of promoting."""
        return {
            "api_p50_ms": round(percentile(self.api_ms, 50), 1),
            "api_p99_ms": round(percentile(self.api_ms, 99), 1),
            "registry_p50_ms": round(percentile(self.registry_ms, 50), 1),
            "registry_p99_ms": round(percentile(self.registry_ms, 99), 1),
        }

    def as_dict(self) -> dict:
        """Plain JSON-ready dict with the raw samples and their percentiles."""
        return {**asdict(self), **self.stats()}


def upload_version(client: httpx.Client, name: str, folder: Path, alias: str | None = None) -> int:
    """Register `folder` as the adapter's next version through the admin API; returns the version number."""
    files = {
        "adapter_config": ("adapter_config.json", (folder / "adapter_config.json").read_bytes()),
        "adapter_model": ("adapter_model.safetensors", (folder / "adapter_model.safetensors").read_bytes()),
    }
    response = client.post(f"/admin/adapters/{name}/versions", files=files, data={"alias": alias} if alias else {})
    response.raise_for_status()
    return response.json()["version"]


def wait_for_version(client: httpx.Client, name: str, version: int, timeout_s: float = 30) -> float:
    """Send tiny chat requests until one is served by `name@version`; returns when that response arrived."""
    body = {"model": "base", "adapter": name, "max_tokens": 1, "temperature": 0.0,
            "messages": [{"role": "user", "content": "Hi"}]}
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        response = client.post("/v1/chat/completions", json=body)
        if response.status_code == 200 and response.json().get("adapter") == f"{name}@{version}":
            return time.perf_counter()
    raise TimeoutError(f"{name}@{version} was not served within {timeout_s:.0f}s")


def measure_swaps(
    url: str,
    folder: Path,
    registry_promote: Callable[[str, int], object],
    *,
    swaps: int = 10,
    poll_seconds: float = 0.5,
    on_done: Callable[[], None] | None = None,
    name: str = "swapbench",
) -> SwapResult:
    """Promote `swaps` new versions through the API and `swaps` through the registry; time each to first use."""
    result = SwapResult(swaps_per_way=swaps, poll_seconds=poll_seconds)
    with httpx.Client(base_url=url, timeout=120) as client:
        upload_version(client, name, folder, alias=Alias.PRODUCTION)
        # register every version up front, so a swap's time is only load + alias move + first answer
        versions = [upload_version(client, name, folder) for _ in range(2 * swaps)]
        wait_for_version(client, name, 1)
        for i, version in enumerate(versions):
            start = time.perf_counter()
            if i < swaps:
                client.post(f"/admin/adapters/{name}/promote", json={"version": version}).raise_for_status()
            else:
                registry_promote(name, version)
            elapsed_ms = (wait_for_version(client, name, version) - start) * 1000
            (result.api_ms if i < swaps else result.registry_ms).append(round(elapsed_ms, 1))
            if on_done:
                on_done()
    return result
