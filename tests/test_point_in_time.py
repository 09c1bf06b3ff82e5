"""Invariant 1 (point in time) and invariant 2 (idempotent partition) for the features stage.

Point in time: the features as of D computed from the inputs *as they stood at D* must
equal the features as of D computed after every table has received later events:
usage, recharges, purchases, quota events, offer contacts and acceptances after D, a
subscriber activated after D, churns recorded after D, B2B messages and an account
signed after D.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cvo_spark.core.config import Config
from cvo_spark.core.io import TableStore
from cvo_spark.core.schemas import EVENT_TIME_COLUMN, INPUT_SCHEMAS, REQUIRED_INPUT_SCHEMAS, SILVER_TABLES
from cvo_spark.core.stage import StageContext
from cvo_spark.features import stage as features_stage
from cvo_spark.features.b2b import build_b2b_features
from cvo_spark.features.subscriber import build_subscriber_features
from cvo_spark.synth.generate import DEFAULT_END_DATE, GENERATED_TABLES, generate_bronze

D = DEFAULT_END_DATE - timedelta(days=10)
AFTER_D = datetime(D.year, D.month, D.day, tzinfo=UTC) + timedelta(days=1)  # first instant after D
SEED = 11


def assert_same_rows(left: DataFrame, right: DataFrame) -> None:
    """Equal as multisets of rows: same count and nothing left over either way."""
    left, right = left.cache(), right.cache()
    assert left.count() == right.count()
    assert left.exceptAll(right).count() == 0
    assert right.exceptAll(left).count() == 0


def as_known_at(tables: dict[str, DataFrame], as_of: date) -> dict[str, DataFrame]:
    """The input tables as they stood at the end of `as_of`: no later rows or updates."""
    end = F.lit(as_of + timedelta(days=1)).cast("timestamp")
    out = {}
    for name, df in tables.items():
        col = F.col(EVENT_TIME_COLUMN[name])
        out[name] = df.where(col <= F.lit(as_of) if name in ("subscribers", "b2b_accounts") else col < end)
    # A churn recorded after as_of was not known then: the subscriber was still active.
    churned_later = F.col("churn_date") > F.lit(as_of)
    out["subscribers"] = (
        out["subscribers"]
        .select(
            *[c for c in INPUT_SCHEMAS["subscribers"].fieldNames() if c not in ("status", "churn_date")],
            F.when(churned_later, F.lit("active")).otherwise(F.col("status")).alias("status"),
            F.when(~churned_later | F.col("churn_date").isNull(), F.col("churn_date")).alias("churn_date"),
        )
        .select(*INPUT_SCHEMAS["subscribers"].fieldNames())
    )
    # An acceptance recorded after as_of was not known then either.
    accepted_later = F.col("accepted_ts") >= end
    oh = out["offer_history"]
    out["offer_history"] = oh.select(
        *[c for c in oh.columns if c not in ("accepted", "accepted_ts", "revenue")],
        F.when(accepted_later, F.lit(False)).otherwise(F.col("accepted")).alias("accepted"),
        F.when(accepted_later, F.lit(None)).otherwise(F.col("accepted_ts")).alias("accepted_ts"),
        F.when(accepted_later, F.lit(0.0)).otherwise(F.col("revenue")).alias("revenue"),
    ).select(*INPUT_SCHEMAS["offer_history"].fieldNames())
    return out


def later_rows(spark, subscriber_id: str, account_id: str) -> dict[str, DataFrame]:
    """Hand-made rows dated after D for every table, at the first instant after D."""
    t = AFTER_D
    rows = {
        "subscribers": [("late_new", D + timedelta(days=1), "prepaid", "north", "low", "active", None)],
        "usage_daily": [(subscriber_id, D + timedelta(days=1), 9.0, 90.0, 9, 9.0, 9.0, 9.0, 9.0)],
        "recharges": [(subscriber_id, t, 50_000.0, "retail")],
        "purchases": [(subscriber_id, t, "data_1gb", 25_000.0, "retail")],
        "quota_events": [(subscriber_id, t, "quota_low", 5.0, None)],
        "offer_history": [
            (subscriber_id, "late_offer", "sms", t, "treatment", True, t, 1.0),
            # contacted on D, accepted after D: not accepted yet as of D
            (
                subscriber_id,
                "late_accept",
                "app",
                t - timedelta(hours=14),
                "treatment",
                True,
                t + timedelta(hours=2),
                1.0,
            ),
        ],
        "b2b_accounts": [
            ("late_account", "Late Ltd", "retail", 1.0, 1.0, ["sms_api"], D + timedelta(days=1))
        ],
        "b2b_messages": [(account_id, t, "sms", "delivered", True, 500.0)],
    }
    return {name: spark.createDataFrame(r, REQUIRED_INPUT_SCHEMAS[name]) for name, r in rows.items()}


def compute(tables: dict[str, DataFrame], as_of: date) -> tuple[DataFrame, DataFrame]:
    subs = build_subscriber_features(
        tables["subscribers"],
        tables["usage_daily"],
        tables["recharges"],
        tables["purchases"],
        tables["quota_events"],
        tables["offer_history"],
        as_of,
    )
    b2b = build_b2b_features(tables["b2b_accounts"], tables["b2b_messages"], as_of)
    return subs, b2b


@pytest.fixture(scope="module")
def silver_store(spark, tmp_path_factory) -> TableStore:
    """A lake whose silver layer holds 300 generated subscribers x 60 days (Delta)."""
    config = Config(lake=str(tmp_path_factory.mktemp("pit") / "lake"))
    store = TableStore(spark, config)
    tables = generate_bronze(spark, subscribers=300, days=60, seed=SEED)
    for name in GENERATED_TABLES:
        store.overwrite(tables[name], "silver", name)
    return store


@pytest.fixture(scope="module")
def generated(silver_store) -> dict[str, DataFrame]:
    # Read back from Delta: plain file scans plan far faster than the generator's expressions.
    # The required inputs: the optional ones (consents) play no part in the features.
    return {name: silver_store.read_input("silver", name) for name in SILVER_TABLES}


@pytest.mark.slow
def test_later_events_never_change_features(spark, generated):
    some_subscriber = generated["usage_daily"].orderBy("subscriber_id").first().subscriber_id
    some_account = generated["b2b_accounts"].orderBy("account_id").first().account_id
    extra = later_rows(spark, some_subscriber, some_account)
    grown = {
        name: generated[name].unionByName(extra[name], allowMissingColumns=True) for name in SILVER_TABLES
    }
    known = as_known_at(grown, D)

    # The grown inputs really do hold later facts of every kind (else the test proves nothing).
    end = F.lit(AFTER_D)
    for name in SILVER_TABLES:
        col = F.col(EVENT_TIME_COLUMN[name])
        later = col > F.lit(D) if name in ("subscribers", "b2b_accounts") else col >= end
        assert grown[name].where(later).limit(1).count() == 1, name
    assert grown["subscribers"].where(F.col("churn_date") > F.lit(D)).limit(1).count() == 1
    assert (
        grown["offer_history"].where((F.col("contacted_ts") < end) & (F.col("accepted_ts") >= end)).count()
        == 1
    )

    before_subs, before_b2b = compute(known, D)
    after_subs, after_b2b = compute(grown, D)
    assert_same_rows(before_subs, after_subs)
    assert_same_rows(before_b2b, after_b2b)
    # Not vacuous: hundreds of subscribers with revenue, recharges and accepted offers.
    totals = before_subs.agg(
        F.count("*").alias("n"),
        F.sum("revenue_3m").alias("revenue"),
        F.sum("recharge_count_3m").alias("recharges"),
        F.sum("offers_accepted").alias("accepted"),
        F.sum("quota_low_count").alias("quota_low"),
    ).first()
    assert totals.n > 200 and totals.revenue > 0 and totals.recharges > 0 and totals.accepted > 0
    assert totals.quota_low > 0
    assert before_b2b.agg(F.sum("message_count_3m")).first()[0] > 0


# --------------------------------------------------------------------------- stage
def stage_context(spark, store: TableStore, config: Config, as_of: date) -> StageContext:
    return StageContext(spark=spark, config=config, store=store, as_of=as_of, run_id=f"test-{as_of}")


@pytest.mark.slow
def test_stage_replaces_only_its_partition(spark, silver_store):
    store, config = silver_store, silver_store.config
    other_day = D - timedelta(days=7)

    first = features_stage.run(stage_context(spark, store, config, D))
    features_stage.run(stage_context(spark, store, config, other_day))

    def partition_rows(name: str, as_of: date) -> list:
        # Collected (a few hundred rows) so the snapshot cannot follow the table when it changes.
        return sorted(store.read("gold", name).where(F.col("as_of") == F.lit(as_of)).collect())

    before = {name: partition_rows(name, D) for name in ("features", "b2b_features")}
    other_before = partition_rows("features", other_day)
    version_before = store.history("gold", "features").agg(F.max("version")).first()[0]

    second = features_stage.run(stage_context(spark, store, config, D))

    assert first.row_counts == second.row_counts
    assert first.row_counts["features"] > 200 and first.row_counts["b2b_features"] > 0
    last = store.history("gold", "features", limit=1).first()
    assert last.version == version_before + 1 and last.operationParameters["mode"] == "Overwrite"
    for name, key in (("features", "subscriber_id"), ("b2b_features", "account_id")):
        now = partition_rows(name, D)
        assert len(now) == first.row_counts[name]  # no duplicates, no leftovers
        assert len({getattr(r, key) for r in now}) == len(now)
        assert now == before[name]
        assert store.read("gold", name).select("as_of").distinct().count() == 2
    assert partition_rows("features", other_day) == other_before
    assert len(other_before) > 200
