"""Real QLoRA steps on the default model: SFT, DPO and KTO change the LoRA and leave the base alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import Dataset
from trainer_samples import dpo_rows, kto_rows, sft_rows, tiny_lora, tiny_train

from adapters.base_model import BaseModelInfo
from adapters.registry import Registry
from trainer.qlora import load_tokenizer, load_trainable, lora_state, save_adapter
from trainer.stages import dpo_args, train_dpo, train_kto, train_sft

pytestmark = pytest.mark.training


def base_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}


def assert_only_lora_changed(model: torch.nn.Module, lora_before: dict, base_before: dict) -> None:
    lora_after = lora_state(model)
    assert lora_after.keys() == lora_before.keys()
    changed = [n for n in lora_before if not torch.equal(lora_before[n], lora_after[n])]
    assert changed, "no LoRA weight changed"
    for name, before in base_before.items():
        assert torch.equal(before, model.get_parameter(name).detach()), f"base weight {name} changed"


@pytest.mark.parametrize(
    ("stage", "rows"),
    [(train_sft, sft_rows), (train_dpo, dpo_rows), (train_kto, kto_rows)],
    ids=["sft", "dpo", "kto"],
)
def test_stage_trains_lora_only_and_registers(stage, rows, model_path: Path, tmp_path: Path) -> None:
    config = tiny_train(load_in_4bit=True)  # QLoRA, the recipe where memory binds (auto picks it on a GPU)
    model, quantized = load_trainable(model_path, tiny_lora(), config)
    assert quantized, "bitsandbytes 4-bit should work on this machine"
    lora_before, base_before = lora_state(model), base_state(model)

    result = stage(model, load_tokenizer(model_path), Dataset.from_list(rows()), config, tmp_path / "out")

    assert result.steps == 2 and result.train_loss is not None
    assert_only_lora_changed(model, lora_before, base_before)
    folder = save_adapter(model, tmp_path / "adapter")
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    registry = Registry(tmp_path / "r.db", tmp_path / "adapters", BaseModelInfo.from_dir(model_path), max_rank=16)
    version = registry.register("tiny", folder, source="trained", actor="trainer", alias="candidate")
    assert version.rank == 4 and registry.resolve("tiny@candidate").version == 1


def test_dpo_adds_the_sft_term_on_the_chosen_answer_by_default(tmp_path: Path) -> None:
    default = dpo_args(tiny_train(), tmp_path)
    assert default.loss_type == ["sigmoid", "sft"] and default.loss_weights == [1.0, 1.0]
    plain = dpo_args(tiny_train(dpo_sft_weight=0), tmp_path)
    assert plain.loss_type == ["sigmoid"] and plain.loss_weights == [1.0]
    with pytest.raises(ValueError, match="dpo_sft_weight"):
        tiny_train(dpo_sft_weight=-1)
