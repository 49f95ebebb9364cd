"""The model: encoder (backbone + pooling), task heads, and what a prediction looks like."""
