"""End to end: the gateway's greedy tokens for an adapter equal transformers + PEFT with that adapter merged.

This is the test that Flywheel's LoRA plugin (server/vllm_plugins/lora_ops.py) and any faster op behind it must keep
green: it covers ranks 8 and 64 on all seven projections, so a wrong slice of a packed q/k/v or gate/up layer, a dropped
scaling factor or a rank padding bug changes a token.

Both sides run in float32 (FLYWHEEL_DTYPE=float32). In bfloat16 vLLM and transformers sum the same products in a
different order and round each layer's output to 8 bits of mantissa, so two correct implementations part ways
after a few tokens on a near tie; in float32 they agree on all 16.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Gateway, free_port, gateway_env, launch, stop
from tests.lora_factory import write_lora

pytestmark = pytest.mark.integration
ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a lighthouse,"]
TOKENS = 16
# name -> (rank, seed, scale of A and B): strong enough to change every greedy answer (asserted below).
ADAPTERS = {"parity-r8": (8, 1, 0.05), "parity-r64": (64, 2, 0.02), "parity-r8b": (8, 3, 0.05)}


@pytest.fixture(scope="module")
def parity_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp("parity-data")
    # As many slots as adapters, so the mixed batch fills the last slot too: vLLM's CPU ops gave a request
    # without an adapter the last slot's weights (server/vllm_plugins/lora_ops.py), which a free last slot hid.
    env = {**gateway_env(data, free_port()), "FLYWHEEL_DTYPE": "float32", "FLYWHEEL_MAX_LORA_RANK": "64",
           "FLYWHEEL_MAX_LORAS": str(len(ADAPTERS))}
    proc, gw = launch(env, data / "gateway.log")
    try:
        yield gw
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def adapter_dirs(parity_gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folders = {}
    for name, (rank, seed, scale) in ADAPTERS.items():
        folder = write_lora(tmp_path_factory.mktemp(name), parity_gateway.model_dir, rank=rank,
                            targets=ALL_PROJECTIONS, seed=seed, scale=scale)
        result = parity_gateway.cli("adapters", "register", name, str(folder), "--alias", "production")
        assert result.returncode == 0, result.stdout + result.stderr
        folders[name] = folder
    return folders


def reference_texts(model_dir: Path, adapter: Path | None) -> list[str]:
    """Greedy continuations from transformers, with the adapter merged into the base weights by PEFT."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    texts = []
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = tokenizer(prompt, return_tensors="pt").input_ids
            out = model.generate(ids, max_new_tokens=TOKENS, do_sample=False)
            texts.append(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
    return texts


def gateway_texts(gateway: Gateway, adapter: str | None) -> list[str]:
    client = gateway.client()
    extra = {"adapter": adapter} if adapter else {}
    texts = []
    for prompt in PROMPTS:  # one at a time: the reference decodes each prompt alone too
        r = client.completions.create(model="base", prompt=prompt, max_tokens=TOKENS, temperature=0, extra_body=extra)
        texts.append(r.choices[0].text)
    return texts


@pytest.fixture(scope="module")
def alone(parity_gateway: Gateway, adapter_dirs: dict[str, Path]) -> dict[str | None, list[str]]:
    """The gateway's greedy texts for the base (None) and each adapter, one request in flight at a time."""
    return {name: gateway_texts(parity_gateway, name) for name in [None, *adapter_dirs]}


def test_greedy_tokens_equal_transformers_with_the_adapter_merged(parity_gateway: Gateway,
                                                                   adapter_dirs: dict[str, Path],
                                                                   alone: dict[str | None, list[str]]):
    assert alone[None] == reference_texts(parity_gateway.model_dir, None)
    for name, folder in adapter_dirs.items():
        assert alone[name] == reference_texts(parity_gateway.model_dir, folder), name
        assert alone[name] != alone[None], f"{name} does not change the answers: the comparison would prove nothing"


def test_a_batch_mixing_adapters_answers_as_each_alone(parity_gateway: Gateway, alone: dict[str | None, list[str]]):
    """All adapters and the base in flight at once: one engine step carries several adapters' rows."""
    from concurrent.futures import ThreadPoolExecutor

    names = list(alone)
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        together = dict(zip(names, pool.map(lambda n: gateway_texts(parity_gateway, n), names), strict=True))
    assert together == alone
