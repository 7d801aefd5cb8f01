"""Replay rows: the bare base's own greedy answers to prompts no gate check uses, cut to whole sentences."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import Dataset
from trainer_samples import sft_rows, tiny_lora, tiny_train
from transformers import AutoModelForCausalLM

from trainer import correctness, replay
from trainer.base_answers import BaseAnswerCache
from trainer.gate import general_text
from trainer.qlora import compute_dtype, load_tokenizer, load_trainable
from trainer.scoring import OneModel, Scorer


def test_the_prompts_are_in_no_set_the_gate_measures() -> None:
    asked = [p[0]["content"] for p in replay.prompts()]
    assert len(asked) == len(set(asked)) == len(replay.TASKS) * len(replay.SUBJECTS)
    gate_questions = {q.question for q in correctness.closed_book()}
    text = "\n".join(general_text())
    assert not gate_questions & set(asked)
    assert not [a for a in asked if a in text]
    assert len({p.split()[-1] for p in asked[: replay.BLOCK]}) > replay.BLOCK // 2  # a block spans many subjects


@pytest.mark.parametrize(("answer", "kept"), [
    ("Paris is the capital. It is large and old and", "Paris is the capital."),
    ("Drink water! It helps.", "Drink water! It helps."),
    ("no sentence ends here", None),
    ("Yes. Yes. Yes. Yes. Yes. Yes. Yes. Yes.", None),  # a loop teaches looping
    ("", None),
])
def test_answers_are_cut_to_whole_sentences(answer: str, kept: str | None) -> None:
    assert replay.whole_sentences(answer) == kept


def test_a_row_is_the_bare_base_answer_whatever_the_adapter_and_is_generated_once(
        tmp_path: Path, model_path: Path) -> None:
    config = tiny_train()
    model, _ = load_trainable(model_path, tiny_lora(), config)
    with torch.no_grad():  # a LoRA far from identity: its answers would differ from the base's
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.normal_(0, 0.5)
    tokenizer = load_tokenizer(model_path)
    cache = BaseAnswerCache(tmp_path, model_path, {"test": 1}, folder="replay_base_answers")
    rows = replay.replay_rows(model, tokenizer, 3, cache)

    plain = AutoModelForCausalLM.from_pretrained(model_path, dtype=compute_dtype(config))
    block = replay.prompts()[: replay.BLOCK]
    generator = correctness.Generator(Scorer(OneModel(plain, tokenizer), replay.BLOCK, 128), replay.ANSWER_TOKENS)
    expected = [replay.whole_sentences(a) for a in generator.answers("base", block)]
    assert rows == [{"prompt": p, "completion": [{"role": "assistant", "content": a}]}
                    for p, a in zip(block, expected, strict=True) if a is not None][:3]
    assert len(rows) == 3
    assert len(list((tmp_path / "replay_base_answers").glob("*.json"))) == 1  # one block generated, kept
    assert replay.replay_rows(model, tokenizer, 3, BaseAnswerCache(tmp_path, model_path, {"test": 1},
                                                                   folder="replay_base_answers")) == rows


def test_mixing_keeps_every_row_and_its_columns() -> None:
    sft = Dataset.from_list(sft_rows())
    extra = [{"prompt": [{"role": "user", "content": "Hi?"}], "completion": [{"role": "assistant", "content": "Hi."}]}]
    mixed = replay.mix_in(sft, extra, seed=1)
    assert sorted(map(str, mixed.to_list())) == sorted(map(str, [*sft_rows(), *extra]))
    assert replay.mix_in(sft, [], seed=1) is sft
