"""The Python API checks its inputs at the boundary: a string is one text; other containers are refused in
one line naming what is accepted; a text that shows nothing is refused wherever it comes from."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest

from mtst.modeling.model import MultiTaskModel
from mtst.texts import as_names, as_texts, text_problem

INVISIBLE = ["", "   ", "\u200b", "\ufeff", "\u200b\ufeff \u2060", "\u00ad", "\u0301", "\u3164", "\x00\t"]


@pytest.mark.parametrize("text", INVISIBLE)
def test_a_text_that_shows_nothing_is_empty(text: str) -> None:
    assert text_problem(text) is not None and text_problem(text).startswith("empty text")


@pytest.mark.parametrize("text", ["a", " x ", "\u200bhello", "e\u0301", "🙂", "\ufeffBOM first", "中文", "٣"])
def test_a_text_that_shows_something_is_kept(text: str) -> None:
    assert text_problem(text) is None
    assert as_texts(text) == ([text], True)


def test_as_texts_reads_one_string_as_one_text() -> None:
    assert as_texts("Great mixer, loud though.") == (["Great mixer, loud though."], True)
    assert as_texts(("a", "b")) == (["a", "b"], False)
    assert as_texts([]) == ([], False)
    assert as_names("category") == ["category"]
    assert as_names(None) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (pd.DataFrame({"text": ["a"]}), r"got pandas.DataFrame \(pass one column as a list"),
        (pd.Series(["a"]), r"got pandas.Series \(pass .tolist\(\)\)"),
        (datasets.Dataset.from_dict({"text": ["a"]}), r"got datasets.Dataset \(pass one column as a list"),
        (np.array(["a", "b"]), r"got numpy.ndarray \(pass .tolist\(\)\)"),
        ((t for t in ["a"]), r"got generator \(pass list\(...\)\)"),
        (b"bytes", "got bytes"),
        ({"text": "a"}, "got dict"),
        (3, "got int"),
        (None, "got NoneType"),
    ],
)
def test_other_containers_are_refused_in_one_line(value: object, message: str) -> None:
    with pytest.raises(TypeError, match=r"^texts: expected a string or a list of strings, " + message):
        as_texts(value)


def test_bad_items_name_their_index() -> None:
    with pytest.raises(TypeError, match=r"texts\[1\]: not text \(int\)"):
        as_texts(["ok", 2])
    with pytest.raises(ValueError, match=r"texts\[2\]: empty text \(only invisible characters\)"):
        as_texts(["ok", "fine", "\u200b"])
    with pytest.raises(ValueError, match=r"^texts: empty text"):
        as_texts("  ")
    with pytest.raises(TypeError, match="tasks: expected a task name or a list of task names, got int"):
        as_names(5)
    with pytest.raises(ValueError, match="tasks: an empty list names no task"):
        as_names([])


def test_model_api_reads_a_string_as_one_text(tiny_model: MultiTaskModel) -> None:
    one = tiny_model.predict("Great mixer, loud though.")
    assert isinstance(one, dict) and set(one) == {"category", "sentiment"}
    assert [one] == tiny_model.predict(["Great mixer, loud though."])
    assert tiny_model.predict("x", tasks="category") == tiny_model.predict("x", tasks=["category"])
    proba = tiny_model.predict_proba("some text")
    assert proba["category"].shape == (tiny_model.tasks["category"].num_labels,)
    assert tiny_model.encode("a text").shape == (tiny_model.encoder.dim,)
    assert tiny_model.encoder.search("query", ["one", "two"], top_k=1)[0][0] in (0, 1)


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.predict(pd.DataFrame({"text": ["a"]})),
        lambda m: m.encode(pd.DataFrame({"text": ["a"]})),
        lambda m: m.predict(pd.Series(["a"])),
        lambda m: m.predict(t for t in ["a"]),
        lambda m: m.predict(np.array(["a"])),
        lambda m: m.encode([1, 2]),
        lambda m: m.encoder.search("q", "one string"),
        lambda m: m.predict_proba(3),
        lambda m: m.predict("x", tasks=7),
    ],
)
def test_model_api_refuses_other_inputs_with_a_type_error(tiny_model: MultiTaskModel, call) -> None:
    with pytest.raises(TypeError, match=r"^(texts|corpus|tasks)(\[\d\])?: "):
        call(tiny_model)


@pytest.mark.parametrize("text", ["", "   ", "\u200b\ufeff"])
def test_model_api_refuses_empty_texts(tiny_model: MultiTaskModel, text: str) -> None:
    for call in (tiny_model.predict, tiny_model.predict_proba, tiny_model.encode):
        with pytest.raises(ValueError, match="empty text"):
            call(["fine", text])
    with pytest.raises(ValueError, match="empty text"):
        tiny_model.encoder.search("query", ["fine", text])


def test_invisible_text_is_refused_by_the_cli_and_files(trained_run: Path, tmp_path: Path, capsys) -> None:
    from mtst.cli import main

    assert main(["predict", str(trained_run), "\u200b\ufeff"]) == 2
    assert "empty text" in capsys.readouterr().err
    assert main(["predict", str(trained_run), "fine", "--tasks", " , "]) == 2
    assert "--tasks: name at least one task" in capsys.readouterr().err
    data = tmp_path / "t.csv"
    data.write_text("text\nfine\n\u200b\n", encoding="utf-8")
    assert main(["encode", "--input", str(data), "--output", str(tmp_path / "e.npy")]) == 2
    assert "row 2: empty text" in capsys.readouterr().err
    assert not (tmp_path / "e.npy").exists()


def test_train_takes_a_config_a_dict_or_a_yaml_path(tmp_path: Path) -> None:
    from mtst.config import RunConfig, validate_config
    from mtst.training.trainer import as_config, train

    raw = {"tasks": {"t": {}}, "data": {"train": "x.csv"}, "output_dir": str(tmp_path / "run")}
    config = validate_config(raw)
    assert as_config(config) is config and as_config(raw) == config
    path = tmp_path / "c.yaml"
    path.write_text("tasks: {t: {}}\ndata: {train: x.csv}\n")
    assert isinstance(as_config(str(path)), RunConfig) and as_config(path).tasks == config.tasks
    with pytest.raises(TypeError, match="config: expected a RunConfig, a dict or a YAML path, got int"):
        train(5)  # type: ignore[arg-type]
    with pytest.raises(Exception, match=r"tasks\.t\.labels"):
        train({**raw, "tasks": {"t": {"labels": [True, False]}}})
    assert not (tmp_path / "run").exists()


def test_predict_output_is_named_for_what_it_holds(trained_run: Path, tmp_path: Path, capsys) -> None:
    from mtst.cli import main

    assert main(["predict", str(trained_run), "fine", "--output", str(tmp_path / "preds.csv")]) == 2
    assert "--output writes JSON Lines: name it .jsonl" in capsys.readouterr().err
    assert not (tmp_path / "preds.csv").exists()
    assert main(["predict", str(trained_run), "fine", "--output", str(tmp_path / "preds.jsonl")]) == 0
