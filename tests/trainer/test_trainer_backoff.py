"""Failed runs back off, refused data waits for new feedback, and the watcher never loops on a failure."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import pytest

from adapters.runs import Run, RunStore
from flywheel.settings import Settings
from trainer.cli import next_runs
from trainer.config import TrainerSettings, TriggerPolicy
from trainer.watcher import History, Watcher, backoff_seconds, decide

NOW = 1_000_000.0
POLICY = TriggerPolicy(min_new_feedback=10, min_interval_seconds=600, max_backoff_seconds=3600)
EMPTY = "no usable feedback: the SFT, DPO and KTO sets are all empty"
REFUSED = f"training data refused: {EMPTY}"  # what trainer.job records for DataRejected
OOM = "OutOfMemoryError: CUDA out of memory"


def _run(run_id: int, status: str, started: float, finished: float | None = None, *, refused: bool = False) -> Run:
    error = REFUSED if refused else (OOM if status == "failed" else None)
    metrics = {"problems": [EMPTY]} if refused else {}
    return Run(
        id=run_id, adapter="a", status=status, stage=None, step=0, total_steps=0, loss=None, metrics=metrics,
        error=error, created_at=started, started_at=started, finished_at=finished,
    )  # fmt: skip


def test_a_failed_run_holds_the_next_one_for_the_interval_after_it_failed() -> None:
    history = History.of([_run(1, "failed", NOW - 2000, NOW - 100)])  # out of memory after half an hour
    held = decide(POLICY, NOW, history, 500)
    assert not held.run and held.hold == "backoff" and held.not_before == NOW - 100 + 600
    assert "run 1" in held.reason
    assert decide(POLICY, NOW + 500, history, 500).run


def test_consecutive_failures_wait_longer_up_to_the_cap() -> None:
    history = History.of([_run(i, "failed", NOW - 10 * i, NOW - 10 * i) for i in (3, 2, 1)])  # newest first
    assert history.failures == 3 and history.last_failure.id == 3
    assert [backoff_seconds(POLICY, n) for n in (1, 2, 3, 4, 10)] == [600, 1200, 2400, 3600, 3600]
    assert not decide(POLICY, NOW - 30 + 2000, history, 500).run  # past one interval, not past four
    assert decide(POLICY, NOW - 30 + 2400, history, 500).run
    short_cap = TriggerPolicy(min_new_feedback=10, min_interval_seconds=600, max_backoff_seconds=60)
    assert backoff_seconds(short_cap, 5) == 600  # the cap never undercuts the interval


def test_a_completed_run_resets_the_backoff() -> None:
    failures = [_run(i, "failed", NOW - 1000 + i, NOW - 1000 + i) for i in (3, 2, 1)]
    for status in ("succeeded", "rejected"):  # a gate rejection is a finished run, not a failure
        history = History.of([_run(4, status, NOW - 700, NOW - 650), *failures])
        assert history.failures == 0 and history.last_failure is None and history.since == NOW - 700
        assert decide(POLICY, NOW, history, 10).run


def test_feedback_a_failed_run_never_trained_on_still_counts() -> None:
    history = History.of([_run(2, "failed", NOW - 5000, NOW - 4000), _run(1, "succeeded", NOW - 9000, NOW - 8000)])
    assert history.since == NOW - 9000  # new feedback is counted from the last run that trained
    assert History.of([_run(1, "failed", NOW - 10, NOW - 5)]).since is None


def test_refused_data_is_retried_only_once_new_feedback_arrived_after_it() -> None:
    history = History.of([_run(1, "failed", NOW - 90_000, NOW - 90_000, refused=True)])
    waiting = decide(POLICY, NOW, history, 500, new_since_refusal=0)
    assert not waiting.run and waiting.hold == "refused" and EMPTY in waiting.reason
    assert decide(POLICY, NOW, history, 500, new_since_refusal=1).run
    assert decide(POLICY, NOW, history, 5, new_since_refusal=1).hold == "feedback"  # still needs min_new_feedback
    assert History.of([_run(1, "failed", NOW - 90_000, NOW - 90_000)]).refused is None  # an OOM is no refusal


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _watcher(tmp_path: Path, clock: Clock, feedback: list[float], *, cost: float, refuse: bool) -> Watcher:
    """A Watcher on a real RunStore whose every run fails after `cost` seconds, as trainer.job records it."""

    def failing_run(settings: TrainerSettings, adapter: str, *, store: RunStore, should_stop: object) -> Run:
        with store.running(adapter) as run_id:
            clock.now += cost
            if refuse:
                store.finish(run_id, "failed", error=REFUSED, metrics={"problems": [EMPTY]})
            else:
                store.finish(run_id, "failed", error=OOM)
        return store.get(run_id)

    def count(adapter: str, since: float | None) -> int:
        return sum(1 for t in feedback if since is None or t >= since)

    settings = TrainerSettings(
        model_path=tmp_path / "model", registry_db=tmp_path / "r.db", adapters_dir=tmp_path / "adapters",
        feedback_db=tmp_path / "f.db", runs_db=tmp_path / "trainer.db", trigger=POLICY,
    )  # fmt: skip
    return Watcher(settings, count_new=count, list_adapters=lambda: ["a"], run=failing_run, clock=clock)


def _poll(watcher: Watcher, clock: Clock, ticks: int, feedback: list[float] | None = None) -> list[Run]:
    """`ticks` polls 30 s apart; with `feedback`, 60 new records arrive before each."""
    runs = []
    for _ in range(ticks):
        if feedback is not None:
            feedback.extend([clock.now] * 60)
        runs += watcher.tick()
        clock.now += 30
    return runs


def test_refused_data_starts_one_run_not_one_per_poll(tmp_path: Path) -> None:
    clock, feedback = Clock(NOW), [NOW - 60.0] * 100
    watcher = _watcher(tmp_path, clock, feedback, cost=5, refuse=True)
    runs = _poll(watcher, clock, 10)
    assert len(runs) == 1 and runs[0].error == REFUSED and len(watcher.store.list("a")) == 1
    clock.now += 100_000  # long past any backoff, and still nothing new to train on
    assert watcher.tick() == []
    feedback.append(clock.now)
    clock.now += 30
    assert [r.id for r in watcher.tick()] == [2]


def test_a_failure_slower_than_the_interval_is_not_retried_at_the_next_poll(tmp_path: Path) -> None:
    clock, feedback = Clock(NOW), []
    watcher = _watcher(tmp_path, clock, feedback, cost=1200, refuse=False)  # 20 minutes, then out of memory
    assert len(_poll(watcher, clock, 10, feedback)) == 1  # with feedback flowing all the while


def test_the_watcher_doubles_its_wait_after_each_failure(tmp_path: Path) -> None:
    clock, feedback = Clock(NOW), []
    watcher = _watcher(tmp_path, clock, feedback, cost=5, refuse=False)
    _poll(watcher, clock, 400, feedback)  # 200 minutes
    runs = sorted(watcher.store.list("a"), key=lambda r: r.id)
    gaps = [later.started_at - earlier.finished_at for earlier, later in itertools.pairwise(runs)]
    assert len(runs) == 6
    for failures, gap in enumerate(gaps, start=1):
        assert backoff_seconds(POLICY, failures) <= gap < backoff_seconds(POLICY, failures) + 30


def test_a_queued_request_runs_despite_the_backoff(tmp_path: Path) -> None:
    clock, feedback = Clock(NOW), [NOW - 60.0] * 100
    watcher = _watcher(tmp_path, clock, feedback, cost=5, refuse=True)
    assert len(_poll(watcher, clock, 2)) == 1
    queued = watcher.store.create("a", "queued")
    assert [r.id for r in _poll(watcher, clock, 3)] == [queued]


def test_a_hold_is_logged_at_info_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock, feedback = Clock(NOW), [NOW - 60.0] * 100
    watcher = _watcher(tmp_path, clock, feedback, cost=5, refuse=True)
    with caplog.at_level(logging.DEBUG, logger="trainer.watcher"):
        _poll(watcher, clock, 6)
    holds = [r for r in caplog.records if r.getMessage().startswith("not training a:")]
    assert [r.levelno for r in holds] == [logging.INFO] + [logging.DEBUG] * 4
    assert "waiting for new feedback" in holds[0].getMessage()


def test_runs_listing_says_when_each_adapter_trains_next(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    store = RunStore(settings.trainer_db)
    refused = store.acquire("a")
    store.finish(refused, "failed", error=REFUSED, metrics={"problems": [EMPTY]})
    store.release("a")
    store.create("b", "queued")
    plans = next_runs(settings, ["a", "b"])
    assert f"run {refused} failed: {REFUSED}; waiting for new feedback" == plans["a"]
    assert "requested" in plans["b"]
