"""Value tiers, lifecycle, strategic matrix, RFM scores and profiles on hand-computed inputs."""

from __future__ import annotations

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
)

from cvo_spark.core.errors import MissingColumnsError
from cvo_spark.segments.rules import (
    Tier,
    median_thresholds,
    quintile_cuts,
    segment_profiles,
    with_lifecycle,
    with_matrix_quadrant,
    with_rfm_scores,
    with_usage_mb_equivalent,
    with_value_tier,
)

LADDER = [Tier("Priority", 150_000, 180), Tier("Gold", 50_000, 90), Tier("Mass", 0, 0)]


def _schema(*fields):
    return StructType([StructField(n, t, True) for n, t in fields])


def test_value_tier_and_high_value_follow_strict_and_inclusive_rules(spark):
    schema = _schema(
        ("id", StringType()), ("length_of_stay_days", IntegerType()), ("arpu_3m", DoubleType()),
        ("expected_hv", BooleanType()), ("expected_tier", StringType()),
    )  # fmt: skip
    rows = [
        ("a", 181, 100_001.0, True, "Gold"),  # just over both strict bounds
        ("b", 180, 200_000.0, False, "Priority"),  # LOS = 180 is not > 180; ladder is inclusive
        ("c", 400, 100_000.0, False, "Gold"),  # ARPU = 100k is not > 100k
        ("d", 30, 500_000.0, False, "Mass"),  # rich but too new for Priority and Gold
        ("e", None, 90_000.0, False, "Mass"),  # unknown LOS: never high value, catch-all tier
        ("f", 200, None, False, "Mass"),
        ("g", 90, 50_000.0, False, "Gold"),  # exactly on the Gold minimums
    ]
    df = spark.createDataFrame(rows, schema)
    out = with_value_tier(df, LADDER, 180, 100_000.0)
    assert_df_equality(
        out.select("id", "is_high_value", "value_tier"),
        df.select(
            "id", F.col("expected_hv").alias("is_high_value"), F.col("expected_tier").alias("value_tier")
        ),
        ignore_row_order=True,
        ignore_nullable=True,
    )


def test_lifecycle_new_below_threshold(spark):
    schema = _schema(("id", StringType()), ("length_of_stay_days", IntegerType()), ("expected", StringType()))
    df = spark.createDataFrame(
        [("a", 0, "new"), ("b", 89, "new"), ("c", 90, "base"), ("d", None, "base")], schema
    )
    out = with_lifecycle(df, 90, "new", "base")
    assert [r.id for r in out.filter(F.col("lifecycle") != F.col("expected")).collect()] == []
    assert out.filter(F.col("lifecycle") == "new").count() == 2


def test_usage_mb_equivalent_counts_voice_minutes_and_nulls_as_zero(spark):
    schema = _schema(("id", StringType()), ("data_mb_3m", DoubleType()), ("voice_minutes_3m", DoubleType()))
    df = spark.createDataFrame([("a", 100.0, 10.0), ("b", None, 5.0), ("c", 7.0, None)], schema)
    out = with_usage_mb_equivalent(df, 2.0, "usage")
    assert {r.id: r.usage for r in out.collect()} == {"a": 120.0, "b": 10.0, "c": 7.0}


def test_median_thresholds_are_elements_of_the_data(spark):
    schema = _schema(("odd", DoubleType()), ("even", DoubleType()), ("empty", DoubleType()))
    df = spark.createDataFrame(
        [(5.0, 4.0, None), (1.0, 1.0, None), (3.0, 3.0, None), (2.0, 2.0, None), (4.0, None, None)], schema
    )
    # odd count: the middle value; even count: the lower middle value (percentile_approx).
    assert median_thresholds(df, ["odd", "even", "empty"]) == {"odd": 3.0, "even": 2.0, "empty": None}


def test_matrix_quadrants_with_ties_counting_as_high(spark):
    schema = _schema(
        ("id", StringType()), ("arpu_3m", DoubleType()), ("usage", DoubleType()), ("expected", StringType())
    )
    rows = [
        ("star", 50.0, 500.0, "Star"),
        ("tie", 30.0, 300.0, "Star"),  # exactly on both thresholds
        ("risk", 40.0, 100.0, "Risk Area"),
        ("sniper", 10.0, 400.0, "Sniper Zone"),
        ("incubator", 20.0, 200.0, "Incubator"),
        ("null", None, None, "Incubator"),
    ]
    df = spark.createDataFrame(rows, schema)
    out = with_matrix_quadrant(df, "arpu_3m", "usage", 30.0, 300.0)
    assert_df_equality(
        out.select("id", "matrix_quadrant"),
        df.select("id", F.col("expected").alias("matrix_quadrant")),
        ignore_row_order=True,
        ignore_nullable=True,
    )


def test_quintile_cuts_on_ten_values_and_on_ties(spark):
    schema = _schema(("recency_days", IntegerType()), ("frequency_3m", LongType()))
    freq = [0, 0, 0, 0, 0, 0, 1, 2, 3, 9]
    df = spark.createDataFrame([(i + 1, f) for i, f in enumerate(freq)] + [(None, None)], schema)
    cuts = quintile_cuts(df, ["recency_days", "frequency_3m"])
    assert cuts == {"recency_days": [2.0, 4.0, 6.0, 8.0], "frequency_3m": [0.0, 0.0, 0.0, 2.0]}


def test_rfm_scores_from_cut_points(spark):
    schema = _schema(
        ("id", StringType()), ("recency_days", IntegerType()), ("frequency_3m", LongType()),
        ("monetary_3m", DoubleType()), ("expected", StringType()),
    )  # fmt: skip
    rows = [
        ("a", 1, 9, 1000.0, "555"),  # most recent, most frequent, highest spend
        ("b", 2, 0, 10.0, "511"),  # recency on the first cut still scores 5; zero frequency ties score 1
        ("c", 5, 1, 300.0, "344"),
        ("d", 9, 2, 200.0, "143"),
        ("e", None, None, None, "111"),  # no revenue event at all
    ]
    df = spark.createDataFrame(rows, schema)
    out = with_rfm_scores(df, [2, 4, 6, 8], [0, 0, 0, 2], [100, 150, 250, 500])
    expected = df.select(
        "id",
        *[
            F.substring("expected", i + 1, 1).cast("int").alias(c)
            for i, c in enumerate(["r_score", "f_score", "m_score"])
        ],
        F.col("expected").alias("rfm_score"),
    )
    assert_df_equality(
        out.select("id", "r_score", "f_score", "m_score", "rfm_score"),
        expected,
        ignore_row_order=True,
        ignore_nullable=True,
    )


def test_rfm_scores_need_their_columns(spark):
    df = spark.createDataFrame([("a", 1)], "id string, recency_days int")
    with pytest.raises(MissingColumnsError, match="frequency_3m, monetary_3m"):
        with_rfm_scores(df, [], [], [])


def test_segment_profiles_per_tier_and_all_with_tactics(spark):
    schema = _schema(
        ("persona_id", IntegerType()), ("persona_name", StringType()), ("value_tier", StringType()),
        ("revenue_3m", DoubleType()), ("arpu_3m", DoubleType()), ("voice_share", DoubleType()),
        ("sms_share", DoubleType()),
    )  # fmt: skip
    rows = [
        (1, "Legacy Active", "Priority", 600.0, 200.0, 0.6, 0.2),
        (1, "Legacy Active", "Mass", 300.0, 100.0, 0.4, 0.2),
        (1, "Legacy Active", "Mass", 100.0, 50.0, 0.5, 0.1),
        (2, "Digital Active 2", "Mass", 0.0, 0.0, 0.0, 0.0),
    ]
    df = spark.createDataFrame(rows, schema)
    out = segment_profiles(
        df,
        {"voice_share": "voice_share", "sms_share": "sms_share"},
        {"Legacy Active": ["product bundling"], "Digital Active 2": ["channel priority in the app"]},
        {"Priority": ["personal assistant"]},
    )
    out_schema = _schema(
        ("persona_id", IntegerType()), ("persona_name", StringType()), ("value_tier", StringType()),
        ("subscribers", LongType()), ("revenue_3m", DoubleType()), ("revenue_share", DoubleType()),
        ("arpu_3m_mean", DoubleType()), ("centroid", MapType(StringType(), DoubleType())),
        ("tactics", ArrayType(StringType())),
    )  # fmt: skip

    def c(v, s):
        return {"voice_share": v, "sms_share": s, "voice_sms_share": v + s}

    expected = spark.createDataFrame(
        [
            (
                1,
                "Legacy Active",
                "Priority",
                1,
                600.0,
                0.6,
                200.0,
                c(0.6, 0.2),
                ["product bundling", "personal assistant"],
            ),
            (1, "Legacy Active", "Mass", 2, 400.0, 0.4, 75.0, c(0.45, 0.15), ["product bundling"]),
            (1, "Legacy Active", "ALL", 3, 1000.0, 1.0, 350.0 / 3, c(0.5, 0.5 / 3), ["product bundling"]),
            (2, "Digital Active 2", "Mass", 1, 0.0, 0.0, 0.0, c(0.0, 0.0), ["channel priority in the app"]),
            (2, "Digital Active 2", "ALL", 1, 0.0, 0.0, 0.0, c(0.0, 0.0), ["channel priority in the app"]),
        ],
        out_schema,
    )
    key = ["persona_id", "value_tier"]
    assert_approx_df_equality(
        out.drop("centroid").orderBy(*key),
        expected.drop("centroid").orderBy(*key),
        1e-9,
        ignore_nullable=True,
    )
    got = {(r.persona_id, r.value_tier): r.centroid for r in out.collect()}
    for r in expected.collect():
        assert got[(r.persona_id, r.value_tier)] == pytest.approx(r.centroid)
