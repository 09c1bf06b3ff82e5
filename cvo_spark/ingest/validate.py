"""Bronze -> silver validation: every input row either reaches silver or quarantine.

Pure transforms (no IO, no config); `cvo_spark.ingest.stage` reads and writes. One
call of `tag_rows` per input table gives a *tagged* frame: one row per distinct bronze
row, typed to the contract, with

- ``_copies``: how many identical bronze rows it stands for (exact duplicates);
- ``_reason``: null for a good row, else every problem found, joined by ``'; '``, each
  written ``<table>.<column>: <problem>`` (e.g. ``usage_daily.voice_revenue: not a
  number: 'abc'``) — all problems rather than the first, so one look at quarantine
  says everything wrong with a row;
- ``_raw``: for bad rows only, the JSON of the bronze row (every bronze column,
  explicit nulls kept), null for good rows so nothing is serialised needlessly.

Rules (DESIGN invariant 6, "never silently dropped"):

- exact duplicates: rows identical in every contract column are one row; the copies
  beyond the first are *removed and counted* (``_copies - 1``), not quarantined, so
  ``rows_in = silver + quarantined + duplicates`` holds per table. Extra bronze columns
  do not make rows distinct (the contract ignores them); the quarantined copy of such a
  group is the one whose raw JSON sorts first, so it is deterministic.
- unparsable values: a bronze string column where the contract has a number, date,
  timestamp or boolean is cast with ``try_cast``; a non-null value that fails is
  quarantined ("not a number: 'abc'"). Any other type difference that is not a numeric
  widening is a `SchemaMismatchError` for the whole table.
- null or empty (blank) key; a missing value in a column the contract does not mark
  nullable (`NULLABLE_COLUMNS`); a negative or non-finite amount or usage (every numeric
  input column is a money amount, a count or a quantity); an enum value outside
  `ENUMS` / `SUBSCRIBER_CHANNELS`.
- event time, churn_date or accepted_ts after the run's clock plus a tolerance (a DATE
  counts from its midnight UTC; `HAPPENED_COLUMNS`); any date or timestamp column
  before the earliest plausible date (`EARLIEST_EVENT_DATE`, 1990-01-01 by default: a
  1900 or 0001 date is a source system's placeholder, not a real activation or event);
  for subscriber tables, event
  date before the subscriber's activation date.
- owner unknown: a subscriber id not among the *valid* subscribers (silver), an
  account_id not among the valid b2b accounts. A row whose subscriber was itself
  quarantined is therefore quarantined too, with that reason — downstream joins would
  otherwise drop it silently. A channel response whose decision_id is not in gold
  `decisions`, or dated before the decision's day, is quarantined the same way (silver is
  rebuilt from bronze on every run, so a response that arrived before its decision was
  logged reaches silver on the next run).
- contradictions inside a row (`_consistency_rules`): churn_date before activation_date,
  a churned subscriber without churn_date, accepted_ts before contacted_ts, set on an
  offer not accepted or missing on one accepted, remaining_quota_pct above 100.
- key conflict: in ``subscribers`` and ``b2b_accounts`` the key must be unique; distinct
  rows sharing one key are all quarantined (ingest cannot know which is right). This
  also keeps the owner lookup a one-to-one join.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BooleanType,
    DataType,
    DateType,
    DoubleType,
    LongType,
    StringType,
    TimestampType,
)

from cvo_spark.core.errors import CvoError, SchemaMismatchError
from cvo_spark.core.io import contract_problems, with_optional_columns
from cvo_spark.core.privacy import pseudonymize_column
from cvo_spark.core.schemas import (
    ENUMS,
    EVENT_TIME_COLUMN,
    INPUT_SCHEMAS,
    KEY_COLUMN,
    OUTPUT_SCHEMAS,
    SUBSCRIBER_CHANNELS,
)
from cvo_spark.core.util import first_row, require_columns

log = logging.getLogger(__name__)

#: Columns the input contract marks ``null`` (DESIGN.md); every other column is required.
NULLABLE_COLUMNS: frozenset[tuple[str, str]] = frozenset(
    {
        ("subscribers", "churn_date"),
        ("quota_events", "remaining_quota_pct"),
        ("quota_events", "expiry_ts"),
        ("offer_history", "accepted_ts"),
        ("offer_history", "propensity"),  # optional: null = the logging probability is unknown
        ("offer_history", "decision_id"),
    }
)

#: Allowed values per (table, column): the contract enums plus the subscriber channels.
ALLOWED_VALUES: dict[tuple[str, str], tuple[str, ...]] = {
    **ENUMS,
    **{(t, "channel"): SUBSCRIBER_CHANNELS for t in ("recharges", "purchases", "offer_history", "consents")},
}

#: Tables whose key is a subscriber id (pseudonymised when privacy is on).
SUBSCRIBER_TABLES: tuple[str, ...] = tuple(t for t, k in KEY_COLUMN.items() if k == "subscriber_id")

#: The table whose valid keys a row's key must be found in. A channel response belongs to
#: a decision of the engine's own log (gold `decisions`), not to an input table.
OWNER_TABLE: dict[str, str] = {
    **{t: "subscribers" for t in SUBSCRIBER_TABLES if t != "subscribers"},
    "b2b_messages": "b2b_accounts",
    "channel_responses": "decisions",
}
#: The owner's columns `tag_rows` needs besides its key: a subscriber's activation date, a
#: decision's day (``as_of``; a response cannot come before the decision was published).
OWNER_COLUMNS: dict[str, tuple[str, ...]] = {
    "subscribers": ("activation_date",),
    "b2b_accounts": (),
    "decisions": ("as_of",),
}

#: Tables whose key identifies one row (owners of the other tables).
UNIQUE_KEY_TABLES: tuple[str, ...] = ("subscribers", "b2b_accounts")

#: Validation order: owners first, so their valid keys exist for the rest.
INGEST_ORDER: tuple[str, ...] = (
    *UNIQUE_KEY_TABLES,
    *(t for t in INPUT_SCHEMAS if t not in UNIQUE_KEY_TABLES),
)

#: Contract types a bronze string column may hold (parsed row by row), and what a
#: value that does not parse is called in the quarantine reason.
_PARSE_PROBLEM: dict[type, str] = {
    DoubleType: "not a number",
    LongType: "not an integer",
    DateType: "not a date",
    TimestampType: "not a timestamp",
    BooleanType: "not a boolean",
}

#: Dates before this are placeholders (1900-01-01, 0001-01-01), not events: quarantined.
#: The config default `ingest.earliest_event_date` is the same date.
EARLIEST_EVENT_DATE = date(1990, 1, 1)

_RAW_PREFIX = "_bronze_"
_OWNER_KNOWN = "_owner_known"
_OWNER_ACTIVATION = "_owner_activation_date"


class AccountingIdentityError(CvoError):
    """Rows in != silver + quarantined + removed duplicates for an input table."""


def _c(name: str) -> Column:
    """A column by name, safe for names with dots or spaces (extra bronze columns)."""
    return F.col(f"`{name}`")


def _castable_from_string(expected: DataType) -> bool:
    return type(expected) in _PARSE_PROBLEM


def check_bronze_schema(bronze: DataFrame, table: str, warn: bool = True) -> list[str]:
    """Check a bronze table against the input contract; return its extra columns.

    A missing required column, or a type that is neither the contract's, a numeric
    widening, nor a string the contract type can be parsed from, raises
    `SchemaMismatchError` naming table and column. Extra columns are logged as a warning
    (unless `warn` is false) and returned (they are ignored, but kept in quarantine's
    raw JSON).
    """
    missing, incompatible, extra = contract_problems(bronze, table)
    if missing:
        raise SchemaMismatchError(f"table {table}: missing required column {missing[0]}")
    actual = {f.name: f.dataType for f in bronze.schema.fields}
    for problem in incompatible:
        column = problem.split(" (expected ", 1)[0]
        expected = INPUT_SCHEMAS[table][column].dataType
        # A string column is parsed row by row; rows that do not parse go to quarantine.
        if not (isinstance(actual[column], StringType) and _castable_from_string(expected)):
            raise SchemaMismatchError(f"table {table}: incompatible type for column {problem}")
    if extra and warn:
        log.warning("table %s: ignoring extra column(s) %s", table, ", ".join(extra))
    return extra


def with_pseudonymized_key(bronze: DataFrame, table: str, key: bytes) -> DataFrame:
    """Replace the subscriber id of a subscriber table by ``HMAC-SHA256(key, id)`` hex.

    Needs the table's key column. Null and blank ids are left as they are (they carry
    no identity and must still be quarantined as such); tables not keyed by subscriber
    (b2b) are returned unchanged. Done before anything is serialised, so neither silver
    nor quarantine's raw JSON ever holds a raw id.
    """
    if table not in SUBSCRIBER_TABLES:
        return bronze
    key_col = KEY_COLUMN[table]
    require_columns(bronze, [key_col], f"with_pseudonymized_key({table})")
    blank = _c(key_col).isNull() | (F.trim(_c(key_col)) == "")
    return bronze.withColumn(
        key_col, F.when(blank, _c(key_col)).otherwise(pseudonymize_column(_c(key_col), key))
    )


def _raw_json(columns: list[str]) -> Column:
    return F.to_json(F.struct(*[_c(c) for c in columns]), {"ignoreNullFields": "false"})


def _deduplicated(bronze: DataFrame, table: str, extras: list[str]) -> DataFrame:
    """One row per distinct contract row with ``_copies``; ``_raw`` too when extras exist.

    The rows are shuffled once, by the table's key: that partitioning satisfies both the
    de-duplication (the key is one of the grouping columns) and the later owner join and
    key-conflict window (both on the key), which would otherwise shuffle the whole table
    again, each. The map-side partial aggregate that a plain groupBy plans first is gone
    too: on rows that are almost all distinct it only builds a hash map to spill.
    """
    contract = INPUT_SCHEMAS[table].fieldNames()
    aggs = [F.count(F.lit(1)).alias("_copies")]
    if extras:
        # Extras do not make rows distinct; the smallest raw JSON is a deterministic pick.
        bronze = bronze.withColumn("_raw", _raw_json(bronze.columns))
        aggs.append(F.min("_raw").alias("_raw"))
    return bronze.repartition(_c(KEY_COLUMN[table])).groupBy(*[_c(c) for c in contract]).agg(*aggs)


def _typed(deduped: DataFrame, table: str, bronze_types: dict[str, DataType]) -> tuple[DataFrame, set[str]]:
    """Cast contract columns to the contract types; keep the bronze value of recast ones."""
    recast: set[str] = set()
    cols: list[Column] = []
    for field in INPUT_SCHEMAS[table].fields:
        name, actual = field.name, bronze_types[field.name]
        if actual == field.dataType:
            cols.append(_c(name))
            continue
        recast.add(name)
        cols.append(_c(name).alias(_RAW_PREFIX + name))
        if isinstance(actual, StringType):
            cols.append(_c(name).try_cast(field.dataType).alias(name))
        else:  # a numeric widening, safe to cast
            cols.append(_c(name).cast(field.dataType).alias(name))
    extra = [c for c in ("_copies", "_raw") if c in deduped.columns]
    return deduped.select(*cols, *extra), recast


def _bronze_value(name: str, recast: set[str]) -> Column:
    return _c(_RAW_PREFIX + name) if name in recast else _c(name)


def _quoted(value: Column) -> Column:
    return F.concat(F.lit("'"), value.cast("string"), F.lit("'"))


def _value_rules(table: str, recast: set[str]) -> list[tuple[Column, Column]]:
    """(flag, message) for problems visible in the row itself (types, nulls, ranges, enums)."""
    key = KEY_COLUMN[table]
    rules: list[tuple[Column, Column]] = [
        (_c(key).isNull() | (F.trim(_c(key)) == ""), F.lit(f"{table}.{key}: null or empty key"))
    ]
    for field in INPUT_SCHEMAS[table].fields:
        name, dtype = field.name, field.dataType
        where = f"{table}.{name}: "
        bronze = _bronze_value(name, recast)
        if name != key and (table, name) not in NULLABLE_COLUMNS:
            rules.append((bronze.isNull(), F.lit(where + "missing value")))
        if name in recast and _castable_from_string(dtype):
            problem = _PARSE_PROBLEM[type(dtype)]
            rules.append(
                (
                    bronze.isNotNull() & _c(name).isNull(),
                    F.concat(F.lit(f"{where}{problem}: "), _quoted(bronze)),
                )
            )
        if isinstance(dtype, (DoubleType, LongType)):
            rules.append((_c(name) < 0, F.concat(F.lit(where + "negative value "), _c(name).cast("string"))))
        if isinstance(dtype, DoubleType):
            not_finite = F.isnan(_c(name)) | (_c(name) == F.lit(float("inf")))
            rules.append(
                (not_finite, F.concat(F.lit(where + "not a finite number "), _c(name).cast("string")))
            )
        allowed = ALLOWED_VALUES.get((table, name))
        if allowed:
            unknown = _c(name).isNotNull() & ~_c(name).isin(*allowed)
            rules.append((unknown, F.concat(F.lit(where + "unknown value "), _quoted(_c(name)))))
    return rules


#: Columns that record something that already happened, besides each table's event time:
#: a value in the future is as wrong there as in the event time. (``expiry_ts`` is not
#: one: a quota legitimately expires after the run.)
HAPPENED_COLUMNS: dict[str, tuple[str, ...]] = {
    table: (event, *{"subscribers": ("churn_date",), "offer_history": ("accepted_ts",)}.get(table, ()))
    for table, event in EVENT_TIME_COLUMN.items()
}


def _future_rules(table: str, now: datetime, future_tolerance_hours: float) -> list[tuple[Column, Column]]:
    """(flag, message) per column of `HAPPENED_COLUMNS` holding a time after now + tolerance."""
    # An aware datetime literal is an instant; a naive one would be read in the driver's zone.
    now_utc = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    limit = now_utc + timedelta(hours=future_tolerance_hours)
    return [
        (
            _c(column).cast("timestamp") > F.lit(limit),
            F.concat(F.lit(f"{table}.{column}: in the future: "), _c(column).cast("string")),
        )
        for column in HAPPENED_COLUMNS[table]
    ]


def _past_rules(table: str, earliest: date) -> list[tuple[Column, Column]]:
    """(flag, message) for every date/timestamp column holding a value before `earliest`."""
    rules = []
    for field in INPUT_SCHEMAS[table].fields:
        if isinstance(field.dataType, (DateType, TimestampType)):
            flag = F.to_date(_c(field.name)) < F.lit(earliest)
            message = F.concat(
                F.lit(f"{table}.{field.name}: before the earliest plausible date {earliest}: "),
                _c(field.name).cast("string"),
            )
            rules.append((flag, message))
    return rules


def _not_before(table: str, later: str, earlier: str) -> tuple[Column, Column]:
    """(flag, message) for a row whose `later` column is before its `earlier` column."""
    return (
        _c(later) < _c(earlier),
        F.concat(
            F.lit(f"{table}.{later}: before {earlier} "),
            _c(earlier).cast("string"),
            F.lit(": "),
            _c(later).cast("string"),
        ),
    )


def _consistency_rules(table: str) -> list[tuple[Column, Column]]:
    """(flag, message) for values that are each valid but contradict each other in the row.

    A churn before activation, an acceptance before the contact or marked on an offer
    that was not accepted, and a remaining quota above 100%: no downstream rule can tell
    which of the two values is wrong, so the row is quarantined rather than guessed at.
    """
    if table == "subscribers":
        return [
            _not_before("subscribers", "churn_date", "activation_date"),
            (
                (_c("status") == "churned") & _c("churn_date").isNull(),
                F.lit("subscribers.churn_date: missing for a churned subscriber (when they left is unknown)"),
            ),
        ]
    if table == "offer_history":
        return [
            _not_before("offer_history", "accepted_ts", "contacted_ts"),
            (
                (_c("accepted") == F.lit(False)) & _c("accepted_ts").isNotNull(),
                F.lit("offer_history.accepted_ts: set on an offer that was not accepted"),
            ),
            (
                # Features count an acceptance only by its time: without one it would vanish.
                (_c("accepted") == F.lit(True)) & _c("accepted_ts").isNull(),
                F.lit(
                    "offer_history.accepted_ts: missing for an accepted offer "
                    "(when it was accepted is unknown)"
                ),
            ),
            (
                # A logged choice had a positive probability, at most 1: 0 would make any
                # off-policy weight infinite, above 1 is not a probability.
                (_c("propensity") == 0) | (_c("propensity") > 1),
                F.concat(
                    F.lit("offer_history.propensity: not a probability in (0, 1]: "),
                    _c("propensity").cast("string"),
                ),
            ),
        ]
    if table == "quota_events":
        return [
            (
                _c("remaining_quota_pct") > 100,
                F.concat(
                    F.lit("quota_events.remaining_quota_pct: above 100: "),
                    _c("remaining_quota_pct").cast("string"),
                ),
            )
        ]
    return []


def _with_owner(
    tagged: DataFrame, table: str, owners: DataFrame
) -> tuple[DataFrame, list[tuple[Column, Column]]]:
    """Left-join the valid owner keys; rules for unknown owner and event before activation."""
    key = KEY_COLUMN[table]
    owner_table = OWNER_TABLE[table]
    require_columns(owners, [key, *OWNER_COLUMNS[owner_table]], f"tag_rows({table}) owners")
    if owner_table == "decisions":
        # The decision log may repeat an id (a re-published day): one row per id, its first day,
        # so the lookup stays a one-to-one join.
        owners = owners.groupBy(_c(key)).agg(F.min("as_of").alias("as_of"))
    since = {"subscribers": "activation_date", "decisions": "as_of"}.get(owner_table)
    lookup = owners.select(
        _c(key),
        F.lit(True).alias(_OWNER_KNOWN),
        *([_c(since).alias(_OWNER_ACTIVATION)] if since else []),
    )
    joined = tagged.join(lookup, on=key, how="left")
    has_key = _c(key).isNotNull() & (F.trim(_c(key)) != "")
    what = {"subscribers": "subscriber", "decisions": "decision"}.get(owner_table, "account")
    where = "gold decisions" if owner_table == "decisions" else f"valid {owner_table}"
    rules = [
        (
            has_key & _c(_OWNER_KNOWN).isNull(),
            F.lit(f"{table}.{key}: unknown {what} (not among {where})"),
        )
    ]
    if since:
        event = EVENT_TIME_COLUMN[table]
        label = "activation_date" if owner_table == "subscribers" else "the decision's as_of"
        before = F.to_date(_c(event)) < _c(_OWNER_ACTIVATION)
        message = F.concat(F.lit(f"{table}.{event}: before {label} "), _c(_OWNER_ACTIVATION).cast("string"))
        rules.append((before, message))
    return joined, rules


def _key_conflict_rule(table: str) -> tuple[Column, Column]:
    key = KEY_COLUMN[table]
    rows_per_key = F.count(F.lit(1)).over(Window.partitionBy(_c(key)))
    has_key = _c(key).isNotNull() & (F.trim(_c(key)) != "")
    message = F.concat(
        F.lit(f"{table}.{key}: same key on "), rows_per_key.cast("string"), F.lit(" different rows")
    )
    return has_key & (rows_per_key > 1), message


def tag_rows(
    bronze: DataFrame,
    table: str,
    now: datetime,
    future_tolerance_hours: float,
    owners: DataFrame | None = None,
    pseudonym_key: bytes | None = None,
    earliest_event_date: date = EARLIEST_EVENT_DATE,
) -> DataFrame:
    """Validate one bronze table: one typed row per distinct bronze row, with its verdict.

    Parameters
    ----------
    bronze : the bronze table as read; needs the contract columns of `table` (schema
        problems raise as in `check_bronze_schema`; extra columns are ignored but kept
        in the raw JSON).
    table : input-contract table name.
    now : the run's own clock (UTC; a naive datetime is taken as UTC).
    future_tolerance_hours : events later than ``now`` plus this are quarantined.
    owners : for tables in `OWNER_TABLE`, the *valid* owner rows (silver): columns
        ``subscriber_id, activation_date`` for subscriber tables, ``account_id`` for
        b2b_messages (keys unique); for channel_responses the gold decisions
        (``decision_id, as_of``; empty when the engine has published none yet).
    pseudonym_key : when given, subscriber ids are replaced by their HMAC first.
    earliest_event_date : a date or timestamp value before this day is quarantined.

    Returns
    -------
    DataFrame
        The contract columns of `table` (contract types) plus ``_copies`` (long),
        ``_reason`` (string, null = good) and ``_raw`` (string, bad rows only). Keeps
        ``sum(_copies) = bronze row count``.
    """
    # The stage checks (and warns) once before any work; here only the extras matter.
    extras = check_bronze_schema(bronze, table, warn=False)
    bronze = with_optional_columns(bronze, table)  # absent optional columns are null
    if table in OWNER_TABLE and owners is None:
        raise ValueError(f"tag_rows({table}) needs the valid rows of {OWNER_TABLE[table]} as owners")
    if pseudonym_key is not None:
        bronze = with_pseudonymized_key(bronze, table, pseudonym_key)
    bronze_types = {f.name: f.dataType for f in bronze.schema.fields}
    tagged, recast = _typed(_deduplicated(bronze, table, extras), table, bronze_types)

    rules = (
        _value_rules(table, recast)
        + _future_rules(table, now, future_tolerance_hours)
        + _past_rules(table, earliest_event_date)
        + _consistency_rules(table)
    )
    if table in UNIQUE_KEY_TABLES:
        rules.append(_key_conflict_rule(table))
    if table in OWNER_TABLE and owners is not None:  # owners is required here (checked above)
        tagged, owner_rules = _with_owner(tagged, table, owners)
        rules += owner_rules

    # concat_ws skips the nulls of rules that did not fire; "" means no rule fired.
    reasons = F.concat_ws("; ", *[F.when(flag, message) for flag, message in rules])
    tagged = tagged.withColumn("_reason", F.when(reasons != "", reasons))
    if "_raw" not in tagged.columns:
        # Without extras the bronze row is exactly its contract columns, in bronze order.
        raw = F.to_json(
            F.struct(*[_bronze_value(c, recast).alias(c) for c in bronze.columns]),
            {"ignoreNullFields": "false"},
        )
        tagged = tagged.withColumn("_raw", F.when(_c("_reason").isNotNull(), raw))
    else:
        tagged = tagged.withColumn("_raw", F.when(_c("_reason").isNotNull(), _c("_raw")))
    contract = INPUT_SCHEMAS[table].fieldNames()
    return tagged.select(*[_c(c) for c in contract], "_copies", "_reason", "_raw")


def silver_rows(tagged: DataFrame, table: str) -> DataFrame:
    """The good rows of a tagged frame, exactly in the contract schema of `table`."""
    require_columns(tagged, ["_reason"], "silver_rows")
    return tagged.filter(_c("_reason").isNull()).select(
        *[_c(f.name).cast(f.dataType).alias(f.name) for f in INPUT_SCHEMAS[table].fields]
    )


def quarantine_rows(
    tagged: DataFrame, table: str, run_id: str, ingested_at: datetime, as_of: date
) -> DataFrame:
    """The bad rows of a tagged frame in the quarantine schema (one row per distinct bad row)."""
    require_columns(tagged, ["_reason", "_raw"], "quarantine_rows")
    values = {
        "source_table": F.lit(table),
        "reason": _c("_reason"),
        "raw": _c("_raw"),
        "run_id": F.lit(run_id),
        "ingested_at": F.lit(ingested_at),
        "as_of": F.lit(as_of),
    }
    schema = OUTPUT_SCHEMAS["quarantine"]
    return tagged.filter(_c("_reason").isNotNull()).select(
        *[values[f.name].cast(f.dataType).alias(f.name) for f in schema.fields]
    )


def count_outcomes(tagged: DataFrame) -> dict[str, int]:
    """Rows represented, silver, quarantined and removed duplicates: one aggregation.

    Returns a small dict ``{"rows", "silver", "quarantined", "duplicates"}``.
    """
    require_columns(tagged, ["_reason", "_copies"], "count_outcomes")
    good = _c("_reason").isNull()
    row = first_row(
        tagged.agg(
            F.coalesce(F.sum("_copies"), F.lit(0)).alias("rows"),
            F.count(F.when(good, 1)).alias("silver"),
            F.count(F.when(~good, 1)).alias("quarantined"),
            F.coalesce(F.sum(_c("_copies") - 1), F.lit(0)).alias("duplicates"),
        ),
        "count_outcomes",
    )
    return {k: int(row[k]) for k in ("rows", "silver", "quarantined", "duplicates")}


def check_accounting(table: str, rows_in: int, outcome: dict[str, int]) -> None:
    """Raise `AccountingIdentityError` unless rows_in = silver + quarantined + duplicates.

    An empty bronze table is not an error (``0 = 0 + 0 + 0``: a feed may legitimately
    deliver nothing, e.g. no B2B messages yet) but it is logged as a warning naming the
    table; a feed that stopped is what the publish freshness check refuses on.
    """
    if rows_in == 0:
        log.warning("table %s: bronze table is empty (0 rows in, silver will be empty)", table)
    accounted = outcome["silver"] + outcome["quarantined"] + outcome["duplicates"]
    if rows_in != accounted:
        raise AccountingIdentityError(
            f"table {table}: {rows_in} rows in but {outcome['silver']} silver + {outcome['quarantined']} "
            f"quarantined + {outcome['duplicates']} duplicates = {accounted}"
        )
