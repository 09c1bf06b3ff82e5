"""Typed errors. The CLI turns each into one line on stderr and a non-zero exit."""

from __future__ import annotations


class CvoError(Exception):
    """Base of every error cvo reports as one clear line."""

    exit_code = 2


class ConfigError(CvoError):
    """A bad, unknown or mistyped configuration key or value."""


class MissingTableError(CvoError):
    """An input or upstream table does not exist."""


class SchemaMismatchError(CvoError):
    """A table is missing a required column or has an incompatible type."""


class MissingColumnsError(CvoError):
    """A transform was given a DataFrame without the columns it needs."""


class PublishRefused(CvoError):
    """A fail-closed check stopped the publish; the last good snapshot stays."""

    exit_code = 3
    #: Every check's outcome by name (set by `cvo_spark.offers.publish.decide`).
    checks: dict[str, str]


class ModelQualityError(CvoError):
    """A model failed an honesty guard (leak suspected, or no better than chance)."""

    exit_code = 4
