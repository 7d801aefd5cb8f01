"""Load the base for training (4-bit NF4 QLoRA where it pays, else plain LoRA on the 16-bit base) with a LoRA on top."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, PreTrainedTokenizerBase

from flywheel.dtype import choose_dtype
from trainer.config import LoraRecipe, TrainConfig

logger = logging.getLogger(__name__)

ADAPTER_NAME = "default"  # PEFT's name for the adapter we train and save


def compute_dtype(config: TrainConfig) -> torch.dtype:
    """The dtype activations and 4-bit dequantization use: `config.dtype`, with `auto` chosen by the hardware."""
    choice = choose_dtype(config.dtype)
    if choice.name == "float16" and not torch.cuda.is_available():
        # fp16 training needs a GPU's loss scaler; on a CPU it would underflow. Serving may still use fp16.
        return torch.float32
    return choice.torch_dtype()


def load_tokenizer(model_path: Path) -> PreTrainedTokenizerBase:
    """The base model's tokenizer, with a pad token (some chat models ship without one)."""
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def use_4bit(setting: bool | str) -> bool:
    """Whether to load the base in 4-bit: as set, or with `auto` on a CUDA GPU only.

    On a CPU, bitsandbytes dequantizes the 4-bit weights on every matmul, forward and backward; with a model
    small enough for a CPU, the memory saved binds nothing and each step is slower (`flywheel bench quant`)."""
    return torch.cuda.is_available() if setting == "auto" else bool(setting)


def _load_4bit(model_path: Path, dtype: torch.dtype) -> torch.nn.Module | None:
    try:
        quant = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
        return AutoModelForCausalLM.from_pretrained(model_path, quantization_config=quant, dtype=dtype)
    except (ImportError, RuntimeError, ValueError) as e:
        logger.warning("4-bit loading is unavailable here (%s); training plain LoRA on the full-precision base", e)
        return None


def load_base(model_path: Path, config: TrainConfig) -> tuple[torch.nn.Module, bool]:
    """Load the frozen base model; returns (model, quantized). Falls back to full precision with a WARNING."""
    torch.set_num_threads(config.num_threads)
    dtype = compute_dtype(config)
    model = _load_4bit(model_path, dtype) if use_4bit(config.load_in_4bit) else None
    quantized = model is not None
    if model is None:
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    if quantized:
        # Casts norms to fp32 and enables input grads so checkpointed 4-bit layers get gradients.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    else:
        for param in model.parameters():
            param.requires_grad_(False)
        if config.gradient_checkpointing:
            model.enable_input_require_grads()
    model.config.use_cache = False  # the KV cache is useless in training and clashes with checkpointing
    how = "4-bit NF4" if quantized else "16-bit" + (" (auto: no CUDA GPU)" if config.load_in_4bit == "auto" else "")
    logger.info("loaded base %s (%s, %s compute: %s)", model_path, how, dtype, choose_dtype(config.dtype).reason)
    return model, quantized


def lora_config(recipe: LoraRecipe) -> LoraConfig:
    """The PEFT config of a fresh adapter: plain LoRA, nothing vLLM cannot serve."""
    return LoraConfig(
        r=recipe.r,
        lora_alpha=recipe.alpha,
        lora_dropout=recipe.dropout,
        target_modules=list(recipe.target_modules),
        use_dora=False,
        modules_to_save=None,
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_trainable(
    model_path: Path, recipe: LoraRecipe, config: TrainConfig, start_from: Path | None = None
) -> tuple[PeftModel, bool]:
    """Base + a trainable LoRA: fresh from `recipe`, or continued from the adapter folder `start_from`.

    Returns (model, quantized). A continued adapter keeps its own rank and targets.
    """
    base, quantized = load_base(model_path, config)
    torch.manual_seed(config.seed)  # LoRA A init
    if start_from is None:
        model = get_peft_model(base, lora_config(recipe), adapter_name=ADAPTER_NAME)
    else:
        model = PeftModel.from_pretrained(base, start_from, adapter_name=ADAPTER_NAME, is_trainable=True)
        logger.info("continuing training from adapter %s", start_from)
    return model, quantized


def lora_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the trainable LoRA weights (for tests and change checks)."""
    return {n: p.detach().float().clone() for n, p in model.named_parameters() if "lora_" in n}


def save_adapter(model: PeftModel, out_dir: Path) -> Path:
    """Save only the trained adapter as safetensors; extra adapters (TRL's 'ref') are never written."""
    for name in list(model.peft_config):
        if name != ADAPTER_NAME:
            model.delete_adapter(name)
    model.save_pretrained(out_dir, selected_adapters=[ADAPTER_NAME], safe_serialization=True)
    return out_dir
