from __future__ import annotations

from pathlib import Path

import pytest

from mtst.config import apply_overrides, load_config, resolve_precision, validate_config
from mtst.errors import ConfigError


def test_demo_config_loads_with_paths_next_to_it() -> None:
    cfg = load_config(None)
    assert set(cfg.tasks) == {"category", "sentiment"}
    assert Path(cfg.data.train).is_file()
    assert cfg.tasks["sentiment"].labels == ["negative", "neutral", "positive"]


def test_unknown_key_names_its_path_and_allowed_keys() -> None:
    with pytest.raises(ConfigError) as err:
        validate_config({"tasks": {"a": {"labell_column": "x"}}, "data": {"train": "t.csv"}})
    assert "tasks.a.labell_column: unknown key" in str(err.value)
    assert "label_column" in str(err.value)
    with pytest.raises(ConfigError, match=r"training\.lr: unknown key; allowed: .*lr_backbone"):
        validate_config({"tasks": {"a": {}}, "data": {"train": "t.csv"}, "training": {"lr": 1}})


def test_bad_choice_lists_allowed_values() -> None:
    with pytest.raises(ConfigError) as err:
        validate_config({"tasks": {"a": {}}, "data": {"train": "t.csv"}, "training": {"strategy": "partial"}})
    message = str(err.value)
    assert "training.strategy" in message and "gradual, full" in message and "'partial'" in message


def test_range_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"training\.batch_size"):
        validate_config({"tasks": {"a": {}}, "data": {"train": "t.csv"}, "training": {"batch_size": 0}})
    with pytest.raises(ConfigError, match=r"tasks\.a: no training data"):
        validate_config({"tasks": {"a": {}}})


def test_overrides(tmp_path: Path) -> None:
    raw = apply_overrides({}, ["training.strategy=top_k", "training.top_k=3", "training.freeze=[embeddings]"])
    assert raw == {"training": {"strategy": "top_k", "top_k": 3, "freeze": ["embeddings"]}}
    cfg = load_config(None, ["training.strategy=heads", "output_dir=" + str(tmp_path)])
    assert cfg.training.strategy == "heads" and cfg.output_dir == str(tmp_path)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["training.strategy"])


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("tasks: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("tasks", ["[category, sentiment]", "category", "3"])
def test_tasks_that_are_not_a_mapping_get_a_message_not_a_traceback(tmp_path: Path, tasks: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"tasks: {tasks}\ndata: {{train: t.csv}}\n")
    with pytest.raises(ConfigError, match="tasks: expected a mapping of task name to its settings") as info:
        load_config(path)
    if tasks.startswith("["):
        assert "tasks: {category: {}, sentiment: {}}" in str(info.value)  # the user's own names, rewritten


@pytest.mark.parametrize(
    ("wanted", "cuda", "native", "expected"),
    [
        ("auto", False, True, "bf16"),  # a CPU with AVX512-BF16 or AMX
        ("auto", False, False, "no"),  # elsewhere bf16 is emulated: slower than fp32
        ("auto", True, True, "bf16"),
        ("auto", True, False, "no"),
        ("fp32", False, True, "no"),
        ("bf16", False, False, "bf16"),  # asked for: granted, emulated or not
        ("fp16", True, False, "fp16"),
    ],
)
def test_precision_auto_takes_bf16_natively(wanted: str, cuda: bool, native: bool, expected: str) -> None:
    assert resolve_precision(wanted, cuda, native) == expected


def test_fp16_on_a_cpu_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"training\.precision: fp16 needs a CUDA device"):
        resolve_precision("fp16", False, True)


def test_reading_a_config_imports_no_torch() -> None:
    """The config sits at the bottom: loading a YAML file needs neither torch nor the models (the strategy
    registry it validates against is pure)."""
    import subprocess
    import sys

    code = (
        "import sys; from mtst.config import load_config; load_config(None); "
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers') "
        "or m.startswith('mtst.modeling') or (m.startswith('mtst.training.') "
        "and not m.startswith('mtst.training.planning.strategies'))]; print(heavy); sys.exit(1 if heavy else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cache_options_in_their_section_and_in_the_older_flat_spelling() -> None:
    base = {"tasks": {"a": {}}, "data": {"train": "t.csv"}}
    new = validate_config({**base, "training": {"cache": {"enabled": False, "memory_mb": 10, "dir": "c"}}})
    old = validate_config({**base, "training": {"cache": False, "cache_memory_mb": 10, "cache_dir": "c"}})
    assert new.training.cache == old.training.cache
    assert (new.training.cache.enabled, new.training.cache.memory_mb, new.training.cache.dir) == (False, 10, "c")
    assert validate_config({**base, "training": {"cache_dir": "d"}}).training.cache.enabled  # the rest defaults
    with pytest.raises(ConfigError, match=r"training\.cache\.memory_mb"):
        validate_config({**base, "training": {"cache": {"memory_mb": 0}}})


def test_labels_are_read_as_the_data_cells_are(tmp_path: Path) -> None:
    """YAML turns an unquoted yes/no into a boolean: refused with the fix, never read as 'True'."""
    base = {"data": {"train": "x.csv"}}
    assert validate_config({**base, "tasks": {"t": {"labels": [1.0, 2, " b "]}}}).tasks["t"].labels == ["1", "2", "b"]
    for labels, message in (
        ([True, False], r"tasks\.t\.labels: True is a YAML boolean .*quote the label"),
        ([["a"], "b"], r"\['a'\] is not a label"),
        (["a", ""], r"'' is not a label"),
        (["a", "b", "a"], r"each label once; repeated: a"),
    ):
        with pytest.raises(ConfigError, match=message):
            validate_config({**base, "tasks": {"t": {"labels": labels}}})
    config = tmp_path / "c.yaml"
    config.write_text("tasks: {t: {labels: [yes, no]}}\ndata: {train: x.csv}\n")
    with pytest.raises(ConfigError, match="YAML boolean"):
        load_config(config)
    assert load_config(config, ["tasks.t.labels=['yes','no']"]).tasks["t"].labels == ["yes", "no"]
