"""Constants shared across layers (defined once, imported everywhere)."""

IGNORE_INDEX = -100
"""The label of a row or token that has none for a task: cross-entropy skips it."""

ONNX_META = "mtst_onnx.json"
"""The file that marks a directory as an mtst ONNX export (task metadata beside ``model.onnx``)."""
