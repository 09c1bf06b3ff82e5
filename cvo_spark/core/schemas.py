"""The table contracts of ../shared/DESIGN.md as code.

Input (bronze) schemas are what `cvo generate` writes and what `ingest` checks; the
output (gold) schemas are what each stage selects before it writes, so a stage can
never leak an extra or missing column into a table that channel systems read.

Column names and types are the contract; extra input columns are ignored (with a
warning at ingest), missing or incompatible ones stop the run naming table and column.
"""

from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DataType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)


def _schema(*fields: tuple[str, DataType] | tuple[str, DataType, bool]) -> StructType:
    out = []
    for f in fields:
        name, dtype = f[0], f[1]
        nullable = f[2] if len(f) > 2 else True
        out.append(StructField(name, dtype, nullable))
    return StructType(out)


S, D, DT, TS, L, INT, B = (
    StringType(),
    DoubleType(),
    DateType(),
    TimestampType(),
    LongType(),
    IntegerType(),
    BooleanType(),
)

# --------------------------------------------------------------------------- bronze
INPUT_SCHEMAS: dict[str, StructType] = {
    "subscribers": _schema(
        ("subscriber_id", S),
        ("activation_date", DT),
        ("payment_type", S),
        ("region", S),
        ("device_tier", S),
        ("status", S),
        ("churn_date", DT),
    ),
    "usage_daily": _schema(
        ("subscriber_id", S),
        ("usage_date", DT),
        ("voice_minutes", D),
        ("voice_revenue", D),
        ("sms_count", L),
        ("sms_revenue", D),
        ("data_mb", D),
        ("data_revenue", D),
        ("digital_revenue", D),
    ),
    "recharges": _schema(
        ("subscriber_id", S),
        ("recharge_ts", TS),
        ("amount", D),
        ("channel", S),
    ),
    "purchases": _schema(
        ("subscriber_id", S),
        ("purchase_ts", TS),
        ("product_id", S),
        ("price", D),
        ("channel", S),
    ),
    "quota_events": _schema(
        ("subscriber_id", S),
        ("event_ts", TS),
        ("event_type", S),
        ("remaining_quota_pct", D),
        ("expiry_ts", TS),
    ),
    "offer_history": _schema(
        ("subscriber_id", S),
        ("offer_id", S),
        ("channel", S),
        ("contacted_ts", TS),
        ("group", S),
        ("accepted", B),
        ("accepted_ts", TS),
        ("revenue", D),
        ("propensity", D),
        ("decision_id", S),
    ),
    "b2b_accounts": _schema(
        ("account_id", S),
        ("account_name", S),
        ("industry", S),
        ("monthly_revenue", D),
        ("bandwidth_mbps", D),
        ("products", ArrayType(S)),
        ("contract_start", DT),
    ),
    "b2b_messages": _schema(
        ("account_id", S),
        ("message_ts", TS),
        ("channel", S),
        ("status", S),
        ("charged", B),
        ("price", D),
    ),
    # Optional input (OPTIONAL_INPUT_TABLES): opt-outs and do-not-disturb per channel.
    "consents": _schema(
        ("subscriber_id", S),
        ("channel", S),
        ("allowed", B),
        ("updated_ts", TS),
    ),
    # Optional input: what subscribers did with the engine's own decisions (decision_id from
    # the channel exports and gold `decisions`).
    "channel_responses": _schema(
        ("decision_id", S),
        ("event", S),
        ("event_ts", TS),
    ),
}

#: The event-time column of each input table: what "as of D" and freshness look at.
EVENT_TIME_COLUMN: dict[str, str] = {
    "subscribers": "activation_date",
    "usage_daily": "usage_date",
    "recharges": "recharge_ts",
    "purchases": "purchase_ts",
    "quota_events": "event_ts",
    "offer_history": "contacted_ts",
    "b2b_accounts": "contract_start",
    "b2b_messages": "message_ts",
    "consents": "updated_ts",
    "channel_responses": "event_ts",
}

#: Input tables a source may not send at all; absent, they mean what the config says
#: (DESIGN: "absent means what the config says, never a silent allowed").
OPTIONAL_INPUT_TABLES: tuple[str, ...] = ("consents", "channel_responses")

#: Contract columns a source may leave out: absent in bronze, they are null in silver (DESIGN:
#: offer_history's propensity is the logging policy's probability of the logged choice,
#: null = unknown; decision_id links a row to the engine's decision log).
OPTIONAL_INPUT_COLUMNS: dict[str, tuple[str, ...]] = {"offer_history": ("propensity", "decision_id")}
#: The input contract without its optional columns: what every source must send.
REQUIRED_INPUT_SCHEMAS: dict[str, StructType] = {
    name: StructType([f for f in schema.fields if f.name not in OPTIONAL_INPUT_COLUMNS.get(name, ())])
    for name, schema in INPUT_SCHEMAS.items()
}

#: The key that identifies the owner of a row (null or empty keys are quarantined).
KEY_COLUMN: dict[str, str] = {
    name: ("account_id" if name.startswith("b2b") else "subscriber_id") for name in INPUT_SCHEMAS
} | {"channel_responses": "decision_id"}

#: What a channel reports about a decision it delivered (`channel_responses.event`).
RESPONSE_EVENTS: tuple[str, ...] = ("delivered", "opened", "clicked", "accepted", "declined")

#: Allowed values of the enumerated input columns.
ENUMS: dict[tuple[str, str], tuple[str, ...]] = {
    ("subscribers", "payment_type"): ("prepaid", "postpaid"),
    ("subscribers", "device_tier"): ("low", "mid", "high"),
    ("subscribers", "status"): ("active", "churned"),
    ("quota_events", "event_type"): ("recharge", "quota_low", "quota_expiring", "package_expired"),
    ("offer_history", "group"): ("treatment", "control"),
    ("b2b_messages", "channel"): ("whatsapp", "sms", "email", "voice"),
    ("b2b_messages", "status"): ("delivered", "failed", "pending"),
    ("channel_responses", "event"): RESPONSE_EVENTS,
}

#: Channels subscribers buy and recharge through, and are contacted on.
SUBSCRIBER_CHANNELS: tuple[str, ...] = ("sms", "ussd", "app", "ecommerce", "banking", "call_centre", "retail")

#: Product categories; a product_id is "<category>_<name>" (e.g. "data_10gb").
PRODUCT_CATEGORIES: tuple[str, ...] = ("data", "voice", "sms", "digital", "bundle")

# --------------------------------------------------------------------------- gold
OUTPUT_SCHEMAS: dict[str, StructType] = {
    "quarantine": _schema(
        ("source_table", S),
        ("reason", S),
        ("raw", S),
        ("run_id", S),
        ("ingested_at", TS),
        # The ingest run's as_of: the partition a re-run replaces (idempotent quarantine).
        ("as_of", DT),
    ),
    "runs": _schema(
        ("run_id", S),
        ("stage", S),
        ("as_of", DT),
        ("status", S),
        ("row_counts", MapType(S, L)),
        ("checks", MapType(S, S)),
        ("message", S),
        ("started_at", TS),
        ("finished_at", TS),
    ),
}

#: Tables each stage reads from bronze/silver; a missing one stops the run naming it.
SILVER_TABLES: tuple[str, ...] = tuple(t for t in INPUT_SCHEMAS if t not in OPTIONAL_INPUT_TABLES)


def input_schema(table: str) -> StructType:
    """Return the contract schema of an input table, naming it when unknown."""
    try:
        return INPUT_SCHEMAS[table]
    except KeyError:
        raise KeyError(f"unknown input table {table!r}; known: {', '.join(INPUT_SCHEMAS)}") from None
