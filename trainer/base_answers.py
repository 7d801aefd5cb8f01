"""The bare base model's greedy answers, kept on disk between gate runs.

The gate asks the candidate, production and the base the same closed-book questions on every run. The
base's answers depend only on the model files, the prompts and how they are generated (dtype, answer
length, batch shape, library versions), so a run after the first reads them back instead of spending
about a third of the gate's time on them (docs/architecture.md, "The gate"). The key covers all of those;
anything else about a run cannot change them. A missing, unreadable or mismatched file is recomputed,
never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import transformers

logger = logging.getLogger(__name__)

FORMAT = 1


def model_identity(model_path: Path) -> dict:
    """What names a model's weights: its resolved folder, config, and each weight file's size and mtime."""
    path = Path(model_path).resolve()
    files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf") and p.is_file())
    config = path / "config.json"
    return {
        "path": str(path),
        "config": hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else None,
        "weights": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files],
    }


class BaseAnswerCache:
    """Answers of the base model keyed by everything they depend on; `None` directory: no cache.

    `folder` names what the answers are for: the gate's closed-book answers, or replay rows (trainer.replay).
    """

    def __init__(self, directory: Path | None, model_path: Path, generation: dict, folder: str = "gate_base_answers"):
        self.directory = Path(directory) / folder if directory is not None else None
        self.context = {
            "format": FORMAT,
            "model": model_identity(model_path) if directory is not None else None,
            "generation": generation,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        }

    def _key(self, prompts: Sequence[list[dict]]) -> str:
        blob = json.dumps({**self.context, "prompts": list(prompts)}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def answers(self, prompts: Sequence[list[dict]], compute: Callable[[], list[str]]) -> tuple[list[str], bool]:
        """The cached answers to `prompts`, or `compute()`'s, stored for next time. Returns (answers, was_cached)."""
        if self.directory is None or not prompts:
            return compute(), False
        path = self.directory / f"{self._key(prompts)}.json"
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(stored, list) and len(stored) == len(prompts) and all(isinstance(a, str) for a in stored):
                return stored, True
            logger.warning("base answer cache %s does not match its prompts; recomputing", path)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            logger.warning("base answer cache %s is unreadable (%s); recomputing", path, e)
        answers = compute()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(answers, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, path)  # a reader sees the old file or the whole new one
        except OSError as e:  # a read-only or full disk costs time next run, not this run's verdict
            logger.warning("cannot store base answers in %s: %s", self.directory, e)
        return answers, False
