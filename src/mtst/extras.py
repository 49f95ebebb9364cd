"""Optional dependencies: one check, one message naming the extra that installs them.

A command that needs an extra calls :func:`require` before it loads a model or writes a file, so a
plain ``pip install mtst`` ends in one line (``mtst serve needs fastapi, uvicorn: pip install
'mtst[serve]'``, exit 2), never in a traceback from deep inside.
"""

from __future__ import annotations

import importlib.util

from mtst.errors import MtstError

EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "uvicorn"),
    "plots": ("matplotlib",),
    "parquet": ("pyarrow",),
    "datasets": ("datasets",),
}  # the onnx and openvino extras are checked where the exports import them (mtst.export)


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here (found without importing them)."""
    return [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]


def require(extra: str, purpose: str) -> None:
    """Raise one line naming the extra where a module of it is missing; ``purpose`` says what needs it."""
    absent = missing(extra)
    if absent:
        raise MtstError(f"{purpose} needs {', '.join(absent)}: pip install 'mtst[{extra}]'")
