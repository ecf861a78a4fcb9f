"""The few-shot benchmark: held-out labels added back from a few examples or zero-shot."""
