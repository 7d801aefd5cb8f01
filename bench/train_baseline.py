"""Seconds per training step: Flywheel's trainer code path against a plain TRL script, same model, data, config.

Both sides train the same synthetic rows with the same recipe (QLoRA NF4 + double quant, bf16 compute, LoRA
r=16 / alpha 32 / dropout 0.05 on all 7 projections, batch 4, grad-accum 1, max_length 256, lr 2e-4, gradient
checkpointing, same torch thread count). A `StepClock` callback stamps every optimizer step; the first
`warmup` steps (allocator, first-batch tokenisation, cache warm-up) are left out of the average.
"""

from __future__ import annotations

import functools
import gc
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
Tick = Callable[[], None] | None  # called after every optimizer step (progress display)
WORDS = ("river stone light garden window paper music winter bread market engine cloud story letter field "
         "candle forest harbor mirror planet silver thunder valley yellow orange castle bridge").split()


@dataclass(frozen=True)
class StepConfig:
    """What both sides train with; every field is part of the recipe they share."""

    model_dir: Path
    steps: int = 8  # measured optimizer steps per stage
    warmup: int = 2  # steps run first and left out of the average
    threads: int = 1  # torch threads (Flywheel's default: all cores but one)
    batch_size: int = 4
    max_length: int = 256
    learning_rate: float = 2e-4
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    sft_rows: int = 64
    dpo_pairs: int = 40  # >= (warmup + steps) * batch_size: one epoch, no data-loader restart mid-measurement


@dataclass
class StageTiming:
    """One stage trained once by one side."""

    side: str  # "flywheel" or "plain"
    stage: str  # "sft" or "dpo"
    round: int
    seconds_per_step: float  # mean over the measured steps, from step-end timestamps
    median_step_s: float
    step_s: list[float] = field(default_factory=list)  # every measured step's duration
    load_s: float = 0.0  # model load + LoRA setup before the trainer was built


@functools.cache
def step_clock_class() -> type:
    """The StepClock callback class; built on first use so importing this module (and `flywheel --help`)
    does not import transformers."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        """Records a timestamp at the end of every optimizer step."""

        def __init__(self, on_step: Callable[[], None] | None = None) -> None:
            self.stamps: list[float] = []
            self.on_step = on_step

        def on_train_begin(self, args, state, control, **kwargs) -> None:  # noqa: ANN001 - HF callback signature
            self.stamps = [time.perf_counter()]

        def on_step_end(self, args, state, control, **kwargs) -> None:  # noqa: ANN001 - HF callback signature
            self.stamps.append(time.perf_counter())
            if self.on_step:
                self.on_step()

        def timing(self, side: str, stage: str, round_: int, warmup: int, load_s: float) -> StageTiming:
            """Per-step durations after the warm-up steps (stamps[0] is train begin, stamps[k] the end of step k)."""
            steps = [b - a for a, b in zip(self.stamps[warmup:], self.stamps[warmup + 1:], strict=False)]
            if not steps:
                raise RuntimeError(f"{side} {stage}: no measured steps (got {len(self.stamps) - 1} steps in total)")
            return StageTiming(side, stage, round_, round(statistics.fmean(steps), 3),
                               round(statistics.median(steps), 3), [round(s, 3) for s in steps], round(load_s, 2))

    return StepClock


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def synthetic_rows(config: StepConfig, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """SFT prompt/completion rows and DPO prompt/chosen/rejected pairs in TRL conversational format."""
    rng = random.Random(seed)

    def user(i: int) -> list[dict]:
        return [{"role": "user", "content": f"Question {i}: describe the {rng.choice(WORDS)} in a few sentences."}]

    def answer(sentences: int) -> list[dict]:
        text = " ".join(_sentence(rng, rng.randint(8, 16)) for _ in range(sentences))
        return [{"role": "assistant", "content": text}]

    # answers of 1-5 sentences (~15-90 tokens): short feedback-like rows, so a step stays affordable on 2 shared
    # cores; max_length=256 is still the limit both sides truncate at
    sft = [{"prompt": user(i), "completion": answer(rng.randint(1, 5))} for i in range(config.sft_rows)]
    dpo = [{"prompt": user(i), "chosen": answer(rng.randint(1, 4)), "rejected": answer(rng.randint(1, 4))}
           for i in range(config.dpo_pairs)]
    return sft, dpo


def flywheel_side(config: StepConfig, sft: list[dict], dpo: list[dict], round_: int, on_step: Tick = None,
                  load_in_4bit: bool = True, side: str = "flywheel") -> list[StageTiming]:
    """Flywheel's path: load_trainable, then train_sft and train_dpo on the same model, as Pipeline._train does.

    `load_in_4bit=False` trains the same LoRA on the 16-bit base (`flywheel bench quant` compares the two)."""
    from datasets import Dataset

    from adapters.runs import RunStatus, RunStore
    from trainer.config import LoraRecipe, TrainConfig
    from trainer.progress import RunProgress
    from trainer.qlora import load_tokenizer, load_trainable
    from trainer.stages import train_dpo, train_sft

    train = TrainConfig(learning_rate=config.learning_rate, max_steps=config.warmup + config.steps,
                        batch_size=config.batch_size, grad_accumulation=1, max_length=config.max_length,
                        num_threads=config.threads, min_pairs_for_dpo=1, load_in_4bit=load_in_4bit)
    recipe = LoraRecipe(r=config.r, alpha=config.alpha, dropout=config.dropout, max_rank=max(16, config.r))
    timings = []
    with tempfile.TemporaryDirectory(prefix="bench-train-flywheel-") as tmp:
        # the product's progress callback with a real runs table: its per-step write is part of the path
        store = RunStore(Path(tmp) / "trainer.db")
        run_id = store.create("bench", status=RunStatus.RUNNING)
        start = time.perf_counter()
        tokenizer = load_tokenizer(config.model_dir)
        model, _ = load_trainable(config.model_dir, recipe, train)
        load_s = time.perf_counter() - start
        for stage, fn, rows in (("sft", train_sft, sft), ("dpo", train_dpo, dpo)):
            clock = step_clock_class()(on_step)
            fn(model, tokenizer, Dataset.from_list(rows), train, Path(tmp) / "out",
               [clock, RunProgress(store, run_id, stage)])
            timings.append(clock.timing(side, stage, round_, config.warmup, load_s))
            load_s = 0.0  # DPO continues on the SFT model: no second load
        del model
    gc.collect()
    return timings


def _plain_model(config: StepConfig) -> object:
    """The plain script's base: what the TRL and PEFT QLoRA docs show."""
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(config.model_dir, quantization_config=quant, dtype=torch.bfloat16)
    return prepare_model_for_kbit_training(model)


def plain_side(config: StepConfig, sft: list[dict], dpo: list[dict], round_: int, on_step: Tick = None
               ) -> list[StageTiming]:
    """A plain TRL script, one per stage, as a user would write it: SFTTrainer / DPOTrainer with peft_config."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    torch.set_num_threads(config.threads)
    lora = LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=PROJECTIONS,
                      task_type="CAUSAL_LM")
    common = dict(per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=1,
                  max_length=config.max_length, learning_rate=config.learning_rate,
                  max_steps=config.warmup + config.steps, bf16=True, use_cpu=True, save_strategy="no",
                  report_to="none")  # use_cpu: transformers refuses bf16 on a CPU-only box without it
    stages: list[tuple[str, Callable, type, list[dict], dict]] = [
        ("sft", SFTTrainer, SFTConfig, sft, {}), ("dpo", DPOTrainer, DPOConfig, dpo, {"beta": 0.1})]
    timings = []
    with tempfile.TemporaryDirectory(prefix="bench-train-plain-") as tmp:
        for stage, trainer_cls, config_cls, rows, extra in stages:
            start = time.perf_counter()
            tokenizer = AutoTokenizer.from_pretrained(config.model_dir)
            model = _plain_model(config)
            load_s = time.perf_counter() - start
            clock = step_clock_class()(on_step)
            trainer = trainer_cls(model=model, args=config_cls(output_dir=tmp, **common, **extra),
                                  train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                                  peft_config=lora, callbacks=[clock])
            trainer.train()
            timings.append(clock.timing("plain", stage, round_, config.warmup, load_s))
            del trainer, model
            gc.collect()
    return timings


SIDES: dict[str, Callable[..., list[StageTiming]]] = {
    "flywheel": flywheel_side, "plain": plain_side}


def run_step_bench(config: StepConfig, rounds: int, on_side: Callable[[str, int], None] | None = None,
                   on_step: Tick = None) -> list[StageTiming]:
    """Alternate the sides round by round (flywheel, plain, then plain, flywheel, ...) so drift on a shared
    machine falls on both alike; returns every stage timing."""
    sft, dpo = synthetic_rows(config)
    timings: list[StageTiming] = []
    for round_ in range(1, rounds + 1):
        order = ["flywheel", "plain"] if round_ % 2 else ["plain", "flywheel"]
        for side in order:
            if on_side:
                on_side(side, round_)
            timings += SIDES[side](config, sft, dpo, round_, on_step)
    return timings


def summarize(timings: list[StageTiming]) -> dict[str, dict[str, float | None]]:
    """Per stage: both sides' seconds per step over every measured step of all rounds (mean and median), and
    flywheel/plain ratios; the median one shrugs off a step stalled by another process on a shared machine."""
    out: dict[str, dict[str, float | None]] = {}
    for stage in ("sft", "dpo"):
        row: dict[str, float | None] = {}
        for side in ("flywheel", "plain"):
            steps = [s for t in timings if t.stage == stage and t.side == side for s in t.step_s]
            row[f"{side}_s_per_step"] = round(statistics.fmean(steps), 3) if steps else None
            row[f"{side}_median_s"] = round(statistics.median(steps), 3) if steps else None
        for key, fw, pl in (("ratio", "flywheel_s_per_step", "plain_s_per_step"),
                            ("ratio_median", "flywheel_median_s", "plain_median_s")):
            row[key] = round(row[fw] / row[pl], 3) if row[fw] and row[pl] else None
        out[stage] = row
    return out
