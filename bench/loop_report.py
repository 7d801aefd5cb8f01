"""The loop benchmark's results: bench_loop.json (every number), bench_loop.md (tables), bench_loop.png (plot);
`bench_loop_noise20.*` for a run with `--noise 0.2`.

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
    ratings: int = 0
    ratings_up: int = 0
    corrections: int = 0
    rated_satisfied: float | None = None  # share of the rated (training-prompt) answers that were satisfying
    run_status: str | None = None
    gate_passed: bool | None = None
    gate_reasons: list[str] = field(default_factory=list)
    feedback_used: int | None = None
    candidate_ppl: float | None = None
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
    """bench_loop, or bench_loop_noise20 for a run with 20% of ratings flipped (both results are published)."""
    return STEM + (f"_noise{round(config.noise * 100)}" if config.noise else "")
MAX_ROUNDS = 3  # issue 5: the target must be met within 3 rounds
MAX_PPL_INCREASE = 0.10


def targets(config: LoopConfig, rounds: list[RoundResult]) -> dict:
    """Issue 5's targets: >= 80% (>= 70% with 20% noise) within 3 rounds, general perplexity <= +10%."""
    threshold = 0.7 if config.noise >= 0.2 else 0.8
    hit = next((r for r in rounds[1:MAX_ROUNDS + 1] if r.satisfied >= threshold), None)
    ppl_ok = hit is not None and (hit.ppl_change_vs_base or 0.0) <= MAX_PPL_INCREASE
    return {"threshold": threshold, "base_rate": rounds[0].satisfied if rounds else None,
            "best": max((r.satisfied for r in rounds[1:]), default=None),
            "reached_in_round": hit.round if hit else None,
            "ppl_change_at_that_round": hit.ppl_change_vs_base if hit else None,
            "met": bool(hit and ppl_ok)}


def table_rows(rounds: list[RoundResult]) -> list[list[object]]:
    """One row per round, for the markdown and the console tables."""
    return [[r.round, r.served, f"{r.satisfied:.1%}", r.ratings or "-", r.ratings_up if r.ratings else "-",
             r.corrections if r.ratings else "-", r.feedback_used, r.run_status or "-",
             r.candidate_ppl, r.production_ppl,
             f"{r.ppl_change_vs_base:+.1%}" if r.ppl_change_vs_base is not None else "-",
             r.rate_s, r.train_s, r.eval_s, r.wall_s] for r in rounds]


HEADERS = ["round", "served", "held-out satisfied", "ratings", "up", "corrections", "feedback used", "run",
           "candidate ppl", "production ppl (gate)", "production ppl vs base", "rating s", "train s", "measure s",
           "round wall s"]


def markdown(config: LoopConfig, hardware: Hardware, rounds: list[RoundResult], verdict: dict, total_s: float) -> str:
    """The human-readable report."""
    pref = PREFERENCES[config.preference]
    met = "**met**" if verdict["met"] else "**not met**"
    steps = f"{config.max_steps} steps per stage max" if config.max_steps else "no step cap"
    gates = [f"- round {r.round}: {'; '.join(r.gate_reasons)}" for r in rounds if r.gate_reasons]
    stages = [f"- round {r.round}: " + ", ".join(f"{s['name']} {s['steps']} steps on {s['examples']} rows "
                                                 f"in {s['seconds']:.0f}s (loss {s['train_loss']:.3f})"
                                                 for s in r.stages) for r in rounds if r.stages]
    samples = [f"- round {r.round} ({r.served}): {r.sample!r}" for r in rounds]
    return "\n".join([
        "# Loop benchmark: does feedback teach the adapter what users want?", "",
        f"Simulated users ({config.users}) hide one preference, **{pref.name}** ({pref.description}), rate every "
        f"answer up or down by it ({config.noise:.0%} of ratings flipped) and send the fixed answer as a "
        f"correction on {config.corrections:.0%} of down ratings. Each round: {config.ratings_per_round} rated "
        "answers on training prompts through the gateway, one `flywheel train --promotion auto` run, then "
        f"held-out satisfaction of production ({rounds[0].heldout_answers if rounds else 0} held-out prompts, "
        f"temperature {config.temperature}, max_tokens {config.max_tokens}, {config.concurrency} concurrent).", "",
        "Reproduce: `flywheel bench loop` (this run: " + _command(config) + ").", "",
        markdown_table(HEADERS, table_rows(rounds)), "",
        f"Target (issue 5): from the base rate to >= {verdict['threshold']:.0%} within {MAX_ROUNDS} rounds of at "
        f"most 300 ratings, with general perplexity at most +{MAX_PPL_INCREASE:.0%}: {met} "
        f"(base rate {_pct(verdict['base_rate'])}, best {_pct(verdict['best'])}, reached in round "
        f"{verdict['reached_in_round'] or '-'}). Total wall time {total_s / 60:.1f} min.", "",
        "## Recipe", "",
        f"QLoRA SFT (loss on the completion only) then the preference stage the trainer picks (DPO on correction "
        f"pairs), r=16 on all 7 projections (continued from production each round), lr {config.learning_rate}, "
        f"{config.epochs:g} epochs, batch {config.batch_size}, DPO beta {config.dpo_beta}, {steps}, "
        f"{config.threads} training thread(s); "
        "default gate (preference win rate >= 50%, answer log-likelihood drop <= 0.05, perplexity <= +10%).", "",
        *stages, "", "## Gate reasons", "", *(gates or ["- none: every candidate passed"]), "",
        "## One held-out answer per round", "", *samples, "",
        "## Hardware", "", hardware.markdown(), "",
        "Perplexity is the gate's: general English text shipped in `trainer/data/general_text.txt`; the base's "
        "is production's in round 1 (v1 is an identity adapter).",
    ])


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _command(config: LoopConfig) -> str:
    parts = [f"--preference {config.preference}", f"--rounds {config.rounds}",
             f"--ratings-per-round {config.ratings_per_round}", f"--noise {config.noise}"]
    if config.max_steps:
        parts.append(f"--max-steps {config.max_steps}")
    if config.dpo_beta != 0.1:
        parts.append(f"--dpo-beta {config.dpo_beta}")
    if config.heldout:
        parts.append(f"--heldout {config.heldout}")
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
