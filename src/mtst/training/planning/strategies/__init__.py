"""The strategy registry: one module per strategy, one protocol (``base.Strategy``).

Adding a strategy means one module here, one line in ``REGISTRY`` and one row
in the strategy test table. Nothing here imports torch.
"""

from __future__ import annotations

from mtst.config import STRATEGIES
from mtst.errors import ConfigError
from mtst.training.planning.strategies.base import FROZEN_START_LR_HEAD, GroupContext, Strategy
from mtst.training.planning.strategies.frozen import Frozen
from mtst.training.planning.strategies.full import Full
from mtst.training.planning.strategies.gradual import Gradual
from mtst.training.planning.strategies.heads import Heads
from mtst.training.planning.strategies.lora import Lora
from mtst.training.planning.strategies.top_k import TopK

_ALL = {s.name: s for s in (Frozen(), Heads(), TopK(), Gradual(), Full(), Lora())}
REGISTRY: dict[str, Strategy] = {name: _ALL[name] for name in STRATEGIES}  # config.STRATEGIES names them
NAMES: tuple[str, ...] = tuple(REGISTRY)
if set(_ALL) != set(STRATEGIES):  # pragma: no cover - a strategy module without its config name, or the reverse
    raise ImportError(f"strategies {sorted(_ALL)} do not match config.STRATEGIES {sorted(STRATEGIES)}")


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name``; an unknown name lists the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"training.strategy: unknown {name!r}; allowed: {', '.join(NAMES)}") from None


def help_text() -> str:
    """One line per strategy (for ``--help`` and error messages)."""
    return "; ".join(f"{s.name}{':' + s.compare_arg if s.compare_arg else ''}: {s.trains}" for s in REGISTRY.values())


__all__ = ["FROZEN_START_LR_HEAD", "NAMES", "REGISTRY", "GroupContext", "Strategy", "get_strategy", "help_text"]
