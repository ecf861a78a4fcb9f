"""Benchmarks: each writes JSON (and a PNG plot where matplotlib is installed)."""
