"""Task heads: small modules that map the shared encoder's output to logits.

A head is a plain ``nn.Sequential`` built from a :class:`HeadSpec`; the model
keeps them in an ``nn.ModuleDict`` keyed by task name. Sentence heads read
``sentence_embedding``, token heads read ``token_embeddings``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

HeadType = Literal["classification", "token_classification"]
HEAD_INPUT: dict[str, str] = {
    "classification": "sentence_embedding",
    "token_classification": "token_embeddings",
}


class HeadSpec(BaseModel):
    """Everything needed to rebuild a head: its kind, labels and shape."""

    model_config = ConfigDict(extra="forbid")

    type: HeadType = "classification"
    labels: list[str] = Field(min_length=2)
    hidden_size: int | None = Field(default=None, ge=1)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    weight: float = Field(default=1.0, ge=0.0)
    label_column: str | None = None

    @field_validator("labels")
    @classmethod
    def _unique(cls, labels: list[str]) -> list[str]:
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"labels must be unique; repeated: {', '.join(dupes)}")
        return labels

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def input_key(self) -> str:
        return HEAD_INPUT[self.type]


def build_head(spec: HeadSpec, input_dim: int) -> nn.Sequential:
    """Linear head by default; one hidden layer (GELU, dropout) when asked."""
    layers: list[nn.Module] = [nn.Dropout(spec.dropout)]
    width = input_dim
    if spec.hidden_size:
        layers += [nn.Linear(width, spec.hidden_size), nn.GELU(), nn.Dropout(spec.dropout)]
        width = spec.hidden_size
    layers.append(nn.Linear(width, spec.num_labels))
    return nn.Sequential(*layers)
