"""Check an adapter folder before it is registered. Every problem is collected and reported at once."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from adapters.base_model import BaseModelInfo, read_safetensors_header
from adapters.errors import InvalidAdapter

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
# PEFT prefixes saved keys with the wrapper path; what follows is the base model's module path.
PEFT_PREFIX = "base_model.model."
LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")


@dataclass(frozen=True)
class ValidatedAdapter:
    """What validation learned about a folder that passed."""

    rank: int
    alpha: float
    target_modules: list[str]
    sha256: str


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_config(config: dict, base: BaseModelInfo, max_rank: int, problems: list[str]) -> None:
    if str(config.get("peft_type", "")).upper() != "LORA":
        problems.append(f"peft_type is {config.get('peft_type')!r}, only LORA adapters can be served")
    rank = config.get("r")
    if not isinstance(rank, int) or rank < 1:
        problems.append(f"rank r={rank!r} is not a positive integer")
    elif rank > max_rank:
        problems.append(f"rank r={rank} exceeds max_lora_rank={max_rank} (FLYWHEEL_MAX_LORA_RANK)")
    if config.get("use_dora"):
        problems.append("DoRA adapters (use_dora=true) cannot be served by vLLM")
    if config.get("modules_to_save"):
        problems.append(f"modules_to_save={config['modules_to_save']} cannot be served by vLLM")
    targets = config.get("target_modules")
    if isinstance(targets, str):
        if not any(re.fullmatch(targets, m) for m in base.linear_shapes):
            problems.append(f"target_modules pattern {targets!r} matches no module of the base model")
    elif isinstance(targets, list) and targets:
        missing = sorted(set(targets) - base.module_suffixes)
        if missing:
            problems.append(f"target_modules {missing} are not modules of the base model")
    else:
        problems.append("target_modules is missing or empty")


def _check_weights(weights: Path, rank: int | None, base: BaseModelInfo, problems: list[str]) -> None:
    try:
        header = read_safetensors_header(weights)
    except (OSError, ValueError) as e:
        problems.append(f"weights do not load: {e}")
        return
    if not header:
        problems.append(f"{WEIGHTS_FILE} holds no tensors")
    size = weights.stat().st_size
    for key, meta in header.items():
        match = LORA_KEY.match(key)
        if not match:
            problems.append(f"tensor {key!r} is not a LoRA A/B weight (full-weight layers cannot be served)")
            continue
        start, end = meta.get("data_offsets", (0, 0))
        if end > size:
            problems.append(f"weights file is truncated (tensor {key!r} runs past the end)")
            break
        module = match["module"].removeprefix(PEFT_PREFIX)
        base_shape = base.linear_shapes.get(module)
        if base_shape is None:
            problems.append(f"tensor {key!r} targets {module!r}, which the base model does not have")
            continue
        shape = tuple(meta["shape"])
        out_f, in_f = base_shape
        expected = (rank, in_f) if match["ab"] == "A" else (out_f, rank)
        if rank is not None and shape != expected:
            problems.append(
                f"tensor {key!r} has shape {list(shape)}, the base model needs {list(expected)} "
                "(was it trained on another base model?)"
            )
            break


def validate_adapter(folder: Path, base: BaseModelInfo, max_rank: int) -> ValidatedAdapter:
    """Validate a PEFT LoRA folder against the base model; raise InvalidAdapter listing every problem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidAdapter([f"{folder} is not a directory"])
    problems: list[str] = []
    config: dict = {}
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        problems.append(f"{CONFIG_FILE} is missing")
    else:
        try:
            config = json.loads(config_path.read_text())
            if not isinstance(config, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as e:
            problems.append(f"{CONFIG_FILE} is not valid JSON: {e}")
            config = {}
        if config:
            _check_config(config, base, max_rank, problems)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        problems.append(f"{WEIGHTS_FILE} is missing")
    else:
        rank = config.get("r") if isinstance(config.get("r"), int) else None
        _check_weights(weights, rank, base, problems)
    if problems:
        raise InvalidAdapter(problems)
    targets = config["target_modules"]
    return ValidatedAdapter(
        rank=config["r"],
        alpha=float(config.get("lora_alpha", config["r"])),
        target_modules=sorted(targets) if isinstance(targets, list) else [targets],
        sha256=sha256_file(weights),
    )
