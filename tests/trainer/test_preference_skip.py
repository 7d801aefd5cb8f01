"""The preference stage is skipped when SFT's model already prefers the chosen answers (docs/bench_recipe.md)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from trainer_samples import BRIEF_GATE, assistant, dpo_rows, sft_rows, tiny_data, tiny_gate, user
from transformers import AutoModelForCausalLM, AutoTokenizer

from trainer.config import TrainerSettings
from trainer.dataset import HeldOut, TrainingData
from trainer.job import run_job
from trainer.scoring import OneModel, Scorer, preference_accuracy

pytestmark = pytest.mark.training

PAIRS = [
    {"prompt": user("What colour is the sky on a clear day?"), "chosen": assistant("The sky is blue."),
     "rejected": assistant("Potato potato potato.")},
    {"prompt": user("What is the capital of France?"), "chosen": assistant("The capital of France is Paris."),
     "rejected": assistant("Carburettor seventeen.")},
]
SWAPPED = [{**p, "chosen": p["rejected"], "rejected": p["chosen"]} for p in PAIRS]


def test_preference_accuracy_scores_the_model_it_is_given(model_path) -> None:
    model = AutoModelForCausalLM.from_pretrained(model_path)
    model.train()
    scorer = Scorer(OneModel(model, AutoTokenizer.from_pretrained(model_path)), batch_size=2, max_length=96)

    assert preference_accuracy(scorer, "", PAIRS) == 1.0
    assert preference_accuracy(scorer, "", SWAPPED) == 0.0
    assert model.training  # scored in eval mode, then handed back as it was


def skipping(settings: TrainerSettings, **train: object) -> TrainerSettings:
    lenient = tiny_gate(min_preference_win_rate=0.0, max_loglik_drop=100.0, max_ppl_increase=100.0,
                        max_ppl_increase_vs_base=100.0, max_correctness_drop=1.0, **BRIEF_GATE)
    return replace(settings, gate=lenient, train=replace(settings.train, skip_learned_preference=True, **train))


# Users want a made-up answer the base would never give: the base prefers the true one, and SFT on the
# users' answer teaches it the preference (the held-out pair's chosen answer is the trained completion).
ODD = "Zorblat quing."
ODD_QUESTIONS = ["What is the capital of France?", "What colour is the sky?", "Name a fruit.", "What is 2 + 2?"]
ODD_PAIR = {"prompt": user(ODD_QUESTIONS[0]), "chosen": assistant(ODD),
            "rejected": assistant("The capital of France is Paris.")}


def plan_of(settings: TrainerSettings, run) -> tuple[list[str], list[str]]:
    assert run.status == "succeeded", run.error
    metrics = settings.registry().get_version("support", run.result_version).metrics
    return [s["name"] for s in metrics["stages"]], metrics["plan"]


def test_run_skips_dpo_when_sft_taught_the_preference(trainer_settings: TrainerSettings) -> None:
    settings = skipping(trainer_settings, max_steps=12)
    data = TrainingData.from_rows(
        sft=[{"prompt": user(q), "completion": assistant(ODD)} for q in ODD_QUESTIONS],
        dpo=[{**ODD_PAIR, "prompt": user(q)} for q in ODD_QUESTIONS],
        held_out=HeldOut(pairs=[ODD_PAIR]), feedback_ids=["fb_odd"])

    stages, plan = plan_of(settings, run_job(settings, "support", data))

    assert stages == ["sft"], plan
    assert any(p.startswith("no preference stage: after SFT the model prefers the chosen answer on 100% of 1 ")
               and "(>= " in p and "; 0% before SFT)" in p for p in plan), plan


def test_run_keeps_dpo_when_the_start_model_already_preferred_the_chosen_answers(
        trainer_settings: TrainerSettings) -> None:
    # the held-out pair ("The sky is blue." over "Potato.") is preferred before any training: scores after SFT
    # cannot tell whether SFT taught it, so the preference stage runs (a shortened answer is such a pair too)
    settings = skipping(trainer_settings)
    data = tiny_data(sft=sft_rows(), dpo=dpo_rows())

    stages, plan = plan_of(settings, run_job(settings, "support", data))

    assert stages == ["sft", "dpo"]
    assert any(p.startswith("preference stage kept: before SFT the model already preferred the chosen answer on "
                            "100% of 1") for p in plan), plan
