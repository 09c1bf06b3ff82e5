"""The table registry: every silver and gold table the code writes, in one place.

For each table: its layer, the schema it is conformed to before a write, its key columns
(what one row is), its partition column, the write mode(s) that keep invariant 2
(idempotent re-runs) and the stage(s) that produce it. `cvo_spark.core.io.TableStore`
reads and writes through it (``store.write(df, "features", as_of)``,
``store.read_as_of("features", as_of)``), so no module outside the IO layer (this module
and `core/io.py`) builds a table path, picks a layer or writes an as-of partition filter.
`docs/tables.md` documents the same tables (a test checks it names each one and its keys);
`cvo run --plan` prints which stage writes and reads them.

Schemas are referenced as ``"module:ATTRIBUTE"`` (or ``"module:MAPPING[key]"``) and
resolved on first use: a gold schema stays beside the transform that `select`s it (so the
transform and the table cannot drift), while this registry says which schema each table
has. `core` is the bottom layer and imports no stage package; resolving by name keeps it
so. A reference to a tuple of column names (rather than a `StructType`) fixes the columns
and their order, not their types.

Write modes (see `TableStore`):

- ``overwrite`` - the whole table in one commit (silver tables rebuilt from bronze).
- ``overwrite_partition`` - exactly the partition of the as-of date (``replaceWhere``).
- ``insert_new`` - insert-only MERGE on the keys (event logs read as streams).
- ``append`` - logs only (`runs`, `trigger_offers`).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from functools import cache
from typing import Literal

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

WriteMode = Literal["overwrite", "overwrite_partition", "insert_new", "append"]

#: The partition column of every dated gold table; the training frames use their own.
AS_OF = "as_of"
TRAINED_AS_OF = "trained_as_of"

#: Producers that are not batch stages of `cvo run`.
STREAM = "stream"  # `cvo stream`
PIPELINE = "pipeline"  # the audit rows `cvo_spark.pipeline` appends for every stage run


@dataclass(frozen=True)
class TableSpec:
    """One registered table.

    ``modes[0]`` is the mode `TableStore.write` uses unless told otherwise; a producer
    that writes differently (the stream's insert into `decisions`) names one of the others.
    ``merge_schema``: columns added to the schema later are added to the table (older
    partitions read null) instead of failing the write. ``match_on``: what an
    ``insert_new`` compares to find the rows a table already holds (empty: every column,
    null-safe: an event log without an id, where a re-sent event is a duplicate).
    """

    name: str
    layer: Literal["silver", "gold"]
    keys: tuple[str, ...]
    producers: tuple[str, ...]
    modes: tuple[WriteMode, ...]
    partition: str | None = None
    schema_ref: str | None = None
    merge_schema: bool = False
    match_on: tuple[str, ...] = ()
    note: str = ""

    @property
    def mode(self) -> WriteMode:
        return self.modes[0]

    @property
    def qualified(self) -> str:
        return f"{self.layer}.{self.name}"

    def columns(self) -> tuple[str, ...] | None:
        """The table's columns in order (None: the columns are the producer's, e.g. the
        model features of a training frame)."""
        schema = resolve_schema(self.schema_ref)
        if schema is None:
            return None
        return tuple(schema.fieldNames()) if isinstance(schema, StructType) else tuple(schema)


@cache
def resolve_schema(ref: str | None) -> StructType | tuple[str, ...] | None:
    """The object a ``"module:ATTRIBUTE"`` or ``"module:MAPPING[key]"`` reference names."""
    if ref is None:
        return None
    module, _, attribute = ref.partition(":")
    attribute, _, key = attribute.partition("[")
    value = getattr(importlib.import_module(module), attribute)
    if key:
        value = value[key.rstrip("]")]
    if not isinstance(value, StructType | tuple):
        raise TypeError(f"schema reference {ref} is a {type(value).__name__}, not a StructType or tuple")
    return value


def _silver(name: str, keys: tuple[str, ...], mode: WriteMode = "overwrite") -> TableSpec:
    # Silver is bronze validated: the input contract's schema, rebuilt by ingest on every
    # run (the append-only event stream gets an insert-only MERGE instead).
    return TableSpec(
        name, "silver", keys, ("ingest",), (mode,), schema_ref=f"cvo_spark.core.schemas:INPUT_SCHEMAS[{name}]"
    )


def _gold(
    name: str,
    keys: tuple[str, ...],
    producer: str,
    schema_ref: str | None,
    *,
    modes: tuple[WriteMode, ...] = ("overwrite_partition",),
    partition: str | None = AS_OF,
    merge_schema: bool = False,
    producers: tuple[str, ...] = (),
    match_on: tuple[str, ...] = (),
    note: str = "",
) -> TableSpec:
    return TableSpec(
        name, "gold", keys, (producer, *producers), modes, partition, schema_ref, merge_schema, match_on, note
    )


_SEG = "cvo_spark.segments.stage"
_TABLES: tuple[TableSpec, ...] = (
    # ------------------------------------------------------------------ silver (ingest)
    _silver("subscribers", ("subscriber_id",)),
    _silver("usage_daily", ("subscriber_id", "usage_date")),
    _silver("recharges", ("subscriber_id", "recharge_ts")),
    _silver("purchases", ("subscriber_id", "purchase_ts", "product_id")),
    _silver("quota_events", ("subscriber_id", "event_ts", "event_type"), "insert_new"),
    _silver("offer_history", ("subscriber_id", "offer_id", "channel", "contacted_ts")),
    _silver("b2b_accounts", ("account_id",)),
    _silver("b2b_messages", ("account_id", "message_ts", "channel")),
    _silver("consents", ("subscriber_id", "channel", "updated_ts")),
    _silver("channel_responses", ("decision_id", "event", "event_ts")),
    # ------------------------------------------------------------------ gold
    _gold(
        "quarantine",
        ("source_table", "raw", "as_of"),
        "ingest",
        "cvo_spark.core.schemas:OUTPUT_SCHEMAS[quarantine]",
    ),
    _gold(
        "runs",
        ("run_id", "stage"),
        PIPELINE,
        "cvo_spark.core.schemas:OUTPUT_SCHEMAS[runs]",
        modes=("append",),
        partition=None,
    ),
    _gold(
        "features", ("subscriber_id", "as_of"), "features", "cvo_spark.features.subscriber:FEATURES_SCHEMA"
    ),
    _gold("b2b_features", ("account_id", "as_of"), "features", "cvo_spark.features.b2b:B2B_FEATURES_SCHEMA"),
    _gold("segments", ("subscriber_id", "as_of"), "segments", f"{_SEG}:SEGMENTS_SCHEMA"),
    _gold("segment_profiles", ("as_of", "persona_id", "value_tier"), "segments", f"{_SEG}:PROFILES_SCHEMA"),
    _gold("persona_k_selection", ("as_of", "k"), "segments", f"{_SEG}:K_SELECTION_SCHEMA"),
    _gold(
        "persona_migration",
        ("as_of", "from_persona_id", "to_persona_id"),
        "segments",
        f"{_SEG}:MIGRATION_SCHEMA",
    ),
    _gold("b2b_segments", ("account_id", "as_of"), "segments", f"{_SEG}:B2B_SEGMENTS_SCHEMA"),
    _gold("b2b_profiles", ("as_of", "cluster_id"), "segments", f"{_SEG}:B2B_PROFILES_SCHEMA"),
    _gold("b2b_concentration", ("as_of", "metric"), "segments", f"{_SEG}:B2B_CONCENTRATION_SCHEMA"),
    _gold("b2b_lorenz", ("as_of", "account_share"), "segments", f"{_SEG}:B2B_LORENZ_SCHEMA"),
    _gold(
        "training_frames",
        ("trained_as_of", "subscriber_id", "snapshot_date"),
        "train",
        None,
        partition=TRAINED_AS_OF,
        merge_schema=True,
        note="columns: the model features and labels of that training run",
    ),
    _gold(
        "uplift_training_frames",
        ("trained_as_of", "subscriber_id", "offer_id", "channel", "contacted_ts"),
        "train",
        None,
        partition=TRAINED_AS_OF,
        merge_schema=True,
        note="columns: the uplift model's rows of that training run",
    ),
    _gold(
        "model_evaluations",
        ("as_of", "trained_at", "target", "model_kind", "metric"),
        "train",
        "cvo_spark.models.train_stage:EVALUATIONS_SCHEMA",
    ),
    _gold(
        "model_curves",
        ("as_of", "trained_at", "target", "curve", "bucket"),
        "train",
        "cvo_spark.models.train_stage:CURVES_SCHEMA",
    ),
    _gold("scores", ("subscriber_id", "as_of"), "score", "cvo_spark.models.score_stage:SCORES_SCHEMA"),
    _gold(
        "offer_scores",
        ("subscriber_id", "offer_id", "channel", "as_of"),
        "score",
        "cvo_spark.models.uplift_stage:OFFER_SCORES_SCHEMA",
    ),
    _gold(
        "offers_staging",
        ("subscriber_id", "channel", "rank", "as_of"),
        "offers",
        "cvo_spark.offers.engine:OFFERS_SCHEMA",
        merge_schema=True,
    ),
    _gold(
        "offers",
        ("subscriber_id", "channel", "rank", "as_of"),
        "offers",
        "cvo_spark.offers.engine:OFFERS_SCHEMA",
        merge_schema=True,
    ),
    _gold(
        "campaign_power",
        ("as_of", "campaign_id"),
        "offers",
        "cvo_spark.offers.campaigns:CAMPAIGN_POWER_SCHEMA",
    ),
    _gold(
        "allocation_constraints",
        ("as_of", "constraint"),
        "offers",
        "cvo_spark.offers.stage:ALLOCATION_SCHEMA",
    ),
    _gold(
        "decisions",
        ("decision_id",),
        "offers",
        "cvo_spark.offers.publish:DECISIONS_COLUMNS",
        # The batch replaces its own rows of the day; the stream inserts its decisions once.
        modes=("overwrite_partition", "insert_new"),
        merge_schema=True,
        producers=(STREAM,),
        match_on=("decision_id",),
    ),
    _gold(
        "trigger_offers",
        ("subscriber_id", "event_type", "event_ts"),
        STREAM,
        "cvo_spark.stream.triggers:TRIGGER_OFFERS_SCHEMA",
        modes=("append",),
        partition=None,
    ),
    _gold(
        "campaign_results",
        ("as_of", "offer_id", "channel", "period", "segment"),
        "measure",
        "cvo_spark.measure.campaigns:CAMPAIGN_RESULTS_SCHEMA",
        merge_schema=True,
    ),
    _gold(
        "decision_results",
        ("as_of", "campaign_id", "offer_id", "channel", "period", "segment", "baseline"),
        "measure",
        "cvo_spark.measure.decisions:DECISION_RESULTS_SCHEMA",
        merge_schema=True,
    ),
    _gold(
        "policy_evaluations",
        ("as_of", "policy", "estimator"),
        "evaluate-policy",
        "cvo_spark.policy.stage:POLICY_EVALUATIONS_SCHEMA",
        # A table written before the support columns existed gains them (older partitions
        # read null) instead of refusing the write.
        merge_schema=True,
    ),
)

#: name -> spec. Silver and gold names are distinct, so a name alone identifies a table;
#: bronze tables (the input contract, written by the sources) are addressed by `bronze(...)`.
TABLES: dict[str, TableSpec] = {t.name: t for t in _TABLES}
if len(TABLES) != len(_TABLES):  # pragma: no cover - a registry edit that repeats a name
    raise RuntimeError("table registry: a table name is registered twice")


def table(name: str) -> TableSpec:
    """The spec of a registered table; an unknown name is an error naming it."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}: not in the registry (cvo_spark/core/tables.py)") from None


def bronze(name: str) -> str:
    """The qualified name of a bronze input table, as stage declarations write it."""
    return f"bronze.{name}"


def written_by(stage: str) -> tuple[str, ...]:
    """The tables `stage` produces, in registry order."""
    return tuple(t.name for t in _TABLES if stage in t.producers)


def producers(names: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """name -> the stages producing it (bronze tables: none, the sources write them)."""
    return {n: () if n.startswith("bronze.") else table(n).producers for n in names}


# ---------------------------------------------------------------------- partition predicates
# The one place an as-of comparison is written: the store's read helpers use these, and
# so do the pure transforms that cut a history of snapshots point in time (invariant 1).
def partition_is(as_of: date, column: str = AS_OF) -> Column:
    """Rows of the partition of `as_of`."""
    return F.col(column) == F.lit(as_of)


def partitions_through(as_of: date, column: str = AS_OF) -> Column:
    """Rows of the partitions dated on or before `as_of` (what was known on that day)."""
    return F.col(column) <= F.lit(as_of)


def partitions_before(as_of: date, column: str = AS_OF) -> Column:
    """Rows of the partitions dated strictly before `as_of`."""
    return F.col(column) < F.lit(as_of)


def partition_condition(as_of: date, column: str = AS_OF) -> str:
    """The SQL text of `partition_is` (Delta's ``replaceWhere`` takes a string)."""
    return f"{column} = DATE'{as_of.isoformat()}'"
