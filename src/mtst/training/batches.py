"""From row indices to model inputs: padded token ids, per-task labels, masked-LM inputs.

The trainer decides *which* rows form a batch (:func:`mtst.data.epoch_batches`);
a :class:`Batcher` turns them into tensors. It holds the tokenised training
split, the sub-token-aligned tags of tagging tasks and the word ids that span
masking needs, so none of that is recomputed per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mtst.constants import IGNORE_INDEX
from mtst.data import Split
from mtst.modeling.encoder import pad_batch
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
    ) -> None:
        self.split = split
        self.ids = ids
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

    def labels(
        self, rows: np.ndarray, task: str | None, device: torch.device, width: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Labels of every task (or one): class indices, or sub-token tags padded to ``width``."""
        names = [task] if task else self.tasks
        out = {}
        for t in names:
            if t in self.token_labels:
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
