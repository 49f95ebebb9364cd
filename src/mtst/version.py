"""The package version, in a module of its own so that any module can read it without import cycles."""

from __future__ import annotations

__version__ = "0.1.0"

DEPENDENCIES = ("torch", "transformers", "tokenizers", "peft", "accelerate", "sentence-transformers")
"""The libraries whose releases change what mtst computes: named in ``mtst --version`` and by CI."""


def dependency_versions() -> dict[str, str]:
    """mtst's version and the installed version of each of :data:`DEPENDENCIES` ("-" where absent),
    read from package metadata, so nothing heavy is imported."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"mtst": __version__}
    for name in DEPENDENCIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "-"
    return found
