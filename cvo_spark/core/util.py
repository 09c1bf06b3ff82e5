"""Small helpers shared by the transform modules."""

from __future__ import annotations

from collections.abc import Iterable

from pyspark.sql import DataFrame

from cvo_spark.core.errors import MissingColumnsError


def require_columns(df: DataFrame, columns: Iterable[str], where: str) -> None:
    """Raise `MissingColumnsError` naming every column of `columns` that `df` lacks.

    `where` names the transform, so the message says who needed the column.
    """
    present = set(df.columns)
    missing = [c for c in columns if c not in present]
    if missing:
        raise MissingColumnsError(f"{where}: missing column(s) {', '.join(missing)}")
