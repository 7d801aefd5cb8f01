"""`flywheel bench quant`: seconds per SFT and DPO step with the base in 4-bit NF4 against 16-bit, and memory.

Both sides are Flywheel's own training path (`bench.train_baseline.flywheel_side`: load_trainable, then
train_sft and train_dpo on the same model) on the same synthetic rows and recipe; only `load_in_4bit`
differs. QLoRA's 4-bit base saves memory where memory binds (a GPU, a large model); on a CPU bitsandbytes
dequantizes the weights on every matmul, forward and backward, so it costs time. This page is the
measurement behind FLYWHEEL_TRAIN_LOAD_IN_4BIT=auto (trainer/qlora.py `use_4bit`). Sides alternate per
round; the page reports the median step with the worst and best round's median beside it.
"""

from __future__ import annotations

import gc
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.hardware import Hardware
from bench.report import hardware_section, markdown_table, write
from bench.train_baseline import StageTiming, StepConfig, flywheel_side, synthetic_rows

SIDES = {"4-bit NF4 base": True, "16-bit base": False}
HEADERS = ["stage", "base", "median s/step", "worst-best round median", "ratio to 16-bit (median)"]


@dataclass
class QuantReport:
    config: dict
    hardware: Hardware
    auto_picks: str
    timings: list[StageTiming] = field(default_factory=list)
    footprint_mib: dict[str, float] = field(default_factory=dict)  # model weights + LoRA, per side
    load_average_end: tuple[float, ...] = ()

    def steps(self, stage: str, side: str) -> list[float]:
        return [s for t in self.timings if t.stage == stage and t.side == side for s in t.step_s]

    def round_medians(self, stage: str, side: str) -> list[float]:
        return [t.median_step_s for t in self.timings if t.stage == stage and t.side == side]

    def rows(self) -> list[list[object]]:
        out = []
        for stage in ("sft", "dpo"):
            plain = statistics.median(self.steps(stage, "16-bit base"))
            for side in SIDES:
                median, rounds = statistics.median(self.steps(stage, side)), self.round_medians(stage, side)
                out.append([stage, side, round(median, 3), f"{max(rounds):.3f}-{min(rounds):.3f}",
                            f"{median / plain:.2f}x"])
        return out


def footprint(config: StepConfig, load_in_4bit: bool) -> float:
    """MiB of the loaded trainable model (base weights + LoRA), as transformers counts it."""
    from trainer.config import LoraRecipe, TrainConfig
    from trainer.qlora import load_trainable

    model, _ = load_trainable(config.model_dir, LoraRecipe(r=config.r, alpha=config.alpha, max_rank=config.r),
                              TrainConfig(load_in_4bit=load_in_4bit, num_threads=config.threads))
    mib = model.get_memory_footprint() / 2**20
    del model
    gc.collect()
    return round(mib, 1)


def run_quant_bench(config: StepConfig, rounds: int, hardware: Hardware, on_side=None, on_step=None) -> QuantReport:
    import os

    from trainer.qlora import use_4bit

    sft, dpo = synthetic_rows(config)
    report = QuantReport(asdict(config) | {"model_dir": str(config.model_dir), "rounds": rounds}, hardware,
                         "4-bit NF4 base" if use_4bit("auto") else "16-bit base")
    names = list(SIDES)
    for round_ in range(1, rounds + 1):
        for side in names if round_ % 2 else names[::-1]:
            if on_side:
                on_side(side, round_)
            report.timings += flywheel_side(config, sft, dpo, round_, on_step, load_in_4bit=SIDES[side], side=side)
    report.footprint_mib = {side: footprint(config, q) for side, q in SIDES.items()}
    report.load_average_end = os.getloadavg()
    return report


def markdown(report: QuantReport) -> str:
    c = report.config
    return "\n".join([
        "# Training step: 4-bit NF4 base against 16-bit base (`flywheel bench quant`)", "",
        f"Flywheel's training path on the same synthetic rows: LoRA r={c['r']} alpha={c['alpha']} on all 7 "
        f"projections, batch {c['batch_size']}, max_length {c['max_length']}, {c['threads']} torch thread(s), "
        f"{c['steps']} measured steps per stage after {c['warmup']} warm-up steps, {c['rounds']} rounds with the "
        "order alternated. Compute dtype: FLYWHEEL_DTYPE=auto on both sides; only `load_in_4bit` differs.", "",
        markdown_table(HEADERS, report.rows()), "",
        "Memory of the loaded model (base + LoRA): " + ", ".join(f"{side} {mib} MiB"
                                                                  for side, mib in report.footprint_mib.items())
        + ".", "",
        f"FLYWHEEL_TRAIN_LOAD_IN_4BIT=auto picks the **{report.auto_picks}** on this machine (4-bit on a CUDA GPU, "
        "where memory binds; 16-bit on a CPU, where the 4-bit base is dequantized on every matmul and saves "
        "little).", "",
        hardware_section(report.hardware, report.load_average_end),
    ])


def write_report(report: QuantReport, out: Path) -> list[Path]:
    data = {"config": report.config, "hardware": report.hardware.as_dict(), "auto_picks": report.auto_picks,
            "rows": [dict(zip(HEADERS, row, strict=True)) for row in report.rows()],
            "footprint_mib": report.footprint_mib, "timings": [asdict(t) for t in report.timings],
            "load_average_end": report.load_average_end}
    return list(write(out, "bench_quant", data, markdown(report)))
