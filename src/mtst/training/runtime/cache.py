"""Frozen work happens once: caches of what a frozen backbone (or prefix) computes.

* Pooled cache: when the whole backbone is frozen, each text is encoded once
  (eval mode) and heads train on the stored sentence embeddings, so an epoch
  no longer costs an encoder pass.
* Prefix cache: when the bottom layers are frozen, the hidden states at the
  boundary are stored per token and each step runs only the trainable top
  layers. It needs a BERT-style backbone (``embeddings`` + ``encoder.layer``);
  other architectures run the prefix every step.

Caches are keyed by everything that changes their contents (backbone
weights, pooling, max length, texts, boundary), so a stale cache is never
reused. They live for one run unless ``training.cache.dir`` names a directory,
where pooled embeddings are kept (safetensors) and reused by later runs with
the same key: one encoding pass then serves every frozen-backbone run.
"""

from __future__ import annotations

import hashlib
import logging
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from mtst.errors import ModelLoadError
from mtst.fileio import atomic_file, read_safetensors
from mtst.modeling.encoder import SentenceEncoder, eval_mode
from mtst.modeling.fingerprint import weight_fingerprint

if TYPE_CHECKING:
    from mtst.modeling.model import RowFeatures

logger = logging.getLogger("mtst")


def cache_key(encoder: SentenceEncoder, texts: Sequence[str], kind: str, boundary: int = -1) -> str:
    """A fingerprint of everything that decides a cache's contents."""
    h = hashlib.sha256()
    precision = encoder.inference_precision
    h.update(f"{kind}|{boundary}|{encoder.reference}|{encoder.pooling}|{encoder.max_length}|{precision}|".encode())
    params = (p for _, p in sorted(encoder.backbone.named_parameters(), key=lambda item: item[0]))
    h.update(repr(weight_fingerprint(params, per_tensor=64)).encode())
    for text in texts:
        h.update(text.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def pooled_embeddings(
    encoder: SentenceEncoder,
    ids: Sequence[Sequence[int]],
    batch_size: int,
    budget_mb: float,
    spill_dir: Path | None,
    key: str = "",
    store_dir: Path | None = None,
) -> torch.Tensor:
    """Sentence embeddings (un-normalised, eval mode) of pre-tokenised texts.

    Over ``budget_mb`` they go to a memory-mapped file in ``spill_dir``. With
    ``store_dir`` they are read from (or written to) ``pooled-<key>.safetensors`` there.
    """
    stored = store_dir / f"pooled-{key}.safetensors" if store_dir is not None and key else None
    if stored is not None and stored.exists():
        try:
            embeddings = read_safetensors(stored, "cached embeddings")[0]["embeddings"]
        except (ModelLoadError, KeyError) as exc:  # a damaged cache entry is rebuilt, not fatal
            logger.warning("ignoring a damaged cache entry: %s", exc)
        else:
            logger.info("pooled cache reused from %s", stored)
            return embeddings
    embeddings = _encode_pooled(encoder, ids, batch_size, budget_mb, spill_dir, key)
    if stored is not None:
        with atomic_file(stored) as tmp:
            save_file({"embeddings": embeddings.contiguous()}, str(tmp))
    return embeddings


def _encode_pooled(
    encoder: SentenceEncoder,
    ids: Sequence[Sequence[int]],
    batch_size: int,
    budget_mb: float,
    spill_dir: Path | None,
    key: str,
) -> torch.Tensor:
    n, dim = len(ids), encoder.dim
    size_mb = n * dim * 4 / 2**20
    if size_mb > budget_mb and spill_dir is not None:
        spill_dir.mkdir(parents=True, exist_ok=True)
        path = spill_dir / f"pooled-{key or 'run'}-{n}x{dim}.f32"
        store = torch.from_numpy(np.memmap(path, dtype=np.float32, mode="w+", shape=(n, dim)))
        logger.info("pooled cache of %.0f MB spills to %s", size_mb, path)
    else:
        store = torch.empty((n, dim), dtype=torch.float32)
    with eval_mode(encoder), torch.inference_mode():
        for chunk, batch in encoder.length_sorted_batches(ids, batch_size):
            store[torch.as_tensor(chunk)] = encoder(batch)["sentence_embedding"].float().cpu()
    return store


def cache_plan(groups: set[str], num_layers: int, backbone: nn.Module, enabled: bool = True) -> tuple[str | None, int]:
    """Which cache fits a trainable set: ``pooled`` when no backbone part trains, ``prefix`` (with the
    first trainable layer as boundary) when only a contiguous top block of layers does, else none."""
    if not enabled:
        return None, 0
    trained = [g for g in groups if not g.startswith("heads.")]
    if not trained:
        return "pooled", 0
    layers = sorted(int(g.split(".")[1]) for g in trained if g.startswith("layers."))
    present = {n.split(".")[0] for n, _ in backbone.named_parameters()}
    top_only = (
        layers
        and layers == list(range(layers[0], num_layers))
        and layers[0] > 0
        and set(trained) <= {f"layers.{i}" for i in layers} | {"backbone_other"}
        and present <= {"embeddings", "encoder"}
    )
    if top_only and supports_prefix(backbone):
        return "prefix", layers[0]
    return None, 0


def supports_prefix(backbone: nn.Module) -> bool:
    """BERT-style backbones whose layers can be run one by one, and give what the whole model gives.

    The layer-by-layer path is checked once per backbone against the model's own forward pass on a
    small padded batch; a backbone where the two differ (another attention kernel, a future change of
    the layer interface) runs its frozen prefix every step instead of caching it.
    """
    layers = getattr(getattr(backbone, "encoder", None), "layer", None)
    if not (hasattr(backbone, "embeddings") and isinstance(layers, nn.ModuleList)):
        return False
    if backbone not in _PREFIX_CHECKED:
        _PREFIX_CHECKED[backbone] = _layers_match_model(backbone)
        if not _PREFIX_CHECKED[backbone]:
            logger.info("the backbone's layers, run one by one, differ from its forward pass: no prefix cache")
    return _PREFIX_CHECKED[backbone]


_PREFIX_CHECKED: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()


def _layers_match_model(backbone: nn.Module) -> bool:
    """Whether :func:`run_layers` over every layer reproduces ``backbone(...)`` on real tokens."""
    vocab = int(getattr(getattr(backbone, "config", None), "vocab_size", 0) or 0)
    if vocab < 8:
        return False
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab, (2, 7), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0  # one padded row: the mask must hide the padding from every layer
    device = next(backbone.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    try:
        with eval_mode(backbone), torch.inference_mode():
            reference = backbone(input_ids=ids, attention_mask=mask).last_hidden_state
            hidden = backbone.embeddings(input_ids=ids)
            ours = run_layers(backbone, hidden, mask, 0, len(backbone.encoder.layer))
    except Exception as exc:  # a layer interface this code does not know: run the whole model instead
        logger.info("running the backbone's layers one by one failed (%s)", exc)
        return False
    keep = mask.bool()
    return bool(torch.allclose(ours[keep].float(), reference[keep].float(), atol=1e-4, rtol=1e-4))


def layer_attention_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The additive attention mask a BERT-style layer takes: 0 over tokens, the dtype's minimum over
    padding, shaped ``(batch, 1, 1, keys)`` to broadcast over heads and queries.

    It is the extended mask BERT has always used (``get_extended_attention_mask``); eager attention adds
    it to the scores and SDPA takes it as a float mask, so no private helper of transformers is needed.
    """
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def run_layers(backbone: nn.Module, hidden: torch.Tensor, mask: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Run encoder layers ``start..stop-1`` on hidden states."""
    layer_mask = layer_attention_mask(mask, hidden.dtype)
    for layer in backbone.encoder.layer[start:stop]:
        out = layer(hidden, attention_mask=layer_mask)
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


class PrefixCache:
    """Per-row hidden states after the first ``boundary`` layers (frozen, eval mode)."""

    def __init__(self, states: list[torch.Tensor], boundary: int) -> None:
        self.states = states
        self.boundary = boundary

    @staticmethod
    def size_mb(ids: Sequence[Sequence[int]], dim: int) -> float:
        return sum(len(x) for x in ids) * dim * 4 / 2**20

    @classmethod
    def build(
        cls, encoder: SentenceEncoder, ids: Sequence[Sequence[int]], boundary: int, batch_size: int
    ) -> PrefixCache:
        backbone = encoder.backbone
        states: list[torch.Tensor] = [torch.empty(0)] * len(ids)
        with eval_mode(encoder), torch.inference_mode():
            for chunk, batch in encoder.length_sorted_batches(ids, batch_size):
                hidden = backbone.embeddings(input_ids=batch["input_ids"])
                hidden = run_layers(backbone, hidden, batch["attention_mask"], 0, boundary)
                for row, i in enumerate(chunk):
                    states[i] = hidden[row, : len(ids[i])].float().cpu().clone()
        return cls(states, boundary)

    def batch(self, rows: Sequence[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded hidden states and attention mask for the given rows."""
        parts = [self.states[i] for i in rows]
        length = max(p.shape[0] for p in parts)
        hidden = torch.zeros((len(parts), length, parts[0].shape[1]), dtype=torch.float32)
        mask = torch.zeros((len(parts), length), dtype=torch.long)
        for r, p in enumerate(parts):
            hidden[r, : p.shape[0]] = p
            mask[r, : p.shape[0]] = 1
        return hidden.to(device), mask.to(device)


class RunCache:
    """The cache one training run keeps of its frozen work, rebuilt when the trainable set moves.

    ``pooled``: sentence embeddings per split (train and validation at once, test when asked);
    ``prefix``: hidden states of the training rows (and, within the budget, the validation rows)
    at the first trainable layer.
    """

    def __init__(
        self,
        encoder: SentenceEncoder,
        ids: dict[str, Sequence[Sequence[int]]],
        texts: dict[str, Sequence[str]],
        num_layers: int,
        batch_size: int,
        budget_mb: float,
        spill_dir: Path,
        store_dir: Path | None = None,
        enabled: bool = True,
        note: Callable[[str], None] = logger.info,
        cache_validation: bool = True,
    ) -> None:
        self.encoder, self.ids, self.texts = encoder, ids, texts
        self.num_layers, self.batch_size, self.budget_mb = num_layers, batch_size, budget_mb
        self.spill_dir, self.store_dir, self.enabled, self.note = spill_dir, store_dir, enabled, note
        self.cache_validation = cache_validation
        self.mode: str | None = None
        self.pooled: dict[str, torch.Tensor] = {}
        self.prefix: PrefixCache | None = None
        self.eval_prefix: PrefixCache | None = None  # the validation split's, when it fits the budget
        self._fallback_noted = False

    def invalidate(self) -> None:
        """Forget every cache: the weights they were computed from have changed (a contrastive stage)."""
        self.pooled, self.prefix, self.eval_prefix, self.mode = {}, None, None, None

    def refresh(self, groups: set[str]) -> None:
        """(Re)build the cache for this trainable set; drop it when it no longer applies."""
        mode, boundary = cache_plan(groups, self.num_layers, self.encoder.backbone, self.enabled)
        if mode == self.mode and (mode != "prefix" or (self.prefix and self.prefix.boundary == boundary)):
            return
        self.invalidate()
        if mode is None:
            return
        started = time.perf_counter()
        if mode == "pooled":
            for split in ("train", "validation"):
                if split in self.ids:
                    self.embeddings(split)
        else:
            size = PrefixCache.size_mb(self.ids["train"], self.encoder.dim)
            if size > self.budget_mb:
                if not self._fallback_noted:
                    self.note(
                        f"note: the frozen-prefix cache would take {size:.0f} MB, over training.cache.memory_mb="
                        f"{self.budget_mb:.0f}; the frozen layers run every step instead"
                    )
                    self._fallback_noted = True
                return
            self.prefix = PrefixCache.build(self.encoder, self.ids["train"], boundary, self.batch_size)
            # Validation, scored every epoch, gets its own prefix where the budget has room for both.
            val = self.ids.get("validation") if self.cache_validation else None
            if val is not None and size + PrefixCache.size_mb(val, self.encoder.dim) <= self.budget_mb:
                self.eval_prefix = PrefixCache.build(self.encoder, val, boundary, self.batch_size)
        self.mode = mode
        logger.info("%s cache built in %.1fs (boundary %d)", mode, time.perf_counter() - started, boundary)

    def train_embeddings(self) -> torch.Tensor | None:
        """The training rows' sentence embeddings, where the pooled cache holds them (else None)."""
        return self.pooled.get("train") if self.mode == "pooled" else None

    def embeddings(self, split: str) -> torch.Tensor:
        """A split's pooled embeddings: from memory, from ``store_dir``, or encoded now."""
        if split not in self.pooled:
            self.pooled[split] = pooled_embeddings(
                self.encoder,
                self.ids[split],
                self.batch_size,
                self.budget_mb,
                self.spill_dir,
                key=cache_key(self.encoder, self.texts[split], "pooled"),
                store_dir=self.store_dir,
            )
        return self.pooled[split]

    def features(self, rows: Sequence[int], device: torch.device) -> dict[str, torch.Tensor] | None:
        """Features for training rows from the cache: a sentence embedding (pooled) or the
        trainable layers' token embeddings (prefix); None when no cache applies."""
        if self.mode == "pooled":
            return {"sentence_embedding": self.pooled["train"][torch.as_tensor(rows)].to(device)}
        if self.mode == "prefix" and self.prefix is not None:
            return self._from_prefix(self.prefix, rows, device)
        return None

    def validation_features(self, device: torch.device) -> RowFeatures | None:
        """Features of validation rows from their cached prefix (None when there is none), so that
        scoring each epoch runs only the trainable top layers."""
        cache = self.eval_prefix
        return None if cache is None else lambda rows: self._from_prefix(cache, rows, device)

    def _from_prefix(self, cache: PrefixCache, rows: Sequence[int], device: torch.device) -> dict[str, torch.Tensor]:
        hidden, mask = cache.batch(rows, device)
        tokens = run_layers(self.encoder.backbone, hidden, mask, cache.boundary, self.num_layers)
        return self.encoder({"token_embeddings": tokens, "attention_mask": mask})
