"""Replay against forgetting: the base model's own answers to general prompts, mixed into a run's SFT rows.

SFT on one adapter's feedback teaches what its users want, and with it whatever else those rows carry: the
sampled answers' errors, one length, one tone. Mixing in rows where the base answers general requests its
own way (greedy) keeps the model close to what it did well before, on everything the feedback does not
cover (docs/architecture.md, "The gate"). `TrainConfig.replay_fraction` sets how many: a share of the SFT
rows, at most the prompts shipped here.

The prompts are written for this purpose (tasks x everyday subjects) and are in neither the gate's
closed-book set nor its general text, so the gate still measures forgetting on data no run trained on.
Answers are generated in fixed blocks of prompts and kept with `BaseAnswerCache`, so a run generates only
the blocks it needs that no earlier run did.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from datasets import Dataset, concatenate_datasets

from trainer.base_answers import BaseAnswerCache
from trainer.correctness import Generator, degenerate
from trainer.scoring import OneModel, Scorer

TASKS = (
    "Explain {} in simple terms.",
    "What are the main benefits of {}?",
    "Give three practical tips about {}.",
    "Write a short paragraph about {}.",
    "What should a beginner know about {}?",
    "What are common mistakes people make with {}?",
    "Why do people care about {}?",
    "Summarize the key facts about {}.",
)
SUBJECTS = (
    "learning a new language", "saving money", "growing tomatoes", "public speaking", "regular exercise",
    "cooking rice", "writing a resume", "recycling", "time management", "solar panels", "riding a bicycle",
    "the water cycle", "vaccines", "public libraries", "writing emails", "composting", "running a meeting",
    "reading to children", "drinking enough water", "camping", "keeping a journal", "houseplants",
    "backing up files", "first aid",
)
BLOCK = 8  # prompts generated (and cached) together; a run generates whole blocks
ANSWER_TOKENS = 64
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def prompts() -> list[list[dict]]:
    """Every replay prompt as a chat, in a fixed shuffled order so any first N cover many subjects and tasks."""
    texts = [task.format(subject) for subject in SUBJECTS for task in TASKS]
    random.Random(0).shuffle(texts)
    return [[{"role": "user", "content": text}] for text in texts]


def whole_sentences(answer: str) -> str | None:
    """The answer cut after its last full sentence (a cut-off answer would teach stopping mid-sentence)."""
    ends = [m.end() for m in _SENTENCE_END.finditer(answer)]
    kept = answer[: ends[-1]].strip() if ends else ""
    return kept if kept and degenerate(kept) is None else None


class _Base:
    """The `GateModels` face of a trainable PEFT model with its adapter switched off: the bare base."""

    def __init__(self, model: torch.nn.Module, tokenizer):
        self.inner = OneModel(model, tokenizer)
        self.tokenizer = tokenizer

    @contextmanager
    def use(self, name: str) -> Iterator[torch.nn.Module]:
        with self.inner.use(name) as model, model.disable_adapter():
            yield model


def replay_rows(model: torch.nn.Module, tokenizer, wanted: int, cache: BaseAnswerCache) -> list[dict]:
    """Up to `wanted` SFT rows of the base's greedy answers to the replay prompts (fewer when some are unusable)."""
    asked = prompts()[: math.ceil(min(wanted, len(SUBJECTS) * len(TASKS)) / BLOCK) * BLOCK]
    generator = Generator(Scorer(_Base(model, tokenizer), batch_size=BLOCK, max_length=128), ANSWER_TOKENS)
    rows: list[dict] = []
    for start in range(0, len(asked), BLOCK):
        block = asked[start : start + BLOCK]
        answers, _ = cache.answers(block, lambda block=block: generator.answers("base", block))
        for prompt, answer in zip(block, answers, strict=True):
            kept = whole_sentences(answer)
            if kept is not None:
                rows.append({"prompt": prompt, "completion": [{"role": "assistant", "content": kept}]})
    return rows[:wanted]


def mix_in(sft: Dataset, rows: Sequence[dict], seed: int) -> Dataset:
    """The SFT set with the replay rows added, shuffled together (seeded, so a run is reproducible)."""
    if not rows:
        return sft
    extra = Dataset.from_list(list(rows)).cast(sft.features) if len(sft) else Dataset.from_list(list(rows))
    return concatenate_datasets([sft, extra]).shuffle(seed=seed)


def with_replay(
    sft: Dataset, model: torch.nn.Module, tokenizer, fraction: float, seed: int, cache_dir: Path | None,
    model_path: Path, quantized: bool,
) -> tuple[Dataset, str]:
    """The SFT set with `fraction` x its rows of base answers mixed in, and the plan's note saying how many."""
    wanted = math.ceil(fraction * len(sft))
    if wanted == 0:
        return sft, "no replay rows (replay_fraction 0)"
    generation = {"purpose": "replay", "dtype": str(model.dtype), "quantized": quantized,
                  "answer_tokens": ANSWER_TOKENS, "batch_size": BLOCK}
    cache = BaseAnswerCache(cache_dir, model_path, generation, folder="replay_base_answers")
    rows = replay_rows(model, tokenizer, wanted, cache)
    note = (f"replay: {len(rows)} rows of the base model's own answers to general prompts mixed into "
            f"{len(sft)} sft rows (replay_fraction {fraction:g})")
    return mix_in(sft, rows, seed), note
