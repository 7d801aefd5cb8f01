"""The evaluation gate: a candidate adapter against production on held-out feedback and general text.

Four checks, run with transformers on the unquantized base (the engine serves it unquantized too):
preference accuracy (does the candidate widen logp(chosen) - logp(rejected) more than production),
the likelihood of held-out up-rated answers, perplexity on general English text shipped in
`trainer/data/` (forgetting), and the correctness of generated answers: closed-book accuracy and
degenerate answers on held-out traffic (`trainer.correctness`; docs/architecture.md, "The gate").
Likelihoods alone pass a candidate that states wrong facts in the preferred style; the last check does not.
Optionally, a pairwise judge behind an OpenAI-compatible endpoint reads both sides' answers (`trainer.judge`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from trainer import correctness, judge
from trainer.base_answers import BaseAnswerCache
from trainer.config import GateConfig
from trainer.dataset import HeldOut
from trainer.qlora import load_tokenizer
from trainer.scoring import Scorer, preference_margins

logger = logging.getLogger(__name__)


class Side(StrEnum):
    """The sides of the gate's comparison: PEFT adapter names in `GateModels` and the prefixes of metric keys.

    Not registry aliases (`adapters.names.Alias`): SERVING is whatever serves the adapter's name when the run
    starts, and it stands for the bare base when there is no production version yet.
    """

    TRAINED = "candidate"  # the version this run trained
    SERVING = "production"
    BASE = "base"


@dataclass(frozen=True)
class GateResult:
    """The verdict: `passed`, every failed check in `reasons`, and the numbers in `metrics`."""

    passed: bool
    reasons: list[str]
    metrics: dict = field(default_factory=dict)


def general_text(limit: int | None = None) -> list[str]:
    """The paragraphs of the shipped general-text set (forgetting check)."""
    raw = resources.files("trainer").joinpath("data/general_text.txt").read_text(encoding="utf-8")
    paragraphs = [p.strip() for p in raw.split("\n\n") if p.strip()]
    return paragraphs[:limit] if limit else paragraphs


class GateModels:
    """The base with the candidate and (optionally) production adapters loaded, switchable by name."""

    def __init__(self, model_path: Path, candidate_dir: Path, production_dir: Path | None, num_threads: int,
                 dtype: torch.dtype = torch.float32):
        torch.set_num_threads(num_threads)
        self.tokenizer = load_tokenizer(model_path)
        base = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        self.model = PeftModel.from_pretrained(base, candidate_dir, adapter_name=Side.TRAINED)
        self.has_production = production_dir is not None
        if production_dir is not None:
            self.model.load_adapter(production_dir, adapter_name=Side.SERVING)
        self.model.eval()

    @contextmanager
    def use(self, name: str) -> Iterator[torch.nn.Module]:
        """Run the block on the candidate, on production, or on the bare base when there is no production."""
        if name == Side.BASE or (name == Side.SERVING and not self.has_production):
            with self.model.disable_adapter():
                yield self.model
            return
        self.model.set_adapter(name)
        yield self.model


def _check_preference(scorer: Scorer, held: HeldOut, config: GateConfig, metrics: dict, reasons: list[str]) -> None:
    if not held.pairs:
        metrics["preference_skipped"] = "no held-out pairs"
        return
    m = {name: preference_margins(scorer, name, held.pairs) for name in (Side.TRAINED, Side.SERVING)}
    wins = [1.0 if c > p else 0.5 if c == p else 0.0 for c, p in zip(m[Side.TRAINED], m[Side.SERVING], strict=True)]
    win_rate = sum(wins) / len(wins)
    production_accuracy = sum(p > 0 for p in m[Side.SERVING]) / len(wins)
    metrics.update(
        preference_pairs=len(wins),
        preference_win_rate=round(win_rate, 4),
        candidate_preference_accuracy=round(sum(c > 0 for c in m[Side.TRAINED]) / len(wins), 4),
        production_preference_accuracy=round(production_accuracy, 4),
        candidate_mean_margin=round(sum(m[Side.TRAINED]) / len(wins), 4),
        production_mean_margin=round(sum(m[Side.SERVING]) / len(wins), 4),
    )
    if production_accuracy >= config.saturated_preference_accuracy:
        # Production already prefers chosen over rejected on nearly every pair: the candidate can only tie or
        # lose a little, so win rate is noise. Judge it on answers, drift and correctness alone, and say so.
        metrics["preference_check"] = (
            f"saturated: production already prefers the chosen answer on {production_accuracy:.0%} of pairs "
            f"(>= {config.saturated_preference_accuracy:.0%}); judged on answers, forgetting and correctness alone"
        )
        return
    metrics["preference_check"] = "applied"
    if win_rate < config.min_preference_win_rate:
        reasons.append(
            f"preference: candidate beats production's chosen-rejected margin on {win_rate:.0%} of "
            f"{len(wins)} held-out pairs (< {config.min_preference_win_rate:.0%})"
        )


def _check_answers(scorer: Scorer, held: HeldOut, config: GateConfig, metrics: dict, reasons: list[str]) -> None:
    if not held.answers:
        metrics["answers_skipped"] = "no held-out up-rated answers"
        return
    rows = [(a["prompt"], a["completion"]) for a in held.answers]
    mean = {}
    for name in (Side.TRAINED, Side.SERVING):
        scores = scorer.chat_logps(name, rows)
        mean[name] = sum(s for s, _ in scores) / max(1, sum(n for _, n in scores))
    metrics.update(
        answers=len(rows),
        candidate_answer_loglik=round(mean[Side.TRAINED], 4),
        production_answer_loglik=round(mean[Side.SERVING], 4),
    )
    if not math.isfinite(mean[Side.TRAINED]) or mean[Side.TRAINED] < mean[Side.SERVING] - config.max_loglik_drop:
        reasons.append(
            f"answers: mean log-likelihood of up-rated answers fell from {mean[Side.SERVING]:.3f} to "
            f"{mean[Side.TRAINED]:.3f} per token (allowed drop {config.max_loglik_drop})"
        )


def _check_forgetting(scorer: Scorer, config: GateConfig, metrics: dict, reasons: list[str]) -> None:
    """General-text perplexity against production (this step) and against the base (drift over rounds)."""
    texts = general_text(config.general_text_limit)
    ppl = {name: scorer.perplexity(name, texts) for name in (Side.TRAINED, Side.SERVING, Side.BASE)}
    metrics.update(
        general_paragraphs=len(texts),
        candidate_ppl=round(ppl[Side.TRAINED], 4),
        production_ppl=round(ppl[Side.SERVING], 4),
        base_ppl=round(ppl[Side.BASE], 4),
    )
    limits = {Side.SERVING: ppl[Side.SERVING] * (1 + config.max_ppl_increase)}
    if config.max_ppl_increase_vs_base is not None:  # small steps that each pass can still add up
        limits[Side.BASE] = ppl[Side.BASE] * (1 + config.max_ppl_increase_vs_base)
    for reference, limit in limits.items():
        if not math.isfinite(ppl[Side.TRAINED]) or ppl[Side.TRAINED] > limit:
            reasons.append(
                f"forgetting: perplexity on general text is {ppl[Side.TRAINED]:.2f} against {reference}'s "
                f"{ppl[reference]:.2f} (allowed up to {limit:.2f})"
            )


def _traffic_prompts(held: HeldOut, limit: int) -> list[list[dict]]:
    """Distinct held-out prompts from the adapter's own traffic, in feedback order."""
    seen: dict[str, list[dict]] = {}
    for row in [*held.answers, *held.pairs]:
        seen.setdefault(repr(row["prompt"]), row["prompt"])
    return list(seen.values())[:limit]


Replies = tuple[list[list[dict]], list[str], list[str]]  # traffic prompts, the candidate's and production's answers


def _check_correctness(scorer: Scorer, held: HeldOut, config: GateConfig, metrics: dict, reasons: list[str],
                       cache: BaseAnswerCache) -> Replies | None:
    """Closed-book accuracy against production and the base; degenerate answers on held-out traffic.

    The base's answers come from `cache` when an earlier run generated them the same way. Returns the
    traffic answers for the judge (None when the candidate could not be scored).
    """
    try:
        questions = correctness.closed_book(config.correctness_set, config.correctness_questions)
    except correctness.EvalSetError as e:
        reasons.append(f"correctness: cannot score the candidate: {e}")
        return None
    generator = correctness.Generator(scorer, config.answer_tokens)
    prompts = [correctness.question_prompt(q) for q in questions]
    traffic = _traffic_prompts(held, config.traffic_prompts)
    # With no production version yet, the base serves the adapter's name: it stands in for production.
    serving = Side.SERVING if scorer.models.has_production else Side.BASE
    accuracy, broken, samples, cached, replies = {}, {}, {}, [], {}

    def answer(name: str, asked: list[list[dict]]) -> list[str]:
        if name != Side.BASE:
            return generator.answers(name, asked)
        answers, hit = cache.answers(asked, lambda: generator.answers(Side.BASE, asked))
        cached.append(hit)
        return answers

    for name in dict.fromkeys((Side.TRAINED, serving, Side.BASE)):
        answers = answer(name, prompts)
        accuracy[name] = correctness.accuracy(answers, questions)
        samples[name] = [{"question": q.question, "answer": a} for q, a in zip(questions[:3], answers, strict=False)]
        if name != Side.BASE or serving == Side.BASE:
            replies[name] = answer(name, traffic)
            broken[name] = correctness.degenerate_share(replies[name])
    accuracy[Side.SERVING], broken[Side.SERVING] = accuracy[serving], broken[serving]
    metrics.update(
        closed_book_questions=len(questions),
        candidate_correctness=round(accuracy[Side.TRAINED], 4),
        production_correctness=round(accuracy[Side.SERVING], 4),
        base_correctness=round(accuracy[Side.BASE], 4),
        traffic_prompts=len(traffic),
        candidate_degenerate=round(broken[Side.TRAINED], 4),
        production_degenerate=round(broken[Side.SERVING], 4),
        correctness_samples=samples,
        base_answers_cached=all(cached),
    )
    for reference in (Side.SERVING, Side.BASE):
        if accuracy[Side.TRAINED] < accuracy[reference] - config.max_correctness_drop:
            reasons.append(
                f"correctness: {accuracy[Side.TRAINED]:.1%} of {len(questions)} closed-book questions answered right "
                f"against {reference}'s {accuracy[reference]:.1%} (allowed drop {config.max_correctness_drop:.1%})"
            )
    if traffic and broken[Side.TRAINED] > broken[Side.SERVING] + config.max_degenerate_increase:
        reasons.append(
            f"correctness: {broken[Side.TRAINED]:.0%} of answers to {len(traffic)} held-out prompts are empty or "
            f"loop, against production's {broken[Side.SERVING]:.0%} (allowed increase "
            f"{config.max_degenerate_increase:.0%})"
        )
    return traffic, replies[Side.TRAINED], replies[serving]


def _check_judge(config: GateConfig, replies: Replies | None, metrics: dict, reasons: list[str]) -> None:
    """The optional pairwise judge's win rate of the candidate over production on held-out traffic."""
    if replies is None or not replies[0]:
        metrics["judge_skipped"] = "no held-out traffic prompts" if replies else "no answers to judge"
        return
    traffic, candidate, production = replies
    asked = ["\n".join(f"{m['role']}: {m['content']}" for m in prompt) for prompt in traffic]
    try:
        verdict = judge.judge(config.judge_url, config.judge_model, config.judge_api_key, asked, candidate, production)
    except judge.JudgeUnavailable as e:
        reasons.append(f"judge: cannot score the candidate at {config.judge_url}: {e}")
        return
    metrics.update(judge_model=config.judge_model, judge_win_rate=round(verdict.win_rate, 4),
                   judge_wins=verdict.wins, judge_losses=verdict.losses, judge_unparsed=verdict.unparsed,
                   judge_samples=verdict.samples)
    if verdict.win_rate < config.min_judge_win_rate:
        reasons.append(f"judge: {config.judge_model} picked the candidate in {verdict.win_rate:.0%} of "
                       f"{verdict.wins + verdict.losses} verdicts on {len(traffic)} held-out prompts "
                       f"(< {config.min_judge_win_rate:.0%})")


def evaluate(
    model_path: Path,
    candidate_dir: Path,
    production_dir: Path | None,
    held_out: HeldOut,
    config: GateConfig,
    num_threads: int = 1,
    dtype: torch.dtype = torch.float32,
    cache_dir: Path | None = None,
) -> GateResult:
    """Compare the candidate with production (or the bare base when there is none) and return the verdict.

    `dtype` is the training compute dtype (`trainer.qlora.compute_dtype`), so scoring runs as fast as training.
    `cache_dir` keeps the base model's answers between runs (`trainer.base_answers`); None: no cache.
    """
    models = GateModels(model_path, candidate_dir, production_dir, num_threads, dtype)
    scorer = Scorer(models, config.batch_size, config.max_length)
    metrics: dict = {"compared_with": Side.SERVING if production_dir else Side.BASE}
    reasons: list[str] = []
    with torch.inference_mode():
        _check_preference(scorer, held_out, config, metrics, reasons)
        _check_answers(scorer, held_out, config, metrics, reasons)
        _check_forgetting(scorer, config, metrics, reasons)
        generation = {"dtype": str(dtype), "answer_tokens": config.answer_tokens, "batch_size": config.batch_size,
                      "max_length": config.max_length}
        cache = BaseAnswerCache(cache_dir, model_path, generation)
        replies = _check_correctness(scorer, held_out, config, metrics, reasons, cache)
    if config.judge_url:
        _check_judge(config, replies, metrics, reasons)
    result = GateResult(passed=not reasons, reasons=reasons, metrics=metrics)
    logger.info("gate %s: %s", "passed" if result.passed else "failed", "; ".join(reasons) or metrics)
    return result
