"""BERT tokenizers run from tokenizer.json: the ids, word alignment and special tokens of AutoTokenizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mtst.modeling.backbone import bundled_model_path, load_backbone, resolve_backbone
from mtst.standins import ENV_SWITCH
from mtst.standins.tokenizer import WordPieceTokenizer, load_tokenizer, wordpiece_tokenizer

TEXTS = [
    "Hello world!",
    "",
    "   ",
    "Café naïve résumé ÅNGSTRÖM",
    "日本語のテキスト、中文字符",
    "emoji 🤖🎉 and ☃",
    "tab\tnew\nline\r\x00ctrl\u200b",
    "supercalifragilisticexpialidocious" * 5,  # longer than WordPiece's 100 characters a word: [UNK]
    "don't stop-believing; e.g. U.S.A. 3.14 $100",
    "ß ﬁ Ⅷ ① Ǆ",
    "x " * 600,
    "[CLS] literal [SEP] and [MASK] tokens",
    "Ünïcödé ÑOÑO Ελληνικά Русский عربى हिन्दी",
]
WORDS = [["Hello", "world", "!"], ["Café", "naïve"], ["日本", "語"], ["multi", "word", "supercalifragilistic" * 6]]
FIXTURE = Path(__file__).parent / "fixtures" / "saved_model_v1"  # tokenizer files written by transformers 5


def _directories(tmp_path: Path) -> list[Path]:
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(bundled_model_path()).save_pretrained(tmp_path / "resaved")
    return [bundled_model_path(), tmp_path / "resaved", FIXTURE]


def test_same_ids_word_alignment_and_special_tokens_as_transformers(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    for directory in _directories(tmp_path):
        reference, ours = AutoTokenizer.from_pretrained(directory), wordpiece_tokenizer(directory)
        assert isinstance(ours, WordPieceTokenizer), directory
        for limit in (8, 128, 512):
            options: dict[str, Any] = {"truncation": True, "max_length": limit, "padding": False}
            a, b = reference(TEXTS, **options), ours(TEXTS, **options)
            assert a["input_ids"] == b["input_ids"], (directory, limit)
            assert all(a.word_ids(i) == b.word_ids(i) for i in range(len(TEXTS)))
            a, b = (
                reference(WORDS, is_split_into_words=True, **options),
                ours(WORDS, is_split_into_words=True, **options),
            )
            assert a["input_ids"] == b["input_ids"], (directory, limit)
            assert all(a.word_ids(i) == b.word_ids(i) for i in range(len(WORDS)))
        for name in ("pad_token_id", "mask_token_id", "cls_token_id", "sep_token_id", "unk_token_id", "vocab_size"):
            assert getattr(reference, name) == getattr(ours, name), (directory, name)
        assert len(reference) == len(ours) and reference.model_max_length == ours.model_max_length
        a = reference(["one text"], truncation=True, max_length=16, return_tensors="np")
        b = ours(["one text"], truncation=True, max_length=16, return_tensors="np")
        assert np.array_equal(a["input_ids"], b["input_ids"]) and np.array_equal(
            a["attention_mask"], b["attention_mask"]
        )


def test_untruncated_and_padded_calls() -> None:
    ours = wordpiece_tokenizer(bundled_model_path())
    assert ours is not None
    long = ours(["word " * 700], truncation=False)["input_ids"][0]
    assert len(long) == 702  # no limit asked: none applied, [CLS] and [SEP] around
    assert len(ours(["word " * 700], truncation=True)["input_ids"][0]) == 512  # the model's limit
    padded = ours(["a", "a b c"], padding=True, return_tensors="pt")
    assert padded["input_ids"].shape == (2, 5) and padded["attention_mask"].sum().item() == 8
    with pytest.raises(TypeError, match="list"):
        ours("a string", truncation=True)
    with pytest.raises(ValueError, match="return_tensors"):
        ours(["a"], return_tensors="tf")


def test_saved_files_load_back_in_transformers(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    ours = wordpiece_tokenizer(bundled_model_path())
    assert ours is not None
    ours.save_pretrained(tmp_path / "saved")
    again = AutoTokenizer.from_pretrained(tmp_path / "saved")
    assert (
        again(TEXTS, truncation=True, max_length=64)["input_ids"]
        == ours(TEXTS, truncation=True, max_length=64)["input_ids"]
    )


def _edited(tmp_path: Path, config: dict[str, Any] | None = None, drop: str | None = None) -> Path:
    target = tmp_path / "edited"
    shutil.copytree(bundled_model_path(), target)
    if config is not None:
        path = target / "tokenizer_config.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | config))
    if drop:
        (target / drop).unlink()
    return target


@pytest.mark.parametrize(
    "config",
    [
        {"do_lower_case": False},  # transformers would rebuild the normaliser
        {"strip_accents": True},
        {"tokenize_chinese_chars": False},
        {"tokenizer_class": "RobertaTokenizer"},
        {"truncation_side": "left"},
        {"additional_special_tokens": ["[NEW]"]},
        {"cls_token": "[SEP]"},  # the post-processor adds another [CLS] than the config's
        {"added_tokens_decoder": {"999": {"content": "[PAD]"}}},
        {"mask_token": "[NOT-IN-VOCAB]"},
    ],
)
def test_what_transformers_would_adjust_loads_through_transformers(tmp_path: Path, config: dict[str, Any]) -> None:
    assert wordpiece_tokenizer(_edited(tmp_path, config)) is None


def test_without_tokenizer_json_or_switched_off_transformers_loads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    without = _edited(tmp_path, drop="tokenizer.json")
    assert wordpiece_tokenizer(without) is None
    assert type(load_tokenizer(without)).__name__ != "WordPieceTokenizer"  # built from vocab.txt by transformers
    monkeypatch.setenv(ENV_SWITCH, "0")
    assert wordpiece_tokenizer(bundled_model_path()) is None
    _, tokenizer = load_backbone(resolve_backbone("all-MiniLM-L6-v2"))
    assert not isinstance(tokenizer, WordPieceTokenizer)
