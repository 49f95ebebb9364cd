"""Batches: which rows train together each epoch, and the tensors they become.

:func:`epoch_batches` decides *which* rows form a batch (length-grouped, task
mixing and sampling); a :class:`Batcher` turns them into tensors. It holds the tokenised training
split, the sub-token-aligned tags of tagging tasks and the word ids that span
masking needs, so none of that is recomputed per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mtst.constants import IGNORE_INDEX
from mtst.data import Split
from mtst.modeling.encoder import PASS_COST_TOKENS, pad_batch
from mtst.modeling.mlm import mask_batch
from mtst.modeling.tagging import align_tags


class Batcher:
    """Tensors for batches of one tokenised split."""

    def __init__(
        self,
        split: Split,
        ids: Sequence[Sequence[int]],
        word_ids: Sequence[Sequence[int | None]] | None,
        pad_id: int,
        tasks: Sequence[str],
        pair_ids: Sequence[Sequence[int] | None] | None = None,
    ) -> None:
        self.split = split
        self.ids = ids
        self.pair_ids = pair_ids
        self.word_ids = word_ids
        self.pad_id = pad_id
        self.tasks = [t for t in tasks if t in split.labels]
        self.token_labels = {
            task: [None if t is None else align_tags(w, t) for w, t in zip(word_ids or [], tags, strict=True)]
            for task, tags in split.tags.items()
        }

    def inputs(self, rows: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
        """Token ids and attention mask, padded to the batch's longest row."""
        return {k: v.to(device) for k, v in pad_batch([self.ids[i] for i in rows], self.pad_id).items()}

    def features(self, encoder: Any, rows: np.ndarray, device: torch.device, pack: str | None = None) -> dict[str, Any]:
        """The encoder's features of a batch of rows, with gradients, in the rows' order.

        A batch whose composition is fixed (the contrastive stage's, balanced over classes) mixes long and
        short texts. With ``pack`` (a mask kind of :mod:`mtst.modeling.packing`) its rows run end to end in
        packed rows, one pass on their real tokens; else in the length-sorted sub-batches of
        :func:`mtst.modeling.encoder.tight_split`, which compute on less padding at the cost of more,
        smaller passes. Token embeddings come back padded to the batch's longest row, as one padded batch
        gives them."""
        ids = [self.ids[i] for i in rows]
        if pack is not None:
            from mtst.modeling.packing import packed_token_embeddings

            batch = {k: v.to(device) for k, v in pad_batch(ids, self.pad_id).items()}
            batch["token_embeddings"] = packed_token_embeddings(encoder.backbone, batch, pack)
            return encoder(batch)
        n, width = len(ids), max(len(x) for x in ids)
        emb: torch.Tensor | None = None
        for chunk, batch in encoder.length_sorted_batches(ids, n, pass_cost=PASS_COST_TOKENS):
            at = torch.as_tensor(chunk, device=device)
            out = encoder(batch)
            short = width - batch["input_ids"].shape[1]
            tokens, mask = F.pad(out["token_embeddings"], (0, 0, 0, short)), F.pad(batch["attention_mask"], (0, short))
            if emb is None:
                emb = out["sentence_embedding"].new_zeros((n, out["sentence_embedding"].shape[1]))
                all_tokens, all_mask = tokens.new_zeros((n, width, tokens.shape[2])), mask.new_zeros((n, width))
            emb = emb.index_copy(0, at, out["sentence_embedding"])
            all_tokens, all_mask = all_tokens.index_copy(0, at, tokens), all_mask.index_copy(0, at, mask)
        return {"sentence_embedding": emb, "token_embeddings": all_tokens, "attention_mask": all_mask}

    def pair_embedding(
        self, encoder: Any, rows: np.ndarray, device: torch.device, first: torch.Tensor
    ) -> torch.Tensor | None:
        """The second texts' sentence embeddings of the batch's pair rows, row-aligned with ``first`` (zeros
        on rows without a second text, whose pair labels are missing); None where no row has one."""
        if self.pair_ids is None:
            return None
        at = [r for r, i in enumerate(rows) if self.pair_ids[i] is not None]
        if not at:
            return None
        batch = pad_batch([self.pair_ids[rows[r]] for r in at], self.pad_id)
        emb = encoder({k: v.to(device) for k, v in batch.items()})["sentence_embedding"]
        if len(at) == len(rows):
            return emb
        index = torch.as_tensor(at, device=device)
        return first.new_zeros(first.shape).index_copy(0, index, emb.to(first.dtype))

    def labels(
        self, rows: np.ndarray, task: str | None, device: torch.device, width: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Labels of every task (or one): class indices, sub-token tags padded to ``width``, or the targets
        of multi-label and regression tasks (NaN on rows without a label)."""
        names = [task] if task else self.tasks
        out = {}
        for t in names:
            if t in self.split.targets:
                target = self.split.targets[t][rows].astype(np.float32)
                missing = self.split.labels[t][rows] == IGNORE_INDEX
                target[missing] = np.nan
                out[t] = torch.as_tensor(target, device=device)
            elif t in self.token_labels:
                out[t] = self.token_label_batch(t, rows, width or max(len(self.ids[i]) for i in rows)).to(device)
            else:
                out[t] = torch.as_tensor(self.split.labels[t][rows], device=device)
        return out

    def token_label_batch(self, task: str, rows: np.ndarray, width: int) -> torch.Tensor:
        """Sub-token tags padded to the batch width (``-100`` for padding and untagged rows)."""
        out = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        for r, i in enumerate(rows):
            aligned = self.token_labels[task][i]
            if aligned is not None:
                out[r, : len(aligned)] = torch.from_numpy(aligned)
        return out

    def masked(
        self, rows: np.ndarray, batch: dict[str, torch.Tensor], rng: np.random.Generator, tokenizer: Any, spec: Any
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Span-masked copy of the batch's inputs and the masked-LM labels (``spec``: the task's settings)."""
        if self.word_ids is None:
            raise ValueError("span masking needs word ids: tokenise the split with tokenize_words")
        masked, labels = mask_batch(
            batch["input_ids"],
            [self.word_ids[i] for i in rows],
            rng,
            tokenizer.mask_token_id,
            len(tokenizer),
            spec.mask_ratio,
            spec.span_length,
            spec.span_p,
        )
        return {"input_ids": masked, "attention_mask": batch["attention_mask"]}, labels


def length_grouped_batches(
    indices: np.ndarray, lengths: Sequence[int], batch_size: int, rng: np.random.Generator, bucket: int = 50
) -> list[np.ndarray]:
    """Shuffled batches of similar-length rows, so each pads little.

    Rows are shuffled, cut into buckets of ``bucket`` batches, sorted by
    length inside a bucket, split into batches, and the batches shuffled:
    random enough for SGD, with most of the padding gone.
    """
    perm = rng.permutation(indices)
    batches: list[np.ndarray] = []
    span = batch_size * bucket
    for start in range(0, len(perm), span):
        chunk = perm[start : start + span]
        chunk = chunk[np.argsort([-lengths[i] for i in chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def task_probabilities(counts: dict[str, int], sampling: str, temperature: float = 2.0) -> dict[str, float]:
    """How often each task is drawn: by size, by size^(1/T), or evenly (round robin)."""
    if sampling == "round_robin":
        return {t: 1.0 / len(counts) for t in counts}
    power = 1.0 if sampling == "proportional" else 1.0 / temperature
    weights = {t: float(n) ** power for t, n in counts.items()}
    total = sum(weights.values())
    return {t: w / total for t, w in weights.items()}


def epoch_batches(
    split: Split,
    lengths: Sequence[int],
    batch_size: int,
    rng: np.random.Generator,
    batching: str = "mixed",
    sampling: str = "proportional",
    temperature: float = 2.0,
) -> list[tuple[np.ndarray, str | None]]:
    """One epoch of ``(row indices, task or None)``; ``None`` means every task's labels count.

    An epoch has as many batches as the labelled rows fill. ``mixed`` batches
    hold rows of any task; ``per_task`` batches hold one task, chosen per
    batch by the sampling rule. ``temperature`` and ``round_robin`` re-weight
    tasks by drawing rows from each task's own pool; ``per_task`` draws each
    task's rows in length-grouped batches, as ``mixed`` does, so they pad little.
    """
    pools = {t: split.rows_for(t) for t in split.labels}
    pools = {t: p for t, p in pools.items() if len(p)}
    labelled = split.labelled_rows()
    n_batches = -(-len(labelled) // batch_size)
    if batching == "mixed" and (sampling == "proportional" or len(pools) == 1):
        return [(b, None) for b in length_grouped_batches(labelled, lengths, batch_size, rng)]
    probs = task_probabilities({t: len(p) for t, p in pools.items()}, sampling, temperature)
    names = list(pools)
    queues: dict[str, list[int]] = {}

    def draw(task: str) -> int:
        # One row of a task's own pool, a new shuffled pass when it runs out (built on first use).
        if not queues.get(task):
            queues[task] = list(rng.permutation(pools[task]))
        return int(queues[task].pop())

    grouped: dict[str, list[np.ndarray]] = {t: [] for t in names}

    def draw_batch(task: str) -> np.ndarray:
        # One task's batch: the next of its length-grouped batches (a new pass when they run out),
        # so per-task batches pad as little as mixed ones.
        if not grouped[task]:
            grouped[task] = length_grouped_batches(pools[task], lengths, batch_size, rng)
        return grouped[task].pop()

    def pick(i: int) -> str:
        if sampling == "round_robin":
            return names[i % len(names)]
        return names[int(rng.choice(len(names), p=[probs[t] for t in names]))]

    out: list[tuple[np.ndarray, str | None]] = []
    for b in range(n_batches):
        if batching == "per_task":
            task = pick(b)
            out.append((draw_batch(task), task))
        else:
            rows = [draw(pick(b * batch_size + j)) for j in range(batch_size)]
            out.append((np.array(rows), None))
    return out


def masked_lm_terms(
    model: Any, batcher: Batcher, specs: dict[str, Any], rows: np.ndarray, batch: dict[str, torch.Tensor], seed: list
) -> torch.Tensor | None:
    """The weighted masked-LM losses of a batch's texts, one per task of ``specs`` (span masks drawn from
    ``seed``); None where no task masked anything."""
    total = None
    for task, spec in specs.items():
        masked, labels = batcher.masked(rows, batch, np.random.default_rng(seed), model.encoder.tokenizer, spec)
        if not bool((labels != IGNORE_INDEX).any()):
            continue
        loss = model.masked_lm_loss(task, masked, labels) * spec.weight
        total = loss if total is None else total + loss
    return total
