"""Ingest: bronze -> silver with quarantine, accounting identity, idempotence, privacy."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import UTC, date, datetime

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StringType, StructField, StructType

from cvo_spark.core.config import parse_config
from cvo_spark.core.errors import ConfigError, MissingTableError, SchemaMismatchError
from cvo_spark.core.io import TableStore
from cvo_spark.core.privacy import load_pseudonym_key, pseudonymize_column
from cvo_spark.core.schemas import (
    INPUT_SCHEMAS,
    OPTIONAL_INPUT_TABLES,
    OUTPUT_SCHEMAS,
    REQUIRED_INPUT_SCHEMAS,
)
from cvo_spark.core.stage import StageContext
from cvo_spark.ingest import stage as ingest_stage
from cvo_spark.ingest.stage import IdModeChangedError
from cvo_spark.ingest.validate import (
    check_bronze_schema,
    count_outcomes,
    quarantine_rows,
    silver_rows,
    tag_rows,
)
from cvo_spark.pipeline import run_stage

NOW = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
TOL = 24.0
AS_OF = date(2026, 6, 30)
KEY_ENV = "CVO_TEST_PSEUDONYM_KEY"


def ts(text: str) -> datetime:
    """A UTC instant (aware, so Spark does not read it in the driver's zone)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def with_string_columns(table: str, *names: str) -> StructType:
    """The contract schema of `table` with `names` stored as strings (a sloppy bronze)."""
    return StructType(
        [StructField(f.name, StringType()) if f.name in names else f for f in INPUT_SCHEMAS[table].fields]
    )


@pytest.fixture(scope="module")
def subscriber_owners(spark):
    return spark.createDataFrame(
        [("s1", date(2026, 1, 1)), ("s2", date(2026, 3, 1))], "subscriber_id string, activation_date date"
    )


def verdicts(tagged, *cols):
    """Sorted (cols..., reason) of a tagged frame, for exact comparison."""
    rows = tagged.select(*cols, "_reason").collect()
    return sorted((tuple(r) for r in rows), key=repr)


# --------------------------------------------------------------------------- privacy
def test_hmac_column_equals_python_hmac(spark):
    ids = ["s1", "628123456789", "ünïcødé-用户", "x" * 200]
    keys = [b"k", "clé-secrète".encode(), bytes(range(100))]  # short, unicode, longer than a block
    df = spark.createDataFrame([(i,) for i in ids] + [(None,)], "subscriber_id string")
    hashed = df.select(
        "subscriber_id", *[pseudonymize_column("subscriber_id", k).alias(f"h{n}") for n, k in enumerate(keys)]
    )
    rows = {r["subscriber_id"]: r for r in hashed.collect()}
    for n, key in enumerate(keys):
        got = {i: row[f"h{n}"] for i, row in rows.items()}
        expected = {i: hmac.new(key, i.encode("utf-8"), hashlib.sha256).hexdigest() for i in ids}
        assert got == {**expected, None: None}


def test_pseudonym_key_refused_when_unset_or_empty(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ConfigError, match=KEY_ENV):
        load_pseudonym_key(KEY_ENV)
    monkeypatch.setenv(KEY_ENV, "")
    with pytest.raises(ConfigError, match=KEY_ENV):
        load_pseudonym_key(KEY_ENV)
    monkeypatch.setenv(KEY_ENV, "s3cr3t")
    assert load_pseudonym_key(KEY_ENV) == b"s3cr3t"


# --------------------------------------------------------------------------- rules, per table
def test_subscriber_rules(spark):
    good = ("s1", date(2026, 1, 1), "prepaid", "Jakarta", "mid", "active", None)
    rows = [
        good,
        good,  # exact duplicate: removed and counted
        ("s7", date(2026, 7, 2), "prepaid", "Bali", "low", "active", None),  # within the 24 h tolerance
        ("", date(2026, 1, 1), "prepaid", "Jakarta", "mid", "active", None),
        (None, date(2026, 1, 1), "prepaid", "Jakarta", "mid", "active", None),
        ("s3", date(2026, 1, 1), "gold", "Jakarta", "mid", "active", None),
        ("s5", date(2026, 1, 1), "prepaid", "Jakarta", "mid", "paused", None),
        ("s6", date(2026, 7, 3), "prepaid", "Jakarta", "mid", "active", None),  # midnight > now + 24 h
        ("s8", date(2026, 1, 1), "prepaid", "Jakarta", "mid", "active", None),
        ("s8", date(2026, 1, 1), "prepaid", "Medan", "mid", "active", None),
        ("s9", None, "postpaid", "Jakarta", "high", "churned", date(2026, 5, 1)),
        ("s10", date(2026, 1, 1), "gold", "Jakarta", "ultra", "active", None),
        ("s11", date(2026, 3, 1), "prepaid", "Bali", "low", "churned", date(2026, 2, 1)),
        ("s12", date(2026, 3, 1), "prepaid", "Bali", "low", "churned", None),
        ("s13", date(2026, 3, 1), "prepaid", "Bali", "low", "churned", date(2026, 3, 1)),  # same day: fine
        ("s14", date(2026, 3, 1), "prepaid", "Bali", "low", "churned", date(2026, 9, 1)),
    ]
    tagged = tag_rows(spark.createDataFrame(rows, INPUT_SCHEMAS["subscribers"]), "subscribers", NOW, TOL)
    conflict = "subscribers.subscriber_id: same key on 2 different rows"
    assert verdicts(tagged, "subscriber_id", "region") == sorted(
        [
            ("s1", "Jakarta", None),
            ("s7", "Bali", None),
            ("", "Jakarta", "subscribers.subscriber_id: null or empty key"),
            (None, "Jakarta", "subscribers.subscriber_id: null or empty key"),
            ("s3", "Jakarta", "subscribers.payment_type: unknown value 'gold'"),
            ("s5", "Jakarta", "subscribers.status: unknown value 'paused'"),
            ("s6", "Jakarta", "subscribers.activation_date: in the future: 2026-07-03"),
            ("s8", "Jakarta", conflict),
            ("s8", "Medan", conflict),
            ("s9", "Jakarta", "subscribers.activation_date: missing value"),
            (
                "s10",
                "Jakarta",
                "subscribers.payment_type: unknown value 'gold'; "
                "subscribers.device_tier: unknown value 'ultra'",
            ),
            ("s11", "Bali", "subscribers.churn_date: before activation_date 2026-03-01: 2026-02-01"),
            (
                "s12",
                "Bali",
                "subscribers.churn_date: missing for a churned subscriber (when they left is unknown)",
            ),
            ("s13", "Bali", None),
            ("s14", "Bali", "subscribers.churn_date: in the future: 2026-09-01"),
        ],
        key=repr,
    )
    assert count_outcomes(tagged) == {"rows": 16, "silver": 3, "quarantined": 12, "duplicates": 1}


def test_usage_rules_and_string_parsing(spark, subscriber_owners):
    schema = with_string_columns("usage_daily", "voice_revenue")

    def usage(sub, day, voice_revenue="1500.5", data_mb=200.0, sms_count=3):
        return (sub, day, 10.0, voice_revenue, sms_count, 300.0, data_mb, 2500.0, 0.0)

    rows = [
        usage("s1", date(2026, 6, 1)),
        usage("s1", date(2026, 6, 1)),
        usage("s1", date(2026, 6, 1)),
        usage("s2", date(2026, 6, 1), voice_revenue="0"),
        usage("s1", date(2026, 6, 2), voice_revenue="abc"),
        usage("s1", date(2026, 6, 3), data_mb=-5.0),
        usage("s1", date(2026, 6, 4), voice_revenue="NaN"),
        usage("s1", date(2026, 6, 5), voice_revenue=None),
        usage("s1", date(2026, 6, 6), sms_count=-1),
        usage("zz", date(2026, 6, 1)),
        usage("s2", date(2026, 2, 1)),
        usage("s1", date(2026, 7, 10)),
        usage("s1", None),
    ]
    tagged = tag_rows(spark.createDataFrame(rows, schema), "usage_daily", NOW, TOL, owners=subscriber_owners)
    assert verdicts(tagged, "subscriber_id", "usage_date") == sorted(
        [
            ("s1", date(2026, 6, 1), None),
            ("s2", date(2026, 6, 1), None),
            ("s1", date(2026, 6, 2), "usage_daily.voice_revenue: not a number: 'abc'"),
            ("s1", date(2026, 6, 3), "usage_daily.data_mb: negative value -5.0"),
            ("s1", date(2026, 6, 4), "usage_daily.voice_revenue: not a finite number NaN"),
            ("s1", date(2026, 6, 5), "usage_daily.voice_revenue: missing value"),
            ("s1", date(2026, 6, 6), "usage_daily.sms_count: negative value -1"),
            (
                "zz",
                date(2026, 6, 1),
                "usage_daily.subscriber_id: unknown subscriber (not among valid subscribers)",
            ),
            ("s2", date(2026, 2, 1), "usage_daily.usage_date: before activation_date 2026-03-01"),
            ("s1", date(2026, 7, 10), "usage_daily.usage_date: in the future: 2026-07-10"),
            ("s1", None, "usage_daily.usage_date: missing value"),
        ],
        key=repr,
    )
    assert count_outcomes(tagged) == {"rows": 13, "silver": 2, "quarantined": 9, "duplicates": 2}

    # Good rows reach silver untouched, typed to the contract (the string parsed to a double).
    expected = spark.createDataFrame(
        [
            ("s1", date(2026, 6, 1), 10.0, 1500.5, 3, 300.0, 200.0, 2500.0, 0.0),
            ("s2", date(2026, 6, 1), 10.0, 0.0, 3, 300.0, 200.0, 2500.0, 0.0),
        ],
        INPUT_SCHEMAS["usage_daily"],
    )
    assert_df_equality(
        silver_rows(tagged, "usage_daily"), expected, ignore_row_order=True, ignore_nullable=True
    )

    # The raw JSON keeps the bronze value as it was (the string 'abc'), nulls explicit.
    bad = quarantine_rows(tagged, "usage_daily", "r1", NOW, AS_OF).filter(F.col("reason").contains("'abc'"))
    raw = json.loads(bad.first()["raw"])
    assert raw == {
        "subscriber_id": "s1",
        "usage_date": "2026-06-02",
        "voice_minutes": 10.0,
        "voice_revenue": "abc",
        "sms_count": 3,
        "sms_revenue": 300.0,
        "data_mb": 200.0,
        "data_revenue": 2500.0,
        "digital_revenue": 0.0,
    }


EVENT_CASES = {
    "recharges": (
        with_string_columns("recharges", "recharge_ts"),
        [
            ("s1", "2026-06-01 10:00:00", 5000.0, "ussd"),
            ("s1", "yesterday", 5000.0, "ussd"),
            ("s1", "2026-06-02 10:00:00", 5000.0, "fax"),
            ("s1", "2026-06-03 10:00:00", -10.0, "app"),
            ("s2", "2026-02-28 23:59:59", 5000.0, "app"),
        ],
        [
            None,
            "recharges.recharge_ts: not a timestamp: 'yesterday'",
            "recharges.channel: unknown value 'fax'",
            "recharges.amount: negative value -10.0",
            "recharges.recharge_ts: before activation_date 2026-03-01",
        ],
    ),
    "purchases": (
        INPUT_SCHEMAS["purchases"],
        [
            ("s2", ts("2026-06-01T09:00:00"), "data_10gb", 25000.0, "ecommerce"),
            ("s2", ts("2099-01-01T00:00:00"), "data_10gb", 25000.0, "app"),
            ("s2", ts("2026-06-01T09:00:00"), "data_10gb", 25000.0, "telepathy"),
        ],
        [
            None,
            "purchases.purchase_ts: in the future: 2099-01-01 00:00:00",
            "purchases.channel: unknown value 'telepathy'",
        ],
    ),
    "quota_events": (
        INPUT_SCHEMAS["quota_events"],
        [
            ("s1", ts("2026-06-01T08:00:00"), "quota_low", 12.5, ts("2026-06-04T00:00:00")),
            ("s1", ts("2026-06-02T08:00:00"), "recharge", None, None),  # nullable columns
            ("s1", ts("2026-06-03T08:00:00"), "boom", 50.0, None),
            ("s1", ts("2026-06-04T08:00:00"), "quota_low", -1.0, None),
            ("s1", ts("2026-06-05T08:00:00"), "quota_low", 100.0, None),  # full is fine
            ("s1", ts("2026-06-05T09:00:00"), "quota_low", 180.0, None),
        ],
        [
            None,
            None,
            "quota_events.event_type: unknown value 'boom'",
            "quota_events.remaining_quota_pct: negative value -1.0",
            None,
            "quota_events.remaining_quota_pct: above 100: 180.0",
        ],
    ),
    "offer_history": (
        REQUIRED_INPUT_SCHEMAS["offer_history"],
        [
            (
                "s1",
                "data_bonus",
                "sms",
                ts("2026-05-01T10:00:00"),
                "treatment",
                True,
                ts("2026-05-02T10:00:00"),
                12000.0,
            ),
            ("s1", "data_bonus", "sms", ts("2026-05-02T10:00:00"), "placebo", False, None, 0.0),
            ("s1", "data_bonus", "pigeon", ts("2026-05-03T10:00:00"), "control", None, None, 0.0),
            (
                "s1",
                "data_bonus",
                "app",
                ts("2026-05-04T10:00:00"),
                "treatment",
                True,
                ts("2026-05-04T09:00:00"),
                1.0,
            ),
            (
                "s1",
                "data_bonus",
                "app",
                ts("2026-05-05T10:00:00"),
                "treatment",
                False,
                ts("2026-05-06T10:00:00"),
                0.0,
            ),
            ("s1", "data_bonus", "app", ts("2026-05-07T10:00:00"), "treatment", True, None, 1.0),
            (
                "s1",
                "data_bonus",
                "app",
                ts("2026-05-08T10:00:00"),
                "treatment",
                True,
                ts("2027-01-01T00:00:00"),
                1.0,
            ),
        ],
        [
            None,
            "offer_history.group: unknown value 'placebo'",
            "offer_history.channel: unknown value 'pigeon'; offer_history.accepted: missing value",
            "offer_history.accepted_ts: before contacted_ts 2026-05-04 10:00:00: 2026-05-04 09:00:00",
            "offer_history.accepted_ts: set on an offer that was not accepted",
            "offer_history.accepted_ts: missing for an accepted offer (when it was accepted is unknown)",
            "offer_history.accepted_ts: in the future: 2027-01-01 00:00:00",
        ],
    ),
}


@pytest.mark.parametrize("table", list(EVENT_CASES))
def test_event_table_rules(spark, subscriber_owners, table):
    schema, rows, reasons = EVENT_CASES[table]
    tagged = tag_rows(spark.createDataFrame(rows, schema), table, NOW, TOL, owners=subscriber_owners)
    got = sorted((r["_reason"] or "") for r in tagged.collect())
    assert got == sorted(r or "" for r in reasons)
    out = count_outcomes(tagged)
    assert (out["silver"], out["quarantined"]) == (reasons.count(None), len(reasons) - reasons.count(None))


def test_channel_response_rules(spark):
    # The owner of a response is a decision of the engine's log, and its day.
    decisions = spark.createDataFrame(
        [("d1", date(2026, 6, 1)), ("d2", date(2026, 6, 5)), ("d2", date(2026, 6, 6))],
        "decision_id string, as_of date",
    )
    rows = [
        ("d1", "delivered", ts("2026-06-01T18:00:00")),  # the publish day itself: fine
        ("d1", "accepted", ts("2026-06-03T09:00:00")),
        ("d1", "accepted", ts("2026-06-03T09:00:00")),  # exact duplicate: removed and counted
        ("d2", "declined", ts("2026-06-05T10:00:00")),  # a re-published id keeps its first day
        ("d2", "opened", ts("2026-06-04T10:00:00")),
        ("d9", "clicked", ts("2026-06-02T10:00:00")),
        ("", "opened", ts("2026-06-02T10:00:00")),
        ("d1", "bought", ts("2026-06-02T10:00:00")),
        ("d1", None, ts("2026-06-02T10:00:00")),
        ("d1", "accepted", ts("2027-01-01T00:00:00")),
    ]
    tagged = tag_rows(
        spark.createDataFrame(rows, INPUT_SCHEMAS["channel_responses"]),
        "channel_responses",
        NOW,
        TOL,
        owners=decisions,
    )
    assert verdicts(tagged, "decision_id", "event") == sorted(
        [
            ("d1", "delivered", None),
            ("d1", "accepted", None),
            ("d2", "declined", None),
            ("d2", "opened", "channel_responses.event_ts: before the decision's as_of 2026-06-05"),
            ("d9", "clicked", "channel_responses.decision_id: unknown decision (not among gold decisions)"),
            ("", "opened", "channel_responses.decision_id: null or empty key"),
            ("d1", "bought", "channel_responses.event: unknown value 'bought'"),
            ("d1", None, "channel_responses.event: missing value"),
            ("d1", "accepted", "channel_responses.event_ts: in the future: 2027-01-01 00:00:00"),
        ],
        key=repr,
    )
    assert count_outcomes(tagged) == {"rows": 10, "silver": 3, "quarantined": 6, "duplicates": 1}


def test_stage_ingests_channel_responses_against_the_decision_log(spark, tmp_path):
    """Responses are optional: sent, they are checked against gold `decisions` (none there
    yet: every response is an unknown decision, quarantined, none lost); the next run, with
    the decision logged, takes them into silver."""
    write_bronze_lake(spark, tmp_path)
    ctx = make_context(spark, tmp_path, "run-r")
    responses = spark.createDataFrame(
        [("d1", "delivered", ts("2026-06-02T10:00:00")), ("d1", "accepted", ts("2026-06-03T10:00:00"))],
        INPUT_SCHEMAS["channel_responses"],
    )
    ctx.store.overwrite(responses, "bronze", "channel_responses")

    first = ingest_stage.run(ctx)
    assert [first.row_counts[f"channel_responses.{n}"] for n in ("in", "silver", "quarantined")] == [2, 0, 2]
    reasons = {
        r["reason"]
        for r in ctx.store.read("gold", "quarantine")
        .where(F.col("source_table") == "channel_responses")
        .collect()
    }
    assert reasons == {"channel_responses.decision_id: unknown decision (not among gold decisions)"}

    decision = spark.createDataFrame([("d1", date(2026, 6, 1))], "decision_id string, as_of date")
    ctx.store.overwrite(decision, "gold", "decisions")
    second = ingest_stage.run(ctx)
    assert [second.row_counts[f"channel_responses.{n}"] for n in ("in", "silver", "quarantined")] == [2, 2, 0]
    assert ctx.store.read("silver", "channel_responses").count() == 2
    assert (
        ctx.store.read("gold", "quarantine").where(F.col("source_table") == "channel_responses").count() == 0
    )


def test_b2b_rules(spark):
    accounts = spark.createDataFrame(
        [
            ("a1", "Acme", "retail", 5_000_000.0, 100.0, ["sms", "whatsapp"], date(2025, 1, 1)),
            ("a2", "Bad", "retail", -1.0, 100.0, [], date(2025, 1, 1)),
            ("a3", "Nulls", "retail", 1.0, 10.0, None, date(2025, 1, 1)),
        ],
        INPUT_SCHEMAS["b2b_accounts"],
    )
    tagged_accounts = tag_rows(accounts, "b2b_accounts", NOW, TOL)
    assert verdicts(tagged_accounts, "account_id") == [
        ("a1", None),
        ("a2", "b2b_accounts.monthly_revenue: negative value -1.0"),
        ("a3", "b2b_accounts.products: missing value"),
    ]
    messages = spark.createDataFrame(
        [
            ("a1", ts("2026-06-01T10:00:00"), "whatsapp", "delivered", True, 350.0),
            ("a2", ts("2026-06-01T10:00:00"), "sms", "failed", False, 0.0),
            ("a1", ts("2026-06-01T11:00:00"), "pigeon", "lost", True, 350.0),
        ],
        INPUT_SCHEMAS["b2b_messages"],
    )
    owners = silver_rows(tagged_accounts, "b2b_accounts").select("account_id")
    tagged = tag_rows(messages, "b2b_messages", NOW, TOL, owners=owners)
    assert verdicts(tagged, "channel") == [
        ("pigeon", "b2b_messages.channel: unknown value 'pigeon'; b2b_messages.status: unknown value 'lost'"),
        ("sms", "b2b_messages.account_id: unknown account (not among valid b2b_accounts)"),
        ("whatsapp", None),
    ]


# --------------------------------------------------------------------------- schema
def test_schema_mismatches_name_table_and_column(spark):
    usage = INPUT_SCHEMAS["usage_daily"]
    missing = StructType([f for f in usage.fields if f.name != "voice_revenue"])
    with pytest.raises(
        SchemaMismatchError, match=r"table usage_daily: missing required column voice_revenue"
    ):
        check_bronze_schema(spark.createDataFrame([], missing), "usage_daily")
    as_struct = StructType(
        [
            StructField("voice_revenue", StructType([StructField("amount", DoubleType())]))
            if f.name == "voice_revenue"
            else f
            for f in usage.fields
        ]
    )
    with pytest.raises(
        SchemaMismatchError, match=r"table usage_daily: incompatible type for column voice_revenue"
    ):
        check_bronze_schema(spark.createDataFrame([], as_struct), "usage_daily")
    # A string cannot hold an array: a schema error, not a per-row parse problem.
    products_str = with_string_columns("b2b_accounts", "products")
    with pytest.raises(
        SchemaMismatchError, match=r"table b2b_accounts: incompatible type for column products"
    ):
        check_bronze_schema(spark.createDataFrame([], products_str), "b2b_accounts")
    # Strings where numbers/dates are expected are parsed row by row instead.
    assert (
        check_bronze_schema(
            spark.createDataFrame([], with_string_columns("usage_daily", "usage_date")), "usage_daily"
        )
        == []
    )


def test_extra_columns_ignored_with_warning(spark, caplog):
    schema = StructType([*INPUT_SCHEMAS["recharges"].fields, StructField("load.batch", StringType())])
    rows = [
        ("s1", ts("2026-06-01T10:00:00"), 5000.0, "ussd", "b2"),
        ("s1", ts("2026-06-01T10:00:00"), 5000.0, "ussd", "b1"),  # same contract row: a duplicate
        ("s1", ts("2026-06-02T10:00:00"), 5000.0, "fax", "b9"),
        ("s1", ts("2026-06-02T10:00:00"), 5000.0, "fax", "b3"),
    ]
    bronze = spark.createDataFrame(rows, schema)
    with caplog.at_level(logging.WARNING, logger="cvo_spark.ingest.validate"):
        assert check_bronze_schema(bronze, "recharges") == ["load.batch"]
    assert "recharges" in caplog.text and "load.batch" in caplog.text
    owners = spark.createDataFrame([("s1", date(2026, 1, 1))], "subscriber_id string, activation_date date")
    tagged = tag_rows(bronze, "recharges", NOW, TOL, owners=owners)
    assert silver_rows(tagged, "recharges").columns == INPUT_SCHEMAS["recharges"].fieldNames()
    assert count_outcomes(tagged) == {"rows": 4, "silver": 1, "quarantined": 1, "duplicates": 2}
    # The quarantined copy is the one whose raw JSON sorts first (deterministic), extras kept.
    raw = json.loads(quarantine_rows(tagged, "recharges", "r", NOW, AS_OF).first()["raw"])
    assert raw["load.batch"] == "b3" and raw["channel"] == "fax"


# --------------------------------------------------------------------------- stage
def bronze_lake(spark) -> dict:
    """Eight small bronze tables; expected outcome per table in `EXPECTED_COUNTS`."""
    S = INPUT_SCHEMAS
    return {
        "subscribers": spark.createDataFrame(
            [
                ("s1", date(2026, 1, 1), "prepaid", "Jakarta", "mid", "active", None),
                ("s2", date(2026, 3, 1), "postpaid", "Bandung", "high", "churned", date(2026, 6, 15)),
                ("s3", date(2026, 1, 1), "gold", "Jakarta", "mid", "active", None),
            ],
            S["subscribers"],
        ),
        "b2b_accounts": spark.createDataFrame(
            [
                ("a1", "Acme", "retail", 5_000_000.0, 100.0, ["sms", "whatsapp"], date(2025, 1, 1)),
                ("a2", "Bad", "retail", -1.0, 100.0, ["sms"], date(2025, 1, 1)),
            ],
            S["b2b_accounts"],
        ),
        "usage_daily": spark.createDataFrame(
            [
                ("s1", date(2026, 6, 1), 10.0, 1500.0, 3, 300.0, 200.0, 2500.0, 0.0),
                ("s1", date(2026, 6, 1), 10.0, 1500.0, 3, 300.0, 200.0, 2500.0, 0.0),
                ("s2", date(2026, 6, 1), 0.0, 0.0, 0, 0.0, 900.0, 9000.0, 1000.0),
                ("s3", date(2026, 6, 1), 1.0, 1.0, 1, 1.0, 1.0, 1.0, 1.0),  # its subscriber is quarantined
            ],
            S["usage_daily"],
        ),
        "recharges": spark.createDataFrame(
            [
                ("s1", ts("2026-06-01T10:00:00"), 5000.0, "ussd"),
                ("s1", ts("2026-06-02T10:00:00"), 5000.0, "fax"),
            ],
            S["recharges"],
        ),
        "purchases": spark.createDataFrame(
            [
                ("s2", ts("2026-06-01T09:00:00"), "data_10gb", 25000.0, "app"),
                ("s2", ts("2099-01-01T00:00:00"), "data_10gb", 25000.0, "app"),
            ],
            S["purchases"],
        ),
        "quota_events": spark.createDataFrame(
            [
                ("s1", ts("2026-06-01T08:00:00"), "quota_low", 12.5, ts("2026-06-04T00:00:00")),
                ("s1", ts("2026-06-02T08:00:00"), "recharge", None, None),
                ("s1", ts("2026-06-03T08:00:00"), "boom", 50.0, None),
            ],
            S["quota_events"],
        ),
        "offer_history": spark.createDataFrame(
            [
                (
                    "s1",
                    "data_bonus",
                    "sms",
                    ts("2026-05-01T10:00:00"),
                    "treatment",
                    True,
                    ts("2026-05-02T10:00:00"),
                    12000.0,
                ),
                ("s2", "data_bonus", "sms", ts("2026-02-01T10:00:00"), "control", False, None, 0.0),
            ],
            REQUIRED_INPUT_SCHEMAS["offer_history"],
        ),
        "b2b_messages": spark.createDataFrame(
            [
                ("a1", ts("2026-06-01T10:00:00"), "whatsapp", "delivered", True, 350.0),
                ("a2", ts("2026-06-01T10:00:00"), "sms", "failed", False, 0.0),
                ("a1", ts("2026-06-01T11:00:00"), "pigeon", "delivered", True, 350.0),
            ],
            S["b2b_messages"],
        ),
    }


#: table -> (in, silver, quarantined, duplicates) for `bronze_lake`.
EXPECTED_COUNTS = {
    "subscribers": (3, 2, 1, 0),
    "b2b_accounts": (2, 1, 1, 0),
    "usage_daily": (4, 2, 1, 1),
    "recharges": (2, 1, 1, 0),
    "purchases": (2, 1, 1, 0),
    "quota_events": (3, 2, 1, 0),
    "offer_history": (2, 1, 1, 0),
    "b2b_messages": (3, 1, 2, 0),
}


def ingested_counts() -> dict[str, int]:
    """`EXPECTED_COUNTS` as the stage's row_counts."""
    names = ("in", "silver", "quarantined", "duplicates")
    return {
        f"{t}.{n}": v for t, counts in EXPECTED_COUNTS.items() for n, v in zip(names, counts, strict=True)
    }


def make_context(spark, lake, run_id: str, **config) -> StageContext:
    cfg = parse_config({"lake": str(lake), **config})
    return StageContext(spark=spark, config=cfg, store=TableStore(spark, cfg), as_of=AS_OF, run_id=run_id)


def write_bronze_lake(spark, lake) -> None:
    store = TableStore(spark, parse_config({"lake": str(lake)}))
    for table, df in bronze_lake(spark).items():
        store.overwrite(df, "bronze", table)


def snapshot(store: TableStore) -> tuple[dict, list]:
    """Silver rows per table and quarantine rows (minus run id/time), sorted, for comparison."""
    silver = {
        t: sorted(map(tuple, store.read("silver", t).collect()), key=repr)
        for t in INPUT_SCHEMAS
        if store.exists("silver", t)
    }
    quarantine = sorted(
        map(
            tuple, store.read("gold", "quarantine").select("source_table", "reason", "raw", "as_of").collect()
        )
    )
    return silver, quarantine


@pytest.fixture(scope="module")
def ingested_twice(spark, tmp_path_factory):
    """The stage run on `bronze_lake`, then run again on the same bronze."""
    lake = tmp_path_factory.mktemp("ingest_lake")
    write_bronze_lake(spark, lake)
    first_ctx = make_context(spark, lake, "run-1")
    first = ingest_stage.run(first_ctx)
    after_first = snapshot(first_ctx.store)
    second_ctx = make_context(spark, lake, "run-2")
    second = run_stage(second_ctx, "ingest")  # as `cvo run` does: audited in gold `runs`
    return lake, first, second, after_first, snapshot(second_ctx.store), second_ctx.store


def test_stage_counts_and_accounting_identity(ingested_twice):
    _, first, _, (silver, quarantine), _, _ = ingested_twice
    for n_in, n_silver, n_quarantined, n_dup in EXPECTED_COUNTS.values():
        assert n_in == n_silver + n_quarantined + n_dup  # the identity the stage checks
    assert first.row_counts == ingested_counts()
    assert first.checks == {"accounting_identity": "ok"}
    assert {t: len(rows) for t, rows in silver.items()} == {t: c[1] for t, c in EXPECTED_COUNTS.items()}
    per_table = {}
    for row in quarantine:
        per_table[row[0]] = per_table.get(row[0], 0) + 1
    assert per_table == {t: c[2] for t, c in EXPECTED_COUNTS.items()}


def test_runs_table_records_the_counts_per_table(ingested_twice):
    *_, store = ingested_twice
    runs = (
        store.read("gold", "runs")
        .where((F.col("run_id") == "run-2") & (F.col("stage") == "ingest"))
        .collect()
    )
    assert len(runs) == 1 and runs[0]["status"] == "succeeded"
    assert runs[0]["row_counts"] == ingested_counts()  # in, silver, quarantined, duplicates per table
    assert runs[0]["checks"] == {"accounting_identity": "ok"}


def test_stage_quarantine_rows(ingested_twice):
    *_, store = ingested_twice
    rows = store.read("gold", "quarantine").filter(F.col("source_table") == "recharges").collect()
    assert len(rows) == 1
    row = rows[0]
    assert row["reason"] == "recharges.channel: unknown value 'fax'"
    assert json.loads(row["raw"]) == {
        "subscriber_id": "s1",
        "recharge_ts": "2026-06-02T10:00:00.000Z",
        "amount": 5000.0,
        "channel": "fax",
    }
    assert (row["run_id"], row["as_of"]) == ("run-2", AS_OF)
    usage = store.read("gold", "quarantine").filter(F.col("source_table") == "usage_daily").first()
    assert usage["reason"] == "usage_daily.subscriber_id: unknown subscriber (not among valid subscribers)"
    assert store.read("gold", "quarantine").schema.fieldNames() == OUTPUT_SCHEMAS["quarantine"].fieldNames()


def test_stage_rerun_is_idempotent(ingested_twice):
    _, first, second, after_first, after_second, _ = ingested_twice
    assert second.row_counts == first.row_counts
    assert after_second == after_first  # same silver rows, same quarantine rows, none doubled
    assert len(after_second[1]) == sum(c[2] for c in EXPECTED_COUNTS.values())


def test_stage_silver_keeps_contract_schema(ingested_twice):
    *_, store = ingested_twice
    for table, schema in INPUT_SCHEMAS.items():
        if table in OPTIONAL_INPUT_TABLES and not store.exists("silver", table):
            continue  # an optional input this bronze lake does not send
        silver = store.read("silver", table)
        assert [(f.name, f.dataType) for f in silver.schema.fields] == [
            (f.name, f.dataType) for f in schema.fields
        ]


def test_stage_missing_table_is_named(spark, ingested_twice, tmp_path):
    lake = ingested_twice[0]
    ctx = make_context(
        spark, lake, "run-x", tables={"overrides": {"bronze.offer_history": str(tmp_path / "none")}}
    )
    with pytest.raises(MissingTableError, match=r"bronze\.offer_history"):
        ingest_stage.run(ctx)


def test_stage_schema_error_stops_before_writing(spark, ingested_twice, tmp_path):
    lake = ingested_twice[0]
    bad = tmp_path / "bad_usage"
    schema = StructType(
        [
            StructField("data_mb", StructType([StructField("mb", DoubleType())]))
            if f.name == "data_mb"
            else f
            for f in INPUT_SCHEMAS["usage_daily"].fields
        ]
    )
    spark.createDataFrame([], schema).write.format("delta").save(str(bad))
    ctx = make_context(spark, lake, "run-y", tables={"overrides": {"bronze.usage_daily": str(bad)}})
    versions = ctx.store.history("silver", "subscribers").count()
    with pytest.raises(SchemaMismatchError, match=r"table usage_daily: incompatible type for column data_mb"):
        ingest_stage.run(ctx)
    assert ctx.store.history("silver", "subscribers").count() == versions


def test_stage_refuses_pseudonymisation_without_key(spark, tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    ctx = make_context(
        spark, tmp_path, "run-p", ingest={"privacy": {"pseudonymize": True, "key_env": KEY_ENV}}
    )
    with pytest.raises(ConfigError, match=KEY_ENV):
        ingest_stage.run(ctx)


def test_stage_pseudonymises_every_subscriber_table(spark, ingested_twice, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "test-key-ü")
    # Same bronze as the other stage tests; silver and gold go to folders of their own.
    ctx = make_context(
        spark,
        ingested_twice[0],
        "run-p",
        tables={"silver": str(tmp_path / "silver"), "gold": str(tmp_path / "gold")},
        ingest={"privacy": {"pseudonymize": True, "key_env": KEY_ENV}},
    )
    result = ingest_stage.run(ctx)
    assert result.row_counts == ingested_counts()

    def pseudonym(raw_id: str) -> str:
        return hmac.new("test-key-ü".encode(), raw_id.encode(), hashlib.sha256).hexdigest()

    store = ctx.store
    assert {r[0] for r in store.read("silver", "subscribers").select("subscriber_id").collect()} == {
        pseudonym("s1"),
        pseudonym("s2"),
    }
    # Joins still work: every silver usage row finds its subscriber.
    usage = store.read("silver", "usage_daily")
    joined = usage.join(store.read("silver", "subscribers"), on="subscriber_id", how="inner")
    assert joined.count() == usage.count() == 2
    assert {r[0] for r in store.read("silver", "offer_history").select("subscriber_id").collect()} == {
        pseudonym("s1")
    }
    # No raw id anywhere in quarantine; the pseudonym is there instead.
    raws = [json.loads(r["raw"]) for r in store.read("gold", "quarantine").collect()]
    subscriber_ids = {r["subscriber_id"] for r in raws if "subscriber_id" in r}
    assert subscriber_ids == {pseudonym("s1"), pseudonym("s2"), pseudonym("s3")}
    # b2b account ids are not subscriber ids: left as they are.
    assert {r[0] for r in store.read("silver", "b2b_accounts").select("account_id").collect()} == {"a1"}

    # The append-only silver table records how its ids were written, and refuses a switch:
    # raw ids appended beside their pseudonyms would break invariant 8.
    mode = store.properties("silver", "quota_events")["cvo.subscriber_ids"]
    assert mode.startswith("hmac-sha256:") and len(mode) == len("hmac-sha256:") + 16
    assert "test-key" not in mode
    ingest_stage.run(ctx)  # same key: fine, nothing added
    monkeypatch.setenv(KEY_ENV, "another-key")
    with pytest.raises(
        IdModeChangedError, match=r"^silver.quota_events holds subscriber ids written as hmac"
    ):
        ingest_stage.run(ctx)
    plain = make_context(
        spark,
        ingested_twice[0],
        "run-r",
        tables={"silver": str(tmp_path / "silver"), "gold": str(tmp_path / "gold")},
    )
    with pytest.raises(IdModeChangedError, match="but this run writes raw"):
        ingest_stage.run(plain)
    assert store.read("silver", "quota_events").where(F.length("subscriber_id") != 64).count() == 0


# --------------------------------------------------------------------------- generated data
@pytest.mark.slow
def test_generated_bronze_is_clean_except_injected_rows(spark, tmp_path):
    from cvo_spark.synth.generate import GENERATED_TABLES, write_bronze

    write_bronze(spark, str(tmp_path / "bronze"), subscribers=500, days=60, seed=11)
    ctx = make_context(spark, tmp_path, "run-gen")
    store = ctx.store
    usage = store.read("bronze", "usage_daily")
    # Injected: a copy of a real row (duplicate), a negative amount, an unknown subscriber.
    real = usage.orderBy("subscriber_id", "usage_date").limit(1)
    injected = real.unionByName(real.withColumn("data_revenue", F.lit(-1.0))).unionByName(
        real.withColumn("subscriber_id", F.lit("no-such-subscriber"))
    )
    store.append(injected, "bronze", "usage_daily")
    recharge = store.read("bronze", "recharges").orderBy("subscriber_id", "recharge_ts").limit(1)
    store.append(recharge.withColumn("channel", F.lit("fax")), "bronze", "recharges")

    result = ingest_stage.run(ctx)

    reasons = sorted(r["reason"] for r in store.read("gold", "quarantine").collect())
    assert reasons == [
        "recharges.channel: unknown value 'fax'",
        "usage_daily.data_revenue: negative value -1.0",
        "usage_daily.subscriber_id: unknown subscriber (not among valid subscribers)",
    ]
    counts = result.row_counts
    for table in GENERATED_TABLES:
        bronze = store.read("bronze", table)
        n_in = counts[f"{table}.in"]
        assert n_in == bronze.count()
        # Duplicates removed = rows the contract cannot tell apart from another row.
        assert counts[f"{table}.duplicates"] == n_in - bronze.distinct().count(), table
        assert (
            n_in == counts[f"{table}.silver"] + counts[f"{table}.quarantined"] + counts[f"{table}.duplicates"]
        )
    assert counts["usage_daily.duplicates"] == 1  # exactly the injected copy
    assert counts["subscribers.quarantined"] == 0 and counts["subscribers.silver"] == 500
