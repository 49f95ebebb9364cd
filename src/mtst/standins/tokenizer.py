"""BERT WordPiece tokenizers run straight from ``tokenizer.json``, without importing transformers.

Importing transformers to build a tokenizer costs about 2 s of every command's start-up on 2 cores, and for
a BERT tokenizer it adds nothing mtst uses: the whole behaviour (normalisation, word splitting, WordPiece,
[CLS]/[SEP]) is in ``tokenizer.json``, which the ``tokenizers`` library runs; transformers sets truncation
and padding per call and reads the special tokens from ``tokenizer_config.json``. :class:`WordPieceTokenizer`
does those few things itself (the same ids and word alignment as ``AutoTokenizer``, parity-tested).

It is used only where the two files agree on everything transformers would otherwise adjust (the
lower-casing, accent and Chinese-character settings, the special tokens, right-side truncation); any other
tokenizer, or any with the stand-ins off (:mod:`mtst.standins`), loads through ``AutoTokenizer``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtst.fileio import read_json_object
from mtst.standins.bert import enabled

logger = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_FILE = "special_tokens_map.json"
SAVED_FILES = (TOKENIZER_FILE, CONFIG_FILE, SPECIAL_FILE, "vocab.txt")  # what save_pretrained writes back
BERT_CLASSES = {"BertTokenizer", "BertTokenizerFast"}
SPECIAL_ROLES = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
NO_LIMIT = int(1e30)  # transformers' model_max_length where the config sets none


class Encoded(dict):
    """A batch's encodings: ``["input_ids"]`` (and ``["attention_mask"]`` where asked), and
    :meth:`word_ids`, as transformers' ``BatchEncoding`` gives them."""

    def __init__(self, data: dict[str, Any], encodings: list[Any]) -> None:
        super().__init__(data)
        self.encodings = encodings

    def word_ids(self, index: int = 0) -> list[int | None]:
        """Per token of text ``index``, the index of the word it came from (None for special tokens)."""
        return list(self.encodings[index].word_ids)


class WordPieceTokenizer:
    """The call, special-token ids and saving of transformers' fast BERT tokenizer, on ``tokenizers`` alone."""

    is_fast = True

    def __init__(self, tokenizer: Any, config: dict[str, Any], files: dict[str, bytes]) -> None:
        self.backend = tokenizer
        self.files = files  # the files it was read from, written back as they were by save_pretrained
        self.model_max_length = int(config.get("model_max_length") or NO_LIMIT)
        ids = {role: tokenizer.token_to_id(str(config[role])) for role in SPECIAL_ROLES if config.get(role)}
        self.special_ids = ids
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self._truncation: int | None = None

    pad_token_id = property(lambda self: self.special_ids.get("pad_token"))
    mask_token_id = property(lambda self: self.special_ids.get("mask_token"))
    cls_token_id = property(lambda self: self.special_ids.get("cls_token"))
    sep_token_id = property(lambda self: self.special_ids.get("sep_token"))
    unk_token_id = property(lambda self: self.special_ids.get("unk_token"))

    @property
    def vocab_size(self) -> int:
        return int(self.backend.get_vocab_size(with_added_tokens=False))

    def __len__(self) -> int:
        return int(self.backend.get_vocab_size(with_added_tokens=True))

    def __call__(
        self,
        texts: Sequence[str] | Sequence[Sequence[str]],
        *,
        truncation: bool = False,
        max_length: int | None = None,
        padding: bool = False,
        is_split_into_words: bool = False,
        return_attention_mask: bool | None = None,
        return_token_type_ids: bool | None = None,
        return_tensors: str | None = None,
    ) -> Encoded:
        """Token ids of a batch of texts (or of word lists, ``is_split_into_words``), with [CLS] and [SEP];
        ``truncation`` to ``max_length`` (else the model's limit); ``return_tensors`` ``"np"``/``"pt"``
        pads to the longest text."""
        if isinstance(texts, str):
            raise TypeError("pass a list of texts")
        limit = (max_length or self.model_max_length) if truncation else None
        if limit is not None and limit >= NO_LIMIT:  # no limit known: transformers does not truncate either
            limit = None
        if limit != self._truncation:  # set only when it changes: the backend is shared
            if limit is None:
                self.backend.no_truncation()
            else:
                self.backend.enable_truncation(limit, strategy="longest_first", direction="right")
            self._truncation = limit
        encodings = self.backend.encode_batch(list(texts), is_pretokenized=is_split_into_words)
        ids = [list(e.ids) for e in encodings]
        data: dict[str, Any] = {"input_ids": ids}
        if return_attention_mask or (return_attention_mask is None and (padding or return_tensors)):
            data["attention_mask"] = [[1] * len(row) for row in ids]
        if padding or return_tensors:
            width = max((len(row) for row in ids), default=0)
            pad = self.pad_token_id or 0
            data["input_ids"] = [row + [pad] * (width - len(row)) for row in ids]
            if "attention_mask" in data:
                data["attention_mask"] = [m + [0] * (width - len(m)) for m in data["attention_mask"]]
        if return_tensors == "np":
            data = {k: np.asarray(v, dtype=np.int64) for k, v in data.items()}
        elif return_tensors == "pt":
            import torch

            data = {k: torch.as_tensor(v, dtype=torch.long) for k, v in data.items()}
        elif return_tensors is not None:
            raise ValueError(f"return_tensors {return_tensors!r}; allowed: np, pt")
        return Encoded(data, encodings)

    def save_pretrained(self, directory: str | Path) -> None:
        """The tokenizer's files as they were read (``AutoTokenizer`` loads them back)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        for name, content in self.files.items():
            (out / name).write_bytes(content)


def _agrees(spec: dict[str, Any], config: dict[str, Any]) -> bool:
    """Whether ``tokenizer.json`` is a plain BERT WordPiece tokenizer doing what ``tokenizer_config.json``
    asks (where they differ, transformers rebuilds parts of it: leave that to transformers)."""
    normalizer = spec.get("normalizer") or {}
    processor = spec.get("post_processor") or {}
    model = spec.get("model") or {}
    plain = (
        model.get("type") == "WordPiece"
        and normalizer.get("type") == "BertNormalizer"
        and (spec.get("pre_tokenizer") or {}).get("type") == "BertPreTokenizer"
        and processor.get("type") in ("TemplateProcessing", "BertProcessing")
        and config.get("tokenizer_class") in BERT_CLASSES
    )
    settings = (
        normalizer.get("lowercase") == config.get("do_lower_case", True)
        and normalizer.get("strip_accents") == config.get("strip_accents")
        and normalizer.get("handle_chinese_chars") == config.get("tokenize_chinese_chars", True)
        and config.get("do_basic_tokenize", True)
        and not config.get("never_split")
        and config.get("truncation_side", "right") == "right"
        and not config.get("additional_special_tokens")
        and not config.get("extra_special_tokens")
    )
    if not (plain and settings):
        return False
    # the [CLS]/[SEP] the post-processor adds are the config's; tokens the config adds are already in the file
    added = {t.get("content"): t.get("id") for t in spec.get("added_tokens") or []}
    declared = config.get("added_tokens_decoder") or {}
    if any(added.get(t.get("content")) != int(i) for i, t in declared.items() if isinstance(t, dict)):
        return False
    if processor.get("type") == "TemplateProcessing":
        used = set((processor.get("special_tokens") or {}).keys())
    else:
        used = {str(processor.get("cls", [None])[0]), str(processor.get("sep", [None])[0])}
    return used <= {config.get("cls_token"), config.get("sep_token")}


def wordpiece_tokenizer(directory: str | Path) -> WordPieceTokenizer | None:
    """The BERT tokenizer in ``directory`` run without transformers, or None where this module does not
    cover it (transformers loads it then)."""
    directory = Path(directory)
    if not enabled() or not (directory / TOKENIZER_FILE).is_file():
        return None
    files = {name: (directory / name).read_bytes() for name in SAVED_FILES if (directory / name).is_file()}
    try:  # the file is read once: parsed here for the checks, handed to the library as text, saved as bytes
        text = files[TOKENIZER_FILE].decode("utf-8")
        spec = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        return None
    config = read_json_object(directory / CONFIG_FILE)
    if not isinstance(spec, dict) or config is None:
        return None
    specials = read_json_object(directory / SPECIAL_FILE) or {}
    config = {**{k: v for k, v in specials.items() if isinstance(v, str)}, **config}
    config = {k: (v.get("content") if isinstance(v, dict) and k in SPECIAL_ROLES else v) for k, v in config.items()}
    if not _agrees(spec, config):
        logger.debug("tokenizer in %s: not a plain BERT WordPiece tokenizer; transformers loads it", directory)
        return None
    from tokenizers import Tokenizer

    try:
        backend = Tokenizer.from_str(text)
    except Exception as exc:  # the library's own error for a file it cannot read: let transformers say it
        logger.debug("tokenizers cannot read %s: %s", directory / TOKENIZER_FILE, exc)
        return None
    if any(config.get(role) and backend.token_to_id(str(config[role])) is None for role in SPECIAL_ROLES):
        return None
    return WordPieceTokenizer(backend, config, files)


def load_tokenizer(path: str | Path, local: bool = True) -> Any:
    """The tokenizer of a model directory: :class:`WordPieceTokenizer` where it covers it, else ``AutoTokenizer``'s."""
    tokenizer = wordpiece_tokenizer(path) if local else None
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
    return tokenizer
