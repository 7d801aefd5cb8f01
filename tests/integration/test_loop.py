"""The whole loop on the real stack: chat -> feedback -> `flywheel train` (QLoRA) -> gate -> auto-promote -> served."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.lora import identity_adapter
from tests.integration.conftest import Gateway

pytestmark = [pytest.mark.integration, pytest.mark.training]
QUESTIONS = ["Name a fruit.", "What colour is the sky?", "Say hello politely.", "What is 3 + 4?",
             "Name an animal that swims.", "What is the opposite of hot?", "Name a month of the year.",
             "What do bees make?", "Name a planet.", "What is frozen water called?"]


def test_feedback_trains_a_version_that_the_gateway_serves(gateway: Gateway, tmp_path: Path):
    v1 = identity_adapter(gateway.model_dir, tmp_path / "v1", rank=8, targets=("q_proj", "k_proj", "v_proj", "o_proj"))
    assert gateway.cli("adapters", "register", "loop", str(v1), "--alias", "production").returncode == 0
    client, http = gateway.client(), gateway.http()
    time.sleep(1)
    for i, question in enumerate(QUESTIONS):
        r = client.chat.completions.create(model="loop", messages=[{"role": "user", "content": question}],
                                           max_tokens=24, temperature=1.0, n=2, user=f"user{i % 3}")
        assert r.adapter == "loop@1"
        fb = http.post("/v1/feedback", json={"completion_id": r.id, "rating": "up", "user": f"user{i % 3}",
                                             "correction": f"Short answer {i}."})
        assert fb.status_code == 201, fb.text
        http.post("/v1/feedback", json={"completion_id": r.id, "rating": "down", "choice_index": 1})
        if r.choices[0].message.content != r.choices[1].message.content:
            pair = http.post("/v1/feedback/pairs", json={"chosen_completion_id": r.id, "rejected_completion_id": r.id,
                                                         "rejected_choice_index": 1})
            assert pair.status_code == 201, pair.text

    env = {"FLYWHEEL_GATE_MIN_PREFERENCE_WIN_RATE": "0", "FLYWHEEL_GATE_MAX_LOGLIK_DROP": "100",
           "FLYWHEEL_GATE_MAX_PPL_INCREASE": "100", "FLYWHEEL_GATE_MAX_PPL_INCREASE_VS_BASE": "100",
           "FLYWHEEL_GATE_MAX_CORRECTNESS_DROP": "1", "FLYWHEEL_GATE_CORRECTNESS_QUESTIONS": "4",
           "FLYWHEEL_TRAIN_MIN_PAIRS_FOR_DPO": "4",
           "FLYWHEEL_TRAIN_BATCH_SIZE": "2", "FLYWHEEL_TRAIN_GRAD_ACCUMULATION": "1", "FLYWHEEL_TRAIN_LORA_RANK": "8"}
    gateway.env.update(env)
    try:
        trained = gateway.cli("train", "--adapter", "loop", "--max-steps", "2", "--threads", "1",
                              "--promotion", "auto", timeout=600)
    finally:
        for key in env:
            gateway.env.pop(key)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]

    runs = http.get("/admin/training/runs", params={"adapter": "loop"}).json()
    assert runs[0]["status"] == "succeeded" and runs[0]["result_version"] == 2, runs[0]
    version = next(v for v in http.get("/admin/adapters/loop").json()["versions"] if v["version"] == 2)
    assert version["source"] == "trained" and version["parent_version"] == 1
    assert version["metrics"]["dataset_hash"] and "production" in version["aliases"]
    deadline = time.time() + 5
    while client.chat.completions.create(model="loop", messages=[{"role": "user", "content": "Hi"}],
                                         max_tokens=2).adapter != "loop@2":
        assert time.time() < deadline, "the promoted trained version did not reach the gateway"
        time.sleep(0.1)
