"""The protocol every strategy follows, and the context it reads (no model, no torch).

A strategy is a small object that answers, from names alone: which parameter
groups train at each stage, how long a stage lasts, the heads' default
learning rate, whether the backbone ever moves (and so whether caches of
frozen work apply), how the model is prepared (LoRA adapters) and what of
the backbone the saved model must hold. The trainer, ``mtst compare``, the
CLI help and the config validator all ask the registry in ``__init__``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from torch import nn

    from mtst.config import TrainingSection

FROZEN_START_LR_HEAD = 1e-2  # heads learning alone on fixed features take larger steps


@dataclass(frozen=True)
class GroupContext:
    """What naming the trainable groups needs: the backbone's depth, the tasks and the training section."""

    num_layers: int
    tasks: tuple[str, ...]
    training: TrainingSection

    @property
    def heads(self) -> set[str]:
        return {f"heads.{t}" for t in self.tasks}

    def top_layers(self, k: int) -> set[str]:
        """The top ``k`` layers (and the backbone's final parts, which sit above them)."""
        k = min(k, self.num_layers)
        layers = {f"layers.{i}" for i in range(self.num_layers - k, self.num_layers)}
        return layers | ({"backbone_other"} if k else set())

    def everything(self) -> set[str]:
        return {"embeddings", *self.top_layers(self.num_layers), "backbone_other", *self.heads}


class Strategy:
    """Defaults shared by the strategies; each module overrides what makes it different."""

    name: ClassVar[str]
    trains: ClassVar[str]  # what trains, for the CLI help and the README table
    use_when: ClassVar[str]
    backbone_starts_frozen: ClassVar[bool] = False  # heads learn alone first: a larger default head LR
    backbone_fixed: ClassVar[bool] = False  # its steps never move the backbone (its heads read the original features)
    closed_form: ClassVar[bool] = False  # fitted without gradient steps
    compare_arg: ClassVar[str | None] = None  # ``mtst compare --strategies name:ARG`` takes a number

    def stage_groups(self, stage: int, ctx: GroupContext) -> set[str]:
        """Trainable groups at ``stage`` (before the ``freeze`` list is applied)."""
        raise NotImplementedError

    def num_stages(self, ctx: GroupContext) -> int:
        return 1

    def stage_steps(self, ctx: GroupContext, steps_per_epoch: int) -> int | None:
        """Optimizer steps per stage; None for a single-stage strategy."""
        return None

    def default_head_lr(self, training: TrainingSection) -> float:
        return FROZEN_START_LR_HEAD if self.backbone_starts_frozen else training.lr_backbone

    def head_lr(self, training: TrainingSection) -> float:
        """The head learning rate in force: ``lr_head`` as written, else this strategy's default."""
        return training.lr_head if training.lr_head is not None else self.default_head_lr(training)

    def prepare(self, model: nn.Module, ctx: GroupContext) -> None:
        """Change the model before training (e.g. inject adapters); most strategies need nothing."""

    def saved_backbone_groups(self, ever: set[str]) -> list[str] | None:
        """Backbone groups the saved model holds; None: the whole backbone (self-contained)."""
        return None

    def compare_overrides(self, arg: int) -> dict[str, Any]:
        """Training overrides of ``name:ARG`` in ``mtst compare --strategies``."""
        raise NotImplementedError
