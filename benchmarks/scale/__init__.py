"""The scale benchmark: time and peak memory of each pipeline stage on generated data."""
