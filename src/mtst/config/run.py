"""The run config: the training section, the whole :class:`RunConfig` and what it checks across sections."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mtst.config.sections import (
    AUTO,
    STRATEGIES,
    CacheSection,
    ContrastiveSection,
    DataSection,
    GradualSection,
    KeepSection,
    LoraSettings,
    ModelSection,
    Section,
    TaskSection,
)
from mtst.errors import ConfigError


class TrainingSection(Section):
    """How to train: what is frozen, for how long, at which learning rates.

    ``lr_head`` unset means: ``lr_backbone`` when the backbone trains from the
    first step (``full``, ``top_k``), 1e-2 when it starts frozen (``heads``,
    ``gradual``), where heads must learn alone on fixed features.
    ``head_init: auto`` fits linear heads by logistic regression before the
    first step where the backbone starts frozen (``heads``, ``gradual``), the
    head has more than 16 classes, or several classification tasks train the
    encoder together; other heads start random.
    ``task_lr: per_row`` multiplies ``lr_backbone`` (and a head rate that
    follows it), where several classification tasks train the encoder
    together, by the mean number of their labels on a training row: AdamW
    splits one normalised step between the tasks a row carries, so each would
    move at a fraction of its own rate. ``sqrt`` multiplies by the square root
    of the number of such tasks, ``linear`` by that number, whatever the rows;
    ``fixed`` keeps ``lr_backbone`` as written.
    """

    strategy: str = AUTO
    top_k: int = Field(default=2, ge=1)
    freeze: list[str] = Field(default_factory=list)
    gradual: GradualSection = Field(default_factory=GradualSection)
    epochs: float = Field(default=3.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1)
    min_steps: int | None = Field(default=250, ge=1)
    batch_size: int = Field(default=32, ge=1)
    lr_head: float | None = Field(default=None, gt=0)
    head_init: Literal["auto", "logistic", "random"] = "auto"
    lr_backbone: float = Field(default=5e-5, gt=0)
    task_lr: Literal["per_row", "sqrt", "linear", "fixed"] = "per_row"
    layer_decay: float = Field(default=1.0, gt=0, le=1.0)
    weight_decay: float = Field(default=0.01, ge=0)
    schedule: Literal["linear", "cosine", "constant", "cyclical"] = "linear"
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    cycle_steps: int | None = Field(default=None, ge=2)
    batching: Literal["mixed", "per_task"] = "mixed"
    sampling: Literal["proportional", "temperature", "round_robin"] = "proportional"
    temperature: float = Field(default=2.0, gt=0)
    seed: int = 42
    eval_every: int | None = Field(default=None, ge=1)
    early_stopping_patience: int | None = Field(default=None, ge=1)
    metric: str = "mean_macro_f1"
    checkpoint_every: int | None = Field(default=None, ge=1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    grad_accumulation: int = Field(default=1, ge=1)
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    eval_batch_size: int = Field(default=64, ge=1)
    cache: CacheSection = Field(default_factory=lambda: CacheSection())
    # mtst's stand-ins for parts of torch and transformers (mtst.standins): None leaves the process's switch as
    # it is (MTST_STANDINS by default); false runs everything through the dependencies, with the same results
    standins: bool | None = None
    keep: KeepSection = Field(default_factory=KeepSection)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    contrastive: ContrastiveSection = Field(default_factory=ContrastiveSection)

    @model_validator(mode="before")
    @classmethod
    def _flat_cache_keys(cls, raw: Any) -> Any:
        """Configs written before the cache had its section (``cache: false``, ``cache_memory_mb``,
        ``cache_dir``) read as they did: saved runs resume, old YAML files train."""
        if not isinstance(raw, dict):
            return raw
        old = {"cache_memory_mb": "memory_mb", "cache_dir": "dir"}
        if not isinstance(raw.get("cache"), bool) and not any(k in raw for k in old):
            return raw
        raw = dict(raw)
        section = raw.pop("cache", None)
        section = {"enabled": section} if isinstance(section, bool) else dict(section or {})
        for flat, key in old.items():
            if flat in raw:
                section[key] = raw.pop(flat)
        raw["cache"] = section
        return raw

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        if value != AUTO and value not in STRATEGIES:
            raise ValueError(f"unknown strategy {value!r}; allowed: {AUTO}, {', '.join(STRATEGIES)}")
        return value


def resolve_precision(wanted: str, cuda: bool, bf16: bool) -> str:
    """Accelerate's mixed-precision name for ``training.precision`` on this device.

    ``bf16``: the device computes in bf16 natively (a GPU that supports it; a CPU with AVX512-BF16 or
    AMX). ``auto`` takes bf16 there: the steps cost about three quarters of fp32's on such a CPU at the
    same accuracy (benchmarks/README.md, "Precision"), and fp32 elsewhere, where bf16 is emulated.
    """
    if wanted == "auto":
        return "bf16" if bf16 else "no"
    if wanted == "fp16" and not cuda:
        raise ConfigError("training.precision: fp16 needs a CUDA device; use bf16 or fp32 on a CPU")
    return _ACCELERATE_NAMES.get(wanted, wanted)


_ACCELERATE_NAMES = {"fp32": "no"}  # training.precision -> Accelerate's mixed_precision, where they differ


def precision_name(mixed_precision: str) -> str:
    """``training.precision``'s name for Accelerate's ``mixed_precision`` value (``no`` is fp32)."""
    return {v: k for k, v in _ACCELERATE_NAMES.items()}.get(mixed_precision, mixed_precision)


def allowed_metrics(tasks: dict[str, TaskSection]) -> list[str]:
    """The names ``training.metric`` may take for these tasks."""
    allowed = ["mean_macro_f1", "mean_accuracy"]
    for name, task in tasks.items():
        if task.type == "classification":
            allowed += [f"{name}/macro_f1", f"{name}/accuracy"]
        elif task.type == "multi_label":
            allowed += [f"{name}/{m}" for m in ("macro_f1", "micro_f1", "accuracy")]
        elif task.type in ("regression", "pair_similarity"):
            allowed += [f"{name}/{m}" for m in ("spearman", "pearson")]
        elif task.type == "pair_classification":
            allowed += [f"{name}/macro_f1", f"{name}/accuracy"]
        elif task.type == "token_classification":
            allowed += [f"{name}/{m}" for m in ("f1", "precision", "recall", "accuracy")]
    return allowed


class RunConfig(Section):
    """A whole training run."""

    model: ModelSection = Field(default_factory=ModelSection)
    tasks: dict[str, TaskSection]
    data: DataSection = Field(default_factory=DataSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    output_dir: str = "runs/run"

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        if not self.tasks:
            raise ValueError("tasks: at least one task is needed")
        for name, task in self.tasks.items():
            if not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"tasks.{name}: task names use letters, digits, '_' and '-' only")
            if task.data is None and self.data.train is None and task.type != "masked_lm":
                raise ValueError(f"tasks.{name}: no training data (set data.train or tasks.{name}.data.train)")
            if task.type == "masked_lm" and task.data is not None:
                raise ValueError(f"tasks.{name}: a masked_lm task trains on every training text; remove its data")
        shared = {n: t.pair_columns for n, t in self.tasks.items() if t.data is None and t.type != "masked_lm"}
        if any(shared.values()) and len(set(shared.values())) > 1:
            pair = next(n for n, cols in shared.items() if cols)
            raise ValueError(
                f"tasks.{pair}: a pair task reads its own files (tasks.{pair}.data) unless every task on data.train "
                f"is a pair task on the same two columns"
            )
        if all(t.is_auxiliary for t in self.tasks.values()):
            raise ValueError("tasks: every task is auxiliary; at least one task must be a main task")
        allowed = allowed_metrics(self.tasks)
        if self.training.metric not in allowed:
            raise ValueError(f"training.metric: {self.training.metric!r} is not one of: {', '.join(allowed)}")
        return self

    def label_column(self, task: str) -> str:
        return self.tasks[task].label_column or task
