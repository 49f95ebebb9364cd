"""Auxiliary masked-language-model objective with span masking.

Spans of whole words are masked (SpanBERT-style): span lengths are drawn
from a geometric distribution clipped at a maximum, until about
``mask_ratio`` of the tokens are masked; masked tokens get the usual BERT
80/10/10 replacement ([MASK] / random token / unchanged). The head's decoder
is tied to the backbone's input embeddings, so it adds few parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtst.constants import IGNORE_INDEX


class MaskedLMHead(nn.Module):
    """BERT's MLM transform (dense, GELU, LayerNorm) with a decoder tied to the input embeddings."""

    def __init__(self, dim: int, vocab_size: int, eps: float = 1e-12) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: torch.Tensor, embedding_weight: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(F.gelu(self.dense(hidden))), embedding_weight, self.bias)


def word_starts(word_ids: Sequence[int | None]) -> list[tuple[int, int]]:
    """Sub-token ranges ``[start, end)`` of each word (special tokens excluded)."""
    spans: list[tuple[int, int]] = []
    previous: int | None = None
    for pos, word in enumerate(word_ids):
        if word is None:
            previous = None
            continue
        if word != previous:
            spans.append((pos, pos + 1))
        else:
            spans[-1] = (spans[-1][0], pos + 1)
        previous = word
    return spans


def span_mask(
    word_ids: Sequence[int | None],
    rng: np.random.Generator,
    mask_ratio: float = 0.15,
    max_span: int = 10,
    span_p: float = 0.2,
) -> np.ndarray:
    """Boolean mask over sub-tokens: whole-word spans covering about ``mask_ratio`` of the tokens.

    Span lengths (in words) follow Geometric(``span_p``) clipped at
    ``max_span``; a span that would overshoot the budget is shortened to fit,
    so the count is at most ``max(1, round(ratio * tokens))`` plus the tail
    of one word's sub-tokens.
    """
    words = word_starts(word_ids)
    mask = np.zeros(len(word_ids), dtype=bool)
    n_tokens = sum(end - start for start, end in words)
    if not words:
        return mask
    budget = max(1, round(mask_ratio * n_tokens))
    masked = 0
    for _ in range(10 * len(words)):
        if masked >= budget:
            break
        length = min(int(rng.geometric(span_p)), max_span, len(words))
        first = int(rng.integers(0, len(words) - length + 1))
        for start, end in words[first : first + length]:
            if masked >= budget:
                break
            if not mask[start]:
                mask[start:end] = True
                masked += end - start
    return mask


def mask_batch(
    input_ids: torch.Tensor,
    word_ids: Sequence[Sequence[int | None]],
    rng: np.random.Generator,
    mask_token_id: int,
    vocab_size: int,
    mask_ratio: float = 0.15,
    max_span: int = 10,
    span_p: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked inputs and MLM labels (original ids where masked, ``-100`` elsewhere)."""
    mask = np.zeros(tuple(input_ids.shape), dtype=bool)
    for row, wids in enumerate(word_ids):
        m = span_mask(wids, rng, mask_ratio, max_span, span_p)
        mask[row, : len(m)] = m
    chosen = torch.from_numpy(mask).to(input_ids.device)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    draw = torch.from_numpy(rng.random(mask.shape)).to(input_ids.device)
    random_ids = torch.from_numpy(rng.integers(0, vocab_size, mask.shape)).to(input_ids.device, input_ids.dtype)
    masked = input_ids.clone()
    masked[chosen & (draw < 0.8)] = mask_token_id
    swap = chosen & (draw >= 0.8) & (draw < 0.9)
    masked[swap] = random_ids[swap]
    return masked, labels


def mlm_loss(
    head: MaskedLMHead, token_embeddings: torch.Tensor, embedding_weight: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy over the masked positions only (the vocabulary projection is the costly part)."""
    where = labels != IGNORE_INDEX
    logits = head(token_embeddings[where], embedding_weight)
    return F.cross_entropy(logits.float(), labels[where])
