"""`flywheel bench recipe`: which recipe learns a round's feedback without making the answers worse.

The loop benchmark (`flywheel bench loop`) measures the trainer's defaults round after round; this one
explains why the defaults are what they are. It takes one round's recorded feedback (the `feedback.db`
of a loop run's work dir, cut to its first `--ratings` ratings), trains study arms from the same start
adapter on it, and measures each arm like the gate does, with transformers on the unquantized base:

- closed-book correctness: greedy answers to the first `--questions` questions of the gate's set;
- held-out satisfaction: greedy answers to the loop benchmark's held-out prompts, checked by the
  preference the simulated users held;
- general-text perplexity (the gate's forgetting check) and the share of degenerate answers.

An arm is a set of `TrainConfig` overrides and the stage it trains (SFT, or DPO after the SFT arm, as
the trainer runs them). Arms vary the recipe on purpose: that is the study. What users get is only ever
the trainer's defaults, measured by `flywheel bench loop`. Each arm's overrides are on top of the
defaults of the commit that runs it (lr 2e-4, 1 epoch, DPO beta 0.1 with an SFT term of weight 1).
The page is rewritten from the saved results on every run; a run note (conditions, what it shows) is
added below it by hand, as on the other pages.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from dataclasses import dataclass, replace
from pathlib import Path

import typer

from bench.hardware import detect
from bench.loop_users import PREFERENCES, load_prompts
from bench.report import hardware_section, markdown_table, write
from bench.servers import REPO

DOCS = REPO / "docs"


@dataclass(frozen=True)
class Arm:
    """One study arm: what it trains, from where, and which TrainConfig fields differ from the defaults."""

    stage: str  # "sft" or "dpo"
    after: str | None  # the arm whose weights it continues (the trainer's SFT -> DPO order); None: the start adapter
    overrides: tuple[tuple[str, object], ...]
    what: str


ARMS = {
    "sft_2ep": Arm("sft", None, (("epochs", 2.0),), "SFT, lr 2e-4, 2 epochs (the earlier default)"),
    "sft_2ep+dpo_plain": Arm("dpo", "sft_2ep", (("epochs", 2.0), ("dpo_sft_weight", 0.0)),
                             "then plain DPO, beta 0.1, 2 epochs (the earlier default)"),
    "sft_2ep+dpo_sft_term_1ep": Arm("dpo", "sft_2ep", (("dpo_sft_weight", 1.0),),
                                    "then DPO + an SFT term on the chosen answer (RPO), 1 epoch"),
    "sft_2ep+dpo_beta0.5_1ep": Arm("dpo", "sft_2ep", (("dpo_beta", 0.5), ("dpo_sft_weight", 0.0)),
                                   "then plain DPO, beta 0.5, 1 epoch"),
    "dpo_sft_term_1ep": Arm("dpo", None, (("dpo_sft_weight", 1.0),), "DPO + SFT term alone (no SFT stage), 1 epoch"),
    "sft_1ep_lr1e-4": Arm("sft", None, (("learning_rate", 1e-4),), "SFT, 1 epoch at lr 1e-4"),
    "sft_1ep": Arm("sft", None, (), "SFT, lr 2e-4, 1 epoch (the default)"),
    "sft_1ep+dpo_sft_term_1ep": Arm("dpo", "sft_1ep", (), "then DPO + SFT term, 1 epoch (the defaults: SFT then DPO)"),
    "sft_1ep+dpo_sft_term_lr5e-5": Arm("dpo", "sft_1ep", (("learning_rate", 5e-5),),
                                       "then DPO + SFT term, 1 epoch at lr 5e-5"),
    "sft_1ep_replay0.25": Arm("sft", None, (("replay_fraction", 0.25),),
                              "SFT, 1 epoch, with 1 replay row of the base's answers per 4 feedback rows"),
    "sft_1ep_replay0.5": Arm("sft", None, (("replay_fraction", 0.5),),
                             "SFT, 1 epoch, with 1 replay row of the base's answers per 2 feedback rows"),
    "sft_1ep_replay0.5+dpo_sft_term_1ep": Arm("dpo", "sft_1ep_replay0.5", (),
                                              "then DPO + SFT term, 1 epoch (SFT with replay, then DPO)"),
    "dpo_plain_1ep": Arm("dpo", None, (("dpo_sft_weight", 0.0),),
                         "plain DPO alone (no SFT stage, no SFT term), beta 0.1, 1 epoch: for a chosen answer that "
                         "is the rejected one's own beginning, only where to stop differs"),
}
HEADERS = ["arm", "recipe", "steps", "train loss", "correct", "held-out satisfied", "general ppl", "ppl vs base",
           "degenerate", "train s"]


def cut_to_first_ratings(source: Path, dest: Path, ratings: int) -> int:
    """Copy the feedback store and drop everything recorded after its `ratings`-th rating; returns the count kept."""
    shutil.copyfile(source, dest)
    with sqlite3.connect(dest) as conn:
        row = conn.execute("SELECT created_at FROM feedback ORDER BY created_at LIMIT 1 OFFSET ?",
                           (ratings - 1,)).fetchone()
        if row is not None:
            for table in ("feedback", "pairs", "completions"):
                conn.execute(f"DELETE FROM {table} WHERE created_at > ?", (row[0],))  # noqa: S608 (fixed names)
        return conn.execute("SELECT count(*) FROM feedback").fetchone()[0]


def measure(model_dir: Path, adapter: Path, bare: bool, preference: str, questions: int, prompts: int,
            threads: int, dtype) -> dict:
    """The gate's measurements of `adapter` (with `bare`, of the base with it disabled) and held-out satisfaction."""
    import torch

    from trainer import correctness
    from trainer.gate import GateModels, Side, general_text
    from trainer.scoring import Scorer

    models = GateModels(model_dir, adapter, None, threads, dtype)
    scorer = Scorer(models, 8, 512)
    name = Side.BASE if bare else Side.TRAINED
    asked = correctness.closed_book(None, questions)
    held = load_prompts("heldout")[:prompts]
    with torch.inference_mode():
        answers = correctness.Generator(scorer, 32).answers(name, [correctness.question_prompt(q) for q in asked])
        replies = correctness.Generator(scorer, 48).answers(name, [[{"role": "user", "content": p}] for p in held])
        ppl = scorer.perplexity(name, general_text())
    check = PREFERENCES[preference].check
    return {"correct": correctness.accuracy(answers, asked), "satisfied": sum(map(check, replies)) / len(replies),
            "ppl": ppl, "degenerate": correctness.degenerate_share(replies), "replies": replies[:3],
            "answers": answers[:3]}


def recipe(
    feedback_db: Path = typer.Option(..., exists=True, dir_okay=False,
                                     help="A loop run's feedback.db (its --work-dir's data/feedback.db)."),
    start: Path = typer.Option(..., exists=True, file_okay=False,
                               help="The adapter the round trained from (the loop's v1, an identity adapter)."),
    adapter: str = typer.Option("bench", help="The adapter name the feedback was given to."),
    preference: str = typer.Option("answer_prefix", help=f"The users' hidden preference: {', '.join(PREFERENCES)}."),
    ratings: int = typer.Option(300, min=1, help="Use the first N ratings (one loop round)."),
    arms: str = typer.Option(",".join(ARMS), help=f"Comma-separated arms: {', '.join(ARMS)}."),
    questions: int = typer.Option(120, min=1, help="Closed-book questions asked (the gate's set, in order)."),
    prompts: int = typer.Option(40, min=1, help="Held-out prompts answered for satisfaction."),
    threads: int = typer.Option(2, min=1, help="torch threads for training and measuring."),
    work_dir: Path = typer.Option(REPO / "data" / "bench-recipe", help="Adapters and partial results (resumable)."),
    out: Path = typer.Option(DOCS, help="Where bench_recipe.json and bench_recipe.md go."),
) -> None:
    """Train study arms on one loop round's feedback and measure correctness, satisfaction and perplexity."""
    from trainer.config import LoraRecipe, TrainConfig
    from trainer.dataset import from_feedback
    from trainer.qlora import compute_dtype, load_tokenizer, load_trainable, save_adapter
    from trainer.replay import with_replay
    from trainer.stages import train_dpo, train_sft

    chosen = [a.strip() for a in arms.split(",") if a.strip()]
    unknown = [a for a in chosen if a not in ARMS]
    if unknown or preference not in PREFERENCES:
        raise typer.BadParameter(f"unknown arm(s) {unknown} or preference {preference!r}")
    work_dir.mkdir(parents=True, exist_ok=True)
    kept = cut_to_first_ratings(feedback_db, work_dir / "feedback.db", ratings)
    model_dir = Path(json.loads((start / "adapter_config.json").read_text())["base_model_name_or_path"])
    defaults = TrainConfig(num_threads=threads)
    dtype = compute_dtype(defaults)
    results_path = work_dir / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}

    def keep(key: str, value: dict) -> None:
        results[key] = value
        results_path.write_text(json.dumps(results, indent=1))
        typer.echo(f"{key}: " + ", ".join(f"{k}={v}" for k, v in value.items() if not isinstance(v, list)))

    data = from_feedback(work_dir / "feedback.db", adapter)
    tokenizer = load_tokenizer(model_dir)
    if "base" not in results:
        keep("base", {**measure(model_dir, start, True, preference, questions, prompts, threads, dtype), "base": True})
    for name in _with_parents(chosen):
        arm, folder = ARMS[name], work_dir / name
        if name in results and (folder / "adapter_config.json").exists():
            continue
        config = replace(defaults, **dict(arm.overrides))
        model, quantized = load_trainable(model_dir, LoraRecipe(), config, work_dir / arm.after if arm.after else start)
        rows = data.sft if arm.stage == "sft" else data.dpo
        began = time.monotonic()
        if arm.stage == "sft":  # the trainer's own replay step (trainer/replay.py), answers cached in work_dir
            rows, _ = with_replay(rows, model, tokenizer, config.replay_fraction, config.seed, work_dir, model_dir,
                                  quantized)
        stage = (train_sft if arm.stage == "sft" else train_dpo)(model, tokenizer, rows, config, work_dir / "trainer")
        save_adapter(model, folder)
        del model
        measured = measure(model_dir, folder, False, preference, questions, prompts, threads, dtype)
        keep(name, {**measured, "steps": stage.steps, "loss": stage.train_loss,
                    "train_s": round(time.monotonic() - began, 1), "rows": len(rows)})
    write_page(results, chosen, kept, preference, questions, prompts, threads, out)


def _with_parents(arms: list[str]) -> list[str]:
    """The arms in an order where each comes after the arm it continues."""
    order: list[str] = []
    for name in arms:
        chain = [name]
        while ARMS[chain[-1]].after:
            chain.append(ARMS[chain[-1]].after)
        order.extend(a for a in reversed(chain) if a not in order)
    return order


def write_page(results: dict, arms: list[str], ratings: int, preference: str, questions: int, prompts: int,
               threads: int, out: Path) -> None:
    base = results["base"]
    rows = [["base", "the bare base model", "-", "-", f"{base['correct']:.1%}", f"{base['satisfied']:.1%}",
             round(base["ppl"], 2), "-", f"{base['degenerate']:.1%}", "-"]]
    for name in _with_parents(arms):
        r = results.get(name)
        if r is None:
            continue
        arm = ARMS[name]
        rows.append([name, arm.what, r["steps"], round(r["loss"], 4), f"{r['correct']:.1%}", f"{r['satisfied']:.1%}",
                     round(r["ppl"], 2), f"{r['ppl'] / base['ppl'] - 1:+.1%}", f"{r['degenerate']:.1%}", r["train_s"]])
    samples = [f"- {name}: {results[name]['replies'][0]!r}" for name in ["base", *_with_parents(arms)]
               if name in results]
    page = "\n".join([
        "# Recipe study: what learns a round's feedback without making the answers worse", "",
        f"One loop round's feedback ({ratings} ratings of the **{preference}** preference, users' seed 0, no "
        f"noise) trained by each arm from the same start adapter; measured with transformers on the unquantized "
        f"base like the gate: {questions} closed-book questions (greedy), {prompts} held-out prompts (greedy, "
        f"48 tokens) checked by the preference, general-text perplexity. {threads} torch threads.", "",
        markdown_table(HEADERS, rows), "",
        "## One held-out answer per arm", "", *samples, "", hardware_section(detect(), _load()),
    ])
    typer.echo("written: " + ", ".join(str(p) for p in write(out, "bench_recipe", results, page)))


def _load() -> tuple[float, ...]:
    import os

    return os.getloadavg()
