"""Starting from a trained model (``model.init``): its encoder and heads, the config's tasks matched to them.

A task of the config that the model has *continues* from its head (its labels must be the model's);
a new task gets a new head; a task of the model that the config does not name is *carried*: its head
is never trained, and it is saved with the new model, so ``predict``, ``serve`` and the exports keep
answering it. Everything here is checked before a run directory is touched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mtst.config import RunConfig
from mtst.data import MISSING, TaskData
from mtst.errors import ConfigError, ModelLoadError
from mtst.modeling.heads import HeadSpec
from mtst.modeling.model import MultiTaskModel
from mtst.modeling.saved import is_run_dir
from mtst.training.runtime.rundir import in_use

if TYPE_CHECKING:
    from mtst.training.inputs import RunInputs

logger = logging.getLogger("mtst")


@dataclass(frozen=True)
class Start:
    """The run's model, built on the starting one, and what became of the starting model's tasks."""

    model: MultiTaskModel
    carried: tuple[str, ...]  # the starting model's tasks the config does not name (never trained)
    continued: tuple[str, ...]  # the config's tasks that start from the starting model's heads


def load_start(reference: str) -> MultiTaskModel:
    """The starting model, its LoRA adapters folded in: a run adds its own adapters (or trains layers)
    on top of the weights the model computes with."""
    check_finished(Path(reference).expanduser())
    try:
        model = MultiTaskModel.load(reference)
    except ModelLoadError as exc:
        raise ModelLoadError(f"model.init: {exc}") from None
    if model.lora is not None:
        model.merge_lora()
    return model


def check_finished(path: Path) -> None:
    """A run that did not finish (killed, or still training) is not a starting model: its ``model/`` is the
    best one so far, picked on evaluations that stopped midway. Naming ``RUN/model`` takes it on purpose."""
    if not path.is_dir() or not is_run_dir(path) or (path / "metrics.json").is_file():
        return
    state = "is still training" if in_use(path) else "did not finish (no metrics.json)"
    has_model = (path / "model").is_dir()
    raise ModelLoadError(
        f"model.init: {path} is a run that {state}: finish it first (`mtst train --resume {path}`)"
        + (f", or name {path / 'model'} to start from its best model so far" if has_model else "")
    )


def check_start(config: RunConfig, start: MultiTaskModel) -> None:
    """What can be checked before the data is read: the encoder settings and the continued tasks."""
    check_encoder(config, start, str(config.model.init))
    check_tasks(config, start, str(config.model.init))


def check_encoder(config: RunConfig, start: MultiTaskModel, source: str) -> None:
    """The config may not ask the starting model's heads to read another embedding than they were trained on."""
    m, enc = config.model, start.encoder
    given = m.model_fields_set
    wrong = []
    if "backbone" in given and m.backbone != enc.reference:
        wrong.append(f"model.backbone is {m.backbone!r}, the model's is {enc.reference!r}")
    if m.pooling is not None and m.pooling != enc.pooling:
        wrong.append(f"model.pooling is {m.pooling!r}, the model's is {enc.pooling!r}")
    if m.normalize is not None and m.normalize != enc.normalize:
        wrong.append(f"model.normalize is {m.normalize}, the model's is {enc.normalize}")
    if m.max_length is not None and m.max_length != enc.max_length:
        # a text cut at another length embeds differently: the carried heads and the embedding would change
        wrong.append(f"model.max_length is {m.max_length}, the model's is {enc.max_length}")
    if wrong:
        raise ConfigError(
            f"model.init: {source} " + "; ".join(wrong) + ": its heads and embedding were computed with the "
            "model's settings; remove these keys (the model's own settings apply)"
        )


def check_tasks(config: RunConfig, start: MultiTaskModel, source: str) -> None:
    """A continued task must be of the model's type, with the model's labels where the config lists them
    (checked before the data is read: the data's own errors would not name the model)."""
    for task, section in config.tasks.items():
        if task not in start.tasks:
            continue
        spec = start.tasks[task]
        if spec.type != section.type:
            raise ConfigError(f"tasks.{task}: the model at {source} has it as a {spec.type} task, not {section.type}")
        if section.labels is not None and set(section.labels) != set(spec.labels):
            raise ConfigError(
                f"tasks.{task}.labels differ from the model's at {source}: the config has "
                f"{', '.join(section.labels)}; the model has {', '.join(spec.labels)}"
            )


def align_labels(config: RunConfig, data: TaskData, start: MultiTaskModel, source: str) -> None:
    """Give every continued task the starting model's label order (the data's rows re-indexed to it).

    The training data may hold fewer classes than the model knows; a label the model never had, or a
    config ``labels`` list other than the model's, is an error naming the task and the labels.
    """
    for task, section in config.tasks.items():
        if task not in start.tasks or section.type == "masked_lm":
            continue
        theirs, ours = list(start.tasks[task].labels), data.labels[task]
        unknown = [x for x in ours if x not in theirs]
        if unknown:
            raise ConfigError(
                f"tasks.{task}: the training data has label(s) {', '.join(map(repr, unknown[:5]))} that the model at "
                f"{source} does not know (its labels: {', '.join(theirs)}); a new label set is a new task: "
                f"give it another name"
            )
        if ours == theirs:
            continue
        remap = np.array([theirs.index(x) for x in ours], dtype=np.int64)
        for split in data.splits.values():
            y = split.labels[task]
            if task in split.targets and split.targets[task].ndim == 2:  # multi-label: columns in the model's order
                matrix = np.zeros((len(y), len(theirs)), dtype=split.targets[task].dtype)
                matrix[:, remap] = split.targets[task]
                split.targets[task] = matrix
            elif task in split.tags:  # token task: the tags hold the indices, labels only mark tagged rows
                split.tags[task] = [None if t is None else remap[t] for t in split.tags[task]]
            else:
                split.labels[task] = np.where(y == MISSING, MISSING, remap[np.maximum(y, 0)])
        data.labels[task] = theirs


def continued_spec(task: str, new: HeadSpec, old: HeadSpec, source: str) -> HeadSpec:
    """A continued task's head: the starting model's shape and input, the config's weight and role."""
    if new.hidden_size is not None and new.hidden_size != old.hidden_size:
        raise ConfigError(
            f"tasks.{task}.hidden_size is {new.hidden_size}; the model at {source} has "
            f"{old.hidden_size or 'none (a linear head)'}: remove the key to continue its head, or name a new task"
        )
    return old.model_copy(update={"weight": new.weight, "dropout": new.dropout, "auxiliary": new.auxiliary})


def build_start(config: RunConfig, data: TaskData, specs: dict[str, HeadSpec], start: MultiTaskModel) -> Start:
    """The run's model on ``start`` (loaded from ``model.init`` and checked by :func:`check_start`): the
    starting model's heads (continued or carried) and new ones."""
    source = str(config.model.init)
    align_labels(config, data, start, source)
    # the starting model's heads first (continued ones in their own label order, which align_labels gave
    # the data), then the new ones, whose specs already hold the data's labels
    merged = {
        name: continued_spec(name, specs[name], old, source) if name in specs else old
        for name, old in start.tasks.items()
    }
    merged.update({name: spec for name, spec in specs.items() if name not in start.tasks})
    model = MultiTaskModel(start.encoder, merged)
    kept = {k: v for k, v in start.heads.state_dict().items() if k.split(".")[0] in start.tasks}
    model.heads.load_state_dict(kept, strict=False)
    carried = tuple(t for t in start.tasks if t not in config.tasks)
    continued = tuple(t for t in config.tasks if t in start.tasks)
    logger.info(
        "model.init %s: continued %s, carried %s, new %s",
        source,
        list(continued),
        list(carried),
        [t for t in config.tasks if t not in start.tasks],
    )
    return Start(model, carried, continued)


def starting_model(inputs: RunInputs) -> MultiTaskModel:
    """The model a run started from, loaded again (a resumed run's live model has moved): ``model.init``,
    or the pretrained backbone with the run's pooling (no heads: a new model has no old ones)."""
    config = inputs.config
    if config.model.init:
        return load_start(config.model.init)
    m, enc = config.model, inputs.model.encoder
    return MultiTaskModel.from_backbone({}, m.backbone, enc.pooling, enc.normalize, enc.max_length)
