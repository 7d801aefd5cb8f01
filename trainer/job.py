"""One training run end to end: take the adapter's lock, load the data, call the pipeline, record the outcome.

`trainer.pipeline` does the work (stages, save, gate, register, promotion policy); this module only calls it,
so a run flows one way: watcher -> job -> pipeline.

Failure safety: any exception (MemoryError included) marks the run failed with its reason and registers
nothing. The adapter is written to the run's work folder and registered with the registry's atomic copy,
so a process killed mid-run leaves no partial version, and the lock it held is recovered by the next run.
A killed run cannot remove its work folder, `<work_dir>/flywheel-train/<adapter>/run-<id>-<host>-<pid>`:
the next run of the adapter deletes the folders of dead processes once it holds the lock.
"""

from __future__ import annotations

import gc
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from adapters.runs import REFUSED_KEY, Run, RunStatus, RunStore
from flywheel.scratch import clear_dead, owned_name
from trainer.config import TrainerSettings
from trainer.dataset import TrainingData, from_feedback
from trainer.errors import DataRejected

logger = logging.getLogger(__name__)


DataSource = Callable[[str], TrainingData]
WORK_HOME = "flywheel-train"  # <work_dir>/flywheel-train/<adapter>/run-<id>-<host>-<pid>: one run's files
RUN_PREFIX = "run-"


def run_job(
    settings: TrainerSettings,
    adapter: str,
    data: TrainingData | DataSource | None = None,
    *,
    store: RunStore | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Run:
    """Train, gate and register one new version of `adapter`; returns the finished run row.

    `data` is a TrainingData, a callable adapter -> TrainingData, or None to export from the feedback store.
    Raises LockBusy when another live run holds the adapter.
    """
    from trainer.pipeline import Pipeline  # heavy imports (torch, TRL) only once a run really starts

    store = store or RunStore(settings.runs_db)
    store.recover_orphans()
    with store.running(adapter) as run_id:
        started = time.monotonic()
        work = _work_folder(settings, adapter, run_id)
        try:
            _make_work_folder(work)
            pipeline = Pipeline(settings, adapter, store, run_id, should_stop)
            outcome = pipeline.run(_load_data(settings, adapter, data, store, run_id), work, started)
            store.finish(
                run_id,
                outcome.status,
                error=outcome.error,
                result_version=outcome.version,
                metrics={**store.get(run_id).metrics, **outcome.metrics},  # keeps the loss curve (progress.py)
                stage="done",
            )
        except DataRejected as e:
            metrics = {**store.get(run_id).metrics, REFUSED_KEY: e.problems}  # keeps who asked for the run, and why
            store.finish(run_id, RunStatus.FAILED, error=str(e), metrics=metrics)
        except Exception as e:  # MemoryError and Cancelled included
            logger.exception("run %d for %s failed", run_id, adapter)
            store.finish(run_id, RunStatus.FAILED, error=f"{type(e).__name__}: {e}")
        except BaseException as e:  # KeyboardInterrupt / SystemExit: record, then let it through
            store.finish(run_id, RunStatus.FAILED, error=f"interrupted ({type(e).__name__})")
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
            gc.collect()
    return store.get(run_id)


def _work_folder(settings: TrainerSettings, adapter: str, run_id: int) -> Path:
    """Where this run keeps its files: <work_dir>/flywheel-train/<adapter>/run-<id>-<host>-<pid>."""
    home = Path(settings.work_dir or tempfile.gettempdir()) / WORK_HOME / adapter
    return home / owned_name(RUN_PREFIX, str(run_id))


def _make_work_folder(work: Path) -> None:
    """Make the run's work folder, first deleting the ones killed runs of the adapter left beside it."""
    work.parent.mkdir(parents=True, exist_ok=True)
    # Only folders of dead pids go: the lock already rules out a live run of this adapter in this runs
    # store, and the pid test also spares another installation's run sharing the system temp dir.
    clear_dead(work.parent, RUN_PREFIX)
    work.mkdir()


def _load_data(
    settings: TrainerSettings,
    adapter: str,
    data: TrainingData | DataSource | None,
    store: RunStore,
    run_id: int,
) -> TrainingData:
    store.update(run_id, stage="export")
    if isinstance(data, TrainingData):
        return data
    if data is not None:
        return data(adapter)
    return from_feedback(settings.feedback_db, adapter)

