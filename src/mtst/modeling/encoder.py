"""The sentence encoder: a pretrained transformer (see :mod:`mtst.modeling.backbone`) plus pooling.

``forward`` threads the features dict: token ids -> ``token_embeddings`` ->
``sentence_embedding`` (the :class:`~mtst.modeling.pooling.Pooling` module).
``encode`` is the batched, length-sorted inference path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import torch
from torch import nn

from mtst.config import DEFAULT_BACKBONE, INFERENCE_PRECISIONS
from mtst.errors import ModelLoadError
from mtst.modeling.backbone import load_backbone, resolve_backbone
from mtst.modeling.batching import eval_mode, pad_batch
from mtst.modeling.pooling import POOLING_MODES, Pooling, pool
from mtst.modeling.pooling import normalize as l2_normalize
from mtst.modeling.saved import (
    attach_saved_lora,
    build_backbone,
    check_weights,
    is_model_dir,
    load_backbone_weights,
    read_saved,
)
from mtst.texts import as_texts

logger = logging.getLogger(__name__)


def native_bf16(cuda: bool | None = None) -> bool:
    """Whether this device computes in bf16 natively (where ``auto`` precisions take bf16)."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if cuda:
        return bool(torch.cuda.is_bf16_supported())
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own probes
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_inference_precision(name: str) -> str:
    """``fp32`` or ``bf16`` for an inference precision name (``auto``: bf16 where native)."""
    if name not in INFERENCE_PRECISIONS:
        raise ModelLoadError(f"unknown precision {name!r}; allowed: {', '.join(INFERENCE_PRECISIONS)}")
    if name == "auto":
        return "bf16" if native_bf16() else "fp32"
    if name == "bf16" and not native_bf16():
        logger.warning("precision bf16: this device has no native bf16; inference is emulated and slower than fp32")
    return name


def cos_sim(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Cosine similarity matrix between the rows of ``a`` and ``b``."""
    a_t = torch.as_tensor(a, dtype=torch.float32)
    b_t = torch.as_tensor(b, dtype=torch.float32)
    if a_t.dim() == 1:
        a_t = a_t.unsqueeze(0)
    if b_t.dim() == 1:
        b_t = b_t.unsqueeze(0)
    return l2_normalize(a_t) @ l2_normalize(b_t).T


# What one more pass through the encoder costs, in padded tokens of work: in the contrastive stage on
# all-MiniLM-L6-v2 (2 CPU threads, bf16) a step took about 0.28 ms per padded token plus 45 ms per pass
# (forward and backward), measured on SST-2, TREC and the demo reviews; so a sub-batch pays for itself
# where it saves more than about 160 tokens of padding.
PASS_COST_TOKENS = 160


def tight_split(lengths: Sequence[int], pass_cost: int = PASS_COST_TOKENS) -> list[list[int]]:
    """Consecutive chunks of positions 0..n-1 of ``lengths`` (sorted longest first) that minimise the padded
    tokens computed plus ``pass_cost`` per chunk (each chunk pads to its first, longest row)."""
    n = len(lengths)
    best = [0.0] + [float("inf")] * n  # best[j]: the cheapest split of the first j rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            cost = best[i] + pass_cost + lengths[i] * (j - i)
            if cost < best[j]:
                best[j], cut[j] = cost, i
    chunks, j = [], n
    while j > 0:
        chunks.append(list(range(cut[j], j)))
        j = cut[j]
    return chunks[::-1]


def split_sorted(
    order: list[int], lengths: list[int], batch_size: int, max_padding: float | None
) -> Iterator[list[int]]:
    """Consecutive chunks of ``order`` (lengths descending): at most ``batch_size`` rows, padding share bounded."""
    chunk: list[int] = []
    longest = real = 0
    for i, n in zip(order, lengths, strict=True):
        if chunk and (
            len(chunk) == batch_size
            or (max_padding is not None and 1 - (real + n) / (longest * (len(chunk) + 1)) > max_padding)
        ):
            yield chunk
            chunk, real = [], 0
        if not chunk:
            longest = max(n, 1)
        chunk.append(i)
        real += n
    if chunk:
        yield chunk


def sorted_chunks(
    ids: Sequence[Sequence[int]], batch_size: int, max_padding: float | None = None, pass_cost: int | None = None
) -> Iterator[list[int]]:
    """Row indices of ``ids`` in batches, longest first: :func:`split_sorted` (``batch_size`` rows at most,
    padding bounded by ``max_padding``), or with ``pass_cost`` :func:`tight_split`."""
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    lengths = [len(ids[i]) for i in order]
    if pass_cost is not None:
        yield from ([order[i] for i in c] for c in tight_split(lengths, pass_cost))
    else:
        yield from split_sorted(order, lengths, batch_size, max_padding)


class SentenceEncoder(nn.Module):
    """Transformer backbone + pooling; turns texts into sentence embeddings.

    ``forward`` works on a features dict (``input_ids``, ``attention_mask``)
    and adds ``token_embeddings`` and ``sentence_embedding`` (pooled, not
    normalised: heads learn their own scale). ``encode`` is the batched,
    length-sorted inference path, normalising when asked.
    """

    def __init__(
        self,
        backbone: nn.Module,
        tokenizer: Any,
        pooling: str = "mean",
        normalize: bool = False,
        max_length: int | None = None,
        reference: str = "",
    ) -> None:
        super().__init__()
        if pooling not in POOLING_MODES:
            raise ModelLoadError(f"unknown pooling {pooling!r}; allowed: {', '.join(POOLING_MODES)}")
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.pool = Pooling(pooling)
        self.normalize = normalize
        self.reference = reference
        self.inference_precision = "fp32"  # see set_inference_precision
        self.packing: str | None = None  # see set_packing: the mask kind packed inference runs with
        self._pack_kind: str | bool | None = False  # pack_kind's probe, once (False: not probed yet)
        limit = self.length_limit
        self.max_length = min(max_length, limit) if max_length else min(512, limit)

    @property
    def pooling(self) -> str:
        """The pooling mode (``cls``, ``mean`` or ``max``); setting it changes the pooling module."""
        return self.pool.mode

    @pooling.setter
    def pooling(self, mode: str) -> None:
        self.pool.mode = mode

    @property
    def length_limit(self) -> int:
        """The most tokens the backbone and tokenizer allow."""
        model_max = getattr(self.backbone.config, "max_position_embeddings", 512)
        tok_max = getattr(self.tokenizer, "model_max_length", model_max) or model_max
        return min(model_max, tok_max if tok_max < 1_000_000 else model_max)

    @classmethod
    def from_pretrained(
        cls,
        reference: str | Path = DEFAULT_BACKBONE,
        pooling: str | None = None,
        normalize: bool | None = None,
        max_length: int | None = None,
    ) -> SentenceEncoder:
        """Load a backbone; unset options take the checkpoint's own defaults.

        ``reference`` (a name or a path) may also be a trained mtst model or run directory: its
        (fine-tuned) encoder is loaded, with LoRA adapters merged.
        """
        reference = str(reference)
        if is_model_dir(reference):
            encoder = cls.from_saved(reference)
            encoder.pooling = pooling or encoder.pooling
            encoder.normalize = encoder.normalize if normalize is None else normalize
            if max_length:
                encoder.max_length = min(max_length, encoder.length_limit)
            return encoder
        source = resolve_backbone(reference)
        backbone, tokenizer = load_backbone(source)
        return cls(
            backbone,
            tokenizer,
            pooling=pooling or source.pooling,
            normalize=source.normalize if normalize is None else normalize,
            max_length=max_length or source.max_length,
            reference=reference,
        )

    @classmethod
    def from_saved(cls, directory: str | Path) -> SentenceEncoder:
        """The encoder of a saved mtst model or run (its heads are not read), LoRA adapters merged."""
        from mtst.modeling.lora import merge_lora

        saved = read_saved(directory)
        backbone, tokenizer = build_backbone(saved)
        lora = attach_saved_lora(backbone, saved)
        missing, unexpected = load_backbone_weights(backbone, saved)
        check_weights(saved, missing, unexpected)  # the heads' weights are the model's, not counted here
        if lora is not None:
            merge_lora(backbone)
        return cls.with_saved_settings(backbone, tokenizer, saved.config).eval()

    @classmethod
    def with_saved_settings(cls, backbone: nn.Module, tokenizer: Any, config: dict[str, Any]) -> SentenceEncoder:
        """An encoder over ``backbone`` with the pooling, normalisation, length and reference a saved model's
        ``config.json`` records."""
        return cls(
            backbone,
            tokenizer,
            pooling=config["pooling"],
            normalize=config["normalize"],
            max_length=config["max_length"],
            reference=config["backbone"],
        )

    @property
    def dim(self) -> int:
        return int(self.backbone.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id or 0

    def length_sorted_batches(
        self,
        ids: Sequence[Sequence[int]],
        batch_size: int,
        max_padding: float | None = None,
        pass_cost: int | None = None,
    ) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
        """``(row indices, padded batch on the device)``, longest texts first.

        Sorting by token count lets each batch pad only to its own longest
        text, which keeps padding (wasted compute) to a minimum. With
        ``max_padding`` a batch also ends before padding would pass that share
        of its tokens: a server's few texts of mixed lengths then run as a
        few tight batches instead of one mostly padded one. With ``pass_cost``
        the split instead minimises the padded tokens plus ``pass_cost`` per
        batch (:func:`tight_split`; ``batch_size`` and ``max_padding`` unused). Where inference is packed
        (:meth:`set_packing`), passes without gradients take ``batch_size`` texts whatever their lengths.
        """
        if self.packing is not None and not torch.is_grad_enabled():
            max_padding = pass_cost = None  # packed passes cost their real tokens: no need to split
        device = self.device
        for chunk in sorted_chunks(ids, batch_size, max_padding, pass_cost):
            yield chunk, {k: v.to(device) for k, v in pad_batch([ids[i] for i in chunk], self.pad_id).items()}

    def tokenize_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, truncated to ``max_length``, not padded."""
        if not texts:
            return []
        out = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return out["input_ids"]

    def tokenize_words(
        self, texts: Sequence[str], words: Sequence[Sequence[str] | None] | None = None
    ) -> tuple[list[list[int]], list[list[int | None]]]:
        """Token ids and, per sub-token, the index of the word it came from (None for special tokens).

        Rows with a word list are tokenised from those words (as tagged data
        is); the others from their text, split into words by the tokenizer.
        """
        n = len(texts)
        ids: list[list[int]] = [[] for _ in range(n)]
        word_ids: list[list[int | None]] = [[] for _ in range(n)]
        if not self.tokenizer.is_fast:
            raise ModelLoadError("word alignment needs a fast tokenizer (a tokenizer.json next to the model)")
        given = [i for i in range(n) if words is not None and words[i] is not None]
        plain = [i for i in range(n) if words is None or words[i] is None]
        options = {"truncation": True, "max_length": self.max_length, "padding": False}
        for rows, inputs, split in (
            (given, [list(words[i]) for i in given] if words is not None else [], True),
            (plain, [texts[i] for i in plain], False),
        ):
            if not rows:
                continue
            out = self.tokenizer(inputs, is_split_into_words=split, **options)
            for j, i in enumerate(rows):
                ids[i] = out["input_ids"][j]
                word_ids[i] = out.word_ids(j)
        return ids, word_ids

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Padded model inputs for one batch."""
        return pad_batch(self.tokenize_ids(texts), self.pad_id)

    def set_inference_precision(self, name: str) -> str:
        """Run inference (every pass without gradients) in ``fp32``, ``bf16`` or ``auto`` (bf16 where the
        device computes it natively); returns the precision taken. Training steps are not affected."""
        self.inference_precision = resolve_inference_precision(name)
        return self.inference_precision

    def pack_kind(self) -> str | None:
        """How this backbone takes packed rows (the mask kind of :mod:`mtst.modeling.packing`), or None where
        its packed outputs differ from its padded ones; checked once, on two texts (it depends on the
        architecture and the transformers release, not on the weights)."""
        from mtst.modeling.packing import probe

        if self._pack_kind is False:
            sample = self.tokenize_ids(["A short text.", "A longer text, so that the two differ in length."])
            self._pack_kind = probe(self.backbone, sample, self.pad_id)
            if self._pack_kind is None:
                logger.info("packing: this backbone's outputs differ packed; its batches are padded instead")
        return self._pack_kind if isinstance(self._pack_kind, str) else None

    def set_packing(self, on: bool) -> bool:
        """Pack texts end to end in inference passes (:mod:`mtst.modeling.packing`): a batch of mixed lengths
        then costs its real tokens, not its longest text times its size. Turned on only where the backbone
        gives the padded pass's outputs packed (:meth:`pack_kind`); returns whether it is on."""
        self.packing = self.pack_kind() if on else None
        return self.packing is not None

    def embed_tokens(self, features: dict[str, Any]) -> dict[str, Any]:
        """Run the transformer: adds ``token_embeddings`` (fp32, whatever the inference precision)."""
        ids = features["input_ids"]
        inference = not torch.is_grad_enabled()
        low = self.inference_precision == "bf16" and inference
        # Only ever entered to turn bf16 on: an autocast(enabled=False) here would turn off the bf16 autocast
        # a training step runs the encoder under.
        with torch.autocast(device_type=ids.device.type, dtype=torch.bfloat16) if low else nullcontext():
            if self.packing is not None and inference and len(ids) > 1:
                from mtst.modeling.packing import packed_token_embeddings

                tokens = packed_token_embeddings(self.backbone, features, self.packing)
            else:
                tokens = self.backbone(input_ids=ids, attention_mask=features["attention_mask"]).last_hidden_state
        features["token_embeddings"] = tokens.float() if low else tokens
        return features

    def forward(self, features: dict[str, Any]) -> dict[str, Any]:
        if "token_embeddings" not in features:
            self.embed_tokens(features)
        self.pool(features)
        return features

    @torch.inference_mode()
    def encode(
        self,
        texts: str | Sequence[str],
        batch_size: int = 32,
        normalize: bool | None = None,
        pooling: str | None = None,
        convert_to: Literal["numpy", "torch"] = "numpy",
        progress: Any = None,
    ) -> np.ndarray | torch.Tensor:
        """Embed texts, in the caller's order (batched by length, see :meth:`length_sorted_batches`): one
        string gives one vector, a list of strings a matrix (anything else is refused, :func:`as_texts`)."""
        items, single = as_texts(texts)
        mode = pooling or self.pooling
        if mode not in POOLING_MODES:
            raise ModelLoadError(f"unknown pooling {mode!r}; allowed: {', '.join(POOLING_MODES)}")
        do_norm = self.normalize if normalize is None else normalize
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        ids = self.tokenize_ids(items)
        result = torch.empty((len(items), self.dim), dtype=torch.float32)
        with eval_mode(self):
            for chunk, batch in self.length_sorted_batches(ids, batch_size):
                tokens = self.embed_tokens(batch)["token_embeddings"]
                emb = pool(tokens, batch["attention_mask"], mode).float()
                if do_norm:
                    emb = l2_normalize(emb)
                result[torch.as_tensor(chunk)] = emb.cpu()
                if progress is not None:
                    progress(len(chunk))
        if single:
            result = result[0]
        return result if convert_to == "torch" else result.numpy()

    def similarity(self, a: str | Sequence[str], b: str | Sequence[str]) -> np.ndarray:
        """Cosine similarity matrix between two lists of texts."""
        return cos_sim(self.encode(a, convert_to="torch"), self.encode(b, convert_to="torch")).numpy()

    @overload
    def search(
        self, queries: str, corpus: Sequence[str], top_k: int = 5, batch_size: int = 32
    ) -> list[tuple[int, float]]: ...

    @overload
    def search(
        self, queries: Sequence[str], corpus: Sequence[str], top_k: int = 5, batch_size: int = 32
    ) -> list[list[tuple[int, float]]]: ...

    def search(
        self, queries: str | Sequence[str], corpus: Sequence[str], top_k: int = 5, batch_size: int = 32
    ) -> list[tuple[int, float]] | list[list[tuple[int, float]]]:
        """Top-k corpus entries by cosine similarity, best first: ``[(corpus_index, score), ...]`` for one
        query (a string), one such list per query for a list of queries."""
        query_list, single = as_texts(queries, "queries")
        if isinstance(corpus, str):
            raise TypeError("corpus: expected a list of strings, got one string (wrap it: [corpus])")
        corpus = as_texts(corpus, "corpus")[0]
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k: expected a whole number of at least 1, got {top_k!r}")
        if not corpus:
            hits: list[list[tuple[int, float]]] = [[] for _ in query_list]
        else:
            corpus_emb = self.encode(corpus, batch_size=batch_size, normalize=True, convert_to="torch")
            query_emb = self.encode(query_list, batch_size=batch_size, normalize=True, convert_to="torch")
            top = torch.topk(query_emb @ corpus_emb.T, k=min(top_k, len(corpus)), dim=1)
            hits = [
                [(int(i), float(s)) for i, s in zip(idx, val, strict=True)]
                for idx, val in zip(top.indices.tolist(), top.values.tolist(), strict=True)
            ]
        return hits[0] if single else hits
