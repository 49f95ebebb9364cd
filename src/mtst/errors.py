"""User-facing errors.

Anything raised as :class:`MtstError` is a problem with the user's input
(a path, a config value, a data file), not a bug: the CLI prints its message
on one line and exits with status 2 instead of showing a traceback.
"""

from __future__ import annotations


class MtstError(Exception):
    """An error whose message is meant for the user, not a traceback."""


class ConfigError(MtstError):
    """A configuration value is missing, unknown or out of range."""


class DataError(MtstError):
    """A data file cannot be read or does not have the expected shape."""


class ModelLoadError(MtstError):
    """A backbone or saved model cannot be found or loaded."""


class TrainingError(MtstError):
    """Training cannot go on (e.g. the loss stopped being finite)."""
