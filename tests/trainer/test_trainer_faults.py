"""Out of memory in each stage of a run: the run fails with the reason and its stage, the lock is freed,
nothing is registered, no staging folder is left behind. (A run killed by SIGKILL is test_trainer_sigkill.py's.)

The fault is raised by the stage's own entry point, as the allocator raises MemoryError from inside it; the
real stages before it run for real.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from trainer_samples import dpo_rows, sft_rows, tiny_data, tiny_gate, tiny_train

import adapters.registry
import trainer.pipeline
from adapters.errors import AdapterNotFound
from adapters.runs import RunStore
from trainer.config import TrainerSettings
from trainer.job import run_job

pytestmark = pytest.mark.training


def out_of_memory(*_args: object, **_kwargs: object) -> None:
    raise MemoryError("simulated: the allocator refused 2.0 GiB")


# stage recorded on the run -> (object, attribute) whose call fails
FAULTS = {
    "load": (trainer.pipeline, "load_trainable"),
    "sft": (trainer.pipeline.STAGES, "sft"),
    "dpo": (trainer.pipeline.STAGES, "dpo"),
    "save": (trainer.pipeline, "save_adapter"),
    "gate": (trainer.pipeline, "evaluate"),
    "register": (adapters.registry, "manifest_of"),  # inside the registry's copy, after the staging folder
}


@pytest.mark.parametrize("stage", ["export", *FAULTS])
def test_out_of_memory_in_any_stage_fails_cleanly(stage: str, trainer_settings: TrainerSettings,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    settings = replace(trainer_settings, train=tiny_train(max_steps=1),
                       gate=tiny_gate(correctness_questions=2, traffic_prompts=0, general_text_limit=2))
    data: object = tiny_data(dpo=dpo_rows()) if stage == "dpo" else tiny_data(sft=sft_rows())  # one stage each
    if stage == "export":
        data = out_of_memory  # the export is the data source's call
    else:
        owner, name = FAULTS[stage]
        (monkeypatch.setitem if isinstance(owner, dict) else monkeypatch.setattr)(owner, name, out_of_memory)

    run = run_job(settings, "support", data)

    assert run.status == "failed" and run.error.startswith("MemoryError: simulated"), run
    assert run.stage == stage  # the run says where it stopped
    assert RunStore(settings.runs_db).lock_holder("support") is None
    with pytest.raises(AdapterNotFound):
        settings.registry().versions("support")
    adapters_dir = Path(settings.adapters_dir)
    assert not adapters_dir.exists() or not [p for p in adapters_dir.rglob("*") if p.is_dir()]
