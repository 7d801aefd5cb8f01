"""Real PEFT LoRA adapters for the benchmark's base model, built at run time (nothing is fetched)."""

from __future__ import annotations

from pathlib import Path


def build_loras(model_dir: Path, folders: list[Path], *, rank: int = 16, seeds: list[int] | None = None,
                std: float = 0.01) -> list[Path]:
    """Save a distinct PEFT LoRA (q/k/v/o projections, non-zero random weights of deviation `std`) for
    `model_dir` into each of `folders`, the i-th drawn with seed `seeds[i]` (default: i), from one loaded model
    (loading is slow). The default is small: the adapter costs what a trained one costs without wrecking the
    text; a test that needs answers the adapter visibly changes asks for more."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                        init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    for folder, seed in zip(folders, range(len(folders)) if seeds is None else seeds, strict=True):
        torch.manual_seed(seed)
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_A" in name or "lora_B" in name:
                    param.normal_(0, std)
        folder.mkdir(parents=True, exist_ok=True)
        peft_model.save_pretrained(folder)
    return list(folders)


def build_lora(model_dir: Path, folder: Path, *, rank: int = 16, seed: int = 0) -> Path:
    """Save one PEFT LoRA (q/k/v/o projections, non-zero random weights) for `model_dir` into `folder`."""
    return build_loras(model_dir, [folder], rank=rank, seeds=[seed])[0]


def identity_adapter(
    model_dir: Path, folder: Path, *, rank: int = 16, targets: tuple[str, ...] | None = None
) -> Path:
    """Save a fresh PEFT LoRA with B = 0 (PEFT's default init): version 1 answers exactly like the base.

    `targets` defaults to all 7 projections, the trainer's recipe, so trained versions continue from it.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from trainer.config import ALL_PROJECTIONS

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(targets or ALL_PROJECTIONS),
                        task_type="CAUSAL_LM")
    get_peft_model(model, config).save_pretrained(folder)
    return folder
