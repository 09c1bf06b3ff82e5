"""B2B portfolio: concentration metrics and Lorenz points by hand; clusters on separable accounts."""

from __future__ import annotations

import pytest
from chispa import assert_approx_df_equality
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

from cvo_spark.core.errors import MissingColumnsError
from cvo_spark.segments.b2b import (
    b2b_profiles,
    fit_b2b_clusters,
    label_b2b_clusters,
    lorenz_curve,
    rank_clusters,
    revenue_concentration,
    with_b2b_segments,
)

REV = StructType([StructField("account_id", StringType()), StructField("monthly_revenue", DoubleType())])
METRICS = StructType([StructField("metric", StringType()), StructField("value", DoubleType())])
LORENZ = StructType([StructField("account_share", DoubleType()), StructField("revenue_share", DoubleType())])


def test_concentration_of_four_accounts(spark):
    df = spark.createDataFrame([("d", 40.0), ("a", 10.0), ("c", 30.0), ("b", 20.0)], REV)
    # total 100; top 3 = 90; ceil(15% of 4) = 1 account = 40;
    # gini = 2*(1*10+2*20+3*30+4*40)/(4*100) - 5/4 = 0.25; hhi = .01+.04+.09+.16
    expected = spark.createDataFrame(
        [("top3_share", 0.9), ("top15pct_share", 0.4), ("gini", 0.25), ("hhi", 0.30)], METRICS
    )
    assert_approx_df_equality(
        revenue_concentration(df).orderBy("metric"), expected.orderBy("metric"), 1e-12, ignore_nullable=True
    )


def test_concentration_top15pct_of_twenty_is_three_accounts_and_null_revenue_counts_as_zero(spark):
    # 0.15 * 20 is 3.0000000000000004 in floating point: still 3 accounts, not 4.
    rows = [(f"a{i:02d}", float(i)) for i in range(1, 20)] + [("z", None)]
    df = spark.createDataFrame(rows, REV)
    total = sum(range(1, 20))  # 190; the null account is a zero
    got = {r.metric: r.value for r in revenue_concentration(df).collect()}
    # sorted ascending the zero is first: sum(i * x_i) = sum over k=1..19 of (k+1)*k
    weighted = sum((k + 1) * k for k in range(1, 20))
    assert got == pytest.approx(
        {
            "top3_share": 54 / total,
            "top15pct_share": 54 / total,
            "gini": 2 * weighted / (20 * total) - 21 / 20,
            "hhi": sum(k * k for k in range(1, 20)) / total**2,
        }
    )


def test_concentration_with_zero_revenue_is_null(spark):
    df = spark.createDataFrame([("a", 0.0), ("b", 0.0)], REV)
    assert {r.metric: r.value for r in revenue_concentration(df).collect()} == {
        "top3_share": None,
        "top15pct_share": None,
        "gini": None,
        "hhi": None,
    }


def test_lorenz_points_start_at_origin_and_ascend(spark):
    df = spark.createDataFrame([("d", 40.0), ("a", 10.0), ("c", 30.0), ("b", 20.0)], REV)
    expected = spark.createDataFrame([(0.0, 0.0), (0.25, 0.1), (0.5, 0.3), (0.75, 0.6), (1.0, 1.0)], LORENZ)
    assert_approx_df_equality(
        lorenz_curve(df).orderBy("account_share"), expected, 1e-12, ignore_nullable=True
    )


def test_concentration_needs_revenue(spark):
    df = spark.createDataFrame([("a",)], "account_id string")
    with pytest.raises(MissingColumnsError, match="monthly_revenue"):
        revenue_concentration(df)


def test_rank_clusters_by_revenue_and_names():
    centroids = {
        0: {"monthly_revenue": 10.0, "message_count_3m": 5.0},
        1: {"monthly_revenue": 1000.0, "message_count_3m": 1.0},
        2: {"monthly_revenue": 100.0, "message_count_3m": 50.0},
    }
    assert rank_clusters(centroids, ["Strategic", "Growth", "Long tail"]) == (
        {1: 1, 2: 2, 0: 3},
        {1: "Strategic", 2: "Growth", 0: "Long tail"},
    )
    assert rank_clusters(centroids, ["A", "B"])[1] == {1: "Tier 1", 2: "Tier 2", 0: "Tier 3"}


def _accounts(spark):
    """Three well-separated account groups; usage (bandwidth) set to make every quadrant appear."""
    schema = StructType(
        [StructField(n, t) for n, t in [
            ("account_id", StringType()), ("group", StringType()), ("message_count_3m", LongType()),
            ("monthly_revenue", DoubleType()), ("bandwidth_mbps", DoubleType()),
        ]]
    )  # fmt: skip
    rows = []
    for g, msgs, rev in (("big", 100_000, 1e8), ("mid", 10_000, 1e7), ("small", 100, 1e6)):
        for i in range(6):
            rows.append((f"{g}{i}", g, int(msgs * (1 + 0.05 * i)), rev * (1 + 0.04 * i), float(10 * (i + 1))))
    return spark.createDataFrame(rows, schema)


def test_b2b_clusters_recover_groups_and_flag_candidates(spark):
    accounts = _accounts(spark)
    fit = fit_b2b_clusters(accounts, [3], seed=5)
    ids, names = label_b2b_clusters(accounts, fit, ["Strategic", "Growth", "Long tail"])
    out = with_b2b_segments(accounts, fit, ids, names, "bandwidth_mbps", 1e7, 35.0)
    got = {
        (r.group, r.cluster_id, r.cluster_name)
        for r in out.select("group", "cluster_id", "cluster_name").distinct().collect()
    }
    assert got == {("big", 1, "Strategic"), ("mid", 2, "Growth"), ("small", 3, "Long tail")}
    # usage >= 35 for i >= 3; revenue >= 1e7 for big and mid
    flags = {
        r.account_id: (r.quadrant, r.is_upsell_candidate, r.is_cross_sell_candidate) for r in out.collect()
    }
    assert flags["small5"] == ("Sniper Zone", True, False)
    assert flags["small0"] == ("Incubator", False, False)
    assert flags["mid0"] == ("Risk Area", False, True)
    assert flags["big4"] == ("Star", False, False)
    assert out.count() == len(flags) == 18  # one row per account, every account clustered
    assert out.filter(F.col("cluster_id").isNull()).count() == 0


def test_b2b_k_chosen_by_silhouette_on_three_groups(spark):
    fit = fit_b2b_clusters(_accounts(spark), [2, 3, 4], seed=5)
    assert fit.k == 3
    assert [s.k for s in fit.scores if s.chosen] == [3]


def test_b2b_profiles_by_hand(spark):
    schema = (
        "cluster_id int, cluster_name string, monthly_revenue double, aov double, delivery_rate double, "
        "failure_rate double, revenue_trend_pct double"
    )
    df = spark.createDataFrame(
        [
            (1, "Strategic", 600.0, 10.0, 0.9, 0.1, 0.2),
            (1, "Strategic", 200.0, None, 0.7, 0.3, None),
            (2, "Long tail", 200.0, 4.0, None, None, -0.1),
        ],
        schema,
    )
    expected = spark.createDataFrame(
        [
            (1, "Strategic", 2, 0.8, 400.0, 10.0, 0.8, 0.2, 0.2),
            (2, "Long tail", 1, 0.2, 200.0, 4.0, None, None, -0.1),
        ],
        "cluster_id int, cluster_name string, accounts long, revenue_share double, arpu double, aov double, "
        "delivery_rate double, failure_rate double, revenue_trend_pct double",
    )
    assert_approx_df_equality(b2b_profiles(df).orderBy("cluster_id"), expected, 1e-12, ignore_nullable=True)
