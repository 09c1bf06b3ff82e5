"""Small helpers shared by the transform modules."""

from __future__ import annotations

from collections.abc import Iterable

from pyspark.sql import DataFrame, Row

from cvo_spark.core.errors import MissingColumnsError


def require_columns(df: DataFrame, columns: Iterable[str], where: str) -> None:
    """Raise `MissingColumnsError` naming every column of `columns` that `df` lacks.

    `where` names the transform, so the message says who needed the column.
    """
    present = set(df.columns)
    missing = [c for c in columns if c not in present]
    if missing:
        raise MissingColumnsError(f"{where}: missing column(s) {', '.join(missing)}")


def first_row(df: DataFrame, what: str) -> Row:
    """`df.first()` for a query that yields a row (a global aggregate always yields one).

    Raises `ValueError` naming `what` when it yielded none, instead of a bare
    "'NoneType' object is not subscriptable" further on.
    """
    row = df.first()
    if row is None:
        raise ValueError(f"{what}: the query returned no row")
    return row
