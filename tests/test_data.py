from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mtst.config import validate_config
from mtst.data import MISSING, build_task_data
from mtst.errors import DataError
from mtst.training.runtime.batches import epoch_batches, length_grouped_batches, task_probabilities
from mtst.training.trainer import data_stats


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_partial_labels_from_separate_files(tmp_path: Path) -> None:
    shared = write_jsonl(tmp_path / "cat.jsonl", [{"text": f"c{i}", "category": "ab"[i % 2]} for i in range(4)])
    senti = write_jsonl(tmp_path / "sent.jsonl", [{"text": f"s{i}", "stars": i % 3} for i in range(3)])
    data = build_task_data(
        {"category": ("category", None, None), "sentiment": ("stars", None, {"train": senti})},
        {"train": shared},
        "text",
    )
    train = data.splits["train"]
    assert len(train) == 7
    assert data.labels == {"category": ["a", "b"], "sentiment": ["0", "1", "2"]}
    assert list(train.labels["category"]) == [0, 1, 0, 1, MISSING, MISSING, MISSING]
    assert list(train.labels["sentiment"]) == [MISSING] * 4 + [0, 1, 2]


def test_a_missing_label_column_says_which_key_names_it(tmp_path: Path) -> None:
    rows = write_jsonl(tmp_path / "t.jsonl", [{"text": "x", "label": "a"}, {"text": "z", "label": "b"}])
    with pytest.raises(DataError, match=r"no column 'nli' for task 'nli'.*tasks.nli.label_column.*label_column: label"):
        build_task_data({"nli": ("nli", None, None)}, {"train": rows}, "text")
    other = write_jsonl(tmp_path / "o.jsonl", [{"text": "x", "y": "a"}])
    with pytest.raises(DataError, match=r"tasks.nli.label_column to the column that holds its labels$"):
        build_task_data({"nli": ("nli", None, None)}, {"train": other}, "text")


def test_unseen_validation_label_is_named(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "t.jsonl", [{"text": "x", "y": "a"}, {"text": "z", "y": "b"}])
    val = write_jsonl(tmp_path / "v.jsonl", [{"text": "x", "y": "c"}])
    with pytest.raises(DataError, match=r"validation has label\(s\) 'c'"):
        build_task_data({"y": ("y", None, None)}, {"train": train, "validation": val}, "text")


def test_empty_texts_are_rejected_with_row_numbers(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "t.jsonl", [{"text": "ok", "y": 1}, {"text": "  ", "y": 0}, {"text": "", "y": 1}])
    with pytest.raises(DataError, match=r"row\(s\) 2, 3"):
        build_task_data({"y": ("y", None, None)}, {"train": train}, "text")


def test_csv_labels_and_missing_values(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text("text,y\nfirst,pos\nsecond,\nthird,neg\n")
    data = build_task_data({"y": ("y", None, None)}, {"train": str(f)}, "text")
    assert data.labels["y"] == ["neg", "pos"]
    assert list(data.splits["train"].labels["y"]) == [1, MISSING, 0]


def test_parquet_is_read(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a b", "c d", "e"], "y": [1, 0, 1]}), tmp_path / "t.parquet")
    data = build_task_data({"y": ("y", None, None)}, {"train": str(tmp_path / "t.parquet")}, "text")
    assert data.labels["y"] == ["0", "1"]


def test_length_grouped_batches_cover_every_row_once() -> None:
    lengths = list(np.random.default_rng(0).integers(1, 60, size=103))
    batches = length_grouped_batches(np.arange(103), lengths, 8, np.random.default_rng(1), bucket=4)
    assert sorted(np.concatenate(batches).tolist()) == list(range(103))
    spread = np.mean([np.ptp([lengths[i] for i in b]) for b in batches])
    random_spread = np.mean([np.ptp(lengths[i : i + 8]) for i in range(0, 103, 8)])
    assert spread < random_spread


def _split(tmp_path: Path):
    rows = [{"text": f"a{i}", "a": 1, "b": None} for i in range(30)] + [
        {"text": f"b{i}", "a": None, "b": i % 2} for i in range(10)
    ]
    data = build_task_data(
        {"a": ("a", ["0", "1"], None), "b": ("b", None, None)},
        {"train": write_jsonl(tmp_path / "t.jsonl", rows)},
        "text",
    )
    return data.splits["train"]


def test_per_task_batches_hold_one_task(tmp_path: Path) -> None:
    split = _split(tmp_path)
    batches = epoch_batches(
        split, [3] * len(split), 4, np.random.default_rng(0), batching="per_task", sampling="round_robin"
    )
    assert [t for _, t in batches[:4]] == ["a", "b", "a", "b"]
    for rows, task in batches:
        assert (split.labels[task][rows] != MISSING).all()


def test_per_task_batches_group_rows_of_similar_length(tmp_path: Path) -> None:
    split = _split(tmp_path)
    lengths = list(np.random.default_rng(0).integers(1, 60, size=len(split)))
    batches = epoch_batches(split, lengths, 4, np.random.default_rng(0), batching="per_task", sampling="round_robin")
    spread = np.mean([np.ptp([lengths[i] for i in rows]) for rows, _ in batches])
    shuffled = np.random.default_rng(1).permutation(len(split))
    random_spread = np.mean([np.ptp([lengths[i] for i in shuffled[j : j + 4]]) for j in range(0, len(split), 4)])
    assert spread < random_spread / 2


def test_task_sampling_weights() -> None:
    probs = task_probabilities({"a": 900, "b": 100}, "temperature", temperature=2.0)
    assert probs["a"] == pytest.approx(30 / 40)
    assert task_probabilities({"a": 900, "b": 100}, "proportional")["a"] == pytest.approx(0.9)
    assert task_probabilities({"a": 900, "b": 100}, "round_robin")["b"] == 0.5


def test_temperature_sampling_upweights_the_small_task(tmp_path: Path) -> None:
    split = _split(tmp_path)
    counts: Counter[str] = Counter()
    for seed in range(20):
        for rows, _ in epoch_batches(
            split, [3] * len(split), 4, np.random.default_rng(seed), sampling="temperature", temperature=100.0
        ):
            counts.update("a" if split.labels["a"][r] != MISSING else "b" for r in rows)
    assert 0.4 < counts["b"] / sum(counts.values()) < 0.6


def test_stats_count_rows_per_set_of_labelled_tasks(tmp_path: Path) -> None:
    rows = [{"text": "a", "category": "x", "sentiment": "pos"}, {"text": "b", "category": "y", "sentiment": "neg"}]
    rows += [{"text": "c", "category": "x"}, {"text": "d", "sentiment": "pos"}, {"text": "e", "sentiment": "neg"}]
    train = write_jsonl(tmp_path / "t.jsonl", rows)
    config = validate_config({"tasks": {"category": {}, "sentiment": {}}, "data": {"train": train}})
    data = build_task_data({t: (t, None, None) for t in config.tasks}, {"train": train}, "text")
    stats = data_stats(config, data)
    both, cat, sent = frozenset({"category", "sentiment"}), frozenset({"category"}), frozenset({"sentiment"})
    assert stats.task_sets == {both: 2, cat: 1, sent: 2}
    assert stats.class_counts == {"category": (2, 1), "sentiment": (2, 2)}
    assert stats.labels_per_row(("category", "sentiment")) == pytest.approx(7 / 5)
    assert stats.labels_per_row(("category",)) == 1.0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("text,y\nhello, world,a\n", "row 1 (line 2): 3 field(s) where the header has 2"),  # unquoted comma
        ("text,y\nfine,a\nmissing\n", "row 2 (line 3): 1 field(s) where the header has 2"),  # misaligned
        ('text,y\nfine,a\n"never closed,b\n', "row 2 (line 3): not valid CSV"),  # broken quote on the last row
    ],
)
def test_csv_is_read_strictly(tmp_path: Path, content: str, message: str) -> None:
    from mtst.data import read_records

    (tmp_path / "t.csv").write_text(content)
    with pytest.raises(DataError, match=re.escape(message)):
        read_records(tmp_path / "t.csv")


def test_csv_fields_of_any_length_and_quoted_delimiters(tmp_path: Path) -> None:
    from mtst.data import read_records

    long_text = "word " * 60_000  # 300 KB in one field: over the csv module's default limit
    path = tmp_path / "t.csv"
    path.write_text(f'text,y\n"{long_text}",a\n"one, two ""three""",b\n\n')
    rows = read_records(path)
    assert [r["y"] for r in rows] == ["a", "b"]
    assert rows[0]["text"] == long_text and rows[1]["text"] == 'one, two "three"'


def test_cli_reports_a_bad_csv_row_and_reads_long_fields(
    tmp_path: Path, tiny_backbone_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mtst.cli import main

    path = tmp_path / "in.csv"
    path.write_text("text\nfine\nhello, world\n")
    assert main(["encode", "--input", str(path), "--model", str(tiny_backbone_dir)]) == 2
    assert "row 2 (line 3)" in capsys.readouterr().err.replace("\n", " ")
    (tmp_path / "big.csv").write_text("text\n" + '"' + "x " * 80_000 + '"\n')
    out = tmp_path / "e.npy"
    assert main(["encode", "--input", str(tmp_path / "big.csv"), "-m", str(tiny_backbone_dir), "-o", str(out)]) == 0
    assert np.load(out).shape[0] == 1


def test_jsonl_rows_that_omit_a_task_key_are_unlabelled_for_it_wherever_they_come(tmp_path: Path) -> None:
    # a file mixing two sources names in each row only the columns that row carries, the first row too
    rows = [{"text": "is it good", "sentiment": "pos"}, {"text": "what is a cat", "coarse": "DESC"}]
    rows += [{"text": f"why {i}", "coarse": "DESC" if i % 2 else "ENTY"} for i in range(3)]
    f = tmp_path / "mixed.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = build_task_data({"coarse": ("coarse", None, None)}, {"train": str(f)}, "text")
    assert list(data.splits["train"].labels["coarse"]) == [MISSING, 0, 1, 0, 1]
    assert data.labels["coarse"] == ["DESC", "ENTY"]


def test_a_saved_datasets_folder_reads_wherever_a_data_file_does(tmp_path: Path, tiny_model) -> None:
    import datasets

    from mtst.config import validate_config
    from mtst.data import load_table, read_texts
    from mtst.errors import DataError
    from mtst.training.trainer import keep_text_ids

    rows = {"text": ["first text", "second text"], "label": ["a", "b"]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "one"))
    assert read_texts(tmp_path / "one") == rows["text"]
    config = validate_config(
        {"tasks": {"category": {}}, "data": {"train": "x.csv"}, "training": {"keep": {"texts": str(tmp_path / "one")}}}
    )
    assert len(keep_text_ids(config, tiny_model)) == 2  # training.keep.texts takes it as data.train does
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "dict"))
    with pytest.raises(DataError, match=r"a DatasetDict holding the split 'train'; point to .*dict/train"):
        load_table(tmp_path / "dict")
    assert load_table(tmp_path / "dict" / "train")[0] == {"text": "first text", "label": "a"}


def test_a_column_or_key_given_twice_is_refused(tmp_path: Path) -> None:
    """csv and json keep the last of a repeated name without a word; a reader of labels must not."""
    from mtst.data import load_table
    from mtst.errors import DataError

    (tmp_path / "d.csv").write_text("text,label,label\nhello,a,b\n")
    with pytest.raises(DataError, match=r"the header names column\(s\) 'label' more than once"):
        load_table(tmp_path / "d.csv")
    (tmp_path / "d.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "a", "text": "b", "label": "x"}\n')
    with pytest.raises(DataError, match=r"d.jsonl, line 2: the key 'text' appears twice"):
        load_table(tmp_path / "d.jsonl")
    (tmp_path / "d.json").write_text('[{"text": "a", "label": "x", "label": "y"}]')
    with pytest.raises(DataError, match=r"the key 'label' twice"):
        load_table(tmp_path / "d.json")
