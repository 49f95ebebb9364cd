"""The README's commands name files that ship: a newcomer can paste every one of them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INPUTS = re.compile(
    r"(?:--input|--data|--corpus|--calibration|--sts|-d|-c|-i)\s+([\w./-]+)|mtst (?:train|compare) ([\w./-]+\.ya?ml)"
)
PYTHON_INPUTS = re.compile(r"load_config\(\"([^\"]+)\"")


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```(?:bash|python)\n(.*?)```", text, flags=re.S)


def test_every_input_file_the_readme_names_exists() -> None:
    blocks = code_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    named = {m for block in blocks for pair in INPUTS.findall(block) for m in pair if m}
    named |= {m for block in blocks for m in PYTHON_INPUTS.findall(block)}
    assert {"src/mtst/demo/test.csv", "docs/examples/sts_pairs.csv"} <= named  # the scan sees the tour
    missing = sorted(name for name in named if not (ROOT / name).exists())
    assert not missing, missing
