"""The one Settings object: built at an entry point (CLI, app factory), passed down everywhere else."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    dtype: str = Field("bfloat16", description="Weights and activation dtype for vLLM: bfloat16, float16, float32.")
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

    # --- HTTP ----------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the gateway binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port the gateway listens on.")
    api_keys: list[str] = Field(
        default_factory=list, description="Keys for chat and feedback (Bearer). Empty: no key needed."
    )
    admin_key: str | None = Field(None, description="Key for /admin. Empty: admin is open (loopback only).")
    allow_insecure: bool = Field(
        False, description="Allow binding to a non-loopback address without keys. Never in production."
    )

    # --- hot-swap ------------------------------------------------------------------------------
    registry_poll_seconds: float = Field(
        0.5, gt=0, le=5, description="How often the gateway looks for alias moves made by other processes."
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @model_validator(mode="after")
    def _loras_fit(self) -> Settings:
        if self.max_cpu_loras < self.max_loras:
            raise ValueError(
                f"FLYWHEEL_MAX_CPU_LORAS ({self.max_cpu_loras}) must be >= FLYWHEEL_MAX_LORAS ({self.max_loras})"
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
    def adapters_dir(self) -> Path:
        return self.data_dir / "adapters"

    @property
    def default_model_dir(self) -> Path:
        return self.data_dir / "models" / "SmolLM2-135M-Instruct"

    @property
    def resolved_model_path(self) -> Path:
        """The base model directory actually served."""
        return self.model_path or self.default_model_dir

    def check_bind(self) -> None:
        """Refuse to expose an unauthenticated gateway beyond this machine."""
        if is_loopback(self.host) or self.allow_insecure:
            return
        if not self.api_keys or not self.admin_key:
            raise ValueError(
                f"refusing to bind to {self.host} without FLYWHEEL_API_KEYS and FLYWHEEL_ADMIN_KEY; "
                "set both, bind to 127.0.0.1, or set FLYWHEEL_ALLOW_INSECURE=true"
            )
