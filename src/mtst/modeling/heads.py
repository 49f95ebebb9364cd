"""Task heads: small modules that map the shared encoder's output to logits.

A head is a plain ``nn.Sequential`` built from a :class:`HeadSpec` (the
masked-LM head is the one exception: its decoder is tied to the input
embeddings); the model keeps them in an ``nn.ModuleDict`` keyed by task name.
Sentence heads read ``sentence_embedding``, token heads ``token_embeddings``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from mtst.config import EmptyCell, TaskType
from mtst.modeling.tasktypes import num_outputs

if TYPE_CHECKING:
    from mtst.config import RunConfig
    from mtst.data import TaskData

HeadType = TaskType
HEAD_INPUT: dict[str, str] = {
    "classification": "sentence_embedding",
    "multi_label": "sentence_embedding",
    "regression": "sentence_embedding",
    "pair_classification": "pair_embedding",  # and sentence_embedding: the two texts of a pair
    "pair_similarity": "pair_embedding",
    "token_classification": "token_embeddings",
    "masked_lm": "token_embeddings",
}


class HeadSpec(BaseModel):
    """Everything needed to rebuild a head: its kind, labels and shape."""

    model_config = ConfigDict(extra="forbid")

    type: HeadType = "classification"
    labels: list[str] = Field(default_factory=list)
    hidden_size: int | None = Field(default=None, ge=1)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    weight: float = Field(default=1.0, ge=0.0)
    label_column: str | None = None
    label_columns: list[str] | None = None  # multi-label: one 0/1 column per label (the labels' names)
    auxiliary: bool = False
    normalize_input: bool = False  # read the L2-normalised embedding (heads fitted on the direction alone)
    thresholds: list[float] | None = None  # multi-label: the decision threshold of each label (None: 0.5)
    pos_weight: list[float] | None = None  # multi-label: each label's positives weighed in the loss
    target_mean: float | None = None  # regression: the head predicts (value - mean) / std
    target_std: float | None = None
    loss: Literal["mse", "huber", "cosent", "cosine_mse"] | None = None  # regression, pair similarity
    text_columns: list[str] | None = None  # a pair task's two text columns
    label_delimiter: str | None = None  # multi-label: how a CSV/TSV cell joins its labels
    empty_cell: EmptyCell | None = None  # multi-label: how an empty cell reads (None: auto)
    score_range: list[float] | None = None  # pair similarity: the training scores' lowest and highest

    @field_validator("labels")
    @classmethod
    def _unique(cls, labels: list[str]) -> list[str]:
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"labels must be unique; repeated: {', '.join(dupes)}")
        return labels

    @model_validator(mode="after")
    def _enough_labels(self) -> HeadSpec:
        if self.type in ("regression", "pair_similarity"):
            if self.labels:
                raise ValueError(f"a {self.type} head predicts a number and has no labels, got {self.labels}")
        elif self.type != "masked_lm" and len(self.labels) < 2:
            raise ValueError(f"a {self.type} head needs at least 2 labels, got {self.labels}")
        for key in ("thresholds", "pos_weight"):
            value = getattr(self, key)
            if value is not None and len(value) != len(self.labels):
                raise ValueError(f"{key}: {len(value)} values for {len(self.labels)} labels")
        return self

    @property
    def num_labels(self) -> int:
        """Width of the head's output (one for a regression head)."""
        return num_outputs(self.type, self.labels)

    @property
    def input_key(self) -> str:
        return HEAD_INPUT[self.type]


def build_head(spec: HeadSpec, input_dim: int, vocab_size: int | None = None) -> nn.Module:
    """Linear head by default; one hidden layer (GELU, dropout) when asked; the MLM head for ``masked_lm``."""
    if spec.type == "masked_lm":
        from mtst.modeling.mlm import MaskedLMHead

        if vocab_size is None:
            raise ValueError("a masked_lm head needs the backbone's vocabulary size")
        return MaskedLMHead(input_dim, vocab_size)
    if spec.type == "pair_similarity":
        return nn.Identity()  # the cosine of the two embeddings: no weights of its own
    layers: list[nn.Module] = [nn.Dropout(spec.dropout)]
    width = 4 * input_dim if spec.type == "pair_classification" else input_dim  # [u, v, |u - v|, u * v]
    if spec.hidden_size:
        layers += [nn.Linear(width, spec.hidden_size), nn.GELU(), nn.Dropout(spec.dropout)]
        width = spec.hidden_size
    layers.append(nn.Linear(width, spec.num_labels))
    return nn.Sequential(*layers)


def head_specs(config: RunConfig, data: TaskData) -> dict[str, HeadSpec]:
    """The heads a run builds: label sets from the data, shapes and roles from the config, and what a head
    learns from the training targets (a regression target's mean and spread, multi-label positive weights)."""
    return {
        name: HeadSpec(
            type=task.type,
            labels=data.labels.get(name, []),
            hidden_size=task.hidden_size,
            dropout=task.dropout,
            weight=task.weight,
            label_column=None if task.type == "masked_lm" else config.label_column(name),
            label_columns=task.label_columns,
            auxiliary=task.is_auxiliary,
            text_columns=list(task.pair_columns) if task.pair_columns else None,
            label_delimiter=task.label_delimiter if task.type == "multi_label" else None,
            empty_cell=task.empty_cell if task.type == "multi_label" else None,
            **_target_settings(name, task, data),
        )
        for name, task in config.tasks.items()
    }


POS_WEIGHT_CAP = 10.0  # a label seen once in 500 rows would otherwise outweigh every other label


def _target_settings(name: str, task: Any, data: TaskData) -> dict[str, Any]:
    train = data.splits.get("train")
    if train is None or name not in train.targets:
        return {}
    values = train.targets[name][train.rows_for(name)]
    if task.type == "regression" and not task.standardize:
        return {"target_mean": 0.0, "target_std": 1.0, "loss": task.loss}
    if task.type == "regression":
        std = float(values.std()) if len(values) > 1 else 0.0
        return {"target_mean": float(values.mean()), "target_std": std if std > 1e-8 else 1.0, "loss": task.loss}
    if task.type == "pair_similarity":
        return {"score_range": [float(values.min()), float(values.max())], "loss": task.loss or "cosent"}
    if task.type == "multi_label":
        out: dict[str, Any] = {}
        if task.threshold is not None:
            out["thresholds"] = [float(task.threshold)] * values.shape[1]
        if task.pos_weight:
            pos = values.sum(0)
            out["pos_weight"] = [float(min(POS_WEIGHT_CAP, (len(values) - p) / p)) if p else 1.0 for p in pos.tolist()]
        return out
    return {}
