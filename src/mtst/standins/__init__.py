"""Stand-ins: code that does what a dependency already does, kept only because the dependency costs
start-up seconds that a short run on a small CPU notices. Each is parity-tested against the dependency,
and each has a canary test (``tests/test_standins.py``) that fails once the reason it exists is gone, so
that a later release of the dependency can delete it with confidence.

=====================  ===================================  ==========================================
stand-in               does what                            saves (2 CPU cores)
=====================  ===================================  ==========================================
:mod:`.bert`           transformers' ``BertModel`` (SDPA)   3 s: transformers' model-building stack
:mod:`.tokenizer`      ``AutoTokenizer`` for WordPiece      2 s: importing transformers for a tokenizer
:mod:`.lbfgs`          ``torch.optim.LBFGS`` (strong Wolfe)  1.7 s: the first Optimizer imports dynamo
:mod:`.adamw`          ``torch.optim.AdamW``                 the same 1.7 s, in every stepped run
=====================  ===================================  ==========================================

One switch turns them all off: the environment variable ``MTST_STANDINS=0`` (``MTST_NATIVE_BERT=0``, its
older name, still turns off the BERT and tokenizer ones), or ``training.standins: false`` in a run's
config. Off, every part goes through the dependency itself, with the same results.
"""

from __future__ import annotations

import os

ENV_SWITCH = "MTST_STANDINS"
LEGACY_BERT_SWITCH = "MTST_NATIVE_BERT"  # the native BERT's own switch, from before there was one for all
_OFF = ("0", "false", "no", "off")
_override: bool | None = None


def enabled(bert: bool = False) -> bool:
    """Whether the stand-ins run (``bert``: asked by the BERT or tokenizer stand-in, which the older switch
    also turns off). A run's ``training.standins`` (:func:`set_enabled`) takes precedence over the
    environment."""
    if _override is not None:
        return _override
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in _OFF:
        return False
    return not (bert and os.environ.get(LEGACY_BERT_SWITCH, "1").strip().lower() in _OFF)


def set_enabled(value: bool | None) -> None:
    """Turn the stand-ins on or off for this process (None: the environment decides again)."""
    global _override
    _override = value
