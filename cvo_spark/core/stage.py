"""What a batch stage gets and gives back: `StageContext` in, `StageResult` out.

A stage module (``cvo_spark/<stage>/stage.py``) has ``run(ctx: StageContext) -> StageResult``;
`cvo_spark.pipeline` runs the stages in order and audits each result in gold `runs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from pyspark.sql import SparkSession

from cvo_spark.core.config import Config
from cvo_spark.core.io import TableStore, Touched


@dataclass(frozen=True)
class StageContext:
    """What every stage gets: session, config, table store, the as-of date and run id."""

    spark: SparkSession
    config: Config
    store: TableStore
    as_of: date
    run_id: str
    #: Named publish checks an operator explicitly overrides (recorded in `runs`).
    overrides: frozenset[str] = frozenset()
    #: Free-form options from the command line (e.g. the report's output file).
    options: dict = field(default_factory=dict)


@dataclass
class StageResult:
    row_counts: dict[str, int] = field(default_factory=dict)
    checks: dict[str, str] = field(default_factory=dict)
    message: str = ""
    #: What the run read and wrote, as the pipeline recorded it (None outside `run_stage`).
    touched: Touched | None = None
