"""Exception types raised by metricls; every user-facing failure is one of these."""

from __future__ import annotations


class MetriclsError(Exception):
    """Base class of every error metricls raises on purpose."""


class InputError(MetriclsError, ValueError):
    """Bad user input: a file, a column, a row, an argument."""


class ConfigError(MetriclsError, ValueError):
    """A config key, type or value that is not valid."""


class ArtifactError(MetriclsError, RuntimeError):
    """A tagger folder that is missing, incomplete, altered or inconsistent."""


class NotFittedError(MetriclsError, ValueError, AttributeError):
    """A model or index used before it was trained or built."""
