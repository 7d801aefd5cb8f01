"""The background loop: for each adapter, apply the trigger policy and run jobs one at a time.

Runs in its own process (DESIGN.md invariant 4). SIGTERM/SIGINT stop it cleanly: a run in progress is
cancelled at its next step and marked failed, its temp files removed and its lock released.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from adapters.names import CANARY
from adapters.runs import LockBusy, Run, RunStore
from trainer.config import TriggerPolicy
from trainer.job import TrainerSettings, run_job
from trainer.promotion import review_canary

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    """Whether to start a run now, and why."""

    run: bool
    reason: str


def decide(policy: TriggerPolicy, now: float, last_started: float | None, new_feedback: int) -> Decision:
    """Apply the trigger policy: enough new feedback and/or the schedule, never within the minimum interval."""
    since_last = None if last_started is None else now - last_started
    if since_last is not None and since_last < policy.min_interval_seconds:
        return Decision(False, f"last run {since_last:.0f}s ago (< {policy.min_interval_seconds:.0f}s interval)")
    if policy.min_new_feedback is not None and new_feedback >= policy.min_new_feedback:
        return Decision(True, f"{new_feedback} new feedback records (>= {policy.min_new_feedback})")
    if policy.schedule_seconds is not None and new_feedback > 0:
        if since_last is None or since_last >= policy.schedule_seconds:
            return Decision(True, f"schedule: {policy.schedule_seconds:.0f}s since the last run")
    return Decision(False, f"{new_feedback} new feedback records; waiting")


def _count_new_feedback(settings: TrainerSettings) -> Callable[[str, float | None], int]:
    def count(adapter: str, since: float | None) -> int:
        from feedback.export import count_usable_since
        from feedback.store import FeedbackStore

        if not settings.feedback_db.exists():
            return 0
        with FeedbackStore(settings.feedback_db) as store:
            return count_usable_since(store, adapter, since)

    return count


def _known_adapters(settings: TrainerSettings) -> Callable[[], list[str]]:
    def adapters() -> list[str]:
        from trainer.dataset import adapters_with_feedback

        return sorted(set(settings.registry().adapters()) | set(adapters_with_feedback(settings.feedback_db)))

    return adapters


class Watcher:
    """Polls every `poll_seconds`; runs at most one job at a time."""

    def __init__(
        self,
        settings: TrainerSettings,
        poll_seconds: float = 30.0,
        *,
        count_new: Callable[[str, float | None], int] | None = None,
        list_adapters: Callable[[], list[str]] | None = None,
        run: Callable[..., Run] = run_job,
    ):
        self.settings = settings
        self.poll_seconds = poll_seconds
        self.store = RunStore(settings.runs_db)
        self.count_new = count_new or _count_new_feedback(settings)
        self.list_adapters = list_adapters or _known_adapters(settings)
        self.run = run
        self._stop = threading.Event()

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
            if adapter in queued:
                reason = "a run was requested"
            else:
                last = self.store.last_started(adapter)
                decision = decide(self.settings.trigger, now or time.time(), last, self.count_new(adapter, last))
                logger.debug("%s: %s", adapter, decision.reason)
                if not decision.run:
                    continue
                reason = decision.reason
            logger.info("starting a run for %s: %s", adapter, reason)
            try:
                finished.append(self.run(self.settings, adapter, store=self.store, should_stop=lambda: self.stopping))
            except LockBusy as e:
                logger.info("skipping %s: %s", adapter, e)
        return finished

    def review_canaries(self) -> None:
        """Promote or roll back running canaries whose ratings decide it (policy `canary`)."""
        from feedback.store import FeedbackStore

        registry = self.settings.registry()
        canaries = [name for (name, alias) in registry.aliases() if alias == CANARY]
        if not canaries:
            return
        with FeedbackStore(self.settings.feedback_db) as store:
            for adapter in canaries:
                review_canary(registry, store.rating_counts(adapter), adapter, self.settings.promotion)

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
