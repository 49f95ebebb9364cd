"""What each sentence task type means: its head's outputs, its loss, and what one prediction looks like.

Three task types read the sentence embedding:

- ``classification``: one label of several; softmax, cross-entropy.
- ``multi_label``: any set of the labels, the empty set included; a sigmoid per label, binary
  cross-entropy, and a decision threshold per label (tuned on held-out rows, saved with the model).
- ``regression``: a number; one output, trained on the standardised target (MSE or Huber) and returned
  in the data's own units (the mean and spread of the training targets are saved with the model).

Training, evaluation, every predictor (torch, ONNX, the server) and the exports read these rules from
here, so a head means the same thing everywhere. A task spec is a ``HeadSpec`` or its dict (ONNX metadata).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mtst.config import PAIR_TYPES

SENTENCE_TYPES: tuple[str, ...] = ("classification", "multi_label", "regression")
DEFAULT_THRESHOLD = 0.5


def _get(spec: Any, key: str, default: Any = None) -> Any:
    value = spec.get(key, default) if isinstance(spec, Mapping) else getattr(spec, key, default)
    return default if value is None else value


SCORED_TYPES: tuple[str, ...] = SENTENCE_TYPES + PAIR_TYPES  # one output row per text (or pair)
COSENT_SCALE = 20.0  # CoSENT's scale on cosine differences (sentence-transformers' default)


def fit_method(task_types: Sequence[str]) -> str:
    """How linear heads of these types are fitted in closed form, in words: logistic regression for labels,
    ridge regression for numbers (a run's log must not call a ridge fit logistic)."""
    kinds = {"ridge regression" if t == "regression" else "logistic regression" for t in task_types}
    if len(kinds) == 2:
        return "logistic regression (ridge for regression heads)"
    return kinds.pop() if kinds else "logistic regression"


def num_outputs(task_type: str, labels: Sequence[str]) -> int:
    """Width of a head's output: one number for regression and pair similarity, one score per label otherwise."""
    return 1 if task_type in ("regression", "pair_similarity") else len(labels)


def thresholds(spec: Any) -> np.ndarray:
    """A multi-label head's decision threshold per label (0.5 where none was tuned)."""
    labels = _get(spec, "labels", [])
    values = _get(spec, "thresholds")
    return np.full(len(labels), DEFAULT_THRESHOLD) if values is None else np.asarray(values, dtype=np.float64)


def activate(spec: Any, logits: torch.Tensor) -> torch.Tensor:
    """A sentence head's logits -> what it predicts: class probabilities, per-label probabilities, or the
    value in the data's units (a column of one)."""
    kind = _get(spec, "type", "classification")
    if kind == "multi_label":
        return torch.sigmoid(logits.float())
    if kind == "regression":
        return logits.float() * float(_get(spec, "target_std", 1.0)) + float(_get(spec, "target_mean", 0.0))
    if kind == "pair_similarity":
        return logits.float()  # already the cosine
    return logits.float().softmax(-1)


def activate_np(spec: Any, logits: np.ndarray) -> np.ndarray:
    """:func:`activate` on a numpy array (the ONNX predictor's logits)."""
    return activate(spec, torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))).numpy()


def decide(spec: Any, outputs: np.ndarray) -> np.ndarray:
    """Predicted labels of sentence outputs ``(n, width)``: class index (classification), a 0/1 matrix
    (multi-label, at each label's threshold) or the value (regression)."""
    kind = _get(spec, "type", "classification")
    if kind == "multi_label":
        return (outputs >= thresholds(spec)[None, :]).astype(np.int64)
    if kind in ("regression", "pair_similarity"):
        return outputs[:, 0]
    return outputs.argmax(-1)


def record(spec: Any, outputs: np.ndarray) -> dict[str, Any]:
    """One text's prediction for one sentence task, as ``predict``, ``serve`` and the ONNX predictor return it."""
    kind = _get(spec, "type", "classification")
    labels = _get(spec, "labels", [])
    if kind == "regression":
        return {"value": round(float(outputs[0]), 6)}
    if kind == "pair_similarity":
        return {"similarity": round(float(outputs[0]), 6)}
    probabilities = {lab: round(float(x), 6) for lab, x in zip(labels, outputs, strict=True)}
    if kind == "multi_label":
        on = outputs >= thresholds(spec)
        return {"labels": [lab for lab, yes in zip(labels, on, strict=True) if yes], "probabilities": probabilities}
    return {"label": labels[int(np.argmax(outputs))], "probabilities": probabilities}


def loss(spec: Any, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """The task's mean loss over the batch rows that carry its label (None where none does).

    Targets: class indices with ``-100`` for unlabelled rows (classification); a ``(rows, labels)`` 0/1
    matrix with NaN rows for unlabelled ones (multi-label); the value in the data's units, NaN where
    missing (regression; standardised here with the spec's mean and spread).
    """
    kind = _get(spec, "type", "classification")
    if kind == "multi_label":
        rows = ~torch.isnan(target).any(-1)
        if not bool(rows.any()):
            return None
        weight = _get(spec, "pos_weight")
        pos_weight = None if weight is None else torch.tensor(weight, dtype=torch.float32, device=logits.device)
        return F.binary_cross_entropy_with_logits(logits[rows].float(), target[rows].float(), pos_weight=pos_weight)
    if kind == "regression":
        rows = ~torch.isnan(target)
        if not bool(rows.any()):
            return None
        scaled = (target[rows].float() - float(_get(spec, "target_mean", 0.0))) / float(_get(spec, "target_std", 1.0))
        prediction = logits[rows][:, 0].float()
        if _get(spec, "loss", "mse") == "huber":
            return F.huber_loss(prediction, scaled, delta=1.0)
        return F.mse_loss(prediction, scaled)
    if kind == "pair_similarity":
        rows = ~torch.isnan(target)
        if not bool(rows.any()):
            return None
        cosine, score = logits[rows][:, 0].float(), target[rows].float()
        if _get(spec, "loss", "cosent") == "cosine_mse":
            low, high = _get(spec, "score_range", [0.0, 1.0])
            return F.mse_loss(cosine, (score - low) / max(high - low, 1e-8))
        return cosent_loss(cosine, score)
    return None  # classification and token tasks: the model's cross-entropy


def cosent_loss(cosine: torch.Tensor, score: torch.Tensor, scale: float = COSENT_SCALE) -> torch.Tensor:
    """CoSENT (Su, 2022; sentence-transformers' ``CoSENTLoss``): every pair of pairs whose gold scores are
    ordered pushes their cosines into the same order, ``log(1 + sum exp(scale * (cos_j - cos_i)))`` over
    ``score_i > score_j``. It needs only the scores' order, not their scale."""
    diff = scale * (cosine[None, :] - cosine[:, None])  # [i, j] = scale * (cos_j - cos_i)
    ordered = score[:, None] > score[None, :]
    diff = diff.masked_fill(~ordered, float("-inf"))
    flat = torch.cat([torch.zeros(1, device=cosine.device, dtype=diff.dtype), diff.reshape(-1)])
    return torch.logsumexp(flat, dim=0)


def soft_target_loss(spec: Any, student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-row distance of a head's outputs to a starting model's (Learning without Forgetting).

    Softmax heads: KL of the softened distributions x T^2 (so the gradient scale does not depend on T);
    multi-label heads: the mean over labels of the KL of the softened Bernoullis x T^2; regression: squared
    error of the standardised outputs. Each is 0 where the student matches the teacher.
    """
    kind = _get(spec, "type", "classification")
    t = temperature
    if kind == "multi_label":
        soft = torch.sigmoid(teacher / t)
        cross = F.binary_cross_entropy_with_logits(student / t, soft, reduction="none")
        entropy = F.binary_cross_entropy_with_logits(teacher / t, soft, reduction="none")
        return (cross - entropy).mean(-1) * t * t
    if kind == "regression":
        return ((student - teacher) ** 2).mean(-1)
    return (
        F.kl_div(F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1), log_target=True, reduction="none").sum(
            -1
        )
        * t
        * t
    )


def agreement(spec: Any, old: torch.Tensor, new: torch.Tensor) -> tuple[int, int]:
    """(agreeing, total) decisions of two models' logits: top labels (classification, per token for
    tagging), per-label decisions at the thresholds (multi-label), values within a quarter of the target's
    spread (regression)."""
    kind = _get(spec, "type", "classification")
    if kind == "multi_label":
        cut = torch.as_tensor(thresholds(spec), dtype=torch.float32)
        same = (torch.sigmoid(old.float()) >= cut) == (torch.sigmoid(new.float()) >= cut)
        return int(same.sum()), same.numel()
    if kind == "regression":
        same = (old.float() - new.float()).abs() <= 0.25
        return int(same.sum()), same.numel()
    same = old.argmax(-1) == new.argmax(-1)
    return int(same.sum()), same.numel()


# ------------------------------------------------------------------ multi-label thresholds
def best_threshold(scores: np.ndarray, truth: np.ndarray, grid: Sequence[float] | None = None) -> float:
    """The threshold on ``scores`` that maximises F1 against 0/1 ``truth`` (ties: the one closest to 0.5).

    ``grid``: the candidates (default 0.05, 0.10 .. 0.95: a coarse grid does not chase single rows). A
    label with no positive row keeps 0.5: there is nothing to tune on.
    """
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(truth).astype(bool)
    if not truth.any():
        return DEFAULT_THRESHOLD
    candidates = np.round(np.arange(0.05, 0.951, 0.05), 2) if grid is None else np.asarray(grid, dtype=np.float64)
    predicted = scores[None, :] >= candidates[:, None]
    tp = (predicted & truth[None, :]).sum(1)
    fp = (predicted & ~truth[None, :]).sum(1)
    fn = (~predicted & truth[None, :]).sum(1)
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros(len(candidates)), where=(2 * tp + fp + fn) > 0)
    best = np.flatnonzero(np.isclose(f1, f1.max()))
    return float(candidates[best[np.argmin(np.abs(candidates[best] - DEFAULT_THRESHOLD))]])


def tune_thresholds(scores: np.ndarray, truth: np.ndarray) -> list[float]:
    """One F1-maximising threshold per label column of ``scores`` ``(rows, labels)``."""
    return [best_threshold(scores[:, j], truth[:, j]) for j in range(scores.shape[1])]
