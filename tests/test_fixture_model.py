"""A model saved by an earlier layout (format version 1, committed) loads and predicts the same."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mtst.errors import ModelLoadError
from mtst.modeling.model import MultiTaskModel

FIXTURE = Path(__file__).parent / "fixtures" / "saved_model_v1"


def test_saved_v1_model_loads_and_predicts_the_same() -> None:
    expected = json.loads((FIXTURE / "expected.json").read_text())
    model = MultiTaskModel.load(FIXTURE)
    assert np.allclose(model.encode(expected["sentences"]), expected["embeddings"], atol=1e-5)
    got = model.predict(expected["sentences"])
    for ours, theirs in zip(got, expected["predictions"], strict=True):
        assert ours["tags"]["tags"] == theirs["tags"]["tags"]
        spans = [(e["type"], e["start"], e["end"]) for e in ours["tags"]["entities"]]
        assert spans == [(e["type"], e["start"], e["end"]) for e in theirs["tags"]["entities"]]
        assert [e["score"] for e in ours["tags"]["entities"]] == pytest.approx(
            [e["score"] for e in theirs["tags"]["entities"]], abs=1e-5
        )
        for task in ("category", "sentiment"):
            assert ours[task]["label"] == theirs[task]["label"]
            assert list(ours[task]["probabilities"].values()) == pytest.approx(
                list(theirs[task]["probabilities"].values()), abs=1e-5
            )


def test_a_newer_format_version_is_refused(tmp_path: Path) -> None:
    copy = shutil.copytree(FIXTURE, tmp_path / "m")
    config = json.loads((copy / "config.json").read_text())
    config["format_version"] = 99
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="format version 99"):
        MultiTaskModel.load(copy)
