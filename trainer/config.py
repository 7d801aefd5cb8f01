"""The training recipe, the evaluation gate, the trigger/promotion policies, and the paths a run needs
(`TrainerSettings`), as documented dataclasses. `flywheel.settings` generates its FLYWHEEL_ knobs from them.

Every field carries its help text in `metadata["help"]` (as TRL's `dpo_config.py` does), so the CLI and
the docs can show it. `__post_init__` checks name the field that is wrong.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from flywheel.promotion import PromotionPolicy  # noqa: F401 - declared in the foundation, re-exported with the recipe

if TYPE_CHECKING:
    from adapters.files import AdapterFiles
    from adapters.registry import Registry

ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DpoReference = Literal["base", "start"]


def _default_threads() -> int:
    # Leave one core to the gateway: training must never starve serving.
    return max(1, (os.cpu_count() or 2) - 1)


@dataclass
class LoraRecipe:
    """Shape of a freshly created LoRA adapter; limited to what vLLM can serve."""

    r: int = field(default=16, metadata={"help": "LoRA rank. Must not exceed max_lora_rank."})
    alpha: float = field(default=32, metadata={"help": "LoRA alpha; the update is scaled by alpha / r."})
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input during training."})
    target_modules: tuple[str, ...] = field(
        default=ALL_PROJECTIONS,
        metadata={"help": "Module names (last path component) that get a LoRA: attention and MLP projections."},
    )
    use_dora: bool = field(default=False, metadata={"help": "DoRA. Always False: vLLM cannot serve DoRA."})
    max_rank: int = field(default=16, metadata={"help": "Largest rank the engine accepts (Settings.max_lora_rank)."})

    def __post_init__(self) -> None:
        if self.use_dora:
            raise ValueError("use_dora: DoRA adapters cannot be served by vLLM; set use_dora=False")
        if not 1 <= self.r <= self.max_rank:
            raise ValueError(f"r={self.r} must be between 1 and max_rank={self.max_rank} (FLYWHEEL_MAX_LORA_RANK)")
        if self.alpha <= 0:
            raise ValueError(f"alpha={self.alpha} must be positive")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")
        if not self.target_modules:
            raise ValueError("target_modules must name at least one module")


@dataclass
class TrainConfig:
    """Optimisation settings shared by the SFT, DPO and KTO stages."""

    learning_rate: float = field(default=2e-4, metadata={"help": "Peak AdamW learning rate."})
    warmup: float = field(
        default=0.03,
        metadata={"help": "Warmup: a float below 1 is a share of the steps (transformers 5 `warmup_steps`)."},
    )
    lr_scheduler: str = field(default="cosine", metadata={"help": "Learning-rate schedule after warmup."})
    epochs: float = field(
        default=1.0,
        metadata={"help": "Passes over each stage's data (ignored with max_steps). One: two passes learnt the same "
                  "preference but raised general perplexity 19% against 9% (docs/bench_recipe.md)."},
    )
    max_steps: int | None = field(
        default=None, metadata={"help": "Stop each stage after this many optimizer steps. None: use epochs."}
    )
    batch_size: int = field(default=4, metadata={"help": "Examples per forward pass."})
    grad_accumulation: int = field(default=2, metadata={"help": "Forward passes per optimizer step."})
    gradient_checkpointing: bool = field(
        default=True, metadata={"help": "Recompute activations in the backward pass to save memory."}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    seed: int = field(default=42, metadata={"help": "Seed for data order, dropout and LoRA init."})
    max_length: int = field(default=1024, metadata={"help": "Longest prompt + completion in tokens; longer is cut."})
    num_threads: int = field(
        default_factory=_default_threads,
        metadata={"help": "CPU threads for torch. Default: all cores but one, which is left to serving."},
    )
    load_in_4bit: bool | Literal["auto"] = field(
        default="auto",
        metadata={"help": "QLoRA: load the base in 4-bit NF4 with double quantization. auto: on a CUDA GPU, where "
                  "memory binds; not on a CPU, where bitsandbytes dequantizes the weights on every matmul and a "
                  "training step takes longer (docs/bench_quant.md)."},
    )
    dtype: str = field(
        default="auto",
        metadata={"help": "Compute dtype (FLYWHEEL_DTYPE): auto, bfloat16, float16 (GPU only) or float32. auto: bf16 "
                  "where the hardware runs it natively, else float32 (flywheel/dtype.py)."},
    )
    continue_from_production: bool = field(
        default=True,
        metadata={"help": "Start from the production version's weights (its rank and targets); else fresh."},
    )
    replay_fraction: float = field(
        default=0.0,
        metadata={"help": "Replay against forgetting: add this share of the SFT rows as rows of the base model's own "
                  "greedy answers to general prompts (trainer/replay.py); 0: none."},
    )
    dpo_beta: float = field(default=0.1, metadata={"help": "DPO beta: how far the policy may move from the reference."})
    dpo_sft_weight: float = field(
        default=1.0,
        metadata={"help": "Weight of an SFT term (the chosen answer's negative log-likelihood) added to the DPO loss "
                  "(TRL loss_type ['sigmoid', 'sft'], as in RPO); 0: plain DPO. Plain DPO pushed chosen and rejected "
                  "answers down together and closed-book correctness fell from 57% to 32%; with the term it held "
                  "(docs/bench_recipe.md)."},
    )
    skip_learned_preference: bool = field(
        default=True,
        metadata={"help": "After SFT, score the candidate on the held-out pairs; when it already prefers the chosen "
                  "answer on the gate's saturated_preference_accuracy share of them, skip the DPO/KTO stage and say "
                  "so in the run's plan. On the answer_prefix round, SFT alone learnt the preference (100%) at +8.9% "
                  "perplexity, and the DPO stage after it added 4.7 points and nothing else (docs/bench_recipe.md)."},
    )
    dpo_reference: DpoReference = field(
        default="base",
        metadata={"help": "DPO reference: 'base' (adapter disabled) or 'start' (frozen copy of the adapter)."},
    )
    kto_beta: float = field(default=0.1, metadata={"help": "KTO beta."})
    min_pairs_for_dpo: int = field(
        default=8,
        metadata={"help": "DPO runs with at least this many pairs; otherwise KTO on unpaired thumbs."},
    )
    max_example_chars: int = field(
        default=32_000, metadata={"help": "A training example longer than this is treated as poisoned data."}
    )

    def __post_init__(self) -> None:
        checks = {
            "learning_rate": self.learning_rate > 0,
            "warmup": self.warmup >= 0,
            "epochs": self.epochs > 0,
            "max_steps": self.max_steps is None or self.max_steps > 0,
            "batch_size": self.batch_size >= 1,
            "grad_accumulation": self.grad_accumulation >= 1,
            "max_length": self.max_length >= 16,
            "num_threads": self.num_threads >= 1,
            "dpo_beta": self.dpo_beta > 0,
            "dpo_sft_weight": self.dpo_sft_weight >= 0,
            "replay_fraction": 0 <= self.replay_fraction <= 4,
            "kto_beta": self.kto_beta > 0,
            "min_pairs_for_dpo": self.min_pairs_for_dpo >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid TrainConfig values: {', '.join(f'{n}={getattr(self, n)!r}' for n in bad)}")
        if self.load_in_4bit not in (True, False, "auto"):
            raise ValueError(f"load_in_4bit={self.load_in_4bit!r} must be true, false or auto")
        if self.dtype not in ("auto", "bfloat16", "float16", "float32"):
            raise ValueError(f"dtype={self.dtype!r} must be auto, bfloat16, float16 or float32")
        if self.dpo_reference not in ("base", "start"):
            raise ValueError(f"dpo_reference={self.dpo_reference!r} must be 'base' or 'start'")


@dataclass
class GateConfig:
    """Thresholds a candidate must meet against production before it may become `candidate`."""

    min_preference_win_rate: float = field(
        default=0.5,
        metadata={"help": "Share of held-out pairs where the candidate's chosen-rejected margin beats production's."},
    )
    saturated_preference_accuracy: float = field(
        default=0.9,
        metadata={"help": "When production already prefers chosen over rejected on this share of held-out pairs, "
                  "the preference check is skipped (its win rate is noise) and the run record says so."},
    )
    max_loglik_drop: float = field(
        default=0.05,
        metadata={"help": "Largest allowed drop in mean per-token log-likelihood of held-out up-rated answers."},
    )
    max_ppl_increase: float = field(
        default=0.10,
        metadata={"help": "Forgetting check: candidate perplexity on general text <= production's * (1 + this)."},
    )
    max_ppl_increase_vs_base: float | None = field(
        default=0.10,
        metadata={"help": "Forgetting check across rounds: candidate perplexity <= the base model's * (1 + this). "
                  "None disables it."},
    )
    general_text_limit: int | None = field(
        default=None, metadata={"help": "Use only the first N general-text paragraphs (None: all)."}
    )
    max_correctness_drop: float = field(
        default=0.02,
        metadata={"help": "Correctness check: the candidate's closed-book accuracy may fall at most this much "
                  "(a share: 0.02 is 2 points) below production's, and below the base model's."},
    )
    max_degenerate_increase: float = field(
        default=0.10,
        metadata={"help": "Correctness check: the share of empty or looping answers to held-out traffic prompts "
                  "may exceed production's by at most this much."},
    )
    correctness_set: str | None = field(
        default=None,
        metadata={"help": "Closed-book questions (JSON lines: id, question, answers); None: the shipped set."},
    )
    correctness_questions: int | None = field(
        default=None, metadata={"help": "Ask only the first N closed-book questions (None: all; each costs three "
                                "short generations)."}
    )
    traffic_prompts: int = field(
        default=16, metadata={"help": "Held-out traffic prompts answered for the degeneration check."}
    )
    answer_tokens: int = field(default=32, metadata={"help": "Longest generated answer in tokens."})
    judge_url: str | None = field(
        default=None,
        metadata={"help": "Optional pairwise judge: the base URL of an OpenAI-compatible API (e.g. "
                  "http://judge:8000/v1) whose model compares the candidate's and production's answers to the held-out "
                  "traffic prompts, in both orders (trainer/judge.py). None: no judge."},
    )
    judge_model: str | None = field(
        default=None, metadata={"help": "The judge's model name at judge_url (needed with it)."}
    )
    judge_api_key: str | None = field(
        default=None, repr=False,
        metadata={"help": "API key for judge_url; never stored with a version's config.", "secret": True},
    )
    min_judge_win_rate: float = field(
        default=0.5,
        metadata={"help": "With a judge: the least share of its verdicts that must pick the candidate over "
                  "production."},
    )
    batch_size: int = field(default=8, metadata={"help": "Sequences per evaluation forward pass."})
    max_length: int = field(default=512, metadata={"help": "Longest evaluated sequence in tokens."})

    def __post_init__(self) -> None:
        if not 0 <= self.max_correctness_drop <= 1 or not 0 <= self.max_degenerate_increase <= 1:
            raise ValueError("max_correctness_drop and max_degenerate_increase must be in [0, 1]")
        if self.answer_tokens < 1 or self.traffic_prompts < 0:
            raise ValueError("answer_tokens must be >= 1 and traffic_prompts >= 0")
        if not 0 <= self.min_preference_win_rate <= 1 or not 0 < self.saturated_preference_accuracy <= 1:
            raise ValueError(f"min_preference_win_rate={self.min_preference_win_rate} must be in [0, 1] and "
                             f"saturated_preference_accuracy={self.saturated_preference_accuracy} in (0, 1]")
        if self.max_ppl_increase_vs_base is not None and self.max_ppl_increase_vs_base < 0:
            raise ValueError("max_ppl_increase_vs_base must be >= 0 (or None to disable it)")
        if self.max_loglik_drop < 0 or self.max_ppl_increase < 0:
            raise ValueError("max_loglik_drop and max_ppl_increase must be >= 0")
        if self.judge_url is not None and not (self.judge_model or "").strip():
            raise ValueError("judge_model must name the judge's model when judge_url is set")
        if not 0 <= self.min_judge_win_rate <= 1:
            raise ValueError(f"min_judge_win_rate={self.min_judge_win_rate} must be in [0, 1]")


@dataclass
class TriggerPolicy:
    """When the watcher starts a run for an adapter."""

    min_new_feedback: int | None = field(
        default=50,
        metadata={"help": "Run when at least this many usable records arrived since the last run."},
    )
    schedule_seconds: float | None = field(
        default=None,
        metadata={"help": "Also run when this long has passed since the last run (None: never)."},
    )
    min_interval_seconds: float = field(
        default=600, metadata={"help": "Never start two runs of one adapter closer together than this."}
    )
    poll_seconds: float = field(default=30, metadata={"help": "Seconds between the watcher's checks."})
    max_backoff_seconds: float = field(
        default=21600,
        metadata={"help": "After consecutive failed runs, wait min_interval_seconds * 2^(failures - 1) from the "
                  "last failure, but at most this long (and never less than min_interval_seconds)."},
    )

    def __post_init__(self) -> None:
        if self.min_new_feedback is None and self.schedule_seconds is None:
            raise ValueError("TriggerPolicy needs min_new_feedback or schedule_seconds (or both)")
        if self.min_new_feedback is not None and self.min_new_feedback < 1:
            raise ValueError(f"min_new_feedback={self.min_new_feedback} must be >= 1")
        if self.min_interval_seconds < 0 or self.max_backoff_seconds < 0:
            raise ValueError("min_interval_seconds and max_backoff_seconds must be >= 0")
        if self.poll_seconds <= 0 or (self.schedule_seconds is not None and self.schedule_seconds <= 0):
            raise ValueError("poll_seconds and schedule_seconds must be > 0")


@dataclass
class TrainerSettings:
    """Paths and policies a training run needs; built once at the entry point from `Settings`."""

    model_path: Path = field(metadata={"help": "Base model directory (the one the gateway serves)."})
    registry_db: Path | str = field(
        metadata={"help": "The adapter registry's SQLite file, or the FLYWHEEL_DATABASE_URL it lives in."})
    adapters_dir: Path = field(metadata={"help": "Where the registry keeps version folders."})
    feedback_db: Path | str = field(
        metadata={"help": "The feedback store's SQLite file, or the FLYWHEEL_DATABASE_URL it lives in."})
    runs_db: Path | str = field(
        metadata={"help": "The trainer's runs and locks (data/trainer.db, or the FLYWHEEL_DATABASE_URL)."})
    work_dir: Path | None = field(default=None, metadata={"help": "Parent of per-run temp dirs (None: system)."})
    cache_dir: Path | None = field(
        default=None,
        metadata={"help": "Keeps what runs can share, such as the base model's gate answers (None: nothing kept)."},
    )
    max_lora_rank: int = field(default=16, metadata={"help": "Largest rank the engine serves."})
    adapter_files: AdapterFiles | None = field(
        default=None,
        metadata={"help": "Where versions' files are published and read (adapters/files.py; None: adapters_dir)."},
    )
    lora: LoraRecipe = field(default_factory=LoraRecipe, metadata={"help": "LoRA shape of fresh adapters."})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "Optimisation settings."})
    gate: GateConfig = field(default_factory=GateConfig, metadata={"help": "Evaluation gate thresholds."})
    promotion: PromotionPolicy = field(default_factory=PromotionPolicy, metadata={"help": "Promotion policy."})
    trigger: TriggerPolicy = field(default_factory=TriggerPolicy, metadata={"help": "Watcher trigger policy."})

    def registry(self) -> Registry:
        """The registry for this base model (raises FileNotFoundError when the model is missing)."""
        from adapters.base_model import BaseModelInfo  # here, so this module imports nothing of the project
        from adapters.registry import Registry

        base = BaseModelInfo.from_dir(self.model_path)
        return Registry(self.registry_db, self.adapters_dir, base, self.max_lora_rank, files=self.adapter_files)


def config_dict(*configs: object) -> dict:
    """The configs as one JSON-ready dict, stored on each version for lineage (secrets only as "(set)")."""
    out = {}
    for c in configs:
        values = asdict(c)
        for f in fields(c):
            if f.metadata.get("secret") and values[f.name] is not None:
                values[f.name] = "(set)"
        out[type(c).__name__] = values
    return out
