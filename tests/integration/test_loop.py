"""The whole loop on the real stack: chat -> feedback -> `flywheel train` (QLoRA) -> gate -> auto-promote -> served."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench.lora import identity_adapter
from tests.integration.conftest import Gateway
from trainer.correctness import closed_book, is_correct

pytestmark = [pytest.mark.integration, pytest.mark.training]
QUESTIONS = ["Name a fruit.", "What colour is the sky?", "Say hello politely.", "What is 3 + 4?",
             "Name an animal that swims.", "What is the opposite of hot?", "Name a month of the year.",
             "What do bees make?", "Name a planet.", "What is frozen water called?", "Name a colour.",
             "What do cows drink?"]
HELD_OUT = ["Name a vegetable.", "What colour is grass?", "What is 2 + 5?", "Name a bird."]
PREFIX = "Answer:"  # the users' preference: every answer starts with it


def at_once(call, items: list) -> list:
    """`call` on every item concurrently, as many users would (the engine batches them)."""
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(call, items))


def served(client, prompts: list[str]) -> list[str]:
    """Production's greedy answers, as users get them."""
    return at_once(lambda p: client.chat.completions.create(
        model="loop", messages=[{"role": "user", "content": p}], max_tokens=24, temperature=0,
    ).choices[0].message.content, prompts)


def answers_and_right(client, questions) -> tuple[list[str], int]:
    """Production's answers to the held-out prompts, and how many closed-book questions it gets right."""
    answers = served(client, HELD_OUT + [q.question for q in questions])
    held_out, closed = answers[:len(HELD_OUT)], answers[len(HELD_OUT):]
    return held_out, sum(is_correct(a, q.answers) for a, q in zip(closed, questions, strict=True))


def test_feedback_trains_a_version_that_the_gateway_serves(gateway: Gateway, tmp_path: Path):
    # Real feedback on a simple preference through the gateway, one real training run, and the served
    # answers move toward the preference while closed-book answers stay right.
    v1 = identity_adapter(gateway.model_dir, tmp_path / "v1", rank=8, targets=("q_proj", "k_proj", "v_proj", "o_proj"))
    assert gateway.cli("adapters", "register", "loop", str(v1), "--alias", "production").returncode == 0
    client, http = gateway.client(), gateway.http()
    time.sleep(1)
    questions = closed_book(limit=8)
    before, right_before = answers_and_right(client, questions)
    answered = at_once(lambda i: client.chat.completions.create(
        model="loop", messages=[{"role": "user", "content": QUESTIONS[i]}], max_tokens=24, temperature=1.0, n=2,
        user=f"user{i % 3}"), list(range(len(QUESTIONS))))
    for i, r in enumerate(answered):
        assert r.adapter == "loop@1"
        for choice in r.choices:
            answer = choice.message.content
            up = answer.startswith(PREFIX)
            rating = {"completion_id": r.id, "choice_index": choice.index, "rating": "up" if up else "down",
                      "user": f"user{i % 3}", "correction": None if up else f"{PREFIX} {answer.strip()}"}
            fb = http.post("/v1/feedback", json=rating)
            assert fb.status_code == 201, fb.text

    env = {"FLYWHEEL_GATE_MIN_PREFERENCE_WIN_RATE": "0", "FLYWHEEL_GATE_MAX_LOGLIK_DROP": "100",
           "FLYWHEEL_GATE_MAX_PPL_INCREASE": "100", "FLYWHEEL_GATE_MAX_PPL_INCREASE_VS_BASE": "100",
           "FLYWHEEL_GATE_MAX_CORRECTNESS_DROP": "1", "FLYWHEEL_GATE_CORRECTNESS_QUESTIONS": "4",
           "FLYWHEEL_TRAIN_MIN_PAIRS_FOR_DPO": "4",
           "FLYWHEEL_TRAIN_BATCH_SIZE": "4", "FLYWHEEL_TRAIN_GRAD_ACCUMULATION": "1", "FLYWHEEL_TRAIN_LORA_RANK": "8",
           "FLYWHEEL_TRAIN_LEARNING_RATE": "1e-3"}  # few steps must move it: a test, not the recipe
    gateway.env.update(env)
    try:
        trained = gateway.cli("train", "--adapter", "loop", "--max-steps", "10", "--threads", "1",
                              "--promotion", "auto", timeout=600)
    finally:
        for key in env:
            gateway.env.pop(key)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]

    runs = http.get("/admin/training/runs", params={"adapter": "loop"}).json()
    assert runs[0]["status"] == "succeeded" and runs[0]["result_version"] == 2, (runs[0]["error"], runs[0])
    version = next(v for v in http.get("/admin/adapters/loop").json()["versions"] if v["version"] == 2)
    assert version["source"] == "trained" and version["parent_version"] == 1
    assert version["metrics"]["dataset_hash"] and "production" in version["aliases"]
    deadline = time.time() + 5
    while client.chat.completions.create(model="loop", messages=[{"role": "user", "content": "Hi"}],
                                         max_tokens=2).adapter != "loop@2":
        assert time.time() < deadline, "the promoted trained version did not reach the gateway"
        time.sleep(0.1)

    after, right_after = answers_and_right(client, questions)
    prefixed = [sum(a.startswith(PREFIX) for a in answers) for answers in (before, after)]
    assert prefixed[1] > prefixed[0] and prefixed[1] >= len(HELD_OUT) // 2, (before, after)
    assert right_after >= right_before - 1, (right_before, right_after)  # one question of slack on 8
