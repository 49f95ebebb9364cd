"""Run configuration: one YAML file, validated at load time.

Every section forbids unknown keys, and every error names the field's dotted path and, for choices, the
allowed values, so a typo fails before any model is loaded: :mod:`~mtst.config.sections` (model, data,
tasks and the training options that are sections of their own), :mod:`~mtst.config.run` (the training
section and the whole :class:`RunConfig`), :mod:`~mtst.config.load` (YAML, overrides, validation),
:mod:`~mtst.config.serve` (the server's settings).
"""

from __future__ import annotations

from mtst.config.load import (
    apply_overrides,
    dump_config,
    load_config,
    validate_config,
)
from mtst.config.run import (
    RunConfig,
    TrainingSection,
    allowed_metrics,
    precision_name,
    resolve_precision,
)
from mtst.config.sections import (
    AUTO,
    DEFAULT_BACKBONE,
    DEFAULT_PAIR_COLUMNS,
    INFERENCE_PRECISIONS,
    PAIR_TYPES,
    POOLING_MODES,
    STRATEGIES,
    CacheSection,
    ContrastiveSection,
    DataSection,
    EmptyCell,
    GradualSection,
    KeepSection,
    LoraSettings,
    ModelSection,
    PoolingMode,
    TaskSection,
    TaskType,
)
from mtst.config.serve import (
    ServeSettings,
)

__all__ = [
    "AUTO",
    "DEFAULT_BACKBONE",
    "DEFAULT_PAIR_COLUMNS",
    "INFERENCE_PRECISIONS",
    "PAIR_TYPES",
    "POOLING_MODES",
    "STRATEGIES",
    "CacheSection",
    "ContrastiveSection",
    "DataSection",
    "EmptyCell",
    "GradualSection",
    "KeepSection",
    "LoraSettings",
    "ModelSection",
    "PoolingMode",
    "RunConfig",
    "ServeSettings",
    "TaskSection",
    "TaskType",
    "TrainingSection",
    "allowed_metrics",
    "apply_overrides",
    "dump_config",
    "load_config",
    "precision_name",
    "resolve_precision",
    "validate_config",
]
