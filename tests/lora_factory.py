"""Build tiny base models and PEFT-format LoRA folders inline, for tests that must not need the real model."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

TINY_HIDDEN, TINY_FFN, TINY_LAYERS = 16, 32, 2
TINY_SHAPES = {  # module suffix -> (out_features, in_features)
    "self_attn.q_proj": (TINY_HIDDEN, TINY_HIDDEN),
    "self_attn.k_proj": (TINY_HIDDEN // 2, TINY_HIDDEN),
    "self_attn.v_proj": (TINY_HIDDEN // 2, TINY_HIDDEN),
    "self_attn.o_proj": (TINY_HIDDEN, TINY_HIDDEN),
    "mlp.gate_proj": (TINY_FFN, TINY_HIDDEN),
    "mlp.up_proj": (TINY_FFN, TINY_HIDDEN),
    "mlp.down_proj": (TINY_HIDDEN, TINY_FFN),
}


def write_tiny_base(folder: Path, hidden: int = TINY_HIDDEN) -> Path:
    """A Llama-shaped base model directory (config + safetensors) small enough for unit tests."""
    folder.mkdir(parents=True, exist_ok=True)
    scale = hidden / TINY_HIDDEN
    tensors = {"model.embed_tokens.weight": torch.zeros(64, hidden)}
    for layer in range(TINY_LAYERS):
        for module, (out_f, in_f) in TINY_SHAPES.items():
            tensors[f"model.layers.{layer}.{module}.weight"] = torch.zeros(int(out_f * scale), int(in_f * scale))
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": hidden}))
    (folder / "tokenizer_config.json").write_text("{}")
    return folder


def linear_shapes(base_dir: Path) -> dict[str, tuple[int, int]]:
    from adapters.base_model import BaseModelInfo

    return dict(BaseModelInfo.from_dir(base_dir).linear_shapes)


def write_lora(
    folder: Path,
    base_dir: Path,
    *,
    rank: int = 4,
    targets: tuple[str, ...] = ("q_proj", "v_proj"),
    seed: int = 0,
    scale: float = 0.05,
    config_overrides: dict | None = None,
) -> Path:
    """A PEFT-format LoRA folder whose A/B shapes fit `base_dir`; non-zero B so it changes outputs."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for module, (out_f, in_f) in linear_shapes(base_dir).items():
        if module.rsplit(".", 1)[-1] not in targets:
            continue
        prefix = f"base_model.model.{module}"
        tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, in_f, generator=generator) * scale
        tensors[f"{prefix}.lora_B.weight"] = torch.randn(out_f, rank, generator=generator) * scale
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": list(targets),
        "lora_dropout": 0.0, "bias": "none", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(base_dir),
        "use_dora": False, "modules_to_save": None,
    }
    config.update(config_overrides or {})
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder
