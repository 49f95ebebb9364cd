"""Keeping what the starting model knows while the backbone moves, and saying how much was kept.

Before the first stage, the starting model's outputs on the training texts are recorded once
(:func:`start_targets`): its sentence embeddings and, for the heads this run does not train (carried
from ``model.init``, or frozen by ``freeze``), their logits. Every step that moves the backbone may
then add :func:`keep_loss`: ``1 - cosine`` to the starting embedding (the embedding that ``encode``,
``search`` and ``/encode`` serve) and, for the old heads, the KL divergence to their softened
probabilities (Learning without Forgetting, Li and Hoiem 2016). Texts repeat every epoch, so
recording the targets once costs one inference pass where a teacher run beside each step would
cost one per step.

:func:`retention` compares the run's model with those records at the end: embedding cosine, old
heads' agreement, STS Spearman and the carried tasks' test figures where the data has them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from mtst.modeling import tasktypes
from mtst.modeling.encoder import eval_mode, pad_batch
from mtst.training.runtime.batches import length_grouped_batches

if TYPE_CHECKING:
    from mtst.modeling.model import MultiTaskModel
    from mtst.training.inputs import RunInputs
    from mtst.training.planning.plan import KeepPlan

logger = logging.getLogger("mtst")

REPORT_ROWS = 1000  # training texts the retention figures are measured on (a seeded sample above it)
MOVED_COSINE = 0.9  # below this mean cosine to its start, an unheld embedding gets a note at the end of the run
FIGURES = ("accuracy", "macro_f1", "f1", "n")  # of a carried task's test scores, what retention records


@dataclass
class StartTargets:
    """The starting model's outputs on training rows ``rows`` (row index -> position ``index[row]``)."""

    rows: np.ndarray
    embeddings: torch.Tensor  # (len(rows), dim), L2-normalised
    logits: dict[str, list[torch.Tensor]]  # old head -> per row: (labels,) or (tokens, labels)
    report_rows: np.ndarray  # the rows the retention figures are measured on
    before: dict[str, Any] = field(default_factory=dict)  # STS and carried tasks' test figures at the start

    def __post_init__(self) -> None:
        self.index = np.full(int(self.rows.max()) + 1 if len(self.rows) else 0, -1, dtype=np.int64)
        self.index[self.rows] = np.arange(len(self.rows))

    def positions(self, rows: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Where each training row's outputs are; a row that was not recorded is an error, never another row's."""
        rows = np.asarray(rows)
        pos = self.index[rows] if len(self.index) and rows.max() < len(self.index) else np.full(len(rows), -1)
        if (pos < 0).any():
            raise ValueError(f"no start outputs recorded for training row(s) {rows[pos < 0][:5].tolist()}")
        return torch.as_tensor(pos)


def report_sample(n: int, seed: int, limit: int = REPORT_ROWS, stream: int = 7) -> np.ndarray:
    """Rows to use of ``n``: all of them up to ``limit``, else a seeded sample in order (by default the
    training rows retention is measured on; ``stream`` keeps other uses' draws independent of it)."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, stream]).choice(n, size=limit, replace=False))


@torch.inference_mode()
def model_outputs(
    model: MultiTaskModel, ids: Sequence[Sequence[int]], tasks: Sequence[str], batch_size: int
) -> tuple[torch.Tensor, dict[str, list[torch.Tensor]]]:
    """Normalised sentence embeddings and raw logits of ``tasks`` (token heads: one row per token)."""
    emb = torch.zeros((len(ids), model.encoder.dim), dtype=torch.float32)
    logits: dict[str, list[torch.Tensor]] = {t: [torch.empty(0)] * len(ids) for t in tasks}
    device = next(model.parameters()).device
    with eval_mode(model):
        for chunk, batch in model.encoder.length_sorted_batches(ids, batch_size):
            batch = {k: v.to(device) for k, v in batch.items()}
            feats = model(batch, tasks=list(tasks))
            emb[torch.as_tensor(chunk)] = F.normalize(feats["sentence_embedding"].float(), dim=-1).cpu()
            for task in tasks:
                out = feats["logits"][task].float().cpu()
                for r, i in enumerate(chunk):
                    logits[task][i] = out[r] if out.dim() == 2 else out[r, : len(ids[i])].clone()
    return emb, logits


def start_targets(
    model: MultiTaskModel, ids: Sequence[Sequence[int]], keep: KeepPlan, seed: int, batch_size: int
) -> StartTargets:
    """Record the starting model's outputs: on every training row where a term needs them, else on the
    report sample only (the retention figures)."""
    report = report_sample(len(ids), seed)
    rows = np.arange(len(ids)) if keep.has_terms else report
    emb, logits = model_outputs(model, [ids[i] for i in rows], keep.old_heads, batch_size)
    return StartTargets(rows, emb, logits, report)


class KeepTexts:
    """``training.keep.texts``: texts of the starting model's own domain and its outputs on them, held on a
    batch of them beside every step that moves the encoder. Learning without Forgetting's soft targets
    come from the new task's texts only; an old head's own inputs (a question classifier's questions,
    where the new task reads reviews) are where the training texts leave it unheld."""

    def __init__(self, ids: list[list[int]], targets: StartTargets, seed: int) -> None:
        self.ids, self.targets = ids, targets
        self.rng = np.random.default_rng([seed, 13])
        self.lengths = [len(x) for x in ids]
        self.order: np.ndarray = np.empty(0, dtype=np.int64)
        self.at = 0

    def draw(self, n: int) -> np.ndarray:
        """The next ``n`` texts: each pass over them is shuffled in length-sorted runs, so a batch pads little."""
        if self.at + n > len(self.order):
            batches = length_grouped_batches(np.arange(len(self.ids)), self.lengths, n, self.rng)
            self.order, self.at = np.concatenate([self.order[self.at :], *batches]), 0
        rows = self.order[self.at : self.at + n]
        self.at += n
        return rows

    def loss(self, model: MultiTaskModel, n: int, keep: KeepPlan) -> torch.Tensor | None:
        """The keep terms on the next ``n`` of the texts (fewer where there are fewer), through the whole encoder."""
        rows = self.draw(min(n, len(self.ids)))
        batch = pad_batch([self.ids[i] for i in rows], model.encoder.pad_id)
        device = model.encoder.device
        feats = model.encoder({k: v.to(device) for k, v in batch.items()})
        return keep_loss(model, feats, rows, self.targets, keep)


def keep_texts(
    model: MultiTaskModel, ids: list[list[int]], keep: KeepPlan, seed: int, batch_size: int
) -> KeepTexts | None:
    """The starting model's outputs on ``training.keep.texts`` (None where there are none or no term holds them)."""
    if not ids or not keep.has_terms:
        return None
    emb, logits = model_outputs(model, ids, keep.old_heads, batch_size)
    rows = np.arange(len(ids))
    return KeepTexts(ids, StartTargets(rows, emb, logits, report_sample(len(ids), seed)), seed)


def _padded(parts: list[torch.Tensor], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row token logits padded to ``width`` and the mask of real tokens."""
    out = torch.zeros((len(parts), width, parts[0].shape[-1]))
    mask = torch.zeros((len(parts), width), dtype=torch.bool)
    for r, p in enumerate(parts):
        n = min(width, p.shape[0])
        out[r, :n] = p[:n]
        mask[r, :n] = True
    return out, mask


def soft_target_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float, spec: Any = None
) -> torch.Tensor:
    """Per row (or token): KL(teacher || student) of softened distributions, x T^2 so its gradient scale does
    not depend on T; a multi-label or regression head's own distance (:func:`tasktypes.soft_target_loss`)."""
    return tasktypes.soft_target_loss(spec if spec is not None else {}, student, teacher, temperature)


def keep_loss(
    model: MultiTaskModel,
    feats: dict[str, Any],
    rows: Sequence[int] | np.ndarray,
    targets: StartTargets,
    keep: KeepPlan,
) -> torch.Tensor | None:
    """The weighted keep terms for a batch of training rows (None where no term applies)."""
    pos = targets.positions(rows)
    total: torch.Tensor | None = None
    device = feats["sentence_embedding"].device
    if keep.embedding > 0:
        s = F.normalize(feats["sentence_embedding"].float(), dim=-1)
        t = targets.embeddings[pos].to(device)
        total = keep.embedding * (1.0 - (s * t).sum(-1)).mean()
    if keep.heads > 0:
        for task in keep.old_heads:
            student = model.head_logits(task, feats).float()
            parts = [targets.logits[task][int(p)] for p in pos]
            if student.dim() == 2:
                teacher = torch.stack(parts).to(device)
                term = soft_target_loss(student, teacher, keep.temperature, model.tasks[task]).mean()
            else:
                teacher, mask = _padded(parts, student.shape[1])
                per_token = soft_target_loss(student, teacher.to(device), keep.temperature)
                term = per_token[mask.to(device)].mean()
            term = keep.heads * term
            total = term if total is None else total + term
    return total


def end_figures(model: MultiTaskModel, inputs: RunInputs, batch_size: int) -> dict[str, Any]:
    """The figures retention compares at the start and the end: STS Spearman (``data.sts``) and the
    carried tasks' test figures (rows of ``data.test`` labelled for them)."""
    from mtst.evaluate import evaluate_split, sts_spearman, tokenize_split

    out: dict[str, Any] = {}
    if inputs.sts is not None:
        out["sts"] = round(sts_spearman(model.encoder, inputs.sts, batch_size), 4)
    split = inputs.carried_test
    if split is not None:
        ids, word_ids = tokenize_split(model, split)
        scores = evaluate_split(model, split, ids, batch_size, word_ids)
        out["test"] = {t: {k: round(v, 4) for k, v in m.items() if k in FIGURES} for t, m in scores.items()}
    return out


def _agreement(old: list[torch.Tensor], new: list[torch.Tensor], spec: Any = None) -> float:
    """Share of rows (or tokens) where the two models decide alike: the same top label; for a multi-label
    head the same decision per label, for a regression head values within a quarter of the spread."""
    same = total = 0
    for a, b in zip(old, new, strict=True):
        agree, count = tasktypes.agreement(spec if spec is not None else {}, a, b)
        same, total = same + agree, total + count
    return same / max(1, total)


def retention(
    model: MultiTaskModel,
    ids: Sequence[Sequence[int]],
    targets: StartTargets | None,
    keep: KeepPlan,
    batch_size: int,
    after: dict[str, Any] | None = None,
    end_embeddings: torch.Tensor | None = None,
    texts: KeepTexts | None = None,
) -> dict[str, Any]:
    """What the run kept: the embedding's mean cosine to the start on training texts, each old head's
    agreement with the start, and the start/end STS and test figures (``targets.before`` / ``after``).

    Without targets the backbone never moved and the old heads never trained: everything was kept exactly.
    ``texts``: the same figures on ``training.keep.texts`` too (a ``keep_texts`` entry of each).
    ``end_embeddings``: the training rows' embeddings under ``model``'s encoder where a cache holds them
    (read instead of encoding the texts again, where no old head needs a pass).
    """
    out: dict[str, Any] = {"protect": keep.protect, "start": keep.start}
    if targets is None:
        out["embedding"] = {"cosine": 1.0, "rows": len(ids), "exact": True}
        out["tasks"] = {t: {"agreement": 1.0, "exact": True} for t in keep.old_heads}
    else:
        report = targets.report_rows
        if end_embeddings is not None and not keep.old_heads:
            emb, logits = F.normalize(end_embeddings[torch.as_tensor(report)].float(), dim=-1), {}
        else:
            emb, logits = model_outputs(model, [ids[i] for i in report], keep.old_heads, batch_size)
        pos = targets.positions(report)
        cosine = (emb * targets.embeddings[pos]).sum(-1)
        out["embedding"] = {"cosine": round(float(cosine.mean()), 4), "rows": len(report)}
        out["tasks"] = {
            t: {
                "agreement": round(_agreement([targets.logits[t][int(p)] for p in pos], logits[t], model.tasks[t]), 4),
                "rows": len(report),
            }
            for t in keep.old_heads
        }
    if texts is not None:  # the same figures on training.keep.texts
        report = texts.targets.report_rows
        emb, logits = model_outputs(model, [texts.ids[i] for i in report], keep.old_heads, batch_size)
        start = texts.targets
        out["embedding"]["keep_texts"] = {"cosine": round(float((emb * start.embeddings[report]).sum(-1).mean()), 4)}
        for t in keep.old_heads:
            agree = _agreement([start.logits[t][int(i)] for i in report], logits[t], model.tasks[t])
            out["tasks"][t]["keep_texts"] = {"agreement": round(agree, 4), "rows": len(report)}
    after = after or {}
    before = targets.before if targets is not None else after  # nothing moved: the end is the start
    if "sts" in after:
        out["embedding"]["sts"] = {"start": before.get("sts"), "end": after["sts"]}
    for task, figures in after.get("test", {}).items():
        out["tasks"].setdefault(task, {})["test"] = {"start": before.get("test", {}).get(task), "end": figures}
    return out
