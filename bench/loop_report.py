"""The loop benchmark's results: bench_loop_<preference>_seed<N>[_noise20].json (every number), .md (tables)
and .png (plot), one set per run.

matplotlib is not in the project's environment, so the plot is drawn with Pillow, which vLLM pulls in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench.hardware import Hardware
from bench.loop_users import PREFERENCES
from bench.report import markdown_table, write

if TYPE_CHECKING:
    from bench.loop import LoopConfig

@dataclass
class RoundResult:
    """One round: what was collected, how training went, and held-out satisfaction of production after it."""

    round: int
    served: str  # the adapter version production answered with on the held-out prompts
    satisfied: float  # held-out share meeting the hidden preference
    heldout_answers: int
    correctness: float | None = None  # share of the closed-book questions production answered right (greedy)
    questions: int = 0
    degenerate: float | None = None  # share of the held-out answers that are empty or loop
    ratings: int = 0
    ratings_up: int = 0
    corrections: int = 0
    noisy: int = 0  # ratings flipped or corrections made wrong or sloppy by the noise
    rated_satisfied: float | None = None  # share of the rated (training-prompt) answers that were satisfying
    run_status: str | None = None
    gate_passed: bool | None = None
    gate_reasons: list[str] = field(default_factory=list)
    feedback_used: int | None = None
    candidate_ppl: float | None = None
    candidate_correctness: float | None = None  # the gate's closed-book accuracy of the candidate
    production_ppl: float | None = None
    ppl_change_vs_base: float | None = None  # production's general perplexity after the round vs the base's
    stages: list[dict] = field(default_factory=list)
    rate_s: float | None = None
    train_s: float | None = None
    eval_s: float | None = None
    wall_s: float | None = None
    sample: str = ""


STEM = "bench_loop"


def stem(config: LoopConfig) -> str:
    """bench_loop_<preference>_seed<N>, with _noise20 for a run with 20% noise: one page per published run."""
    return f"{STEM}_{config.preference}_seed{config.seed}" + (f"_noise{round(config.noise * 100)}" if config.noise
                                                               else "")


MAX_ROUNDS = 3  # the target must be met within 3 rounds
MAX_PPL_INCREASE = 0.10
MAX_CORRECTNESS_DROP = 0.02  # every round: closed-book correctness >= the base's minus 2 points


def targets(config: LoopConfig, rounds: list[RoundResult]) -> dict:
    """>= 80% (>= 70% with 20% noise) within 3 rounds; in every round correctness and perplexity hold.

    The worst round is the trained round with the lowest correctness (ties: the highest perplexity).
    """
    threshold = 0.7 if config.noise >= 0.2 else 0.8
    hit = next((r for r in rounds[1:MAX_ROUNDS + 1] if r.satisfied >= threshold), None)
    base_correct = rounds[0].correctness if rounds else None
    trained = rounds[1:]
    worst = min(trained, key=lambda r: (r.correctness or 0.0, -(r.ppl_change_vs_base or 0.0)), default=None)
    held = all((base_correct is None or (r.correctness or 0.0) >= base_correct - MAX_CORRECTNESS_DROP)
               and (r.ppl_change_vs_base or 0.0) <= MAX_PPL_INCREASE for r in trained)
    return {"threshold": threshold, "base_rate": rounds[0].satisfied if rounds else None,
            "best": max((r.satisfied for r in trained), default=None),
            "reached_in_round": hit.round if hit else None,
            "base_correctness": base_correct,
            "worst_round": worst.round if worst else None,
            "worst_correctness": worst.correctness if worst else None,
            "worst_ppl_change": worst.ppl_change_vs_base if worst else None,
            "quality_held": held,
            "met": bool(hit and held)}


def table_rows(rounds: list[RoundResult]) -> list[list[object]]:
    """One row per round, for the markdown and the console tables."""
    return [[r.round, r.served, f"{r.satisfied:.1%}", _pct(r.correctness), _pct(r.degenerate), r.ratings or "-",
             r.ratings_up if r.ratings else "-", r.corrections if r.ratings else "-", r.noisy if r.ratings else "-",
             r.feedback_used, r.run_status or "-", r.candidate_ppl, r.production_ppl,
             f"{r.ppl_change_vs_base:+.1%}" if r.ppl_change_vs_base is not None else "-",
             r.rate_s, r.train_s, r.eval_s, r.wall_s] for r in rounds]


HEADERS = ["round", "served", "held-out satisfied", "correct", "degenerate", "ratings", "up", "corrections",
           "noisy", "feedback used", "run", "candidate ppl", "production ppl (gate)", "production ppl vs base",
           "rating s", "train s", "measure s", "round wall s"]


def markdown(config: LoopConfig, hardware: Hardware, rounds: list[RoundResult], verdict: dict, total_s: float) -> str:
    """The human-readable report."""
    pref = PREFERENCES[config.preference]
    met = "**met**" if verdict["met"] else "**not met**"
    from trainer.config import GateConfig, LoraRecipe, TrainConfig

    lora, train, gate = LoraRecipe(), TrainConfig(), GateConfig()
    steps = (f"**smoke run: {config.smoke_steps} steps per stage, not the recipe**" if config.smoke_steps
             else "no step cap")
    gates = [f"- round {r.round}: {'; '.join(r.gate_reasons)}" for r in rounds if r.gate_reasons]
    stages = [f"- round {r.round}: " + ", ".join(f"{s['name']} {s['steps']} steps on {s['examples']} rows "
                                                 f"in {s['seconds']:.0f}s (loss {s['train_loss']:.3f})"
                                                 for s in r.stages) for r in rounds if r.stages]
    samples = [f"- round {r.round} ({r.served}): {r.sample!r}" for r in rounds]
    return "\n".join([
        "# Loop benchmark: does feedback teach the adapter what users want?", "",
        f"Simulated users ({config.users}) hide one preference, **{pref.name}** ({pref.description}), rate every "
        f"answer up or down by it and send the fixed answer as a correction on {config.corrections:.0%} of down "
        f"ratings. Noise {config.noise:.0%}: that share of ratings is flipped and, independently, of corrections "
        "made wrong (the fix of another question's answer) or sloppy (half the answer, unfixed). Each round: "
        f"{config.ratings_per_round} rated answers on training prompts through the gateway, one "
        "`flywheel train --promotion auto` run on the trainer's defaults, then production is measured: held-out "
        f"satisfaction ({rounds[0].heldout_answers if rounds else 0} held-out prompts, temperature "
        f"{config.temperature}, max_tokens {config.max_tokens}, {config.concurrency} concurrent), closed-book "
        f"correctness ({rounds[0].questions if rounds else 0} questions of the gate's set, greedy) and the share "
        f"of degenerate (empty or looping) held-out answers. Users' seed {config.seed}.", "",
        "Reproduce: `flywheel bench loop` (this run: " + _command(config) + ").", "",
        markdown_table(HEADERS, table_rows(rounds)), "",
        f"Target: from the base rate to >= {verdict['threshold']:.0%} within {MAX_ROUNDS} rounds of at most 300 "
        f"ratings, and in every round closed-book correctness at least the base's minus "
        f"{MAX_CORRECTNESS_DROP * 100:.0f} points and general perplexity at most +{MAX_PPL_INCREASE:.0%}: {met} "
        f"(base rate {_pct(verdict['base_rate'])}, best {_pct(verdict['best'])}, reached in round "
        f"{verdict['reached_in_round'] or '-'}; base correctness {_pct(verdict['base_correctness'])}, worst round "
        f"{verdict['worst_round'] if verdict['worst_round'] is not None else '-'} at "
        f"{_pct(verdict['worst_correctness'])} correct, perplexity "
        f"{_signed(verdict['worst_ppl_change'])} vs the base). Total wall time {total_s / 60:.1f} min.", "",
        "## Recipe: the trainer's defaults", "",
        f"SFT (loss on the completion only) then the preference stage the trainer picks (DPO on correction "
        f"pairs, KTO on ratings alone), r={lora.r} alpha={lora.alpha:g} on {len(lora.target_modules)} "
        f"projections (continued from production each round), lr {train.learning_rate}, {train.epochs:g} epochs, "
        f"batch {train.batch_size} x {train.grad_accumulation} accumulation, DPO beta {train.dpo_beta} "
        f"with an SFT term of weight {train.dpo_sft_weight}, "
        f"4-bit base {train.load_in_4bit}, {steps}; default gate (preference win rate >= "
        f"{gate.min_preference_win_rate:.0%}, perplexity <= +{gate.max_ppl_increase:.0%}, closed-book correctness "
        f"at most {gate.max_correctness_drop * 100:.0f} points below production and the base).", "",
        *stages, "", "## Gate reasons", "", *(gates or ["- none: every candidate passed"]), "",
        "## One held-out answer per round", "", *samples, "",
        "## Hardware", "", hardware.markdown(), "",
        "Perplexity is the gate's: general English text shipped in `trainer/data/general_text.txt`; the base's "
        "is production's in round 1 (v1 is an identity adapter).",
    ])


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1%}"


def _command(config: LoopConfig) -> str:
    parts = [f"--preference {config.preference}", f"--seed {config.seed}", f"--rounds {config.rounds}",
             f"--ratings-per-round {config.ratings_per_round}", f"--noise {config.noise}"]
    if config.smoke_steps:
        parts.append("--quick")
    if config.heldout:
        parts.append(f"--heldout {config.heldout}")
    if config.questions:
        parts.append(f"--questions {config.questions}")
    return "`flywheel bench loop " + " ".join(parts) + "`"


def plot(path: Path, rounds: list[RoundResult], total_rounds: int, threshold: float, title: str) -> Path:
    """Satisfaction (held-out, production) against round, with the target line, as a PNG."""
    from PIL import Image, ImageDraw, ImageFont

    width, height, left, right, top, bottom = 720, 440, 70, 30, 50, 60
    img = Image.new("RGB", (width, height), "white")
    draw, font = ImageDraw.Draw(img), ImageFont.load_default(size=14)
    n = max(1, total_rounds)  # the full x axis from the start, so a partial run reads as one

    def xy(i: int, share: float) -> tuple[float, float]:
        return left + i * (width - left - right) / n, top + (1 - share) * (height - top - bottom)

    for tick in range(0, 101, 20):  # y grid and labels
        _, y = xy(0, tick / 100)
        draw.line([(left, y), (width - right, y)], fill="#e5e5e5")
        draw.text((left - 10, y), f"{tick}%", fill="black", font=font, anchor="rm")
    for i in range(n + 1):
        x, _ = xy(i, 0)
        draw.text((x, height - bottom + 12), str(i), fill="black", font=font, anchor="mt")
    _, ty = xy(0, threshold)
    for x in range(left, width - right, 12):  # dashed target line
        draw.line([(x, ty), (min(x + 6, width - right), ty)], fill="#d62728", width=2)
    draw.text((width - right, ty - 4), f"target {threshold:.0%}", fill="#d62728", font=font, anchor="rb")
    points = [xy(i, r.satisfied) for i, r in enumerate(rounds)]
    if len(points) > 1:
        draw.line(points, fill="#1f77b4", width=3)
    for (x, y), r in zip(points, rounds, strict=True):
        draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill="#1f77b4")
        draw.text((x, y - 10), f"{r.satisfied:.0%}", fill="black", font=font, anchor="mb")
    draw.line([(left, top), (left, height - bottom), (width - right, height - bottom)], fill="black", width=1)
    draw.text((width / 2, height - 18), "round (0 = base rate)", fill="black", font=font, anchor="mm")
    draw.text((width / 2, 20), title, fill="black", font=font, anchor="mm")
    img.save(path)
    return path


def write_report(config: LoopConfig, hardware: Hardware, rounds: list[RoundResult], base_ppl: float | None,
                 total_s: float, work: Path) -> dict:
    """Write the JSON, markdown and PNG under `config.out_dir`; returns the JSON data plus the file paths."""
    verdict = targets(config, rounds)
    data = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
            "hardware": hardware.as_dict(), "base_ppl": base_ppl, "rounds": [asdict(r) for r in rounds],
            "targets": verdict, "total_s": total_s, "work_dir": str(work)}
    files = list(write(config.out_dir, stem(config), data, markdown(config, hardware, rounds, verdict, total_s)))
    title = f"held-out answers meeting '{config.preference}' (noise {config.noise:.0%})"
    files.append(plot(config.out_dir / f"{stem(config)}.png", rounds, config.rounds, verdict["threshold"], title))
    return {**data, "files": [str(f) for f in files]}
