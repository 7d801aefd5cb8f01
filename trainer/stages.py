"""The three training stages on one PEFT model: SFT, DPO and KTO with TRL, and the plan that picks them.

Every stage trains the same `default` adapter in place, so SFT -> DPO continues one set of weights.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset
from peft import PeftModel
from transformers import PreTrainedTokenizerBase, TrainerCallback
from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer, SFTConfig, SFTTrainer

from trainer.config import TrainConfig
from trainer.qlora import ADAPTER_NAME, compute_dtype

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageResult:
    """What one stage did."""

    name: str
    examples: int
    steps: int
    train_loss: float | None
    seconds: float


@dataclass(frozen=True)
class StagePlan:
    """The stages a run will train, with the reason for each choice."""

    sft: bool
    preference: str | None  # "dpo", "kto" or None
    reasons: tuple[str, ...]


def plan_stages(sft_rows: int, dpo_pairs: int, kto_rows: int, config: TrainConfig) -> StagePlan:
    """SFT on up-rated answers and corrections; then DPO with enough pairs, else KTO on unpaired thumbs."""
    reasons = [f"sft on {sft_rows} examples" if sft_rows else "no sft examples"]
    preference = None
    if dpo_pairs >= config.min_pairs_for_dpo:
        preference = "dpo"
        reasons.append(f"dpo on {dpo_pairs} pairs")
    elif kto_rows:
        preference = "kto"
        reasons.append(f"kto on {kto_rows} rated answers ({dpo_pairs} pairs < {config.min_pairs_for_dpo})")
    else:
        reasons.append("no preference stage (no pairs, no unpaired ratings)")
    return StagePlan(sft=sft_rows > 0, preference=preference, reasons=tuple(reasons))


def _common_args(config: TrainConfig, out_dir: Path, batch_size: int) -> dict:
    """TrainingArguments shared by all stages."""
    dtype = compute_dtype(config)
    return {
        "output_dir": str(out_dir),
        "learning_rate": config.learning_rate,
        "warmup_steps": config.warmup,  # transformers 5: a float below 1 is a ratio (warmup_ratio is gone)
        "lr_scheduler_type": config.lr_scheduler,
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps or -1,
        "per_device_train_batch_size": batch_size,
        "gradient_accumulation_steps": config.grad_accumulation,
        "gradient_checkpointing": config.gradient_checkpointing,
        "max_grad_norm": config.max_grad_norm,
        "seed": config.seed,
        "data_seed": config.seed,
        "max_length": config.max_length,
        "bf16": dtype == torch.bfloat16,
        "fp16": dtype == torch.float16,  # only ever on a GPU (see compute_dtype)
        "use_cpu": not torch.cuda.is_available(),
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "dataloader_num_workers": 0,
    }


def _train(trainer: object, name: str, examples: int) -> StageResult:
    start = time.monotonic()
    logger.info("stage %s: %d examples", name, examples)
    output = trainer.train()
    result = StageResult(
        name=name,
        examples=examples,
        steps=int(output.global_step),
        train_loss=float(output.training_loss) if output.training_loss is not None else None,
        seconds=round(time.monotonic() - start, 2),
    )
    logger.info("stage %s done: %d steps, loss %s, %.1fs", name, result.steps, result.train_loss, result.seconds)
    return result


def train_sft(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    config: TrainConfig,
    out_dir: Path,
    callbacks: list[TrainerCallback] | None = None,
) -> StageResult:
    """Supervised fine-tuning on prompt/completion rows; the loss covers the completion tokens only."""
    args = SFTConfig(**_common_args(config, out_dir, config.batch_size), completion_only_loss=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=callbacks)
    return _train(trainer, "sft", len(dataset))


def _drop_extra_adapters(model: PeftModel) -> None:
    for name in list(model.peft_config):
        if name != ADAPTER_NAME:
            model.delete_adapter(name)
    model.set_adapter(ADAPTER_NAME)


def dpo_args(config: TrainConfig, out_dir: Path) -> DPOConfig:
    """DPO's sigmoid loss, plus TRL's SFT term on the chosen answer when `dpo_sft_weight` > 0 (RPO)."""
    losses = {"sigmoid": 1.0, "sft": config.dpo_sft_weight} if config.dpo_sft_weight > 0 else {"sigmoid": 1.0}
    return DPOConfig(**_common_args(config, out_dir, config.batch_size), beta=config.dpo_beta,
                     loss_type=list(losses), loss_weights=list(losses.values()))


def train_dpo(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    config: TrainConfig,
    out_dir: Path,
    callbacks: list[TrainerCallback] | None = None,
) -> StageResult:
    """DPO on prompt/chosen/rejected rows, the reference being the base with the adapter disabled."""
    return _preference_stage("dpo", DPOTrainer, dpo_args(config, out_dir), model, tokenizer, dataset, config, callbacks)


def train_kto(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    config: TrainConfig,
    out_dir: Path,
    callbacks: list[TrainerCallback] | None = None,
) -> StageResult:
    """KTO on prompt/completion/label rows (unpaired thumbs up and down)."""
    # KTO estimates its KL term by pairing each prompt with another row's completion in the same batch,
    # so TRL refuses a batch of one.
    args = KTOConfig(**_common_args(config, out_dir, max(2, config.batch_size)), beta=config.kto_beta)
    return _preference_stage("kto", KTOTrainer, args, model, tokenizer, dataset, config, callbacks)


def _preference_stage(
    name: str,
    trainer_class: type,
    args: object,
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    config: TrainConfig,
    callbacks: list[TrainerCallback] | None,
) -> StageResult:
    """DPO and KTO alike: the same PEFT model trained in place, its reference picked by `_use_reference`."""
    trainer = trainer_class(
        model=model, ref_model=None, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=callbacks
    )
    _use_reference(model, config)
    try:
        return _train(trainer, name, len(dataset))
    finally:
        _drop_extra_adapters(model)


def _use_reference(model: PeftModel, config: TrainConfig) -> None:
    """Pick the reference TRL computes its log-probs with.

    Given a PEFT model that already has an adapter, TRL adds a frozen copy named "ref" and uses it as the
    reference (trl/trainer/dpo_trainer.py). Without "ref" it disables the adapter, i.e. the reference is the
    base model, which is the recipe's default: deleting the copy before training selects that.
    """
    if config.dpo_reference == "base" and "ref" in model.peft_config:
        model.delete_adapter("ref")
        model.set_adapter(ADAPTER_NAME)
