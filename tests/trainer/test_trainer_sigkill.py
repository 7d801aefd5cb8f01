"""SIGKILL in every stage of a real run: the next run starts, nothing is half-registered, nothing is left.

A trainer killed by SIGKILL (or by the kernel's out-of-memory killer) runs no cleanup. After a kill in each
stage, the next run of the adapter takes the lock over and the dead run is marked failed with a reason; no
version is half-registered, no staging copy is left once the registry reopens, and no work folder once the
next run has started. (Out of memory raised inside each stage is test_trainer_faults.py's.)

One process imports the trainer once and forks a real tiny QLoRA run per stage (the imports alone take
about 10 s on 2 cores). Each run stalls once it is inside its stage; the test waits for the runs store to
show that stage, kills the run from outside, and looks at what the kill left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from trainer_samples import REPO, dpo_rows, sft_rows, tiny_data, tiny_gate, tiny_lora, tiny_train
from transformers import TrainerCallback

import adapters.registry
import trainer.pipeline
from adapters.runs import Run, RunStore
from flywheel.scratch import pid_alive
from trainer.config import TrainerSettings
from trainer.job import run_job

pytestmark = pytest.mark.training

ADAPTER = "support"
WAIT_S = 300  # to reach the stall: the register case trains and gates first, on 2 shared cores

# The run's stages in order (the runs store's `stage`), each with where its run stalls: after the named
# call returns (True) or as it is entered (False). sft and dpo stall after their first optimizer step, and
# export inside the data source.
STALLS = {
    "load": (trainer.pipeline, "load_trainable", True),  # the 4-bit model is in memory
    "save": (trainer.pipeline, "save_adapter", True),  # the adapter is in the work folder
    "gate": (trainer.pipeline, "evaluate", False),  # the gate keeps nothing on disk (no cache_dir here)
    "register": (adapters.registry, "manifest_of", True),  # the staging copy is made, not yet renamed
}
STAGES = ["export", "load", "sft", "dpo", "save", "gate", "register"]

# The process that forks the runs: it imports the trainer, says "ready", then forks one run per line of
# JSON on stdin and writes the run's pid.
FORKS = r"""
import json, os, signal, sys
from pathlib import Path
sys.path[:0] = [sys.argv[1], str(Path(sys.argv[1]) / "tests" / "trainer")]
from test_trainer_sigkill import run_and_stall
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps each killed run at once
print("ready", flush=True)
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        run_and_stall(**json.loads(line))
        os._exit(0)
    print(pid, flush=True)
"""


def settings_in(root: Path, model_path: Path) -> TrainerSettings:
    """One run's settings: one training step, a two-question gate."""
    return TrainerSettings(
        model_path=model_path, registry_db=root / "registry.db", adapters_dir=root / "adapters",
        feedback_db=root / "feedback.db", runs_db=root / "trainer.db", work_dir=root / "work",
        lora=tiny_lora(), train=tiny_train(max_steps=1),
        gate=tiny_gate(correctness_questions=2, traffic_prompts=0, general_text_limit=2),
    )


# ---- inside the forked run --------------------------------------------------------------------------
class _StallAfterStep(TrainerCallback):
    def __init__(self, stall: Callable[[], None]):
        self.stall = stall

    def on_step_end(self, *_args: object, **_kwargs: object) -> None:
        self.stall()


def run_and_stall(stage: str, root: str, model_path: str) -> None:
    """Run one real training run that stops, alive, once inside `stage` (root/stalled marks it)."""
    root_dir = Path(root)
    log = os.open(root_dir / "run.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)

    def stall(*_args: object) -> None:
        (root_dir / "stalled").touch()
        time.sleep(WAIT_S)  # the test kills it long before
        os._exit(1)

    def stalling(call: Callable, after: bool) -> Callable:
        def wrapped(*args: object, **kwargs: object) -> None:
            if after:
                call(*args, **kwargs)
            stall()

        return wrapped

    data: object = tiny_data(dpo=dpo_rows()) if stage == "dpo" else tiny_data(sft=sft_rows())  # one stage each
    if stage == "export":
        data = stall  # the export is the data source's call
    elif stage in ("sft", "dpo"):
        train = trainer.pipeline.STAGES[stage]
        trainer.pipeline.STAGES[stage] = lambda *a: train(*a[:-1], [*a[-1], _StallAfterStep(stall)])
    else:
        owner, name, after = STALLS[stage]
        setattr(owner, name, stalling(getattr(owner, name), after))
    run_job(settings_in(root_dir, Path(model_path)), ADAPTER, data)


# ---- the test's side ----------------------------------------------------------------------------------
@dataclass
class Forks:
    """The forking process; `start` begins a run that stalls in a stage and returns its pid."""

    proc: subprocess.Popen

    def start(self, stage: str, root: Path, model_path: Path) -> int:
        self.proc.stdin.write(json.dumps({"stage": stage, "root": str(root), "model_path": str(model_path)}) + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())


@pytest.fixture(scope="module")
def forks(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Forks]:
    errors = tmp_path_factory.mktemp("forks") / "stderr"
    with errors.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", FORKS, str(REPO)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        assert proc.stdout.readline() == "ready\n", errors.read_text()[-3000:]
        yield Forks(proc)
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def wait_until_stalled(store: RunStore, root: Path, stage: str, pid: int) -> Run:
    """The run once it stalls inside `stage`, as the runs store shows it."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        stalled = (root / "stalled").exists()  # before the read: the row is then at least as new
        runs = store.list(ADAPTER)
        if runs and stalled:
            return runs[0]
        if (runs and runs[0].finished_at is not None) or not pid_alive(pid):
            break
        time.sleep(0.2)
    log = (root / "run.log").read_text()[-3000:] if (root / "run.log").exists() else ""
    pytest.fail(f"the run did not stall in {stage}: {runs[0] if runs else 'no run'}\n{log}")


def kill(pid: int) -> None:
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def leftovers(work: Path) -> set[Path]:
    """What is under the work dir besides the adapter's (empty) home."""
    return set(work.rglob("*")) - {work / "flywheel-train", work / "flywheel-train" / ADAPTER}


def versions_and_folders(settings: TrainerSettings) -> tuple[set[Path], set[Path]]:
    """The registered versions' folders, and the version folders on disk (both relative to adapters_dir)."""
    registry, root = settings.registry(), Path(settings.adapters_dir)
    registered = {v.path.relative_to(root) for name in registry.adapters() for v in registry.versions(name)}
    return registered, {p.relative_to(root) for p in root.glob("*/v*")}


@pytest.mark.parametrize("stage", STAGES)
def test_sigkill_in_each_stage_leaves_nothing_behind(stage: str, forks: Forks, tmp_path: Path,
                                                     model_path: Path) -> None:
    settings = settings_in(tmp_path, model_path)
    store = RunStore(settings.runs_db)
    pid = forks.start(stage, tmp_path, model_path)
    try:
        killed = wait_until_stalled(store, tmp_path, stage, pid)
    finally:
        kill(pid)
    adapters_dir, work = Path(settings.adapters_dir), Path(settings.work_dir)

    # What the kill left: the run still running in the store, its lock, its work folder, its staging copy.
    assert (killed.stage, killed.pid) == (stage, pid)
    assert store.get(killed.id).status == "running" and store.lock_holder(ADAPTER)["pid"] == pid
    assert leftovers(work)
    assert bool(list(adapters_dir.glob(".staging-*"))) == (stage == "register")

    # The registry reopens: the dead run's staging copy is gone, and no version is half there.
    registered, on_disk = versions_and_folders(settings)
    assert not list(adapters_dir.glob(".staging-*"))
    assert registered == on_disk == set()

    # The next run starts (it fails fast on empty data, which is fine): the lock was taken over, the dead
    # run marked failed with why, and the dead run's work folder deleted.
    follow = run_job(settings, ADAPTER, tiny_data())
    assert follow.status == "failed" and "no usable feedback" in follow.error, follow
    dead = store.get(killed.id)
    assert dead.status == "failed" and "died" in dead.error, dead
    assert store.lock_holder(ADAPTER) is None
    assert leftovers(work) == set()


def test_runs_started_from_the_settings_work_on_the_data_volume(model_path: Path, tmp_path: Path) -> None:
    # A killed run's folder must be where the next run looks: the data directory, not a system temp dir
    # that another installation (or a tmpfs the size of RAM) shares.
    from flywheel.settings import Settings
    from trainer.cli import trainer_settings

    settings = trainer_settings(Settings(data_dir=tmp_path / "data", model_path=model_path))
    assert settings.work_dir == tmp_path / "data" / "work"
