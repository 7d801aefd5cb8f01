"""The evaluation gate: a candidate adapter against production on held-out feedback and general text.

Three checks, scored with transformers on the unquantized base (the engine serves it unquantized too):
preference accuracy (does the candidate widen logp(chosen) - logp(rejected) more than production),
the likelihood of held-out up-rated answers, and perplexity on general English text shipped in
`trainer/data/` (catches forgetting, e.g. the repetition DESIGN.md saw after aggressive SFT).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from trainer.config import GateConfig
from trainer.dataset import HeldOut
from trainer.qlora import load_tokenizer
from trainer.scoring import Scorer

logger = logging.getLogger(__name__)

CANDIDATE, PRODUCTION, BASE = "candidate", "production", "base"


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
        self.model = PeftModel.from_pretrained(base, candidate_dir, adapter_name=CANDIDATE)
        self.has_production = production_dir is not None
        if production_dir is not None:
            self.model.load_adapter(production_dir, adapter_name=PRODUCTION)
        self.model.eval()

    @contextmanager
    def use(self, name: str) -> Iterator[torch.nn.Module]:
        """Run the block on the candidate, on production, or on the bare base when there is no production."""
        if name == BASE or (name == PRODUCTION and not self.has_production):
            with self.model.disable_adapter():
                yield self.model
            return
        self.model.set_adapter(name)
        yield self.model


def _preference(scorer: Scorer, pairs: Sequence[dict]) -> dict[str, list[float]]:
    margins: dict[str, list[float]] = {}
    for name in (CANDIDATE, PRODUCTION):
        chosen = scorer.chat_logps(name, [(p["prompt"], p["chosen"]) for p in pairs])
        rejected = scorer.chat_logps(name, [(p["prompt"], p["rejected"]) for p in pairs])
        margins[name] = [c[0] - r[0] for c, r in zip(chosen, rejected, strict=True)]
    return margins


def _check_preference(scorer: Scorer, held: HeldOut, config: GateConfig, metrics: dict, reasons: list[str]) -> None:
    if not held.pairs:
        metrics["preference_skipped"] = "no held-out pairs"
        return
    m = _preference(scorer, held.pairs)
    wins = [1.0 if c > p else 0.5 if c == p else 0.0 for c, p in zip(m[CANDIDATE], m[PRODUCTION], strict=True)]
    win_rate = sum(wins) / len(wins)
    metrics.update(
        preference_pairs=len(wins),
        preference_win_rate=round(win_rate, 4),
        candidate_preference_accuracy=round(sum(c > 0 for c in m[CANDIDATE]) / len(wins), 4),
        production_preference_accuracy=round(sum(p > 0 for p in m[PRODUCTION]) / len(wins), 4),
        candidate_mean_margin=round(sum(m[CANDIDATE]) / len(wins), 4),
        production_mean_margin=round(sum(m[PRODUCTION]) / len(wins), 4),
    )
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
    for name in (CANDIDATE, PRODUCTION):
        scores = scorer.chat_logps(name, rows)
        mean[name] = sum(s for s, _ in scores) / max(1, sum(n for _, n in scores))
    metrics.update(
        answers=len(rows),
        candidate_answer_loglik=round(mean[CANDIDATE], 4),
        production_answer_loglik=round(mean[PRODUCTION], 4),
    )
    if not math.isfinite(mean[CANDIDATE]) or mean[CANDIDATE] < mean[PRODUCTION] - config.max_loglik_drop:
        reasons.append(
            f"answers: mean log-likelihood of up-rated answers fell from {mean[PRODUCTION]:.3f} to "
            f"{mean[CANDIDATE]:.3f} per token (allowed drop {config.max_loglik_drop})"
        )


def _check_forgetting(scorer: Scorer, config: GateConfig, metrics: dict, reasons: list[str]) -> None:
    """General-text perplexity against production (this step) and against the base (drift over rounds)."""
    texts = general_text(config.general_text_limit)
    ppl = {name: scorer.perplexity(name, texts) for name in (CANDIDATE, PRODUCTION, BASE)}
    metrics.update(
        general_paragraphs=len(texts),
        candidate_ppl=round(ppl[CANDIDATE], 4),
        production_ppl=round(ppl[PRODUCTION], 4),
        base_ppl=round(ppl[BASE], 4),
    )
    limits = {PRODUCTION: ppl[PRODUCTION] * (1 + config.max_ppl_increase)}
    if config.max_ppl_increase_vs_base is not None:  # small steps that each pass can still add up
        limits[BASE] = ppl[BASE] * (1 + config.max_ppl_increase_vs_base)
    for reference, limit in limits.items():
        if not math.isfinite(ppl[CANDIDATE]) or ppl[CANDIDATE] > limit:
            reasons.append(
                f"forgetting: perplexity on general text is {ppl[CANDIDATE]:.2f} against {reference}'s "
                f"{ppl[reference]:.2f} (allowed up to {limit:.2f})"
            )


def evaluate(
    model_path: Path,
    candidate_dir: Path,
    production_dir: Path | None,
    held_out: HeldOut,
    config: GateConfig,
    num_threads: int = 1,
    dtype: torch.dtype = torch.float32,
) -> GateResult:
    """Compare the candidate with production (or the bare base when there is none) and return the verdict.

    `dtype` is the training compute dtype (`trainer.qlora.compute_dtype`), so scoring runs as fast as training.
    """
    models = GateModels(model_path, candidate_dir, production_dir, num_threads, dtype)
    scorer = Scorer(models, config.batch_size, config.max_length)
    metrics: dict = {"compared_with": PRODUCTION if production_dir else "base"}
    reasons: list[str] = []
    with torch.inference_mode():
        _check_preference(scorer, held_out, config, metrics, reasons)
        _check_answers(scorer, held_out, config, metrics, reasons)
        _check_forgetting(scorer, config, metrics, reasons)
    result = GateResult(passed=not reasons, reasons=reasons, metrics=metrics)
    logger.info("gate %s: %s", "passed" if result.passed else "failed", "; ".join(reasons) or metrics)
    return result
