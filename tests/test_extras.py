"""A command that needs an optional dependency which is not installed ends in one line naming the extra
(exit 2), before it loads a model or writes a file. ``.ci/run`` checks the same on a real install
without extras (``scripts/check_plain_install.py``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mtst.cli import main
from mtst.extras import EXTRAS, missing, require


@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch):
    """Make the modules of the named extras look uninstalled."""

    def hide(*extras: str) -> None:
        gone = {m for e in extras for m in EXTRAS[e]}
        real = importlib.util.find_spec
        monkeypatch.setattr(
            "mtst.extras.importlib.util.find_spec", lambda name, *a: None if name in gone else real(name, *a)
        )

    return hide


def test_require_names_the_missing_modules_and_the_extra(without) -> None:
    assert missing("plots") == []
    require("plots", "--plot")
    without("serve")
    with pytest.raises(Exception, match=r"^mtst serve needs fastapi, uvicorn: pip install 'mtst\[serve\]'$"):
        require("serve", "mtst serve")


@pytest.mark.parametrize(
    ("extra", "args", "message"),
    [
        ("serve", ["serve", "{run}"], "mtst serve needs fastapi, uvicorn: pip install 'mtst[serve]'"),
        ("plots", ["compare", "-o", "{tmp}/cmp"], "needs matplotlib: pip install 'mtst[plots]'"),
        ("plots", ["evaluate", "{run}", "--data", "{test}", "--plot", "{tmp}/p"], "--plot needs matplotlib"),
    ],
)
def test_a_command_without_its_extra_exits_2_in_one_line(
    without,
    trained_run: Path,
    tiny_data: dict[str, str],
    tmp_path: Path,
    capsys,
    extra: str,
    args: list[str],
    message: str,
) -> None:
    without(extra)
    filled = [a.format(run=trained_run, tmp=tmp_path, test=tiny_data["test"]) for a in args]
    assert main(filled) == 2
    err = capsys.readouterr().err.strip()
    assert message in err.replace("\n", " ") and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_data_files_name_their_extra(without, tmp_path: Path) -> None:
    from mtst.data import load_table
    from mtst.errors import DataError

    without("parquet", "datasets")
    (tmp_path / "d.parquet").write_bytes(b"PAR1")
    with pytest.raises(DataError, match=r"reading Parquet needs pyarrow: pip install 'mtst\[parquet\]'"):
        load_table(tmp_path / "d.parquet")
    (tmp_path / "saved").mkdir()
    with pytest.raises(DataError, match=r"needs datasets: pip install 'mtst\[datasets\]'"):
        load_table(tmp_path / "saved")
