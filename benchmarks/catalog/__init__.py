"""The catalog benchmark: items/s of `tag-catalog` with each engine."""
