"""What a run reads: :class:`RunInputs`, checked and prepared before the run directory is touched.

A record every stage reads and none writes; built in steps by :mod:`mtst.training.trainer`
(``load_inputs``, ``make_plan``, the cache), each step returning a new value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mtst.modeling.groups import count_layers

if TYPE_CHECKING:
    from mtst.config import RunConfig
    from mtst.data import Split, TaskData
    from mtst.evaluate import StsPairs
    from mtst.modeling.model import MultiTaskModel
    from mtst.training.planning.recipe import Recipe
    from mtst.training.runtime.batches import Batcher
    from mtst.training.runtime.cache import RunCache


@dataclass(frozen=True)
class RunInputs:
    """Everything a run reads, checked and prepared before its directory is touched; built in steps
    (:func:`load_inputs`, :func:`make_plan`, the cache), each returning a new value, never changed after."""

    config: RunConfig
    data: TaskData
    model: MultiTaskModel
    ids: dict[str, list[list[int]]]
    word_ids: dict[str, Any]
    pair_ids: dict[str, list[list[int] | None] | None]  # the second texts of pair rows, per split
    batcher: Batcher
    lengths: list[int]
    mlm_tasks: list[str]
    aux_tasks: list[str]
    saved_tasks: list[str]
    step_params: set[str] = field(default_factory=set)  # what the supervised steps train
    trained_params: set[str] = field(default_factory=set)  # what any stage trains (the contrastive one too)
    recipe: Recipe | None = None  # the default recipe's choice, when the strategy was ``auto``
    carried: tuple[str, ...] = ()  # model.init's tasks the config does not name: saved unchanged, never trained
    continued: tuple[str, ...] = ()  # the config's tasks that start from model.init's heads
    sts: StsPairs | None = None  # data.sts: scored pairs for the embedding's Spearman
    carried_test: Split | None = None  # data.test's rows labelled for carried tasks (their start/end figures)
    keep_ids: list[list[int]] = field(default_factory=list)  # training.keep.texts, tokenised
    trainable_parameters: int = 0
    cache: RunCache | None = None  # what frozen parts computed, once the run directory exists

    @property
    def carried_heads(self) -> tuple[str, ...]:
        """Carried tasks with a prediction head (not a masked-LM objective)."""
        return tuple(t for t in self.carried if t in self.model.text_tasks)  # pair heads need pairs: not distilled

    @property
    def num_layers(self) -> int:
        return count_layers(n for n, _ in self.model.named_parameters())
