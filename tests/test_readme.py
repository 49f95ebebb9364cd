"""The README's and docs' commands name files that ship and options that exist: a newcomer can paste
every one of them, and the README's Python example runs as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
INPUTS = re.compile(
    r"(?:--input|--data|--corpus|--calibration|--sts|-d|-c|-i)\s+([\w./-]+)|mtst (?:train|compare) ([\w./-]+\.ya?ml)"
)
PYTHON_INPUTS = re.compile(r"load_config\(\"([^\"]+)\"")
MAX_README_LINES = 250


def code_blocks(text: str, kinds: str = "bash|python") -> list[str]:
    return re.findall(rf"```(?:{kinds})\n(.*?)```", text, flags=re.S)


def commands(page: Path) -> list[list[str]]:
    """Every ``mtst`` command line of a page's bash blocks, as arguments after ``mtst`` (continued lines
    joined, comments dropped, an optional part's brackets taken off)."""
    out = []
    for block in code_blocks(page.read_text(encoding="utf-8"), "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            starts = [i + 1 for i, w in enumerate(words) if w == "mtst" or w.endswith("/mtst")]
            if not starts or (words and words[0] == "#"):
                continue
            args = [w.strip("[]") for w in words[starts[0] :] if w.strip("[]")]
            out.append(args)
    return out


def test_every_input_file_the_pages_name_exists() -> None:
    named: set[str] = set()
    for page in PAGES:
        blocks = code_blocks(page.read_text(encoding="utf-8"))
        named |= {m for block in blocks for pair in INPUTS.findall(block) for m in pair if m}
        named |= {m for block in blocks for m in PYTHON_INPUTS.findall(block)}
    assert {"src/mtst/demo/test.csv", "docs/examples/sts_pairs.csv"} <= named  # the scan sees the pages
    missing = sorted(name for name in named if not (ROOT / name).exists())
    assert not missing, missing


def test_every_command_the_pages_show_parses() -> None:
    """Each command's options exist and its values are of the allowed kinds (parsed, not run)."""
    import typer.main

    from mtst.cli import app

    group = typer.main.get_command(app)  # click's Group (typer may carry its own copy of click)
    seen, bad = 0, []
    for page in PAGES:
        for args in commands(page):
            if not args:
                continue
            seen += 1
            command = group.commands.get(args[0])  # type: ignore[attr-defined]
            if command is None:
                bad.append(f"{page.name}: mtst {' '.join(args)}: no command {args[0]!r}")
                continue
            try:
                command.make_context(args[0], args[1:], resilient_parsing=False)
            except Exception as exc:  # click's UsageError / BadParameter: a message, not a crash
                if not hasattr(exc, "format_message"):
                    raise
                bad.append(f"{page.name}: mtst {' '.join(args)}: {exc.format_message()}")
    assert seen > 20 and not bad, bad


def test_the_readme_starts_and_stays_short() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_README_LINES
    first_block = code_blocks(text, "bash")[0]
    assert "mtst train" in first_block and "python -m pytest" in first_block
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)", text))
    assert linked == {f"docs/{p.name}" for p in PAGES[1:]}, "every docs page is linked from the README"


def test_links_between_pages_point_at_files() -> None:
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if not target.startswith("http") and not (page.parent / target).exists():
                broken.append(f"{page.name}: {target}")
    assert not broken, broken


@pytest.mark.slow
def test_the_readme_python_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the real bundled model, in an empty working directory (its run goes to runs/demo there)."""
    block = re.search(r"## In Python\n\n```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block is not None
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), scope)
    assert set(scope["model"].predict("Great mixer, loud though.")) == {"category", "sentiment"}
    assert (tmp_path / "runs" / "demo" / "metrics.json").exists()
