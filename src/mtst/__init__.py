"""mtst: multi-task sentence transformers.

Turn a pretrained transformer into a sentence encoder with several task heads
and fine-tune it the right way for small, real datasets.

The public names below are loaded on first use, so that ``import mtst.config``
(reading a YAML file) does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from mtst.threads import short_spin
from mtst.version import __version__

short_spin()  # before anything imports torch (mtst.threads says why)

_EXPORTS = {
    "DEFAULT_BACKBONE": "mtst.config",
    "RunConfig": "mtst.config",
    "load_config": "mtst.config",
    "MtstError": "mtst.errors",
    "SentenceEncoder": "mtst.modeling.encoder",
    "cos_sim": "mtst.modeling.encoder",
    "HeadSpec": "mtst.modeling.heads",
    "MultiTaskModel": "mtst.modeling.model",
    "load_encoder": "mtst.modeling.model",
    "train": "mtst.training.trainer",
    "TrainResult": "mtst.training.trainer",
}

if TYPE_CHECKING:
    from mtst.config import DEFAULT_BACKBONE, RunConfig, load_config
    from mtst.errors import MtstError
    from mtst.modeling.encoder import SentenceEncoder, cos_sim
    from mtst.modeling.heads import HeadSpec
    from mtst.modeling.model import MultiTaskModel, load_encoder
    from mtst.training.trainer import TrainResult, train


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mtst' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "DEFAULT_BACKBONE",
    "HeadSpec",
    "MtstError",
    "MultiTaskModel",
    "RunConfig",
    "SentenceEncoder",
    "TrainResult",
    "__version__",
    "cos_sim",
    "load_config",
    "load_encoder",
    "train",
]
