"""Padding-free inference: several texts share one row of the backbone's input, each attending to itself only.

A server's micro-batch holds texts in the order they arrived, of mixed lengths. Padded to its longest
text, a batch of short and long texts spends most of its compute on padding; split into tight batches
of like lengths, it runs many small batches instead. Packed, the texts are laid end to end in rows of
``PACK_TOKENS`` tokens or the longest text's length, whichever is more (first fit, longest first), with
position ids restarting at each text and a block-diagonal attention mask, so each text's token
embeddings are those of its own padded pass (to float rounding), and one pass runs the whole batch
at the cost of its real tokens. Measured on SST-2 sentences in arrival order, chunks of 43 on 2 cores
(benchmarks/README.md, "Serving under load"): 0.93-0.98x the speed of globally length-sorted batches in
fp32, against 0.69-0.77x for the same chunks padded and split at 20% padding.

How a custom attention mask reaches the attention kernels differs between transformers releases (a
prepared 4-D mask in 5.x, a 3-D ``(batch, query, key)`` mask in 4.x), and a backbone may compute
positions its own way (RoBERTa counts from its padding id). So :func:`probe` tries each way on two
texts against the padded pass and packing is used only where one agrees; elsewhere inference pads.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mtst.modeling.batching import eval_mode, pad_batch

logger = logging.getLogger(__name__)

PACK_TOKENS = 64  # the least row length; rows grow to the batch's longest text
MASK_KINDS = ("4d", "3d")  # how the block-diagonal mask is handed to the backbone, tried in this order
PROBE_TOLERANCE = 1e-4


def pack_rows(lengths: Sequence[int], width: int) -> list[list[int]]:
    """Texts (by index) laid into rows of at most ``width`` tokens: first fit, longest first.

    A text longer than ``width`` gets a row of its own (callers pass at least the longest length).
    """
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        n = lengths[i]
        for r, free in enumerate(room):
            if n <= free:
                rows[r].append(i)
                room[r] -= n
                break
        else:
            rows.append([i])
            room.append(width - n)
    return rows


def packed_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """A padded batch repacked: ``input_ids``, ``position_ids`` and ``segment`` (the text each position
    holds, -1 for padding) of shape (rows, width), and ``source`` (the flat index, in the padded batch's
    (texts x length) layout, of each packed position's token; -1 for padding)."""
    lengths = attention_mask.sum(dim=1).tolist()
    width = max(PACK_TOKENS, max(lengths, default=0))
    rows = pack_rows(lengths, width)
    used = max((sum(lengths[i] for i in row) for row in rows), default=0)
    shape = (len(rows), used)
    ids = torch.zeros(shape, dtype=input_ids.dtype)
    positions = torch.zeros(shape, dtype=torch.long)
    segment = torch.full(shape, -1, dtype=torch.long)
    source = torch.full(shape, -1, dtype=torch.long)
    padded_length = input_ids.shape[1]
    host_ids = input_ids.cpu()
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            n = lengths[i]
            ids[r, at : at + n] = host_ids[i, :n]
            positions[r, at : at + n] = torch.arange(n)
            segment[r, at : at + n] = i
            source[r, at : at + n] = i * padded_length + torch.arange(n)
            at += n
    device = input_ids.device
    return {
        "input_ids": ids.to(device),
        "position_ids": positions.to(device),
        "segment": segment.to(device),
        "source": source.to(device),
    }


def block_mask(segment: torch.Tensor, kind: str) -> torch.Tensor:
    """Who attends to whom: positions of the same text. A padding position attends to itself only, so
    no softmax row is empty (it is never read)."""
    same = segment[:, :, None] == segment[:, None, :]
    real = (segment >= 0)[:, :, None] & (segment >= 0)[:, None, :]
    diagonal = torch.eye(segment.shape[1], dtype=torch.bool, device=segment.device)[None]
    allowed = (same & real) | diagonal
    if kind == "4d":
        return allowed[:, None]  # (rows, 1, query, key), True where attention is allowed
    if kind == "3d":
        return allowed.long()  # (rows, query, key) of 1/0: transformers 4.x extends it itself
    raise ValueError(f"unknown mask kind {kind!r}; allowed: {', '.join(MASK_KINDS)}")


def packed_token_embeddings(backbone: nn.Module, features: dict[str, Any], kind: str) -> torch.Tensor:
    """The backbone's last hidden states for a padded batch, computed packed and returned in the padded
    batch's layout (texts, length, hidden), zeros at padding."""
    input_ids, attention_mask = features["input_ids"], features["attention_mask"]
    packed = packed_inputs(input_ids, attention_mask)
    out = backbone(
        input_ids=packed["input_ids"],
        attention_mask=block_mask(packed["segment"], kind),
        position_ids=packed["position_ids"],
    ).last_hidden_state
    hidden = out.shape[-1]
    flat = out.new_zeros((input_ids.shape[0] * input_ids.shape[1], hidden))
    source = packed["source"].reshape(-1)
    real = source >= 0
    flat[source[real]] = out.reshape(-1, hidden)[real]
    return flat.reshape(input_ids.shape[0], input_ids.shape[1], hidden)


@torch.inference_mode()
def probe(backbone: nn.Module, sequences: Sequence[Sequence[int]], pad_id: int) -> str | None:
    """The mask kind under which packed token embeddings of ``sequences`` match their padded pass, or None
    where none does (an error counts as not matching). Runs in fp32 in eval mode."""
    batch = pad_batch(sequences, pad_id)
    device = next(backbone.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    with eval_mode(backbone), torch.autocast(device_type=device.type, enabled=False):
        expected = backbone(**batch).last_hidden_state * batch["attention_mask"][..., None]
        scale = float(expected.abs().max()) or 1.0
        for kind in MASK_KINDS:
            try:
                got = packed_token_embeddings(backbone, batch, kind)
            except Exception as exc:  # a release or architecture that takes no such mask or positions
                logger.debug("packed inference with a %s mask: %s", kind, exc)
                continue
            if got.shape == expected.shape and float((got - expected).abs().max()) <= PROBE_TOLERANCE * scale:
                return kind
            logger.debug("packed inference with a %s mask differs from the padded pass", kind)
    return None
