"""The synthetic data generator: contract schemas, determinism, and the planted signal.

One generated data set (2,000 subscribers x 120 days) is cached for the module; checks on
a table are folded into one aggregation (`_count_where`) so the suite stays quick.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cvo_spark.core.schemas import ENUMS, INPUT_SCHEMAS, PRODUCT_CATEGORIES, SUBSCRIBER_CHANNELS
from cvo_spark.synth.generate import (
    CONTROL_SHARE,
    DEFAULT_END_DATE,
    GENERATED_TABLES,
    OFFERS,
    PERSONAS,
    generate_bronze,
    write_bronze,
)

SUBSCRIBERS, DAYS, SEED = 2_000, 120, 42
WINDOW_START = DEFAULT_END_DATE - timedelta(days=DAYS - 1)
WINDOW_START_TS = datetime.combine(WINDOW_START, datetime.min.time())
WINDOW_END_TS = datetime.combine(DEFAULT_END_DATE, datetime.max.time()).replace(microsecond=0)
REVENUE = ["voice_revenue", "sms_revenue", "data_revenue", "digital_revenue"]
EVENT_TS = {
    "recharges": "recharge_ts",
    "purchases": "purchase_ts",
    "quota_events": "event_ts",
    "offer_history": "contacted_ts",
}


@pytest.fixture(scope="module")
def bronze(spark):
    tables = {name: df.cache() for name, df in generate_bronze(spark, SUBSCRIBERS, DAYS, SEED).items()}
    yield tables
    for df in tables.values():
        df.unpersist()


def _count_where(df: DataFrame, **conditions: Column) -> dict[str, int]:
    """Rows matching each condition (null counts as not matching), in one pass."""
    return df.agg(*[F.count(F.when(c, 1)).alias(name) for name, c in conditions.items()]).first().asDict()


def _fingerprint(df: DataFrame) -> tuple:
    """Row count and two order-independent sums of row hashes: equal for equal multisets of rows."""
    h = F.xxhash64(*[F.col(f"`{c}`") for c in df.columns])
    return tuple(df.agg(F.count(F.lit(1)), F.bit_xor(h), F.sum(F.pmod(h, F.lit(2**31)))).first())


def _persona_revenue(bronze) -> dict[str, dict[str, float]]:
    """Pooled revenue share per service and monthly ARPU per persona."""
    usage = bronze["usage_daily"].join(bronze["_ground_truth"], "subscriber_id", how="inner")
    rows = (
        usage.groupBy("persona")
        .agg(*[F.sum(c).alias(c) for c in REVENUE], F.countDistinct("subscriber_id").alias("n"))
        .collect()
    )
    out = {}
    for r in rows:
        total = sum(r[c] for c in REVENUE)
        out[r["persona"]] = {c: r[c] / total for c in REVENUE} | {"arpu": total / r["n"] / (DAYS / 30)}
    return out


# --------------------------------------------------------------------------- contract


def test_every_table_has_the_contract_schema(bronze):
    for name in GENERATED_TABLES:
        schema = INPUT_SCHEMAS[name]
        got = [(f.name, f.dataType) for f in bronze[name].schema.fields]
        assert got == [(f.name, f.dataType) for f in schema.fields], name


def test_enumerated_columns_use_allowed_values(bronze):
    for table in GENERATED_TABLES:
        checks = {
            column: ~F.col(f"`{column}`").isin(*allowed)
            for (name, column), allowed in ENUMS.items()
            if name == table
        }
        if table in ("recharges", "purchases", "offer_history"):
            checks["channel"] = ~F.col("channel").isin(*SUBSCRIBER_CHANNELS)
        if table == "purchases":
            checks["category"] = ~F.split(F.col("product_id"), "_").getItem(0).isin(*PRODUCT_CATEGORIES)
        if table == "offer_history":
            checks["offer_id"] = ~F.col("offer_id").isin(*[o.offer_id for o in OFFERS])
        if checks:
            assert set(_count_where(bronze[table], **checks).values()) == {0}, table
    seen = bronze["offer_history"].agg(F.countDistinct("offer_id")).first()[0]
    assert seen == len(OFFERS)


def test_keys_are_unique_and_msisdn_like(bronze):
    subs = bronze["subscribers"].agg(
        F.count(F.lit(1)),
        F.countDistinct("subscriber_id"),
        F.count(F.when(F.col("subscriber_id").rlike(r"^62811\d{8}$"), 1)),
    )
    assert tuple(subs.first()) == (SUBSCRIBERS, SUBSCRIBERS, SUBSCRIBERS)
    usage = (
        bronze["usage_daily"].agg(F.count(F.lit(1)), F.countDistinct("subscriber_id", "usage_date")).first()
    )
    assert usage[0] == usage[1]


def test_no_table_has_duplicate_rows(bronze):
    # ingest counts rows it cannot tell apart as duplicates: generated data has none.
    for name in GENERATED_TABLES:
        df = bronze[name]
        assert df.count() == df.distinct().count(), name


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_same_data_whatever_the_partitioning(spark, bronze):
    before = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", "7")
    try:
        again = generate_bronze(spark, SUBSCRIBERS, DAYS, SEED, partitions=3)
        # usage and events (exploded per subscriber), the coalesced union, B2B, the truth
        for name in ("usage_daily", "offer_history", "quota_events", "b2b_messages", "_ground_truth"):
            assert _fingerprint(again[name]) == _fingerprint(bronze[name]), name
        truth = again["_ground_truth"]
        assert truth.exceptAll(bronze["_ground_truth"]).isEmpty()
        assert bronze["_ground_truth"].exceptAll(truth).isEmpty()
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", before)


def test_different_seed_gives_different_data(spark, bronze):
    other = generate_bronze(spark, SUBSCRIBERS, DAYS, SEED + 1)
    changed = bronze["_ground_truth"].exceptAll(other["_ground_truth"]).count()
    assert changed > 0.9 * SUBSCRIBERS
    for name in ("usage_daily", "offer_history", "b2b_accounts"):
        assert _fingerprint(other[name]) != _fingerprint(bronze[name]), name


# --------------------------------------------------------------------------- subscribers and usage


def test_persona_mix_matches_planted_shares(bronze):
    counts = dict(bronze["_ground_truth"].groupBy("persona").count().collect())
    for p in PERSONAS:
        assert abs(counts[p.name] / SUBSCRIBERS - p.share) < 0.04, p.name


def test_lifecycle_shares_and_status(bronze):
    truth = _count_where(
        bronze["_ground_truth"],
        churner=F.col("is_churner"),
        new=F.col("is_new"),
        prepaid=F.col("payment_type") == "prepaid",
    )
    assert 0.06 < truth["churner"] / SUBSCRIBERS < 0.10
    assert 0.12 < truth["new"] / SUBSCRIBERS < 0.18
    assert 0.80 < truth["prepaid"] / SUBSCRIBERS < 0.90
    subs = _count_where(
        bronze["subscribers"],
        status_mismatch=(F.col("status") == "churned") != F.col("churn_date").isNotNull(),
        churn_outside=(F.col("churn_date") < F.lit(WINDOW_START))
        | (F.col("churn_date") > F.lit(DEFAULT_END_DATE)),
        future_activation=F.col("activation_date") > F.lit(DEFAULT_END_DATE),
    )
    assert set(subs.values()) == {0}, subs


def test_revenue_signature_per_persona(bronze):
    mix = _persona_revenue(bronze)
    voice, data, allround, light = (mix[p.name] for p in PERSONAS)
    assert voice["voice_revenue"] + voice["sms_revenue"] > 0.7
    assert data["digital_revenue"] > 0.3 and data["data_revenue"] + data["digital_revenue"] > 0.8
    assert all(0.05 < allround[c] < 0.5 for c in REVENUE)  # balanced
    assert all(0.05 < light[c] < 0.5 for c in REVENUE)
    assert allround["arpu"] > 2 * max(voice["arpu"], data["arpu"])
    assert light["arpu"] < min(voice["arpu"], data["arpu"]) and 15_000 < light["arpu"] < 40_000


def test_some_days_are_idle_and_usage_is_non_negative(bronze):
    quantities = ["voice_minutes", "sms_count", "data_mb", *REVENUE]
    found = _count_where(
        bronze["usage_daily"],
        rows=F.lit(True),
        idle=F.greatest(*[F.col(c) for c in quantities]) == 0,
        negative=F.least(*[F.col(c) for c in quantities]) < 0,
    )
    assert 0.05 < found["idle"] / found["rows"] < 0.3
    assert found["negative"] == 0


def test_churners_decline_before_churn_and_stop(bronze):
    churners = bronze["_ground_truth"].filter("is_churner")
    usage = bronze["usage_daily"].join(churners, "subscriber_id", how="inner")
    days_to_churn = F.datediff("churn_date", "usage_date")
    total = sum(F.col(c) for c in REVENUE)
    row = usage.agg(
        F.sum(F.when(days_to_churn.between(1, 30), total)).alias("last30"),
        F.sum(F.when(days_to_churn.between(31, 60), total)).alias("prior30"),
        F.count(F.when(days_to_churn <= 0, 1)).alias("after"),
    ).first()
    assert row["after"] == 0
    assert row["last30"] < 0.7 * row["prior30"]


def test_nothing_before_activation_after_churn_or_outside_the_window(bronze):
    truth = bronze["_ground_truth"].select("subscriber_id", "activation_date", "churn_date")
    usage = bronze["usage_daily"].join(truth, "subscriber_id", how="inner")
    found = _count_where(
        usage,
        before_activation=F.col("usage_date") < F.col("activation_date"),
        after_churn=F.col("usage_date") >= F.col("churn_date"),
        outside=~F.col("usage_date").between(WINDOW_START, DEFAULT_END_DATE),
    )
    assert set(found.values()) == {0}, found
    for table, ts in EVENT_TS.items():
        events = bronze[table].join(truth, "subscriber_id", how="inner")
        found = _count_where(
            events,
            before_activation=F.to_date(ts) < F.col("activation_date"),
            after_churn=F.to_date(ts) >= F.col("churn_date"),
            outside=~F.col(ts).between(WINDOW_START_TS, WINDOW_END_TS),
        )
        assert set(found.values()) == {0}, (table, found)
    b2b = _count_where(
        bronze["b2b_messages"], outside=~F.col("message_ts").between(WINDOW_START_TS, WINDOW_END_TS)
    )
    assert b2b["outside"] == 0


def test_recharges_match_usage_revenue(bronze):
    usage_total = bronze["usage_daily"].agg(F.sum(sum(F.col(c) for c in REVENUE))).first()[0]
    recharges = bronze["recharges"].agg(F.sum("amount"), F.count(F.lit(1))).first()
    assert 0.9 < recharges[0] / usage_total < 1.1
    assert 2 < recharges[1] / SUBSCRIBERS / (DAYS / 30) < 6  # a few per month


def test_quota_events_shape_and_data_heavy_run_low_more(bronze):
    quota = bronze["quota_events"]
    found = _count_where(
        quota,
        pct_null_mismatch=(F.col("event_type") == "recharge") != F.col("remaining_quota_pct").isNull(),
        expiry_before_event=F.col("expiry_ts") < F.col("event_ts"),
        recharge=F.col("event_type") == "recharge",
    )
    assert found["pct_null_mismatch"] == found["expiry_before_event"] == 0
    assert found["recharge"] == bronze["recharges"].count()
    truth = bronze["_ground_truth"]
    low = quota.filter(F.col("event_type") == "quota_low").join(truth, "subscriber_id", how="inner")
    per_persona = dict(low.groupBy("persona").count().collect())
    sizes = dict(truth.groupBy("persona").count().collect())
    rate = {p: per_persona[p] / sizes[p] for p in sizes}
    assert rate["data_digital_heavy"] > 3 * rate["voice_sms_heavy"]


# --------------------------------------------------------------------------- offers


def test_offer_history_plants_measurable_uplift(bronze):
    offers = bronze["offer_history"].join(bronze["_offer_truth"], "offer_id", how="inner")
    row = offers.agg(
        F.avg(F.when(F.col("group") == "treatment", F.col("accepted").cast("double"))).alias("treatment"),
        F.avg(F.when(F.col("group") == "control", F.col("accepted").cast("double"))).alias("control"),
        F.avg((F.col("group") == "control").cast("double")).alias("control_share"),
        F.avg(F.when(F.col("group") == "treatment", F.col("true_uplift"))).alias("planted"),
    ).first()
    assert abs(row["control_share"] - CONTROL_SHARE) < 0.02
    observed = row["treatment"] - row["control"]
    assert observed > 0
    assert abs(observed - row["planted"]) < 0.02
    assert any(o.true_uplift == 0 for o in OFFERS)
    smallest = bronze["offer_history"].groupBy("offer_id").count().agg(F.min("count")).first()[0]
    assert smallest > 300  # enough contacts per offer to measure uplift


def test_offer_acceptance_fields_are_consistent(bronze):
    offers = bronze["offer_history"].join(bronze["_offer_truth"], "offer_id", how="inner")
    revenue_ok = F.when(F.col("accepted"), F.col("revenue") == F.col("price")).otherwise(
        F.col("revenue") == 0
    )
    found = _count_where(
        offers,
        ts_mismatch=F.col("accepted") != F.col("accepted_ts").isNotNull(),
        accepted_not_after_contact=F.col("accepted_ts") <= F.col("contacted_ts"),
        accepted_after_end=F.col("accepted_ts") > F.lit(WINDOW_END_TS),
        bad_revenue=~revenue_ok,
    )
    assert set(found.values()) == {0}, found
    # The control group is a stable hash of (subscriber, offer): one group per pair.
    groups = (
        bronze["offer_history"].groupBy("subscriber_id", "offer_id").agg(F.countDistinct("group").alias("g"))
    )
    assert groups.filter(F.col("g") > 1).isEmpty()


# --------------------------------------------------------------------------- B2B


def test_b2b_delivery_and_concentration(bronze):
    found = _count_where(
        bronze["b2b_messages"],
        rows=F.lit(True),
        delivered=F.col("status") == "delivered",
        charge_mismatch=F.col("charged") != (F.col("status") == "delivered"),
    )
    assert 0.80 < found["delivered"] / found["rows"] < 0.90
    assert found["charge_mismatch"] == 0
    accounts = bronze["b2b_accounts"].select("account_id", "monthly_revenue").collect()  # 50 rows
    assert len(accounts) == 50  # max(50, subscribers / 200)
    ranked = sorted(accounts, key=lambda r: r["monthly_revenue"], reverse=True)
    top = ranked[: round(0.15 * len(ranked))]
    assert sum(r["monthly_revenue"] for r in top) / sum(r["monthly_revenue"] for r in ranked) > 0.5
    top_ids = [r["account_id"] for r in top]
    volume = _count_where(bronze["b2b_messages"], all=F.lit(True), top=F.col("account_id").isin(*top_ids))
    assert volume["top"] / volume["all"] > 0.3  # message volume follows account size


# --------------------------------------------------------------------------- separability


def test_personas_are_separable_by_kmeans(bronze):
    from pyspark.ml.clustering import KMeans
    from pyspark.ml.feature import StandardScaler, VectorAssembler

    last90 = bronze["usage_daily"].filter(F.col("usage_date") > F.lit(DEFAULT_END_DATE - timedelta(days=90)))
    totals = last90.groupBy("subscriber_id").agg(
        *[F.sum(c).alias(c) for c in REVENUE],
        F.sum("data_mb").alias("mb"),
        F.sum("voice_minutes").alias("minutes"),
    )
    total = sum(F.col(c) for c in REVENUE)
    recharges = bronze["recharges"].groupBy("subscriber_id").agg(F.count(F.lit(1)).alias("recharges"))
    features = (
        totals.filter(total > 0)
        .select(
            "subscriber_id",
            *[(F.col(c) / total).alias(f"{c}_share") for c in REVENUE],
            F.log1p(total / 3).alias("log_arpu"),
            F.log1p("mb").alias("log_mb"),
            F.log1p("minutes").alias("log_minutes"),
        )
        .join(recharges, "subscriber_id", how="left")
        .fillna(0, ["recharges"])
        .join(bronze["_ground_truth"], "subscriber_id", how="inner")
    )
    cols = [f"{c}_share" for c in REVENUE] + ["log_arpu", "log_mb", "log_minutes", "recharges"]
    vectors = VectorAssembler(inputCols=cols, outputCol="raw").transform(features)
    scaled = (
        StandardScaler(inputCol="raw", outputCol="features", withMean=True).fit(vectors).transform(vectors)
    )
    clusters = KMeans(k=len(PERSONAS), seed=1).fit(scaled).transform(scaled)
    table = clusters.groupBy("persona_idx", "prediction").count().collect()
    assert _adjusted_rand_index([(r[0], r[1], r[2]) for r in table]) >= 0.8


def _adjusted_rand_index(contingency: list[tuple[int, int, int]]) -> float:
    """ARI from (truth, cluster, count) cells."""

    def pairs(x: float) -> float:
        return x * (x - 1) / 2

    rows: dict[int, int] = {}
    cols: dict[int, int] = {}
    for a, b, n in contingency:
        rows[a] = rows.get(a, 0) + n
        cols[b] = cols.get(b, 0) + n
    index = sum(pairs(n) for *_, n in contingency)
    row_pairs, col_pairs = sum(map(pairs, rows.values())), sum(map(pairs, cols.values()))
    expected = row_pairs * col_pairs / pairs(sum(rows.values()))
    return (index - expected) / ((row_pairs + col_pairs) / 2 - expected)


def test_adjusted_rand_index_helper():
    assert _adjusted_rand_index([(0, 1, 5), (1, 0, 5)]) == pytest.approx(1.0)
    assert _adjusted_rand_index([(0, 0, 5), (0, 1, 5), (1, 0, 5), (1, 1, 5)]) < 0


# --------------------------------------------------------------------------- write


def test_write_bronze_writes_delta_and_is_idempotent(spark, tmp_path: Path):
    out = str(tmp_path / "bronze")
    first = write_bronze(spark, out, 100, 14, SEED)
    second = write_bronze(spark, out, 100, 14, SEED)
    assert first == second
    truth = {"_ground_truth/subscribers", "_ground_truth/offers", "_ground_truth/contacts"}
    assert set(first) == {*GENERATED_TABLES, *truth}
    assert first["_ground_truth/contacts"] == first["offer_history"]  # one truth row per logged contact
    for name, rows in first.items():
        assert (tmp_path / "bronze" / name / "_delta_log").is_dir(), name
        assert rows > 0, name
    assert first["subscribers"] == 100 and first["_ground_truth/offers"] == len(OFFERS)
    written = spark.read.format("delta").load(f"{out}/usage_daily")
    assert written.count() == first["usage_daily"]  # overwritten, not appended
    assert [(f.name, f.dataType) for f in written.schema.fields] == [
        (f.name, f.dataType) for f in INPUT_SCHEMAS["usage_daily"].fields
    ]
