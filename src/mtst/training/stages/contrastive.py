"""The contrastive stage: the encoder learns the labels' geometry before the heads are fitted.

SetFit showed that on a few examples per class, tuning the encoder so that
same-label sentences lie close and others apart, then fitting a logistic head,
beats fine-tuning through a head. SetFit draws pairs and encodes both sides of
each; here every batch is balanced over classes and *every* pair in it counts
(a batch of B rows gives B(B-1)/2 pairs for B encodings), and where only the
top layers train their input comes from the frozen-prefix cache, so a step
costs a fraction of a full forward and backward pass.

Pure parts (batches, pair masks, losses) are functions of labels and
embeddings, tested without a model; :func:`run_contrastive` carries the stage
out on a model, with the run's batcher and cache.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from mtst.constants import IGNORE_INDEX
from mtst.errors import TrainingError
from mtst.training.planning.freezing import apply_trainable, set_train_mode, trainable_names
from mtst.training.runtime.optim import adamw, schedule_factor

if TYPE_CHECKING:
    from rich.progress import Progress

    from mtst.data import Split
    from mtst.modeling.model import MultiTaskModel
    from mtst.training.planning.plan import ContrastivePlan
    from mtst.training.runtime.batches import Batcher
    from mtst.training.runtime.cache import RunCache

logger = logging.getLogger("mtst")


# ------------------------------------------------------------------ batches
def _cycle(rng: np.random.Generator, items: np.ndarray) -> Iterator[int]:
    """Endless passes over ``items``, each pass in a new seeded order."""
    while True:
        yield from rng.permutation(items)


def _draw(stream: Iterator[int], k: int) -> list[int]:
    """The next ``k`` distinct items of a cycling stream (``k`` at most the items in one pass)."""
    out: list[int] = []
    while len(out) < k:
        item = int(next(stream))
        if item not in out:
            out.append(item)
    return out


def label_batches(
    labels: dict[str, np.ndarray], batch_size: int, steps: int, seed: int
) -> list[tuple[str, np.ndarray]]:
    """``steps`` batches of training rows, one task each (tasks take turns), balanced over classes.

    Each batch holds ``per_class`` rows of each of several classes (``per_class`` = batch size over the
    number of classes, at least 2, so every class in a batch has a positive pair); classes and their
    rows are visited in seeded passes, so every row is seen equally often. Rows without a label for a
    task (``-100``) never enter that task's batches; a task with fewer than two classes has none.
    A multi-label task's labels are a ``(rows, labels)`` 0/1 matrix (NaN rows: unlabelled): a row is a
    member of each label it carries, and rows with none form one more class.
    """
    rng = np.random.default_rng(seed)
    streams = {}
    for task, y in labels.items():
        if y.ndim == 2:
            rows = np.flatnonzero(~np.isnan(y).any(1))
            sets = y[rows] > 0.5
            members = {j: rows[sets[:, j]] for j in range(y.shape[1])} | {-1: rows[~sets.any(1)]}
            members = {c: m for c, m in members.items() if len(m)}
        else:
            rows = np.flatnonzero(y != IGNORE_INDEX)
            members = {int(c): rows[y[rows] == c] for c in np.unique(y[rows])}
        classes = np.asarray(sorted(members))
        if len(classes) < 2:
            continue
        per_class = max(2, batch_size // len(classes))
        classes_per_batch = max(2, min(len(classes), batch_size // per_class))
        by_class = {c: _cycle(rng, m) for c, m in members.items()}
        sizes = {c: len(m) for c, m in members.items()}
        streams[task] = (_cycle(rng, classes), by_class, sizes, per_class, classes_per_batch)
    if not streams:
        return []
    order = sorted(streams)
    out = []
    for step in range(steps):
        task = order[step % len(order)]
        class_stream, by_class, sizes, per_class, classes_per_batch = streams[task]
        batch = {
            row for c in _draw(class_stream, classes_per_batch) for row in _draw(by_class[c], min(per_class, sizes[c]))
        }  # a multi-label row drawn for two of its labels enters once
        out.append((task, np.asarray(sorted(batch))))
    return out


def pair_targets(labels: torch.Tensor) -> torch.Tensor:
    """(B, B) similarity targets of every pair: 1 for the same label, 0 for different ones; for label sets
    (a (B, labels) 0/1 matrix) the Jaccard overlap of the two sets (two empty sets count as the same)."""
    if labels.dim() == 1:
        return (labels[:, None] == labels[None, :]).float()
    sets = (labels > 0.5).float()
    both = sets @ sets.T
    either = sets.sum(1)[:, None] + sets.sum(1)[None, :] - both
    return torch.where(either > 0, both / either.clamp(min=1.0), torch.ones_like(both))


def pair_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean (B, B) masks of pairs that share a label (the diagonal excluded) and pairs that share none."""
    target = pair_targets(labels)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return (target > 0) & ~eye, target == 0


def contrastive_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, kind: str = "cosine", temperature: float = 0.1
) -> torch.Tensor:
    """The loss of one batch of sentence embeddings under their labels.

    ``cosine``: mean squared error of each pair's cosine to its target (:func:`pair_targets`: 1 for the
    same label, 0 for different ones, the Jaccard overlap of two label sets), pairs that share a label
    and pairs that share none weighted equally as SetFit balances them. ``supcon``: supervised
    contrastive loss (Khosla et al., 2020) at ``temperature``, positives weighted by their target.
    """
    e = F.normalize(embeddings.float(), dim=-1)
    sim = e @ e.T
    target = pair_targets(labels)
    pos, neg = pair_masks(labels)
    if kind == "cosine":
        parts = [((sim[m] - target[m]) ** 2).mean() for m in (pos, neg) if bool(m.any())]
        return torch.stack(parts).mean()
    if kind == "supcon":
        logits = (sim / temperature).masked_fill(torch.eye(len(labels), dtype=torch.bool, device=sim.device), -1e9)
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        weight = target * pos
        anchors = pos.any(1)
        per_anchor = -(log_prob * weight).sum(1)[anchors] / weight.sum(1)[anchors]
        return per_anchor.mean()
    raise ValueError(f"unknown contrastive loss {kind!r}; allowed: cosine, supcon")


# -------------------------------------------------------------------- stage
def run_contrastive(
    model: MultiTaskModel,
    train: Split,
    batcher: Batcher,
    cache: RunCache,
    plan: ContrastivePlan,
    seed: int,
    accelerator: Any,
    progress: Progress,
    keep: Callable[[dict[str, Any], np.ndarray], torch.Tensor | None] | None = None,
) -> list[float]:
    """Carry the stage out on ``model``; returns the loss of every step.

    ``keep``, where given, adds its term for the batch's features and rows (``training.keep``: the
    starting embedding and old heads held while the encoder moves).
    Only ``plan.groups`` train (AdamW, linear warm-up and decay); where they are a top block of
    layers their input comes from ``cache``'s frozen prefix (rebuilt for the stage, and forgotten
    after it, since the weights it was computed from have moved). The stage leaves every parameter
    frozen: the caller restores the trainable set of the steps that follow.
    """
    device = accelerator.device
    batches = label_batches({t: stage_labels(train, t) for t in plan.tasks}, plan.batch_size, plan.steps, seed)
    if not batches:
        logger.info("contrastive stage skipped: no classification task has two classes")
        return []
    params, optimizer, pack, how = _prepare(model, cache, plan)
    losses: list[float] = []
    started = time.perf_counter()
    with progress:
        bar = progress.add_task("contrastive", total=len(batches), loss="-")
        for step, (task, rows) in enumerate(batches):
            for g in optimizer.param_groups:
                g["lr"] = plan.lr * schedule_factor("linear", step, len(batches), plan.warmup_steps)
            with accelerator.autocast():  # bf16 where the run uses it; the loss itself is in fp32
                feats = encoder_features(model, cache, batcher, rows, device, pack)
                kept = keep(feats, rows) if keep is not None else None
            labels = torch.as_tensor(stage_labels(train, task)[rows], device=device)
            loss = contrastive_loss(feats["sentence_embedding"], labels, plan.loss, plan.temperature)
            if kept is not None:
                loss = loss + kept
            if not torch.isfinite(loss):
                raise TrainingError(f"contrastive loss became {loss.item()} at step {step + 1}; lower contrastive.lr")
            accelerator.backward(loss)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            progress.update(bar, advance=1, loss=f"{np.mean(losses[-20:]):.4f}")
    for p in params:
        p.requires_grad_(False)
    cache.invalidate()
    seconds, first, last = time.perf_counter() - started, np.mean(losses[:5]), np.mean(losses[-5:])
    logger.info("contrastive stage: %d steps in %.1fs (%s), loss %.4f -> %.4f", len(losses), seconds, how, first, last)
    return losses


def _prepare(model: MultiTaskModel, cache: RunCache, plan: ContrastivePlan) -> tuple[list, Any, str | None, str]:
    """Only the stage's groups train: their parameters, AdamW over them, how rows reach the trained layers
    (a frozen prefix from the cache, packed rows, or padded sub-batches) and its name for the log."""
    groups = set(plan.groups)
    apply_trainable(model, groups)
    names = trainable_names((n for n, _ in model.named_parameters()), groups)
    params = [p for n, p in model.named_parameters() if n in names]
    optimizer = adamw(params, lr=plan.lr, weight_decay=0.0)
    cache.refresh(groups)
    prefix = cache.mode == "prefix"  # the prefix cache feeds the stage: its rows are never packed
    pack = model.encoder.pack_kind() if plan.packing and not prefix else None
    how = "from the prefix cache" if prefix else "rows packed" if pack else "padded sub-batches"
    set_train_mode(model, groups)
    return params, optimizer, pack, how


def stage_labels(train: Split, task: str) -> np.ndarray:
    """A task's labels as the stage reads them: class indices, or a multi-label task's 0/1 matrix with
    NaN rows where a row has no label for it."""
    if task not in train.targets or train.targets[task].ndim != 2:
        return train.labels[task]
    y = train.targets[task].astype(np.float32)
    y[train.labels[task] == IGNORE_INDEX] = np.nan
    return y


def encoder_features(
    model: MultiTaskModel,
    cache: RunCache,
    batcher: Batcher,
    rows: Sequence[int] | np.ndarray,
    device: torch.device,
    pack: str | None = None,
) -> dict[str, Any]:
    """The encoder's features of training rows, with gradients: from the prefix cache where one applies, else
    packed (``pack``) or in length-sorted sub-batches (:meth:`Batcher.features`; a stage batch is drawn for its
    classes, not its lengths, and as one padded batch SST-2's sentences compute on about half padding)."""
    feats = cache.features(rows, device)
    if feats is None:
        feats = batcher.features(model.encoder, np.asarray(rows), device, pack)
    return feats
