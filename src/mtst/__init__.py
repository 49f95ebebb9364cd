"""mtst: multi-task sentence transformers.

Turn a pretrained transformer into a sentence encoder with several task heads
and fine-tune it the right way for small, real datasets.
"""

from __future__ import annotations

__version__ = "0.1.0"

from mtst.encoder import DEFAULT_BACKBONE, SentenceEncoder, cos_sim
from mtst.errors import MtstError
from mtst.heads import HeadSpec
from mtst.model import MultiTaskModel, load_encoder

__all__ = [
    "DEFAULT_BACKBONE",
    "HeadSpec",
    "MtstError",
    "MultiTaskModel",
    "SentenceEncoder",
    "__version__",
    "cos_sim",
    "load_encoder",
]
