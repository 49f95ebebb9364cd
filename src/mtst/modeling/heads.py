"""Task heads: small modules that map the shared encoder's output to logits.

A head is a plain ``nn.Sequential`` built from a :class:`HeadSpec` (the
masked-LM head is the one exception: its decoder is tied to the input
embeddings); the model keeps them in an ``nn.ModuleDict`` keyed by task name.
Sentence heads read ``sentence_embedding``, token heads ``token_embeddings``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

if TYPE_CHECKING:
    from mtst.config import RunConfig
    from mtst.data import TaskData

HeadType = Literal["classification", "token_classification", "masked_lm"]
HEAD_INPUT: dict[str, str] = {
    "classification": "sentence_embedding",
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
    auxiliary: bool = False
    normalize_input: bool = False  # read the L2-normalised embedding (heads fitted on the direction alone)

    @field_validator("labels")
    @classmethod
    def _unique(cls, labels: list[str]) -> list[str]:
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"labels must be unique; repeated: {', '.join(dupes)}")
        return labels

    @model_validator(mode="after")
    def _enough_labels(self) -> HeadSpec:
        if self.type != "masked_lm" and len(self.labels) < 2:
            raise ValueError(f"a {self.type} head needs at least 2 labels, got {self.labels}")
        return self

    @property
    def num_labels(self) -> int:
        return len(self.labels)

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
    layers: list[nn.Module] = [nn.Dropout(spec.dropout)]
    width = input_dim
    if spec.hidden_size:
        layers += [nn.Linear(width, spec.hidden_size), nn.GELU(), nn.Dropout(spec.dropout)]
        width = spec.hidden_size
    layers.append(nn.Linear(width, spec.num_labels))
    return nn.Sequential(*layers)


def head_specs(config: RunConfig, data: TaskData) -> dict[str, HeadSpec]:
    """The heads a run builds: label sets from the data, shapes and roles from the config."""
    return {
        name: HeadSpec(
            type=task.type,
            labels=data.labels.get(name, []),
            hidden_size=task.hidden_size,
            dropout=task.dropout,
            weight=task.weight,
            label_column=None if task.type == "masked_lm" else config.label_column(name),
            auxiliary=task.is_auxiliary,
        )
        for name, task in config.tasks.items()
    }
