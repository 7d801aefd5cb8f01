"""The evaluation gate passes a harmless candidate and rejects a damaged one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file, save_file
from trainer_samples import assistant, held_out, tiny_gate, tiny_lora, tiny_train, user

from trainer.correctness import closed_book
from trainer.dataset import HeldOut
from trainer.gate import evaluate, general_text
from trainer.qlora import load_tokenizer, load_trainable, save_adapter
from trainer.stages import train_sft

pytestmark = pytest.mark.training

# Settings that shrink the checks a test does not assert on, so each test pays for the check it is about:
# one closed-book question of one token and no traffic prompts, or one general-text paragraph.
NO_ANSWERS = {"correctness_questions": 1, "traffic_prompts": 0, "answer_tokens": 1}
ONE_PARAGRAPH = {"general_text_limit": 1}


@pytest.fixture(scope="module")
def fresh_adapter(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained LoRA (B = 0): the candidate behaves exactly like the base."""
    model, _ = load_trainable(model_path, tiny_lora(), tiny_train(load_in_4bit=False))
    return save_adapter(model, tmp_path_factory.mktemp("fresh") / "adapter")


@pytest.fixture(scope="module")
def base_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One base-answer cache for the module: the base's answers are the same in every test (trainer.base_answers)."""
    return tmp_path_factory.mktemp("base-answers")


def damage(adapter: Path, out: Path, scale: float) -> Path:
    """Copy an adapter with large random B weights: a candidate that has forgotten how to write."""
    out.mkdir()
    (out / "adapter_config.json").write_text((adapter / "adapter_config.json").read_text())
    torch.manual_seed(0)
    tensors = {
        k: torch.randn_like(v) * scale if ".lora_B." in k else v
        for k, v in load_file(adapter / "adapter_model.safetensors").items()
    }
    save_file(tensors, out / "adapter_model.safetensors")
    return out


def test_general_text_ships_with_the_package() -> None:
    paragraphs = general_text()
    assert len(paragraphs) >= 40 and all(len(p) > 100 for p in paragraphs)


def test_gate_passes_a_candidate_equal_to_production(model_path: Path, base_cache: Path, fresh_adapter: Path) -> None:
    result = evaluate(model_path, fresh_adapter, fresh_adapter, held_out(), tiny_gate(), cache_dir=base_cache)
    assert result.passed, result.reasons
    assert result.metrics["preference_win_rate"] == 0.5  # ties count half
    assert result.metrics["candidate_ppl"] == pytest.approx(result.metrics["production_ppl"])
    assert result.metrics["closed_book_questions"] == 6
    assert result.metrics["candidate_correctness"] == result.metrics["production_correctness"] > 0


def test_gate_rejects_a_damaged_candidate(model_path: Path, base_cache: Path,
                                          fresh_adapter: Path, tmp_path: Path) -> None:
    damaged = damage(fresh_adapter, tmp_path / "damaged", scale=0.5)
    result = evaluate(model_path, damaged, None, held_out(), tiny_gate(), cache_dir=base_cache)
    assert not result.passed
    assert result.metrics["compared_with"] == "base"
    assert result.metrics["candidate_ppl"] > 2 * result.metrics["production_ppl"]
    assert any(r.startswith("forgetting:") for r in result.reasons)
    assert any(r.startswith("answers:") for r in result.reasons)
    assert result.metrics["candidate_correctness"] < result.metrics["base_correctness"]
    assert any(r.startswith("correctness:") for r in result.reasons)


def test_gate_catches_drift_from_the_base_across_rounds(model_path: Path, base_cache: Path,
                                                        fresh_adapter: Path, tmp_path: Path) -> None:
    # Production has already drifted; a candidate no worse than production still fails against the base.
    drifted = damage(fresh_adapter, tmp_path / "drifted", scale=0.3)
    result = evaluate(model_path, drifted, drifted, held_out(), tiny_gate(**NO_ANSWERS), cache_dir=base_cache)
    assert result.metrics["candidate_ppl"] > 1.1 * result.metrics["base_ppl"], result.metrics
    forgetting = [r for r in result.reasons if r.startswith("forgetting:")]
    assert forgetting == [r for r in forgetting if "against base's" in r] != []
    lenient = evaluate(model_path, drifted, drifted, held_out(), tiny_gate(max_ppl_increase_vs_base=None, **NO_ANSWERS),
                       cache_dir=base_cache)
    assert not any(r.startswith("forgetting:") for r in lenient.reasons)


def test_gate_rejects_fluent_wrong_answers(model_path: Path, base_cache: Path, tmp_path: Path) -> None:
    # The failure perplexity does not see: answers in good English that state the wrong fact.
    questions = closed_book(limit=12)
    rows = [{"prompt": user(q.question), "completion": assistant("I am sure the answer is Monaco.")}
            for q in questions]
    config = tiny_train(load_in_4bit=False, max_steps=8, batch_size=4)
    model, _ = load_trainable(model_path, tiny_lora(), config)
    train_sft(model, load_tokenizer(model_path), Dataset.from_list(rows), config, tmp_path / "out")
    wrong = save_adapter(model, tmp_path / "wrong")

    lenient = tiny_gate(min_preference_win_rate=0, max_loglik_drop=100, max_ppl_increase=10,
                        max_ppl_increase_vs_base=None, **ONE_PARAGRAPH)  # only the correctness check can reject
    result = evaluate(model_path, wrong, None, held_out(), lenient, cache_dir=base_cache)
    assert not result.passed
    assert result.metrics["candidate_correctness"] < result.metrics["base_correctness"], result.metrics
    assert result.reasons and all(r.startswith("correctness:") for r in result.reasons), result.reasons
    assert len(result.metrics["correctness_samples"]["candidate"]) == 3  # the run record shows what it said


def test_gate_without_its_evaluation_set_rejects(model_path: Path, base_cache: Path,
                                                 fresh_adapter: Path, tmp_path: Path) -> None:
    result = evaluate(model_path, fresh_adapter, fresh_adapter, held_out(),
                      tiny_gate(correctness_set=str(tmp_path / "missing.jsonl"), **ONE_PARAGRAPH), cache_dir=base_cache)
    assert not result.passed
    assert any(r.startswith("correctness: cannot score the candidate") and "missing.jsonl" in r
               for r in result.reasons), result.reasons


def test_a_saturated_preference_is_not_judged_on_win_rate(model_path: Path, base_cache: Path,
                                                          fresh_adapter: Path) -> None:
    # Production already prefers "The sky is blue." to "Potato.": a win rate against it says nothing new.
    config = tiny_gate(min_preference_win_rate=1, **NO_ANSWERS, **ONE_PARAGRAPH)
    saturated = evaluate(model_path, fresh_adapter, fresh_adapter, held_out(), config, cache_dir=base_cache)
    assert saturated.metrics["production_preference_accuracy"] == 1.0
    assert saturated.metrics["preference_check"].startswith("saturated:")
    assert not any(r.startswith("preference:") for r in saturated.reasons)
    # Chosen and rejected swapped: production does not prefer the chosen side, so the check applies.
    pair = held_out().pairs[0]
    swapped = HeldOut(pairs=[{**pair, "chosen": pair["rejected"], "rejected": pair["chosen"]}])
    applied = evaluate(model_path, fresh_adapter, fresh_adapter, swapped, config, cache_dir=base_cache)
    assert applied.metrics["preference_check"] == "applied"
    assert any(r.startswith("preference:") for r in applied.reasons)


def test_the_base_answers_are_kept_for_the_next_run(model_path: Path, fresh_adapter: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    config = tiny_gate(answer_tokens=4, **ONE_PARAGRAPH)  # what is cached and reused does not need long answers
    first = evaluate(model_path, fresh_adapter, None, held_out(), config, cache_dir=cache)
    assert not first.metrics["base_answers_cached"]
    assert len(list((cache / "gate_base_answers").glob("*.json"))) == 2  # closed-book and traffic prompts
    again = evaluate(model_path, fresh_adapter, None, held_out(), config, cache_dir=cache)
    assert again.metrics["base_answers_cached"]
    assert again.metrics["base_correctness"] == first.metrics["base_correctness"]
    assert again.metrics["correctness_samples"] == first.metrics["correctness_samples"]
