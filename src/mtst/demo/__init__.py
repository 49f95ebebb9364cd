"""The bundled demo: product reviews with a category and a sentiment label.

605 hand-written reviews over five categories (beauty, books, clothing,
electronics, kitchen) and three sentiments, split 70/15/15 stratified by
both labels. ``mtst train`` with no config trains on them.
"""

from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent


def demo_config_path() -> Path:
    return DEMO_DIR / "demo.yaml"


def tagged_config_path() -> Path:
    """Entity tagging + sentiment on generated review sentences (see ``scripts/make_tagged_demo.py``)."""
    return DEMO_DIR / "tagged.yaml"
