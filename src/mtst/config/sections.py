"""The sections of a run config (model, data, tasks, and the training options that are sections of
their own); every section forbids unknown keys."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(Section):
    """The shared encoder. ``init``: a trained mtst run or model directory to start from, heads and all
    (its encoder replaces ``backbone``; its tasks that the config does not name are carried unchanged)."""

    backbone: str = DEFAULT_BACKBONE
    init: str | None = None
    pooling: PoolingMode | None = None
    normalize: bool | None = None
    max_length: int | None = Field(default=None, ge=8, le=8192)


class DataSection(Section):
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


class TaskSection(Section):
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


class LoraSettings(Section):
    """Rank, scaling, dropout and where the adapters go."""

    r: int = Field(default=8, ge=1)
    alpha: float = Field(default=16.0, gt=0)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: ["query", "value"], min_length=1)
    lr: float = Field(default=5e-4, gt=0)
    full_top_k: int = Field(default=0, ge=0)
    save: str = Field(default="adapters", pattern="^(adapters|merged)$")


class GradualSection(Section):
    """Gradual unfreezing: heads first, then one more layer group per stage (top first)."""

    stage_epochs: float | None = Field(default=1.0, gt=0)
    stage_steps: int | None = Field(default=None, ge=1)
    layers_per_stage: int = Field(default=1, ge=1)
    include_embeddings: bool = False


class ContrastiveSection(Section):
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


class KeepSection(Section):
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


class CacheSection(Section):
    """Frozen work done once (``mtst.training.runtime.cache``): sentence embeddings where the backbone is frozen,
    the hidden states at the first trainable layer where only a top block trains. ``memory_mb`` bounds
    what is held in memory (pooled embeddings spill to disk above it; a prefix cache is not built);
    ``dir`` keeps pooled embeddings between runs, keyed by everything that decides them."""

    enabled: bool = True
    memory_mb: float = Field(default=4096, gt=0)
    dir: str | None = None
