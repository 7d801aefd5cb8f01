"""Helpers for the trainer tests: the default model path, tiny configs, tiny inline datasets."""

from __future__ import annotations

import os
from pathlib import Path

from trainer.config import GateConfig, LoraRecipe, TrainConfig
from trainer.dataset import HeldOut, TrainingData

REPO = Path(__file__).resolve().parents[2]


def default_model_path() -> Path:
    """FLYWHEEL_TEST_MODEL, or the embedded default prepared under data/models."""
    return Path(os.environ.get("FLYWHEEL_TEST_MODEL", REPO / "data" / "models" / "SmolLM2-135M-Instruct"))


def tiny_train(**overrides: object) -> TrainConfig:
    """A few steps on short sequences: keeps each stage to seconds on 2 shared cores."""
    values = dict(
        max_steps=2,
        batch_size=2,
        grad_accumulation=1,
        max_length=96,
        num_threads=1,
        learning_rate=1e-3,
        warmup=0.0,
        min_pairs_for_dpo=4,
        skip_learned_preference=False,  # every planned stage runs; tests/trainer/test_preference_skip.py turns it on
        replay_fraction=0.0,  # no generation before SFT; tests/trainer/test_replay.py and the job test turn it on
    )
    values.update(overrides)
    return TrainConfig(**values)


def tiny_lora() -> LoraRecipe:
    return LoraRecipe(r=4, alpha=8, max_rank=16)


def tiny_gate(**overrides: object) -> GateConfig:
    values = {"general_text_limit": 6, "max_length": 96, "correctness_questions": 6, "traffic_prompts": 2,
              "answer_tokens": 16}
    return GateConfig(**{**values, **overrides})


# For a test that asserts on a run, not on the gate's measurements: every check still runs, on one
# closed-book question answered in one token, no traffic prompts and one general-text paragraph.
BRIEF_GATE = {"correctness_questions": 1, "traffic_prompts": 0, "answer_tokens": 1, "general_text_limit": 1}


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


QUESTIONS = ["What is the capital of France?", "Name a primary colour.", "What is 2 + 2?", "Say hello."]
GOOD = ["The capital of France is Paris.", "Red is a primary colour.", "2 + 2 equals 4.", "Hello there!"]
BAD = ["I do not know.", "Banana.", "It is 5.", "Go away."]


def sft_rows() -> list[dict]:
    return [{"prompt": user(q), "completion": assistant(a)} for q, a in zip(QUESTIONS, GOOD, strict=True)]


def dpo_rows() -> list[dict]:
    return [
        {"prompt": user(q), "chosen": assistant(g), "rejected": assistant(b)}
        for q, g, b in zip(QUESTIONS, GOOD, BAD, strict=True)
    ]


def kto_rows() -> list[dict]:
    good = [
        {"prompt": user(q), "completion": assistant(a), "label": True} for q, a in zip(QUESTIONS, GOOD, strict=True)
    ]
    bad = [{"prompt": user(q), "completion": assistant(a), "label": False} for q, a in zip(QUESTIONS, BAD, strict=True)]
    return [row for pair in zip(good, bad, strict=True) for row in pair]


def held_out() -> HeldOut:
    return HeldOut(
        pairs=[
            {
                "prompt": user("What colour is the sky?"),
                "chosen": assistant("The sky is blue."),
                "rejected": assistant("Potato."),
            }
        ],
        answers=[{"prompt": user("What colour is grass?"), "completion": assistant("Grass is green.")}],
    )


def tiny_data(**kinds: list[dict]) -> TrainingData:
    return TrainingData.from_rows(**kinds, held_out=held_out(), feedback_ids=[f"fb_{i}" for i in range(6)])
