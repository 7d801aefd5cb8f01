"""One training run end to end: lock, data, stages, save, gate, register, promotion policy.

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
from dataclasses import dataclass, field
from pathlib import Path

from adapters.base_model import BaseModelInfo
from adapters.errors import AdapterNotFound
from adapters.registry import Registry
from adapters.runs import Run, RunStore
from adapters.version import AdapterVersion
from trainer.config import GateConfig, LoraRecipe, PromotionPolicy, TrainConfig, TriggerPolicy, config_dict
from trainer.dataset import TrainingData, from_feedback, screen

logger = logging.getLogger(__name__)

MAX_LINEAGE_IDS = 2000  # keep the version's metrics row small; the dataset hash covers the rest


class DataRejected(Exception):
    """The exported data is empty or poisoned; `problems` lists why."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("training data refused: " + "; ".join(problems))


class Cancelled(Exception):
    """A stop was requested (SIGTERM to the watcher) before the run finished."""


@dataclass
class TrainerSettings:
    """Paths and policies a training run needs; built once at the entry point from `Settings`."""

    model_path: Path = field(metadata={"help": "Base model directory (the one the gateway serves)."})
    registry_db: Path = field(metadata={"help": "The adapter registry's SQLite file."})
    adapters_dir: Path = field(metadata={"help": "Where the registry keeps version folders."})
    feedback_db: Path = field(metadata={"help": "The feedback store's SQLite file."})
    runs_db: Path = field(metadata={"help": "The trainer's runs and locks (default data/trainer.db)."})
    work_dir: Path | None = field(default=None, metadata={"help": "Parent of per-run temp dirs (None: system)."})
    max_lora_rank: int = field(default=16, metadata={"help": "Largest rank the engine serves."})
    lora: LoraRecipe = field(default_factory=LoraRecipe, metadata={"help": "LoRA shape of fresh adapters."})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "Optimisation settings."})
    gate: GateConfig = field(default_factory=GateConfig, metadata={"help": "Evaluation gate thresholds."})
    promotion: PromotionPolicy = field(default_factory=PromotionPolicy, metadata={"help": "Promotion policy."})
    trigger: TriggerPolicy = field(default_factory=TriggerPolicy, metadata={"help": "Watcher trigger policy."})

    def registry(self) -> Registry:
        """The registry for this base model (raises FileNotFoundError when the model is missing)."""
        base = BaseModelInfo.from_dir(self.model_path)
        return Registry(self.registry_db, self.adapters_dir, base, self.max_lora_rank)


DataSource = Callable[[str], TrainingData]


def production_of(registry: Registry, adapter: str) -> AdapterVersion | None:
    """The adapter's production version, or None for an adapter not registered or without production."""
    try:
        return registry.resolve(adapter)
    except AdapterNotFound:
        return None


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
                metrics=outcome.metrics,
                stage="done",
            )
        except DataRejected as e:
            store.finish(run_id, "failed", error=str(e), metrics={"problems": e.problems})
        except Exception as e:  # MemoryError and Cancelled included
            logger.exception("run %d for %s failed", run_id, adapter)
            store.finish(run_id, "failed", error=f"{type(e).__name__}: {e}")
        except BaseException as e:  # KeyboardInterrupt / SystemExit: record, then let it through
            store.finish(run_id, "failed", error=f"interrupted ({type(e).__name__})")
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


def version_metrics(data: TrainingData, settings: TrainerSettings, extra: dict) -> dict:
    """The lineage and numbers stored on a registered version."""
    ids = data.feedback_ids
    return {
        "feedback_count": len(ids),
        "feedback_ids": ids[:MAX_LINEAGE_IDS],
        "feedback_ids_truncated": len(ids) > MAX_LINEAGE_IDS,
        "dataset_hash": data.dataset_hash,
        "config": config_dict(settings.lora, settings.train, settings.gate, settings.promotion),
        **extra,
    }


def screen_or_raise(data: TrainingData, preference: str | None, config: TrainConfig) -> None:
    """Raise DataRejected when the data is empty or poisoned."""
    problems = screen(data, preference, config.max_example_chars)
    if problems:
        raise DataRejected(problems)
