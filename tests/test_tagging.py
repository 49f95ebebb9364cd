"""Token tagging end to end: reading, alignment, entity metrics, training, prediction with offsets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mtst.cli import main
from mtst.config import load_config, validate_config
from mtst.data import bio_labels, build_task_data, read_conll
from mtst.demo import DEMO_DIR, tagged_config_path
from mtst.errors import DataError
from mtst.modeling.model import MultiTaskModel
from mtst.modeling.tagging import align_tags, entity_spans, split_words, tagging_metrics
from mtst.training.trainer import train


def test_split_words_keeps_prices_and_offsets() -> None:
    text = "Paid $19.99 for the Wi-Fi router, ok?"
    words = split_words(text)
    assert [w for w, _, _ in words] == ["Paid", "$19.99", "for", "the", "Wi-Fi", "router", ",", "ok", "?"]
    assert all(text[a:b] == w for w, a, b in words)
    # a decomposed accent stays with its letter: the same words as the composed text, offsets into this one
    decomposed = "Un cafe\u0301 a\u0300 Sa\u0303o Paulo, e\u0301te\u0301!"
    words = split_words(decomposed)
    assert [w for w, _, _ in words] == [
        "Un",
        "cafe\u0301",
        "a\u0300",
        "Sa\u0303o",
        "Paulo",
        ",",
        "e\u0301te\u0301",
        "!",
    ]
    assert len(words) == len(split_words("Un café à São Paulo, été!"))
    assert all(decomposed[a:b] == w for w, a, b in words)


def test_read_conll(tmp_path: Path) -> None:
    f = tmp_path / "x.conll"
    f.write_text("-DOCSTART- -X- O\n\nAcme NNP B-ORG\nrocks VBZ O\n\nParis NNP B-LOC\n")
    assert read_conll(f) == [
        {"tokens": ["Acme", "rocks"], "tags": ["B-ORG", "O"]},
        {"tokens": ["Paris"], "tags": ["B-LOC"]},
    ]
    bad = tmp_path / "bad.conll"
    bad.write_text("lonely\n")
    with pytest.raises(DataError, match="line 1"):
        read_conll(bad)


def test_align_tags_first_subtoken_only() -> None:
    # [CLS] Acme ##co rocks [SEP]
    aligned = align_tags([None, 0, 0, 1, None], np.array([2, 0]))
    assert aligned.tolist() == [-100, 2, -100, 0, -100]


def test_entity_spans_match_seqeval() -> None:
    from seqeval.metrics.sequence_labeling import get_entities

    cases = [
        ["B-PER", "I-PER", "O", "B-LOC"],
        ["I-PER", "I-PER", "B-PER", "O"],
        ["B-PER", "I-LOC", "I-LOC", "O", "I-PER"],
        ["O", "O"],
    ]
    for tags in cases:
        expected = [(kind, a, b + 1) for kind, a, b in get_entities(tags)]
        assert entity_spans(tags) == expected, tags


def test_tagging_metrics_entity_level() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    pred = [["B-PER", "O", "O", "B-LOC"]]  # PER boundary wrong: 1 of 2 entities right
    m = tagging_metrics(gold, pred)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(0.5)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["per_class"]["LOC"]["f1"] == 1.0 and m["per_class"]["PER"]["f1"] == 0.0


def test_bio_label_order() -> None:
    assert bio_labels({"I-PER", "O", "B-LOC", "B-PER"}) == ["O", "B-LOC", "B-PER", "I-PER"]


def test_tagged_rows_errors(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps({"tokens": ["a", "b"], "tags": ["O"]}) + "\n")
    with pytest.raises(DataError, match="2 tokens but 1 tags"):
        build_task_data({"ner": ("tags", None, None, "token_classification")}, {"train": str(f)}, "text")
    f.write_text(json.dumps({"tokens": ["a", "b"], "tags": ["O", "B-X"]}) + "\n")
    v = tmp_path / "v.jsonl"
    v.write_text(json.dumps({"tokens": ["a"], "tags": ["B-Y"]}) + "\n")
    with pytest.raises(DataError, match="'B-Y'"):
        build_task_data(
            {"ner": ("tags", None, None, "token_classification")}, {"train": str(f), "validation": str(v)}, "text"
        )


def tagged_config(tiny_backbone_dir: Path, run_dir: Path, **training: object) -> dict:
    return {
        "model": {"backbone": str(tiny_backbone_dir), "max_length": 48},
        "tasks": {
            "entities": {"type": "token_classification", "label_column": "tags"},
            "sentiment": {"labels": ["negative", "positive"]},
        },
        "data": {split: str(DEMO_DIR / "tagged" / f"{split}.jsonl") for split in ("train", "validation", "test")},
        "training": {"batch_size": 16, "max_steps": 40, "lr_head": 5e-3, "lr_backbone": 1e-3, **training},
        "output_dir": str(run_dir),
    }


def test_token_tagging_trains_and_predicts_spans(tiny_backbone_dir: Path, tmp_path: Path) -> None:
    cfg = validate_config(tagged_config(tiny_backbone_dir, tmp_path / "run"))
    result = train(cfg, show_progress=False)
    ent = result.test["entities"]
    assert {"precision", "recall", "f1", "accuracy", "per_class"} <= set(ent)
    assert set(ent["per_class"]) == {"BRAND", "PRICE", "PRODUCT"}
    assert ent["accuracy"] > 0.7  # most words are O; a trained tagger gets at least those
    assert ent["f1"] > 0.2, ent["f1"]
    assert "macro_f1" in result.test["sentiment"]
    model = MultiTaskModel.load(tmp_path / "run")
    text = "I paid $29.99 for the Acme kettle."
    (row,) = model.predict([text])
    tagged = row["entities"]
    assert len(tagged["tags"]) == len(tagged["words"]) == len(split_words(text))
    for entity in tagged["entities"]:
        assert text[entity["start"] : entity["end"]] == entity["text"]
    assert row["sentiment"]["label"] in ("negative", "positive")


def test_evaluate_cli_on_conll_and_jsonl(
    tiny_backbone_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cfg = validate_config(tagged_config(tiny_backbone_dir, tmp_path / "run", max_steps=2))
    train(cfg, show_progress=False)
    rows = [json.loads(x) for x in (DEMO_DIR / "tagged" / "test.jsonl").read_text().splitlines()[:5]]
    conll = tmp_path / "test.conll"
    conll.write_text(
        "\n\n".join("\n".join(f"{w} {t}" for w, t in zip(r["tokens"], r["tags"], strict=True)) for r in rows) + "\n"
    )
    out = tmp_path / "m.json"
    assert main(["evaluate", str(tmp_path / "run"), "--data", str(conll), "-o", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert set(metrics) == {"entities"} and metrics["entities"]["n"] == 5
    assert "entity F1" in capsys.readouterr().out


def test_bundled_tagged_config_is_valid() -> None:
    cfg = load_config(tagged_config_path())
    assert cfg.tasks["entities"].type == "token_classification"


def test_tagged_demo_scores_validation_as_it_scores_test() -> None:
    """Validation and test hold sentence patterns that training never shows, so the split that picks the
    best model measures what test measures (a validation split of training's patterns scored 100%)."""

    def pattern(row: dict) -> str:
        words = [w if t == "O" else f"<{t[2:]}>" for w, t in zip(row["tokens"], row["tags"], strict=True)]
        return " ".join(w for w, t in zip(words, row["tags"], strict=True) if not t.startswith("I-"))

    splits = {
        split: [json.loads(x) for x in (DEMO_DIR / "tagged" / f"{split}.jsonl").read_text().splitlines() if x]
        for split in ("train", "validation", "test")
    }
    seen = {pattern(r) for r in splits["train"]}
    for split in ("validation", "test"):
        assert not {pattern(r) for r in splits[split]} & seen, split
        assert {r["sentiment"] for r in splits[split]} == {"positive", "negative"}
        assert any(t == "B-PRICE" for r in splits[split] for t in r["tags"])
