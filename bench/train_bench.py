"""`flywheel bench train`: seconds per training step against a plain TRL script, and trigger -> serving time.

Part 1 (`bench.train_baseline`) trains the same synthetic rows with the same recipe through Flywheel's
trainer code and through a plain TRL script, alternating the two. Part 2 starts the gateway, registers an
identity adapter as production, rates real answers through the gateway, runs `python -m flywheel train
--adapter trainbench --max-steps N --promotion auto` and times from that process's start to the first chat
answer reporting the new version, split into the run's stages as `GET /admin/training/runs` reported them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import httpx
import typer
from rich.console import Console
from rich.progress import MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from adapters.names import Alias
from adapters.runs import RunStatus
from bench.lora import identity_adapter
from bench.report import markdown_table, write
from bench.servers import REPO, EngineFlags, gateway_env, gateway_server
from bench.swap import upload_version, wait_for_version
from bench.train_baseline import StageTiming, StepConfig, run_step_bench, summarize

NAME = "trainbench"
QUESTIONS = ["Name a fruit.", "What colour is the sky?", "Say hello politely.", "What is 3 + 4?",
             "Name an animal that swims.", "What is the opposite of hot?", "Name a month of the year.",
             "What do bees make?", "Name a planet.", "What is frozen water called?", "Name a tool.", "Count to 3."]
# The gate is opened wide: a 4-step candidate is judged on timing here, not on quality (the gate still runs).
TRAIN_ENV = {"FLYWHEEL_GATE_MIN_PREFERENCE_WIN_RATE": "0", "FLYWHEEL_GATE_MAX_LOGLIK_DROP": "100",
             "FLYWHEEL_GATE_MAX_PPL_INCREASE": "100", "FLYWHEEL_GATE_MAX_PPL_INCREASE_VS_BASE": "100",
             "FLYWHEEL_TRAIN_MIN_PAIRS_FOR_DPO": "4",
             "FLYWHEEL_TRAIN_BATCH_SIZE": "4", "FLYWHEEL_TRAIN_GRAD_ACCUMULATION": "1",
             "FLYWHEEL_TRAIN_LORA_RANK": "16", "FLYWHEEL_TRAIN_LORA_ALPHA": "32"}


@dataclass
class LoopResult:
    """Trigger -> first answer from the trained version, through the real gateway."""

    trigger: str = "python -m flywheel train --adapter trainbench --promotion auto (own process)"
    gateway_start_s: float | None = None
    feedback: dict = field(default_factory=dict)  # what was rated before the trigger
    trigger_to_serving_s: float | None = None
    phases_s: dict[str, float] = field(default_factory=dict)  # in order; they add up to trigger_to_serving_s
    run: dict = field(default_factory=dict)  # the run row's status, version, stage seconds, duration
    error: str | None = None


def rate_answers(client: httpx.Client) -> dict[str, int]:
    """Chat two samples per question, rate them up (with a correction) / down, and pair them when they differ."""
    counts = {"chats": 0, "ratings": 0, "pairs": 0}
    for i, question in enumerate(QUESTIONS):
        body = {"model": NAME, "messages": [{"role": "user", "content": question}], "max_tokens": 24,
                "temperature": 1.0, "n": 2, "user": f"user{i % 3}"}
        answer = client.post("/v1/chat/completions", json=body).raise_for_status().json()
        texts = [c["message"]["content"] for c in answer["choices"]]
        client.post("/v1/feedback", json={"completion_id": answer["id"], "rating": "up", "user": f"user{i % 3}",
                                          "correction": f"Short answer {i}."}).raise_for_status()
        client.post("/v1/feedback", json={"completion_id": answer["id"], "rating": "down", "choice_index": 1})
        counts["chats"] += 1
        counts["ratings"] += 2
        if texts[0] != texts[1]:
            client.post("/v1/feedback/pairs", json={"chosen_completion_id": answer["id"], "rejected_choice_index": 1,
                                                    "rejected_completion_id": answer["id"]}).raise_for_status()
            counts["pairs"] += 1
    return counts


def _follow_run(client: httpx.Client, proc: subprocess.Popen, t0: float) -> tuple[dict[str, float], dict]:
    """Poll the runs API while the trainer process lives; first time (s after t0) each stage was seen."""
    seen: dict[str, float] = {}
    run: dict = {}
    while True:
        alive = proc.poll() is None
        runs = client.get("/admin/training/runs", params={"adapter": NAME, "limit": 1}).json()
        if runs:
            run = runs[0]
            seen.setdefault(run["stage"] or run["status"], round(time.time() - t0, 2))
        if not alive:
            return seen, run
        time.sleep(0.25)


def _phases(seen: dict[str, float], run: dict, t0: float, served: float) -> dict[str, float]:
    """Consecutive phases: process start -> run row, each stage -> the next, run finished -> answer served."""
    marks = [("start (imports, settings, lock)", 0.0)]
    marks += [(stage, at) for stage, at in sorted(seen.items(), key=lambda kv: kv[1]) if stage != "done"]
    finished = (run.get("finished_at") or time.time()) - t0
    marks.append(("hot-load (run finished -> first answer on the new version)", finished))
    ends = [at for _, at in marks[1:]] + [served - t0]
    return {name: round(end - at, 2) for (name, at), end in zip(marks, ends, strict=True)}


def run_loop_bench(model_dir: Path, work: Path, threads: int, max_steps: int) -> LoopResult:
    """Start the gateway, rate answers, trigger a training run and time it until the new version answers."""
    result = LoopResult()
    flags = EngineFlags(model_dir=model_dir)
    start = time.perf_counter()
    with gateway_server(flags, work / "gateway-data", work / "gateway.log", poll_seconds=0.25) as server, \
            httpx.Client(base_url=server.url, timeout=300) as client:
        result.gateway_start_s = round(time.perf_counter() - start, 1)
        upload_version(client, NAME, identity_adapter(model_dir, work / "v1"), alias=Alias.PRODUCTION)
        wait_for_version(client, NAME, 1, timeout_s=60)
        result.feedback = rate_answers(client)
        port = server.url.rsplit(":", 1)[1]
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
        env = {**base_env, **gateway_env(flags, int(port), work / "gateway-data", 0.25), **TRAIN_ENV}
        cmd = [sys.executable, "-m", "flywheel", "train", "--adapter", NAME, "--max-steps", str(max_steps),
               "--threads", str(threads), "--promotion", "auto"]
        with open(work / "train.log", "w") as log:
            t0 = time.time()
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
            seen, run = _follow_run(client, proc, t0)
        if proc.returncode != 0 or run.get("status") != RunStatus.SUCCEEDED:
            tail = (work / "train.log").read_text()[-1500:]
            result.error = f"trainer exit {proc.returncode}, run {run}; log tail: {tail}"
            return result
        served = time.time() - time.perf_counter() + wait_for_version(client, NAME, run["result_version"], 300)
        result.trigger_to_serving_s = round(served - t0, 2)
        result.phases_s = _phases(seen, run, t0, served)
        metrics = run.get("metrics") or {}
        result.run = {"id": run["id"], "status": run["status"], "version": run["result_version"],
                      "stages": metrics.get("stages"), "duration_s": metrics.get("duration_s"),
                      "process_exit_s": round(seen.get("done", 0.0), 2)}
    return result


def versions() -> dict[str, str]:
    """Library versions the numbers depend on."""
    names = ("torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate", "datasets")
    return {n: metadata.version(n) for n in names}


@dataclass
class TrainBenchReport:
    """Everything one `flywheel bench train` run measured."""

    hardware: dict
    versions: dict[str, str]
    config: dict
    rounds: int
    summary: dict
    timings: list[StageTiming]
    loop: LoopResult | None
    load_average_end: tuple[float, float, float]
    notes: list[str]

    def as_dict(self) -> dict:
        """JSON-ready."""
        return {"benchmark": "training step time (Flywheel vs plain TRL) and trigger -> serving", **asdict(self)}


def markdown(r: TrainBenchReport) -> str:
    """The human-readable report."""
    hw = r.hardware
    steps = [[s, v["flywheel_s_per_step"], v["plain_s_per_step"], v["ratio"], v["flywheel_median_s"],
              v["plain_median_s"], v["ratio_median"], "yes" if v["ratio"] and v["ratio"] <= 1.1 else "no"]
             for s, v in r.summary.items()]
    per = [[t.round, t.side, t.stage, t.seconds_per_step, t.median_step_s, t.load_s] for t in r.timings]
    c = r.config
    out = ["# Training benchmark: Flywheel's trainer vs a plain TRL script, and trigger -> serving", "",
           f"Command: `flywheel bench train --rounds {r.rounds}` ({c['warmup']} warm-up + {c['steps']} measured "
           f"steps per stage, {c['threads']} thread(s)). Recipe on both sides: QLoRA NF4 + double quant, bf16 "
           f"compute, LoRA r={c['r']} alpha={c['alpha']} dropout={c['dropout']} on all 7 projections, batch "
           f"{c['batch_size']}, grad-accum 1, max_length {c['max_length']}, lr {c['learning_rate']}, gradient "
           f"checkpointing; {c['sft_rows']} SFT rows, {c['dpo_pairs']} DPO pairs (synthetic, seeded).", "",
           "## Seconds per optimizer step (over the measured steps of all rounds)", "",
           markdown_table(["stage", "Flywheel mean s", "plain TRL mean s", "ratio (mean)", "Flywheel median s",
                           "plain median s", "ratio (median)", "mean within 1.1x"], steps), "",
           markdown_table(["round", "side", "stage", "mean s/step", "median s/step", "load s"], per), ""]
    if r.loop:
        lp = r.loop
        out += ["## Trigger -> the trained version answering through the gateway", "",
                f"Trigger: `{lp.trigger}`, after {lp.feedback} through the gateway (started in "
                f"{lp.gateway_start_s} s). Stages as first seen on `GET /admin/training/runs` (polled every 0.25 s).",
                ""]
        if lp.error:
            out += [f"**Failed:** {lp.error}", ""]
        else:
            out += [markdown_table(["phase", "seconds"], [*lp.phases_s.items(),
                                                          ["**total**", lp.trigger_to_serving_s]]), "",
                    f"Run: {lp.run}", ""]
    out += ["## Machine", "", f"- CPU: {hw['cpu_model']}, {hw['cores']} cores, {hw['memory_gib']} GiB RAM, "
            f"GPU: {hw['gpu']}", "- " + ", ".join(f"{k} {v}" for k, v in r.versions.items()),
            f"- Date: {hw['date']}; 1/5/15-min load average at start {_load(hw['load_average_at_start'])}, at end "
            f"{_load(r.load_average_end)}", "", "## Notes", "", *(f"- {n}" for n in r.notes)]
    return "\n".join(out)


NOTES = [
    "Sides alternate per round (Flywheel first in odd rounds, plain first in even ones) so drift on the machine "
    "falls on both.",
    "Flywheel's side is trainer.qlora.load_trainable + trainer.stages.train_sft then train_dpo on the same model "
    "(as Pipeline._train), with the product's RunProgress callback writing a runs table. The plain side loads "
    "the base per stage with BitsAndBytesConfig + prepare_model_for_kbit_training and passes a LoraConfig to "
    "SFTTrainer / DPOTrainer, TRL defaults otherwise (logging every 10 steps vs Flywheel's every step).",
    "Trigger -> serving phases come from polling the runs table every 0.25 s: a stage shorter than that "
    "(export, register + auto-promote) folds into the phase before it, so 'gate' includes registering and "
    "promoting. The gate thresholds are opened wide (TRAIN_ENV) so a 4-step candidate is promoted.",
]


def _load(load: tuple[float, ...]) -> str:
    return "/".join(f"{x:.1f}" for x in load)


def _shared_note(load: tuple[float, ...], cores: int) -> str:
    busy = load[0] > 0.5 * cores
    return (f"The machine was {'shared with other work' if busy else 'mostly idle'} (1-min load average "
            f"{load[0]:.1f} on {cores} cores at start); absolute seconds move with that, ratios less so.")


def train(
    steps: int = typer.Option(8, min=1, help="Measured optimizer steps per stage and side."),
    warmup: int = typer.Option(2, min=0, help="Steps run first and left out of the average."),
    rounds: int = typer.Option(1, min=1, help="Rounds of (Flywheel, plain) runs; >= 2 alternates the order."),
    threads: int = typer.Option(max(1, (os.cpu_count() or 2) - 1), min=1,
                                help="torch threads on both sides (default: Flywheel's, all cores but one)."),
    loop: bool = typer.Option(True, help="Also time trigger -> serving through a real gateway."),
    loop_steps: int = typer.Option(4, min=1, help="--max-steps of the triggered training run."),
    model: Path = typer.Option(None, help="Base model directory (default: the embedded SmolLM2-135M-Instruct)."),
    out: Path = typer.Option(REPO / "docs", help="Where bench_train.json and bench_train.md are written."),
) -> None:
    """Seconds per QLoRA SFT/DPO step, Flywheel vs a plain TRL script, and trigger -> trained version serving."""
    from bench.hardware import detect
    from flywheel.default_model import prepare_default_model
    from flywheel.settings import Settings

    console = Console(file=sys.stdout)  # bound now: training chatter below is redirected to a log file
    model_dir = (model or prepare_default_model(Settings(data_dir=REPO / "data").default_model_dir)).resolve()
    config = StepConfig(model_dir=model_dir, steps=steps, warmup=warmup, threads=threads,
                        dpo_pairs=max(40, (steps + warmup) * 4))
    hardware = detect()
    work = Path(tempfile.mkdtemp(prefix="flywheel-bench-train-"))
    console.print(f"logs: {work}")
    columns = (SpinnerColumn(), TextColumn("{task.description}"), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, redirect_stdout=False, redirect_stderr=False) as progress, \
            open(work / "train_steps.log", "w") as log, redirect_stdout(log), redirect_stderr(log):
        _quiet_libraries()
        task = progress.add_task("step time", total=rounds * 4 * (steps + warmup))  # 2 sides x 2 stages
        timings = run_step_bench(config, rounds, lambda side, rnd: progress.update(
            task, description=f"step time: round {rnd}/{rounds}, {side}"), lambda: progress.advance(task))
        summary = summarize(timings)
        progress.update(task, description="trigger -> serving: gateway, ratings, flywheel train", total=None)
        loop_result = run_loop_bench(model_dir, work, threads, loop_steps) if loop else None
    notes = [*NOTES, _shared_note(hardware.load_average_at_start, hardware.cores)]
    report = TrainBenchReport(hardware.as_dict(), versions(), {**asdict(config), "model_dir": str(model_dir)},
                              rounds, summary, timings, loop_result, os.getloadavg(), notes)
    files = write(out, "bench_train", report.as_dict(), markdown(report))
    console.print(markdown(report))
    console.print("written: " + ", ".join(str(p) for p in files))


def _quiet_libraries() -> None:
    """No per-step progress bars from transformers/datasets: they would hide ours (both sides alike)."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
