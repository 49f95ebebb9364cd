"""Run configuration: one YAML file, validated at load time.

Every section forbids unknown keys, and every error names the field's dotted
path and, for choices, the allowed values, so a typo fails before any model
is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mtst.errors import ConfigError

DEFAULT_BACKBONE = "sentence-transformers/all-MiniLM-L6-v2"

STRATEGIES: tuple[str, ...] = ("frozen", "heads", "top_k", "gradual", "full", "lora")
"""The values ``training.strategy`` takes besides ``auto``; each a module of ``mtst.training.planning.strategies``."""
AUTO = "auto"  # the default recipe: the strategy is chosen from the data (mtst.training.planning.recipe)
PoolingMode = Literal["cls", "mean", "max"]
POOLING_MODES: tuple[str, ...] = get_args(PoolingMode)
# How inference runs (``SentenceEncoder.set_inference_precision``): ``bf16`` autocasts the transformer where
# no gradient is taken; on a CPU with native bf16 (AVX512-BF16, AMX) it encodes about 1.7x faster than fp32,
# embeddings at cosine 0.9999+ to fp32's (benchmarks/README.md, "Inference precision"); auto: bf16 where native.
INFERENCE_PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "auto")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(_Section):
    """The shared encoder. ``init``: a trained mtst run or model directory to start from, heads and all
    (its encoder replaces ``backbone``; its tasks that the config does not name are carried unchanged)."""

    backbone: str = DEFAULT_BACKBONE
    init: str | None = None
    pooling: PoolingMode | None = None
    normalize: bool | None = None
    max_length: int | None = Field(default=None, ge=8, le=8192)


class DataSection(_Section):
    """Where rows come from. Each split is a file (CSV, JSONL, Parquet) or a saved datasets dir."""

    train: str | None = None
    validation: str | None = None
    test: str | None = None
    sts: str | None = None  # scored pairs (sentence1, sentence2, score): the embedding's Spearman, start and end
    text_column: str = "text"
    tokens_column: str = "tokens"
    train_fraction: float = Field(default=1.0, gt=0.0, le=1.0)
    fraction_seed: int = 0


TaskType = Literal[
    "classification",
    "multi_label",
    "regression",
    "pair_classification",
    "pair_similarity",
    "token_classification",
    "masked_lm",
]
PAIR_TYPES: tuple[str, ...] = ("pair_classification", "pair_similarity")
DEFAULT_PAIR_COLUMNS = ("sentence1", "sentence2")
# How a multi-label task reads an empty cell: no labels, no row of the task, or by who else reads the file.
EmptyCell = Literal["auto", "none", "missing"]


class TaskSection(_Section):
    """One named task: what it predicts and from which column.

    ``classification`` predicts one label of several; ``multi_label`` any set of its labels (the column
    holds a list: a JSON list, or in CSV/TSV a string split at ``label_delimiter``; or ``label_columns``
    names one 0/1 column per label, each column's name its label; ``[]`` is a row with
    none of them; an empty cell is read by ``empty_cell``: ``none`` (no labels), ``missing`` (a row without
    this task), or ``auto``, which is ``none`` in a file whose only label column is this task's and
    ``missing`` in a file other tasks label too), with one decision threshold per label tuned for
    F1 on the validation split or, without one, on cross-validated training rows (``threshold``: one fixed
    value instead); ``pos_weight`` weighs each label's positives by its negatives over positives (at most
    10) for rare labels. ``regression`` predicts a number (``loss``: ``mse`` or ``huber`` on the target
    standardised by the training rows' mean and spread, which are saved with the model;
    ``standardize: false`` trains on the values as they are).
    ``pair_classification`` and ``pair_similarity`` read two texts per row (``text_columns``, default
    ``sentence1``, ``sentence2``), each encoded on its own: a pair classifier's head reads
    ``[u, v, |u - v|, u * v]`` (Sentence-BERT), a pair similarity task trains the cosine of the two
    embeddings toward the row's score (``loss``: ``cosent``, default, or ``cosine_mse`` to the score
    scaled to 0-1) and so trains the embedding itself. A pair task's rows come from files of their own
    (``tasks.NAME.data``) unless every task of the config is a pair task on the same columns.
    ``token_classification`` reads a list of words (``data.tokens_column``) and
    one tag per word from ``label_column`` (default: the task name, else
    ``tags``). ``masked_lm`` needs no labels: it masks spans of the training
    texts (``mask_ratio`` of the tokens, span lengths in words drawn from
    Geometric(``span_p``) clipped at ``span_length``; 1 masks single words).
    An ``auxiliary`` task trains with its weight but does not count for model
    selection; ``keep_head: false`` drops its head from the saved model.
    """

    type: TaskType = "classification"
    text_columns: list[str] | None = Field(default=None, min_length=2, max_length=2)
    label_column: str | None = None
    label_columns: list[str] | None = Field(default=None, min_length=2)
    label_delimiter: str = Field(default=",", min_length=1)
    empty_cell: EmptyCell = "auto"
    threshold: float | None = Field(default=None, gt=0.0, lt=1.0)
    pos_weight: bool = False
    loss: Literal["mse", "huber", "cosent", "cosine_mse"] | None = None
    standardize: bool = True
    labels: list[str] | None = None
    weight: float = Field(default=1.0, ge=0.0)
    hidden_size: int | None = Field(default=None, ge=1)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    data: DataSection | None = None
    auxiliary: bool | None = None
    keep_head: bool | None = None
    mask_ratio: float = Field(default=0.15, gt=0.0, lt=1.0)
    span_length: int = Field(default=10, ge=1)
    span_p: float = Field(default=0.2, gt=0.0, le=1.0)

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_as_strings(cls, value: Any) -> Any:
        """Labels as the data's cells read (numbers as their text, 1.0 as 1); a YAML boolean (unquoted yes, no,
        on, off, true, false), a list or an empty label is refused rather than read as another label."""
        if not isinstance(value, list):
            return value
        out = []
        for v in value:
            if isinstance(v, bool):
                raise ValueError(f"{v} is a YAML boolean (an unquoted yes/no/on/off/true/false): quote the label")
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            if not isinstance(v, (str, int, float)) or not str(v).strip():
                raise ValueError(f"{v!r} is not a label (a label is a non-empty string or a number)")
            out.append(str(v).strip())
        repeated = sorted({x for x in out if out.count(x) > 1})
        if repeated:
            raise ValueError(f"each label once; repeated: {', '.join(repeated)}")
        return out

    @model_validator(mode="after")
    def _options_of_type(self) -> TaskSection:
        # a value other than the default, not a key that is present: a saved run's config lists every key
        only = {key: ("multi_label",) for key in ("threshold", "pos_weight", "label_delimiter", "empty_cell")}
        only |= {"loss": ("regression", "pair_similarity"), "text_columns": PAIR_TYPES, "standardize": ("regression",)}
        for key, kinds in only.items():
            if getattr(self, key) != type(self).model_fields[key].default and self.type not in kinds:
                raise ValueError(f"{key} applies to {' and '.join(kinds)} tasks only; this task is {self.type}")
        losses = {"regression": ("mse", "huber"), "pair_similarity": ("cosent", "cosine_mse")}
        if self.loss is not None and self.loss not in losses.get(self.type, ()):
            allowed = ", ".join(losses[self.type])
            raise ValueError(f"loss: {self.loss!r} is not a loss of {self.type} tasks; allowed: {allowed}")
        if self.type in ("regression", "pair_similarity") and self.labels is not None:
            raise ValueError(f"labels: a {self.type} task predicts a number and has no labels; remove the key")
        if self.text_columns is not None and self.text_columns[0] == self.text_columns[1]:
            raise ValueError(f"text_columns: two different columns are needed, got {self.text_columns}")
        if self.label_columns is not None:
            if self.type != "multi_label":
                raise ValueError(f"label_columns applies to multi_label tasks only; this task is {self.type}")
            if self.label_column is not None or self.labels is not None:
                raise ValueError("label_columns: the columns are the labels; give no label_column or labels with it")
            repeated = sorted({c for c in self.label_columns if self.label_columns.count(c) > 1})
            if repeated:
                raise ValueError(f"label_columns: each column once; repeated: {', '.join(repeated)}")
        return self

    @property
    def pair_columns(self) -> tuple[str, str] | None:
        """The two text columns of a pair task (None for a single-text task)."""
        if self.type not in PAIR_TYPES:
            return None
        first, second = self.text_columns or DEFAULT_PAIR_COLUMNS
        return first, second

    @property
    def is_auxiliary(self) -> bool:
        """masked_lm tasks are always auxiliary; others when marked so."""
        return self.type == "masked_lm" or bool(self.auxiliary)

    @property
    def keeps_head(self) -> bool:
        """Heads are saved unless dropped; an MLM head is dropped unless kept."""
        return self.keep_head if self.keep_head is not None else self.type != "masked_lm"


class LoraSettings(_Section):
    """Rank, scaling, dropout and where the adapters go."""

    r: int = Field(default=8, ge=1)
    alpha: float = Field(default=16.0, gt=0)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: ["query", "value"], min_length=1)
    lr: float = Field(default=5e-4, gt=0)
    full_top_k: int = Field(default=0, ge=0)
    save: str = Field(default="adapters", pattern="^(adapters|merged)$")


class GradualSection(_Section):
    """Gradual unfreezing: heads first, then one more layer group per stage (top first)."""

    stage_epochs: float | None = Field(default=1.0, gt=0)
    stage_steps: int | None = Field(default=None, ge=1)
    layers_per_stage: int = Field(default=1, ge=1)
    include_embeddings: bool = False


class ContrastiveSection(_Section):
    """The contrastive stage: before the supervised steps, the encoder learns from the labels that
    same-label sentences lie close and different-label ones apart (SetFit's idea, on in-batch pairs).

    It trains the backbone parts the strategy trains; for ``frozen`` and ``heads``, whose backbone
    never trains, every layer, or the top ``top_k`` (their input then comes from the frozen-prefix
    cache). ``enabled`` unset: on where the ``auto`` recipe chooses it, off otherwise. ``loss``:
    ``cosine`` regresses the cosine of every same-label pair in a batch to 1 and of every other pair
    to 0 (positives and negatives weighted equally, SetFit's CosineSimilarityLoss over all pairs);
    ``supcon`` is the supervised contrastive loss. Tasks with more than ``max_classes`` classes sit the
    stage out (with many classes a batch holds two rows of some of them, and the stage measured no
    gain there); ``null`` lets every classification task take part.
    The stage runs ``epochs`` passes over each task's labelled rows, at least ``min_steps`` and at
    most ``max_steps`` optimizer steps per task (tasks take turns, each getting what it would alone).
    ``packing``: a batch's rows, drawn for their classes and so of mixed lengths, run end to end in
    packed rows (``mtst.modeling.packing``) where the backbone gives the same outputs so; else in
    length-sorted padded sub-batches.
    ``check``: where the run has a validation split and fits its heads by logistic regression
    (``frozen``, the recipe's route after the stage), heads are also fitted on the encoder before
    the stage and the stage is undone where that encoder scores higher on validation in at least
    90% of paired bootstrap resamples (``mtst.training.stages.stagecheck``; one more encoding pass of the
    training and validation rows).
    """

    enabled: bool | None = None
    loss: Literal["cosine", "supcon"] = "cosine"
    max_classes: int | None = Field(default=16, ge=2)
    top_k: int | None = Field(default=None, ge=1)
    epochs: float = Field(default=30.0, gt=0)
    min_steps: int = Field(default=20, ge=1)
    max_steps: int = Field(default=200, ge=1)
    batch_size: int = Field(default=32, ge=4)
    lr: float = Field(default=4e-5, gt=0)
    temperature: float = Field(default=0.1, gt=0)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    packing: bool = True
    check: bool = True


class KeepSection(_Section):
    """What a run keeps of the model it starts from, where the backbone moves (``mtst.training.stages.distill``).

    ``protect``: ``safe`` keeps the backbone and the starting model's heads frozen (their outputs stay
    bit-identical; only new heads train, on the encoder as it is); ``free`` lets the backbone move with
    nothing to hold it; ``distill`` adds the starting model's outputs on the training texts as soft
    targets: the old heads' probabilities at ``temperature`` (Learning without Forgetting), weighted by
    ``heads``, and the sentence embedding (1 - cosine to the starting one), weighted by ``embedding``.
    ``auto``: ``distill``. ``embedding`` applies to every run whose backbone moves, the contrastive
    stage included; ``null`` (auto) holds it (x0.6) where the run starts from a trained model
    (``model.init``) and not on a new model, where holding the pretrained embedding costs accuracy
    (benchmarks/README.md "Keeping what the model knows"); 0 turns it off.
    ``texts``: a file of texts from the starting model's own domain (one a line, or a table's
    ``text_column``, default ``data.text_column``; e.g. the file it was trained on): the same terms are
    held on a batch of them beside every step, where the training texts alone would leave the old heads
    unheld on their own inputs (up to ``texts_limit`` of them, a seeded sample above it).
    """

    protect: Literal["auto", "safe", "free", "distill"] = "auto"
    embedding: float | None = Field(default=None, ge=0)
    heads: float = Field(default=1.0, ge=0)
    temperature: float = Field(default=2.0, gt=0)
    texts: str | None = None
    text_column: str | None = None
    texts_limit: int = Field(default=4096, ge=1)


class CacheSection(_Section):
    """Frozen work done once (``mtst.training.runtime.cache``): sentence embeddings where the backbone is frozen,
    the hidden states at the first trainable layer where only a top block trains. ``memory_mb`` bounds
    what is held in memory (pooled embeddings spill to disk above it; a prefix cache is not built);
    ``dir`` keeps pooled embeddings between runs, keyed by everything that decides them."""

    enabled: bool = True
    memory_mb: float = Field(default=4096, gt=0)
    dir: str | None = None


class TrainingSection(_Section):
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
    # mtst's stand-ins for parts of torch and transformers (mtst.standins): None leaves it to the environment
    # (MTST_STANDINS), false runs everything through the dependencies themselves, with the same results
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


class RunConfig(_Section):
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


def _format_error(err: dict[str, Any]) -> str:
    path = ".".join(str(p) for p in err["loc"]) or "config"
    if err["type"] == "extra_forbidden":
        return f"{path}: unknown key"
    msg = err["msg"].removeprefix("Value error, ")
    if "input" in err and err["type"] not in ("missing", "value_error"):
        msg += f" (got {err['input']!r})"
    return f"{path}: {msg}"


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Walk the schema down ``loc`` (minus the unknown key) to list the keys allowed there."""
    current: Any = model
    skip_key = False
    for part in loc[:-1]:
        if skip_key or isinstance(part, int):  # a dict key such as a task name
            skip_key = False
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return None
        skip_key = getattr(field.annotation, "__origin__", None) is dict
        current = _unwrap(field.annotation)
        if current is None:
            return None
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields else None


def _unwrap(annotation: Any) -> Any:
    for arg in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def validate_config(raw: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a raw dict; raise ConfigError listing every problem by path."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            line = _format_error(err)
            if err["type"] == "extra_forbidden":
                allowed = _allowed_keys(RunConfig, tuple(err["loc"]))
                if allowed:
                    line += f"; allowed: {', '.join(allowed)}"
            lines.append(line)
        raise ConfigError(f"invalid configuration in {source}:\n  " + "\n  ".join(lines)) from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a raw config dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. training.strategy=heads")
        key, _, value = item.partition("=")
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"--set {item!r}: empty key")
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part} is not a section")
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from None
    return raw


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read YAML (or the bundled demo config when ``path`` is None), apply overrides, validate."""
    from mtst.demo import demo_config_path

    cfg_path = Path(path) if path is not None else demo_config_path()
    try:
        text = cfg_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{cfg_path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{cfg_path}: cannot read ({exc})") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{cfg_path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{cfg_path}: expected a mapping of sections (model, tasks, data, training)")
    tasks = raw.get("tasks")
    if tasks is not None and not isinstance(tasks, dict):
        names = [t for t in tasks if isinstance(t, str)] if isinstance(tasks, list) else []
        example = ", ".join(f"{n}: {{}}" for n in names[:3]) or "category: {}, sentiment: {}"
        raise ConfigError(
            f"{cfg_path}: tasks: expected a mapping of task name to its settings, not a "
            f"{type(tasks).__name__}; write it as  tasks: {{{example}}}  (an empty mapping takes the defaults)"
        )
    raw = _resolve_paths(raw, cfg_path.parent)
    raw = apply_overrides(raw, overrides or [])
    return validate_config(raw, str(cfg_path))


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Data paths in a config file are relative to that file, not to the working directory."""

    def fix(section: Any, keys: tuple[str, ...] = ("train", "validation", "test", "sts")) -> None:
        if isinstance(section, dict):
            for split in keys:
                value = section.get(split)
                if not isinstance(value, str) or Path(value).expanduser().is_absolute():
                    continue
                # relative to the config file; a path that exists only from the working directory keeps working
                if (base / value).exists() or not Path(value).exists():
                    section[split] = str(base / value)

    fix(raw.get("data"))
    training = raw.get("training")
    fix(training.get("keep") if isinstance(training, dict) else None, ("texts",))
    tasks = raw.get("tasks")
    for task in tasks.values() if isinstance(tasks, dict) else ():
        if isinstance(task, dict):
            fix(task.get("data"))
    return raw


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


@dataclass
class ServeSettings:
    """Limits and batching of ``mtst serve`` (each has a CLI option, whose default is this one)."""

    max_texts: int = 64
    max_chars: int = 5000
    max_body_bytes: int = 2 * 2**20
    max_concurrency: int = 64
    timeout_s: float = 10.0
    read_timeout_s: float = 10.0
    batch_wait_ms: float = 5.0
    max_batch: int = 64
    workers: int = 1
    max_padding: float = 0.2
    precision: str = "fp32"  # inference precision: fp32, bf16 or auto (SentenceEncoder.set_inference_precision)
    packing: bool = True  # texts of a batch packed end to end (SentenceEncoder.set_packing; torch models)
    api_key: str | None = None
