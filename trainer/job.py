"""One training run end to end: take the adapter's lock, load the data, call the pipeline, record the outcome.

`trainer.pipeline` does the work (stages, save, gate, register, promotion policy); this module only calls it,
so a run flows one way: watcher -> job -> pipeline.

Failure safety: any exception (MemoryError included) marks the run failed with its reason and registers
nothing. The adapter is written to a temp dir and registered with the registry's atomic copy, so a
process killed mid-run leaves no partial version, and the lock it held is recovered by the next run.
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
from trainer.config import TrainerSettings
from trainer.dataset import TrainingData, from_feedback
from trainer.errors import DataRejected

logger = logging.getLogger(__name__)


DataSource = Callable[[str], TrainingData]


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
        work = Path(tempfile.mkdtemp(prefix=f"flywheel-train-{adapter}-", dir=settings.work_dir))
        try:
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
            store.finish(run_id, RunStatus.FAILED, error=str(e), metrics={REFUSED_KEY: e.problems})
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

