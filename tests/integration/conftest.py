"""One real gateway (vLLM + the default model) per test session, driven over HTTP by the openai client."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from flywheel.settings import Settings

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 300
# /admin and the console need it, as in production; the console's test logs in with it (test_console_engine.py).
ADMIN_KEY = "integration-admin-key"


def default_model() -> Path:
    from flywheel.default_model import prepare_default_model

    return prepare_default_model(REPO / Settings(data_dir=REPO / "data").default_model_dir)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Gateway:
    url: str
    env: dict[str, str]
    model_dir: Path
    log: Path
    pid: int

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0, timeout=120)

    def http(self) -> httpx.Client:
        """A client that sends the admin key, for /admin (chat and feedback need no key here)."""
        key = self.env.get("FLYWHEEL_ADMIN_KEY")
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, timeout=120, headers=headers)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run the `flywheel` command line against the same data directory (another process)."""
        return subprocess.run([sys.executable, "-m", "flywheel", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)


def gateway_env(data: Path, port: int) -> dict[str, str]:
    """The environment of a test gateway: its own data directory and port, a small engine, the admin key."""
    return {**os.environ, "FLYWHEEL_DATA_DIR": str(data), "FLYWHEEL_MODEL_PATH": str(default_model()),
            "FLYWHEEL_PORT": str(port), "FLYWHEEL_REGISTRY_POLL_SECONDS": "0.25", "FLYWHEEL_KV_CACHE_GIB": "1",
            "FLYWHEEL_MAX_MODEL_LEN": "1024", "FLYWHEEL_MAX_LORA_RANK": "16", "FLYWHEEL_ADMIN_KEY": ADMIN_KEY}


def launch(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, Gateway]:
    """Start `flywheel serve --no-trainer` and wait until /ready answers 200."""
    with open(log, "a") as out:
        proc = subprocess.Popen([sys.executable, "-m", "flywheel", "serve", "--no-trainer"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    url = f"http://127.0.0.1:{env['FLYWHEEL_PORT']}"
    deadline = time.time() + READY_TIMEOUT
    while True:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"gateway did not become ready; log tail:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)  # the suite starts about a dozen engines; a coarse poll adds up
    return proc, Gateway(url=url, env=env, model_dir=Path(env["FLYWHEEL_MODEL_PATH"]), log=log, pid=proc.pid)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp("gateway-data")
    proc, gw = launch(gateway_env(data, free_port()), data / "gateway.log")
    try:
        yield gw
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def peft_adapters(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two real PEFT LoRA adapters for the default model, with random non-zero weights (seeds 1 and 2)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folders = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(gateway.model_dir, dtype=torch.float32)
        config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                            task_type="CAUSAL_LM")
        peft_model = get_peft_model(model, config)
        with torch.no_grad():  # strong enough to change a greedy answer, as a trained adapter would
            for name, param in peft_model.named_parameters():
                if "lora_A" in name or "lora_B" in name:
                    param.normal_(0, 0.05 if "lora_A" in name else 0.5)
        folder = tmp_path_factory.mktemp(f"adapter-seed{seed}")
        peft_model.save_pretrained(folder)
        folders.append(folder)
    return folders
