"""The background loop: for each adapter, apply the trigger policy and run jobs one at a time.

Runs in its own process, so training never blocks serving. SIGTERM/SIGINT stop it cleanly: a run in
progress is cancelled at its next step and marked failed, its temp files removed and its lock released.

Failed runs back off: each consecutive failure doubles the wait after it (up to `max_backoff_seconds`),
and a run whose data was refused is not retried before new feedback arrives. A queued request (an
operator's `POST /admin/training/runs`) runs regardless.
"""

from __future__ import annotations

import itertools
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from adapters.names import CANARY
from adapters.runs import FINISHED, LockBusy, Run, RunStatus, RunStore
from flywheel import database
from trainer.config import TrainerSettings, TriggerPolicy
from trainer.job import run_job
from trainer.promotion import review_canary

logger = logging.getLogger(__name__)

HISTORY_RUNS = 32  # newest runs read per decision: enough failures to reach any backoff cap
CountNew = Callable[[str, float | None], int]


@dataclass(frozen=True)
class History:
    """An adapter's past runs as the trigger policy sees them."""

    last_started: float | None = None  # latest start (or queue time) of any run
    since: float | None = None  # start of the latest completed (succeeded/rejected) run; a failed run trained nothing
    failures: int = 0  # failed runs in a row since the latest completed run
    last_failure: Run | None = None  # the newest of those

    @classmethod
    def of(cls, runs: Sequence[Run]) -> History:
        """Summarise runs listed newest first, as `RunStore.list` returns them."""
        finished = [r for r in runs if r.status in FINISHED]
        failed = list(itertools.takewhile(lambda r: r.status == RunStatus.FAILED, finished))
        completed = finished[len(failed)] if len(failed) < len(finished) else None
        return cls(
            last_started=max((_start(r) for r in runs), default=None),
            since=_start(completed) if completed else None,
            failures=len(failed),
            last_failure=failed[0] if failed else None,
        )

    @property
    def refused(self) -> Run | None:
        """The newest finished run, when its data was refused."""
        return self.last_failure if self.last_failure and self.last_failure.data_refused else None


def _start(run: Run) -> float:
    return run.started_at or run.created_at


@dataclass(frozen=True)
class Decision:
    """Whether to start a run now, why, and what holds it back (`hold`, until `not_before` when known)."""

    run: bool
    reason: str
    hold: str | None = None  # interval, backoff, refused, feedback
    not_before: float | None = None


def backoff_seconds(policy: TriggerPolicy, failures: int) -> float:
    """The least time after the newest of `failures` consecutive failed runs before the next may start."""
    interval = policy.min_interval_seconds
    if failures <= 1:
        return interval
    return max(interval, min(policy.max_backoff_seconds, interval * 2.0 ** min(failures - 1, 64)))


def decide(
    policy: TriggerPolicy, now: float, history: History, new_feedback: int, new_since_refusal: int = 0
) -> Decision:
    """Apply the trigger policy: failures and the interval hold a run back, then feedback or the schedule start it."""
    # new_feedback: records since history.since; new_since_refusal: records since the refused run started
    held = _held(policy, now, history, new_since_refusal)
    if held is not None:
        return held
    if policy.min_new_feedback is not None and new_feedback >= policy.min_new_feedback:
        return Decision(True, f"{new_feedback} new feedback records (>= {policy.min_new_feedback})")
    if policy.schedule_seconds is not None and new_feedback > 0:
        last = history.last_started
        if last is None or now - last >= policy.schedule_seconds:
            return Decision(True, f"schedule: {policy.schedule_seconds:.0f}s since the last run")
    wanted = f" (< {policy.min_new_feedback})" if policy.min_new_feedback is not None else ""
    return Decision(False, f"{new_feedback} new feedback records{wanted}; waiting", "feedback")


def _held(policy: TriggerPolicy, now: float, history: History, new_since_refusal: int) -> Decision | None:
    if history.refused is not None and new_since_refusal <= 0:
        run = history.refused
        return Decision(False, f"run {run.id} failed: {run.error}; waiting for new feedback", "refused")
    holds = []
    if history.last_failure is not None:  # listed first: on a tie the backoff is the reason shown
        run, count = history.last_failure, history.failures
        until = (run.finished_at or _start(run)) + backoff_seconds(policy, count)
        failed = f"{count} failed run{'s' if count > 1 else ''} in a row (latest: run {run.id}); backing off"
        holds.append((until, "backoff", failed))
    if history.last_started is not None:
        until = history.last_started + policy.min_interval_seconds
        holds.append((until, "interval", f"last run started {_clock(history.last_started)}; the interval holds"))
    until, hold, why = max(holds, key=lambda h: h[0], default=(now, None, ""))
    if now >= until:
        return None
    return Decision(False, f"{why} until {_clock(until)}", hold, until)


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def assess(policy: TriggerPolicy, store: RunStore, count_new: CountNew, adapter: str, now: float) -> Decision:
    """The trigger policy's decision for one adapter, from its runs and its feedback counts."""
    history = History.of(store.list(adapter, HISTORY_RUNS))
    refused = history.refused
    since_refusal = count_new(adapter, _start(refused)) if refused is not None else 0
    return decide(policy, now, history, count_new(adapter, history.since), since_refusal)


def feedback_counter(feedback_db: Path) -> CountNew:
    """Counts an adapter's ratings and pairs stored since a time (0 while there is no feedback store)."""

    def count(adapter: str, since: float | None) -> int:
        from feedback.export import count_usable_since
        from feedback.reader import FeedbackReader

        if not database.exists(feedback_db, "feedback"):
            return 0
        with FeedbackReader(feedback_db) as store:
            return count_usable_since(store, adapter, since)

    return count


def _count_new_feedback(settings: TrainerSettings) -> CountNew:
    return feedback_counter(settings.feedback_db)


def _known_adapters(settings: TrainerSettings) -> Callable[[], list[str]]:
    def adapters() -> list[str]:
        from trainer.dataset import adapters_with_feedback

        return sorted(set(settings.registry().adapters()) | set(adapters_with_feedback(settings.feedback_db)))

    return adapters


class Watcher:
    """Polls every `poll_seconds` (default: the trigger policy's); runs at most one job at a time."""

    def __init__(
        self,
        settings: TrainerSettings,
        poll_seconds: float | None = None,
        *,
        count_new: CountNew | None = None,
        list_adapters: Callable[[], list[str]] | None = None,
        run: Callable[..., Run] = run_job,
        clock: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self.poll_seconds = poll_seconds or settings.trigger.poll_seconds
        self.clock = clock
        self.store = RunStore(settings.runs_db, clock=clock)  # one clock for the runs' stamps and the policy
        self.count_new = count_new or _count_new_feedback(settings)
        self.list_adapters = list_adapters or _known_adapters(settings)
        self.run = run
        self._stop = threading.Event()
        self._noted: dict[str, tuple[str | None, float | None]] = {}  # the hold last logged per adapter

    def stop(self, *_: object) -> None:
        """Ask the loop (and a run in progress) to end."""
        if not self._stop.is_set():
            logger.info("watcher stopping")
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def tick(self, now: float | None = None) -> list[Run]:
        """One pass over the adapters; returns the runs it finished."""
        try:
            self.review_canaries()
        except Exception:  # a failed review must not stop training; the next tick retries
            logger.exception("canary review failed")
        finished = []
        queued = set(self.store.queued_adapters())
        for adapter in sorted(set(self.list_adapters()) | queued):
            if self.stopping:
                break
            reason = "a run was requested" if adapter in queued else self._due(adapter, now or self.clock())
            if reason is None:
                continue
            logger.info("starting a run for %s: %s", adapter, reason)
            self._noted.pop(adapter, None)  # whatever holds it back after this run is news again
            try:
                finished.append(self.run(self.settings, adapter, store=self.store, should_stop=lambda: self.stopping))
            except LockBusy as e:
                logger.info("skipping %s: %s", adapter, e)
        return finished

    def _due(self, adapter: str, now: float) -> str | None:
        """The reason to run `adapter` now, or None; a new hold is logged at INFO, a repeated one at DEBUG."""
        decision = assess(self.settings.trigger, self.store, self.count_new, adapter, now)
        if decision.run:
            return decision.reason
        noted = (decision.hold, decision.not_before)
        level = logging.DEBUG if self._noted.get(adapter) == noted else logging.INFO
        self._noted[adapter] = noted
        logger.log(level, "not training %s: %s", adapter, decision.reason)
        return None

    def review_canaries(self) -> None:
        """Promote or roll back running canaries whose ratings decide it (policy `canary`)."""
        from feedback.reader import FeedbackReader

        registry = self.settings.registry()
        canaries = [name for (name, alias) in registry.aliases() if alias == CANARY]
        if not canaries or not database.exists(self.settings.feedback_db, "feedback"):
            return
        with FeedbackReader(self.settings.feedback_db) as store:
            for adapter in canaries:
                review_canary(registry, store, adapter, self.settings.promotion)

    def run_forever(self) -> None:
        """Loop until SIGTERM/SIGINT (handlers installed when called from the main thread)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        logger.info("watcher started (poll every %.0fs)", self.poll_seconds)
        while not self.stopping:
            try:
                self.tick()
            except Exception:  # a broken tick must not kill the watcher; the next one retries
                logger.exception("watcher tick failed")
            self._stop.wait(self.poll_seconds)
        logger.info("watcher stopped")
