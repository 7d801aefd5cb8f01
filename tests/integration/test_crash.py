"""Crashes leave nothing behind: kill -9 of the gateway, then of its engine, with the real vLLM engine.

One data directory through two lives of the gateway: (1) killed with 1,000 ratings in flight; (2) restarted
cleanly on the same data and port, serving, every acknowledged rating still there; its engine then killed under
it, which turns it unready, answers 503 and makes it exit non-zero. A restart after that exit is the restart of
life 2 (a supervisor's start on data left by a dead gateway), so it is not run a third time: each start of the
real engine costs half a minute of the suite.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.integration.conftest import Gateway, free_port, gateway_env, launch, stop

pytestmark = pytest.mark.integration

RATINGS = 1_000
KILL_AFTER_ACKS = 100
GONE_TIMEOUT = 60  # seconds for orphans to notice (they look every 0.5 s) and shut down


def vllm_processes(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children(recursive=True) if p.name().startswith("VLLM::")]


def descendants(pid: int) -> list[psutil.Process]:
    """vLLM's processes and multiprocessing's resource tracker, which unlinks the shared memory of a process
    killed before it could (it does so once every process holding its pipe has exited)."""
    return psutil.Process(pid).children(recursive=True)


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    left = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                left.append(p)
        except psutil.NoSuchProcess:
            pass
    return left


def wait_gone(processes: list[psutil.Process]) -> list[psutil.Process]:
    deadline = time.monotonic() + GONE_TIMEOUT
    while alive(processes) and time.monotonic() < deadline:
        time.sleep(0.25)
    return alive(processes)


def shared_memory(pid: int) -> set[str]:
    """/dev/shm files that the gateway and its vLLM processes have mapped."""
    paths = set()
    for p in [psutil.Process(pid), *vllm_processes(pid)]:
        paths |= {m.path for m in p.memory_maps() if m.path.startswith("/dev/shm/")}
    return paths


def completions(gw: Gateway, count: int) -> list[str]:
    client = gw.client()
    return [client.chat.completions.create(model="base", messages=[{"role": "user", "content": f"Say {i}"}],
                                           max_tokens=4, temperature=0).id for i in range(count)]


async def rate_then_kill(url: str, completion_ids: list[str], proc: subprocess.Popen) -> list[str]:
    """Send RATINGS ratings at once; kill -9 the gateway once KILL_AFTER_ACKS are acknowledged."""
    acked: list[str] = []
    killed = asyncio.Event()
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        async def rate(i: int) -> None:
            body = {"completion_id": completion_ids[i % len(completion_ids)], "rating": "up" if i % 2 else "down",
                    "feedback_id": f"crash-{i}", "user": f"user-{i}"}
            try:
                r = await http.post("/v1/feedback", json=body)
            except httpx.TransportError:
                return
            if r.status_code == 201:
                acked.append(body["feedback_id"])
                if len(acked) >= KILL_AFTER_ACKS and not killed.is_set():
                    killed.set()
                    os.kill(proc.pid, signal.SIGKILL)

        await asyncio.gather(*(rate(i) for i in range(RATINGS)))
    assert killed.is_set(), f"only {len(acked)} ratings were acknowledged; the kill never happened"
    return acked


def test_kill_9_leaves_no_engine_loses_no_acknowledged_rating_and_a_dead_engine_exits(tmp_path: Path):
    env, log = gateway_env(tmp_path / "data", free_port()), tmp_path / "gateway.log"
    proc, gw = launch(env, log)
    engine, helpers, shm = vllm_processes(proc.pid), descendants(proc.pid), shared_memory(proc.pid)
    assert engine, "the gateway started no vLLM process"
    acked = asyncio.run(rate_then_kill(gw.url, completions(gw, 4), proc))
    proc.wait(timeout=30)
    assert len(acked) < RATINGS - 500, "fewer than 500 ratings were in flight at the kill"
    left = wait_gone(engine)
    assert not left, f"vLLM processes outlived the gateway: {[(p.pid, p.name()) for p in left]}"
    assert shm, "no shared memory seen: the leak check below would check nothing"

    proc, gw = launch(env, log)  # the same data directory and port: no stale lock, socket or engine in the way
    try:
        with gw.http() as http:
            lost = [f for f in acked if http.get(f"/v1/feedback/{f}").status_code != 200]
            assert not lost, f"{len(lost)} of {len(acked)} acknowledged ratings were lost: {lost[:5]}"
        assert completions(gw, 1)

        engine, shm = vllm_processes(proc.pid), shm | shared_memory(proc.pid)
        helpers += descendants(proc.pid)
        core = [p for p in engine if "EngineCore" in p.name()]
        assert core, [p.name() for p in engine]
        core[0].kill()
        statuses = []
        with gw.http() as http:
            while proc.poll() is None:
                try:
                    r = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}],
                                                                 "max_tokens": 4})
                except httpx.TransportError:
                    break
                statuses.append(r.status_code)
                time.sleep(0.1)
        assert proc.wait(timeout=120) != 0, "a gateway whose engine died must exit non-zero"
        assert 503 in statuses and set(statuses) <= {200, 503}, statuses  # 200: answered before vLLM noticed
        assert not wait_gone(engine)
    finally:
        if proc.poll() is None:
            stop(proc)
    assert not wait_gone(helpers), "a process of the gateway's outlived it"  # the tracker's cleanup is done
    leaked = {path for path in shm if os.path.exists(path)}
    assert not leaked, f"shared memory left behind: {sorted(leaked)}"
