"""Why a training run stops early: typed errors the pipeline raises and `trainer.job` records."""

from __future__ import annotations


class DataRejected(Exception):
    """The exported data is empty or poisoned; `problems` lists why."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("training data refused: " + "; ".join(problems))


class Cancelled(Exception):
    """A stop was requested (SIGTERM to the watcher) before the run finished."""
