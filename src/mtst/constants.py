"""Constants shared across layers (defined once, imported everywhere)."""

IGNORE_INDEX = -100
"""The label of a row or token that has none for a task: cross-entropy skips it."""
