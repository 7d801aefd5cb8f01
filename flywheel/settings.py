"""The one Settings object: built at an entry point (CLI, app factory), passed down everywhere else."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from flywheel.dtype import AUTO, DtypeSetting

LOOPBACK_HOSTS = {"localhost"}


def is_loopback(host: str) -> bool:
    """True when `host` only accepts connections from this machine."""
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """Every knob of Flywheel. Each field can be set as an environment variable `FLYWHEEL_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_", env_file=".env", extra="ignore")

    # --- storage -------------------------------------------------------------------------------
    data_dir: Path = Field(Path("data"), description="Where the registry, feedback log, adapters and models live.")

    # --- base model ----------------------------------------------------------------------------
    model_path: Path | None = Field(
        None,
        description="A local Hugging Face model directory to serve. Empty: the embedded default "
        "(SmolLM2-135M-Instruct, prepared under <data_dir>/models by `flywheel model prepare`).",
    )
    served_model_name: str = Field("base", description="The `model` name clients use for the base model.")

    # --- engine (vLLM) -------------------------------------------------------------------------
    dtype: DtypeSetting = Field(
        AUTO, description="Compute dtype for serving, training and gate scoring: auto, bfloat16, float16, float32. "
        "auto: bfloat16 where the hardware runs it natively (a bf16 GPU; a CPU with AVX512-BF16 or AMX), "
        "float32 on other CPUs, float16 on other GPUs (flywheel/dtype.py)."
    )
    max_model_len: int = Field(2048, ge=128, description="Longest prompt + completion in tokens.")
    max_loras: int = Field(4, ge=1, description="Adapters vLLM batches together in one step.")
    max_cpu_loras: int = Field(16, ge=1, description="Adapters vLLM keeps loaded in host memory (LRU cache).")
    max_lora_rank: int = Field(16, ge=1, description="Largest LoRA rank the engine (and the registry) accepts.")
    kv_cache_gib: int = Field(2, ge=1, description="KV cache size in whole GiB (VLLM_CPU_KVCACHE_SPACE on CPU).")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="Share of GPU memory vLLM may use (GPU only).")
    max_num_seqs: int = Field(64, ge=1, description="Sequences vLLM schedules in one step.")
    max_inflight_requests: int = Field(
        256, ge=1, description="Requests admitted at once; more get 429 so the engine is never swamped."
    )
    enforce_eager: bool = Field(True, description="Skip CUDA graph capture (faster start, slower GPU decode).")
    pin_api_cpus: bool = Field(
        True, description="CPU serving: keep the API and vLLM's engine-core process off the worker's cores."
    )
    tool_call_parser: str | None = Field(
        "hermes", description="vLLM tool parser that reads tool calls out of answers (`tools` in chat requests); "
        "hermes fits the default model's ChatML. Empty: requests with tools get 400."
    )
    engine_spin_wait: bool = Field(
        False, description="CPU serving: let vLLM's engine core spin while its worker computes (vLLM's default) "
        "instead of sleeping (server/engine_wait.py)."
    )

    # --- HTTP ----------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the gateway binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port the gateway listens on.")
    # NoDecode: pydantic-settings would parse a list from the environment as JSON before the validator runs,
    # so the documented `FLYWHEEL_API_KEYS=k1,k2` failed at start; `_split_keys` takes the raw string instead.
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated keys for chat and feedback (Bearer). Empty: no key needed."
    )
    admin_key: str | None = Field(
        None, description="Key for /admin. Empty: /admin is open when no FLYWHEEL_API_KEYS are set either "
        "(loopback only), and refuses every request once user keys are set."
    )
    access_log: bool = Field(False, description="Log every HTTP request (costs event-loop time under load).")
    allow_insecure: bool = Field(
        False, description="Allow binding to a non-loopback address without keys. Never in production."
    )

    # --- feedback ------------------------------------------------------------------------------
    feedback_retention_days: float | None = Field(
        None, gt=0, description="Delete logged completions older than this (rated ones are kept). Empty: keep all."
    )

    # --- hot-swap ------------------------------------------------------------------------------
    registry_poll_seconds: float = Field(
        0.5, gt=0, le=5, description="How often the gateway looks for alias moves made by other processes."
    )

    # --- trainer (see trainer/config.py for the full recipe) --------------------------------------
    train_lora_rank: int = Field(16, ge=1, description="LoRA rank of fresh adapters (<= max_lora_rank).")
    train_lora_alpha: float = Field(32, gt=0, description="LoRA alpha of fresh adapters.")
    train_learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    train_epochs: float = Field(2.0, gt=0, description="Passes over each stage's data.")
    train_batch_size: int = Field(4, ge=1, description="Examples per forward pass.")
    train_grad_accumulation: int = Field(2, ge=1, description="Forward passes per optimizer step.")
    train_threads: int | None = Field(None, ge=1, description="Trainer CPU threads. Empty: all cores but one.")
    train_load_in_4bit: bool = Field(True, description="QLoRA: load the base in 4-bit NF4 (bitsandbytes).")
    train_continue_from_production: bool = Field(True, description="Start from production's weights, not fresh.")
    train_dpo_beta: float = Field(0.1, gt=0, description="DPO beta.")
    train_min_pairs_for_dpo: int = Field(8, ge=1, description="Fewer preference pairs than this: KTO instead.")
    train_min_new_feedback: int = Field(50, ge=1, description="Watcher: new feedback records that trigger a run.")
    train_schedule_seconds: float | None = Field(None, gt=0, description="Watcher: also train on this schedule.")
    train_min_interval_seconds: float = Field(600, ge=0, description="Watcher: least time between runs.")
    train_max_backoff_seconds: float = Field(
        21600, ge=0, description="Watcher: longest wait after consecutive failed runs (each failure doubles "
        "the least time between runs, up to this)."
    )
    train_poll_seconds: float = Field(30, gt=0, description="Watcher: seconds between checks.")
    gate_min_preference_win_rate: float = Field(0.5, ge=0, le=1, description="Gate: share of held-out pairs "
                                                "where the candidate's margin must beat production's.")
    gate_max_loglik_drop: float = Field(0.05, ge=0, description="Gate: allowed drop in up-rated answer likelihood.")
    gate_max_ppl_increase: float = Field(0.10, ge=0, description="Gate: allowed general perplexity increase "
                                         "over production.")
    gate_max_ppl_increase_vs_base: float | None = Field(0.10, ge=0, description="Gate: allowed general perplexity "
                                                        "increase over the base model (drift across rounds).")
    gate_max_correctness_drop: float = Field(0.02, ge=0, le=1, description="Gate: allowed drop in closed-book "
                                             "accuracy (a share) below production's and below the base model's.")
    gate_correctness_set: Path | None = Field(None, description="Gate: closed-book questions (JSON lines with id, "
                                              "question, answers); unset: the set shipped with the trainer.")
    gate_correctness_questions: int | None = Field(None, ge=1, description="Gate: ask only the first N closed-book "
                                                   "questions (unset: all; each costs three short generations).")
    promotion_policy: Literal["manual", "auto", "canary"] = Field(
        "manual", description="What a candidate that passed the gate becomes: manual, auto or canary."
    )
    canary_share: float = Field(0.1, gt=0, lt=1, description="Canary: share of the adapter's traffic to the candidate.")
    canary_min_feedback: int = Field(50, ge=1, description="Canary: ratings on each side before deciding.")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            if value.lstrip().startswith("["):  # the JSON form that worked before NoDecode still does
                return json.loads(value)
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @model_validator(mode="after")
    def _loras_fit(self) -> Settings:
        if self.max_cpu_loras < self.max_loras:
            raise ValueError(
                f"FLYWHEEL_MAX_CPU_LORAS ({self.max_cpu_loras}) must be >= FLYWHEEL_MAX_LORAS ({self.max_loras})"
            )
        if self.admin_key is not None and not self.admin_key.strip():
            raise ValueError("FLYWHEEL_ADMIN_KEY is set but empty; unset it or give it a value")
        if self.train_lora_rank > self.max_lora_rank:
            raise ValueError(
                f"FLYWHEEL_TRAIN_LORA_RANK ({self.train_lora_rank}) exceeds "
                f"FLYWHEEL_MAX_LORA_RANK ({self.max_lora_rank})"
            )
        return self

    # --- derived paths -------------------------------------------------------------------------
    @property
    def registry_db(self) -> Path:
        return self.data_dir / "registry.db"

    @property
    def feedback_db(self) -> Path:
        return self.data_dir / "feedback.db"

    @property
    def trainer_db(self) -> Path:
        return self.data_dir / "trainer.db"

    @property
    def adapters_dir(self) -> Path:
        return self.data_dir / "adapters"

    @property
    def default_model_dir(self) -> Path:
        return self.data_dir / "models" / "SmolLM2-135M-Instruct"

    @property
    def resolved_model_path(self) -> Path:
        """The base model directory actually served."""
        return self.model_path or self.default_model_dir

    @property
    def admin_disabled(self) -> bool:
        """User keys are set but no admin key: /admin refuses everything rather than stay open."""
        return bool(self.api_keys) and not self.admin_key

    def check_bind(self) -> None:
        """Refuse to expose an unauthenticated gateway beyond this machine."""
        if is_loopback(self.host) or self.allow_insecure:
            return
        if not self.api_keys or not self.admin_key:
            raise ValueError(
                f"refusing to bind to {self.host} without FLYWHEEL_API_KEYS and FLYWHEEL_ADMIN_KEY; "
                "set both, bind to 127.0.0.1, or set FLYWHEEL_ALLOW_INSECURE=true"
            )
