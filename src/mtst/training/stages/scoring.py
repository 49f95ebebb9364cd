"""Scoring a split during a run: the model as it stands, reading cached frozen work where it applies.

Every process scores (sharded evaluation gathers predictions from all of
them). Validation reads the pooled cache or the validation prefix, so an
evaluation runs only what trains; test scores the best model, from cached
embeddings where only its heads differ from the live model.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from mtst.evaluate import evaluate_split, score_split
from mtst.modeling import tasktypes
from mtst.modeling.model import MultiTaskModel, RowFeatures

if TYPE_CHECKING:
    from mtst.data import Split
    from mtst.training.inputs import RunInputs
    from mtst.training.runtime.cache import RunCache

logger = logging.getLogger("mtst")


def score_rows(
    model: MultiTaskModel,
    inputs: RunInputs,
    split_name: str,
    batch_size: int,
    rank: int = 0,
    world: int = 1,
    features: RowFeatures | None = None,
) -> dict[str, dict]:
    """Per-task figures of a split through the model (``features``: cached inputs of its rows)."""
    split, ids, word_ids = inputs.data.splits[split_name], inputs.ids[split_name], inputs.word_ids[split_name]
    pair_ids = inputs.pair_ids.get(split_name)
    return evaluate_split(model, split, ids, batch_size, word_ids, rank, world, features, pair_ids)


def pooled_predictions(model: MultiTaskModel, embeddings: torch.Tensor, split: Split) -> dict[str, np.ndarray]:
    """The decisions (class index, 0/1 row or value) of the heads for the tasks ``split`` labels (not the heads
    carried from model.init), from the split's pooled sentence embeddings: the heads alone run."""
    device = next(model.parameters()).device
    tasks = [t for t in model.prediction_tasks if t in split.labels]
    model.eval()
    with torch.inference_mode():
        feats = model.forward_heads({"sentence_embedding": embeddings.to(device)}, tasks)
    return {
        task: tasktypes.decide(model.tasks[task], tasktypes.activate(model.tasks[task], logits).cpu().numpy())
        for task, logits in feats["logits"].items()
    }


def score_pooled(model: MultiTaskModel, inputs: RunInputs, cache: RunCache, split_name: str) -> dict[str, dict]:
    """Per-task figures of a split from its cached sentence embeddings (the heads alone run)."""
    split = inputs.data.splits[split_name]
    predictions = pooled_predictions(model, cache.embeddings(split_name), split)
    return score_split(split, predictions, inputs.data.labels)


def score_validation(
    model: MultiTaskModel, inputs: RunInputs, cache: RunCache, batch_size: int, rank: int = 0, world: int = 1
) -> dict[str, dict] | None:
    """The validation split's figures (None without one), through the cache that applies."""
    if "validation" not in inputs.data.splits:
        return None
    if cache.mode == "pooled" and "validation" in cache.pooled:
        return score_pooled(model, inputs, cache, "validation")
    device = next(model.parameters()).device
    cached = cache.validation_features(device)  # the trainable layers only
    return score_rows(model, inputs, "validation", batch_size, rank, world, cached)


def score_test(
    model: MultiTaskModel,
    inputs: RunInputs,
    cache: RunCache,
    model_dir: Path,
    backbone_moves: bool,
    best_heads: dict[str, torch.Tensor] | None,
    batch_size: int,
    rank: int = 0,
    world: int = 1,
    best_model: MultiTaskModel | None = None,
) -> dict[str, dict]:
    """The best model on test: from cached embeddings when only heads trained, else loaded from disk.

    With a fixed backbone the best model differs from the live one only in its heads, so those are
    swapped in for the pass (``best_heads``, else read from ``model_dir``; ``best_model``: that model,
    already loaded); with ``training.cache.dir``
    a repeated run encodes no test text.
    """
    started = time.perf_counter()
    if cache.mode != "pooled" or world > 1 or backbone_moves:
        if best_model is None:
            best_model = MultiTaskModel.load(model_dir)
            best_model.encoder.set_inference_precision(model.encoder.inference_precision)
        return score_rows(best_model, inputs, "test", batch_size, rank, world)
    best = best_heads if best_heads is not None else MultiTaskModel.read_heads(model_dir)
    heads = model.heads
    live = {k: v.clone() for k, v in heads.state_dict().items()}
    try:
        heads.load_state_dict(best, strict=False)
        scores = score_pooled(model, inputs, cache, "test")
    finally:
        heads.load_state_dict(live)
    logger.info("test scored from cached embeddings in %.2fs", time.perf_counter() - started)
    return {task: scores[task] for task in inputs.saved_tasks if task in scores}
