"""What a user gets from a plain ``pip install mtst`` (no extras), run by ``.ci/run`` in such an install.

Each command that needs an extra must end in one line naming it (exit 2), and the README's Python
example must run as written from a directory that is not the source checkout.

    python scripts/check_plain_install.py   # with the interpreter of an environment without extras
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
CHECKS = [
    (["serve", "runs/none"], "mtst serve needs fastapi, uvicorn: pip install 'mtst[serve]'"),
    (["compare", "-o", "cmp"], "mtst compare (its report's plots) needs matplotlib: pip install 'mtst[plots]'"),
    (["evaluate", "runs/none", "--sts", "x.csv", "--plot", "p"], "--plot needs matplotlib: pip install 'mtst[plots]'"),
]


def main() -> int:
    mtst = Path(sys.executable).with_name("mtst")
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
        for args, message in CHECKS:
            done = subprocess.run([str(mtst), *args], cwd=tmp, env=env, capture_output=True, text=True)
            err = done.stderr.strip()
            ok = done.returncode == 2 and message in err and len(err.splitlines()) == 1 and not os.listdir(tmp)
            print(f"{'ok' if ok else 'FAILED'}: mtst {' '.join(args)} -> exit {done.returncode}: {err[-300:]}")
            failed += [] if ok else [args[0]]
        block = re.search(r"## In Python\n\n```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
        assert block is not None, "README.md has no Python section"
        done = subprocess.run([sys.executable, "-c", block.group(1)], cwd=tmp, env=env, capture_output=True, text=True)
        print(f"{'ok' if done.returncode == 0 else 'FAILED'}: the README's Python example -> exit {done.returncode}")
        if done.returncode:
            print(done.stderr[-2000:])
            failed.append("README Python example")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
