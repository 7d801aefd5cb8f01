"""The one Settings object: built at an entry point (CLI, app factory), passed down everywhere else."""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Annotated, TypeVar, get_type_hints

from pydantic import Field, create_model, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from flywheel.dtype import AUTO, DtypeSetting
from trainer import config as recipe  # declarations only: no import beyond the standard library

T = TypeVar("T")

LOOPBACK_HOSTS = {"localhost"}


def _has_default(cls: type, name: str) -> bool:
    """Whether the dataclass field has a plain default; if not (a factory), None in Settings means "the default"."""
    return next(f for f in fields(cls) if f.name == name).default is not MISSING


def is_loopback(host: str) -> bool:
    """True when `host` only accepts connections from this machine."""
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class EngineArg:
    """Marks a setting that vLLM's AsyncEngineArgs takes unchanged, as the argument `name` (default: the
    setting's own name). `Settings.engine_args()` collects them, so a pass-through setting is declared once."""

    name: str | None = None


VLLM = EngineArg()


class _EnvSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_", env_file=".env", extra="ignore")


# The trainer's knobs, by their FLYWHEEL_ name: the dataclass field in trainer/config.py that declares each one.
# Default and help text are the dataclass's, so each is written once; the fields below are generated from them.
TRAINER_KNOBS: dict[str, tuple[type, str]] = {
    "train_lora_rank": (recipe.LoraRecipe, "r"),
    "train_lora_alpha": (recipe.LoraRecipe, "alpha"),
    **{f"train_{name}": (recipe.TrainConfig, name) for name in (
        "learning_rate", "epochs", "batch_size", "grad_accumulation", "load_in_4bit", "continue_from_production",
        "dpo_beta", "dpo_sft_weight", "skip_learned_preference", "min_pairs_for_dpo", "replay_fraction")},
    "train_threads": (recipe.TrainConfig, "num_threads"),
    **{f"train_{name}": (recipe.TriggerPolicy, name) for name in (
        "min_new_feedback", "schedule_seconds", "min_interval_seconds", "max_backoff_seconds", "poll_seconds")},
    **{f"gate_{name}": (recipe.GateConfig, name) for name in (
        "min_preference_win_rate", "max_loglik_drop", "max_ppl_increase", "max_ppl_increase_vs_base",
        "max_correctness_drop", "correctness_set", "correctness_questions", "saturated_preference_accuracy",
        "judge_url", "judge_model", "judge_api_key", "min_judge_win_rate")},
    "promotion_policy": (recipe.PromotionPolicy, "mode"),
    "canary_share": (recipe.PromotionPolicy, "canary_share"),
    "canary_min_feedback": (recipe.PromotionPolicy, "canary_min_feedback"),
}


def _knob_field(cls: type, name: str) -> tuple[object, object]:
    """A settings field for one dataclass field: its type, default and help. A computed default (a factory)
    becomes None here, which means "the dataclass's default"."""
    spec = next(f for f in fields(cls) if f.name == name)
    hint = get_type_hints(cls)[name]
    if spec.default is MISSING:
        return hint | None, Field(None, description=spec.metadata["help"])
    return hint, Field(spec.default, description=spec.metadata["help"])


_TrainerKnobs = create_model(  # type: ignore[call-overload]
    "_TrainerKnobs", __base__=_EnvSettings, **{knob: _knob_field(*where) for knob, where in TRAINER_KNOBS.items()}
)


class Settings(_TrainerKnobs):
    """Every knob of Flywheel. Each field can be set as an environment variable `FLYWHEEL_<NAME>`.

    The trainer's knobs (FLYWHEEL_TRAIN_*, FLYWHEEL_GATE_*, FLYWHEEL_PROMOTION_POLICY, FLYWHEEL_CANARY_*) are
    declared in trainer/config.py and listed in TRAINER_KNOBS; `recipe(cls)` gives one dataclass's values.
    """

    # --- storage -------------------------------------------------------------------------------
    data_dir: Path = Field(Path("data"), description="Where the registry, feedback log, adapters and models live.")
    database_url: str | None = Field(
        None, pattern=r"^postgres(ql)?://",
        description="A postgresql:// URL: the registry, feedback store and training runs live in that one "
        "PostgreSQL database, shared by every gateway replica and trainer. Unset: SQLite files in data_dir.",
    )
    adapter_store: str | None = Field(
        None, pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$",
        description="Where registered adapter versions' files live. Unset: <data_dir>/adapters, one folder every "
        "process mounts (a ReadWriteMany volume across hosts). s3://bucket/prefix: objects in an S3-compatible "
        "store, uploaded at registration and fetched into each host's cache (needs the `s3` extra, boto3; "
        "credentials from boto3's own chain). docs/kubernetes.md, \"The object-storage seam\".",
    )
    adapter_store_endpoint: str | None = Field(
        None, pattern=r"^https?://",
        description="The S3 API endpoint of FLYWHEEL_ADAPTER_STORE, for an S3-compatible server other than AWS "
        "(MinIO, Ceph). Unset: boto3's default (AWS S3).",
    )
    adapter_cache_mib: int = Field(
        4096, ge=1,
        description="With FLYWHEEL_ADAPTER_STORE: at most this many MiB of fetched versions are kept in "
        "<data_dir>/cache/adapters, the least recently used evicted first. Keep it above the size of "
        "FLYWHEEL_MAX_CPU_LORAS versions: a loaded version that was evicted is fetched again.",
    )

    # --- base model ----------------------------------------------------------------------------
    model_path: Path | None = Field(
        None,
        description="A local Hugging Face model directory to serve. Empty: the embedded default "
        "(SmolLM2-135M-Instruct, prepared under <data_dir>/models by `flywheel model prepare`).",
    )
    served_model_name: Annotated[str, VLLM] = Field(
        "base", description="The `model` name clients use for the base model."
    )

    # --- engine (vLLM) -------------------------------------------------------------------------
    dtype: DtypeSetting = Field(
        AUTO, description="Compute dtype for serving, training and gate scoring: auto, bfloat16, float16, float32. "
        "auto: bfloat16 where the hardware runs it natively (a bf16 GPU; a CPU with AVX512-BF16 or AMX), "
        "float32 on other CPUs, float16 on other GPUs (flywheel/dtype.py)."
    )
    max_model_len: Annotated[int, VLLM] = Field(2048, ge=128, description="Longest prompt + completion in tokens.")
    max_loras: Annotated[int, VLLM] = Field(4, ge=1, description="Adapters vLLM batches together in one step.")
    max_cpu_loras: Annotated[int, VLLM] = Field(
        16, ge=1, description="Adapters vLLM keeps loaded in host memory (LRU cache)."
    )
    max_lora_rank: Annotated[int, VLLM] = Field(
        16, ge=1, description="Largest LoRA rank the engine (and the registry) accepts."
    )
    kv_cache_gib: int = Field(2, ge=1, description="KV cache size in whole GiB (VLLM_CPU_KVCACHE_SPACE on CPU).")
    gpu_memory_utilization: Annotated[float, VLLM] = Field(
        0.85, gt=0, le=1, description="Share of GPU memory vLLM may use (GPU only)."
    )
    max_num_seqs: Annotated[int, VLLM] = Field(64, ge=1, description="Sequences vLLM schedules in one step.")
    max_inflight_requests: int = Field(
        256, ge=1, description="Requests admitted at once; more get 429 so the engine is never swamped."
    )
    enforce_eager: Annotated[bool, VLLM] = Field(
        True, description="Skip CUDA graph capture (faster start, slower GPU decode)."
    )
    # vLLM's parallelism; server/parallelism.py checks at start that the devices are there (README, "Settings").
    tensor_parallel_size: Annotated[int, VLLM] = Field(
        1, ge=1, description="Devices each layer of the model is split across (vLLM's tensor parallelism): GPUs, "
        "or on a CPU one NUMA node each."
    )
    pipeline_parallel_size: Annotated[int, VLLM] = Field(
        1, ge=1, description="Stages the model's layers are split into, each on its own tensor-parallel group of "
        "devices (vLLM's pipeline parallelism)."
    )
    data_parallel_size: Annotated[int, VLLM] = Field(
        1, ge=1, description="Independent copies of the engine, each on tensor x pipeline devices of its own; vLLM "
        "spreads requests over them and loads every adapter into each."
    )
    pin_api_cpus: bool = Field(
        True, description="CPU serving: keep the API and vLLM's engine-core process off the worker's cores."
    )
    tool_call_parser: str | None = Field(
        "hermes", description="vLLM tool parser that reads tool calls out of answers (`tools` in chat requests); "
        "hermes fits the default model's ChatML. Empty: requests with tools get 400."
    )
    engine_spin_wait: bool = Field(
        False, description="CPU serving: let vLLM's engine core spin while its worker computes (vLLM's default) "
        "instead of sleeping (server/vllm_plugins/engine_wait.py)."
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
    max_upload_mib: int = Field(
        512, ge=1, description="Largest adapter file that POST /admin/adapters/{name}/versions accepts, in MiB; "
        "a bigger one is answered 413."
    )
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
        for cls in dict.fromkeys(c for c, _ in TRAINER_KNOBS.values()):  # the dataclasses' own checks, at start
            try:
                self.recipe(cls)
            except ValueError as e:
                knobs = [(k, n) for k, (c, n) in TRAINER_KNOBS.items() if c is cls]
                named = [k for k, n in knobs if re.search(rf"\b{n}\b", str(e))] or [k for k, _ in knobs]
                raise ValueError(f"{e} (set by {', '.join(f'FLYWHEEL_{k.upper()}' for k in named)})") from None
        return self

    def recipe(self, cls: type[T], **overrides: object) -> T:
        """`cls` (a trainer/config.py dataclass) with the values these settings give it, then `overrides`."""
        values = {name: getattr(self, knob) for knob, (c, name) in TRAINER_KNOBS.items() if c is cls}
        values = {k: v for k, v in values.items() if v is not None or _has_default(cls, k)}
        extra = {"dtype": self.dtype} if cls is recipe.TrainConfig else {}
        if cls is recipe.LoraRecipe:
            extra = {"max_rank": self.max_lora_rank}
        return cls(**{**values, **extra, **{k: v for k, v in overrides.items() if v is not None}})

    def engine_args(self) -> dict[str, object]:
        """The settings vLLM's AsyncEngineArgs takes unchanged (those marked `EngineArg`), by argument name."""
        return {
            mark.name or name: getattr(self, name)
            for name, field in type(self).model_fields.items()
            for mark in field.metadata if isinstance(mark, EngineArg)
        }

    # --- derived paths -------------------------------------------------------------------------
    # The three stores' locations: their SQLite files, or all the one FLYWHEEL_DATABASE_URL.
    @property
    def registry_db(self) -> Path | str:
        return self.database_url or self.data_dir / "registry.db"

    @property
    def feedback_db(self) -> Path | str:
        return self.database_url or self.data_dir / "feedback.db"

    @property
    def trainer_db(self) -> Path | str:
        return self.database_url or self.data_dir / "trainer.db"

    @property
    def adapters_dir(self) -> Path:
        return self.data_dir / "adapters"

    @property
    def adapter_cache_dir(self) -> Path:
        """This host's cache of versions fetched from FLYWHEEL_ADAPTER_STORE."""
        return self.data_dir / "cache" / "adapters"

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
