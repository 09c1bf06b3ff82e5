"""B2B portfolio: frequency-monetary clusters, strategic matrix and revenue concentration.

Accounts are few (hundreds to thousands), so whole-portfolio windows (ranks, cumulative
revenue) are used where they make the arithmetic plain; nothing here is per-subscriber.

Revenue is ``monthly_revenue`` throughout (the contract value an account brings each
month); a null revenue counts as 0 so the account still appears in every table.
Concentration measures (all on the 0-1 scale):

- top3_share: revenue share of the 3 largest accounts;
- top15pct_share: share of the largest ceil(15 % of accounts) (at least one account);
- gini: 2 * sum(i * x_i) / (n * sum x) - (n + 1) / n over revenues sorted ascending,
  i = 1..n (0 = equal revenue, (n - 1) / n = one account has it all);
- hhi: Herfindahl-Hirschman index, sum of squared revenue shares (1/n = equal, 1 =
  monopoly; multiply by 10,000 for the antitrust convention).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from cvo_spark.core.util import require_columns
from cvo_spark.segments.personas import KMeansFit, cluster_means, fit_kmeans, with_clusters
from cvo_spark.segments.rules import QUADRANT_RISK, QUADRANT_SNIPER, with_matrix_quadrant

#: Clustering features: frequency (messages) and monetary (contract revenue), both log1p.
B2B_FEATURES: tuple[str, ...] = ("message_count_3m", "monthly_revenue")


def fit_b2b_clusters(
    accounts: DataFrame, k_values: Sequence[int], seed: int, max_iter: int = 40
) -> KMeansFit:
    """K-Means on log1p(message_count_3m) and log1p(monthly_revenue), standardised.

    Needs ``account_id`` and the two features. One k is fitted as given; several are
    scored by silhouette (see `cvo_spark.segments.personas.fit_kmeans`). Every account is used.
    """
    return fit_kmeans(
        accounts,
        key="account_id",
        features=B2B_FEATURES,
        log_features=B2B_FEATURES,
        k_values=k_values,
        seed=seed,
        max_iter=max_iter,
        fit_sample_rows=10_000_000,
        silhouette_sample_rows=10_000_000,
    )


def rank_clusters(
    centroids: Mapping[int, Mapping[str, float]], names: Sequence[str]
) -> tuple[dict[int, int], dict[int, str]]:
    """Cluster ids 1..k by centroid monthly_revenue, highest first (ties: more messages).

    Names are `names` in that order when there are exactly as many, else "Tier <id>".
    """
    order = sorted(
        centroids, key=lambda c: (-centroids[c]["monthly_revenue"], -centroids[c]["message_count_3m"], c)
    )
    ids = {c: i for i, c in enumerate(order, start=1)}
    use_names = len(names) == len(order)
    return ids, {c: (names[i - 1] if use_names else f"Tier {i}") for c, i in ids.items()}


def label_b2b_clusters(
    accounts: DataFrame, fit: KMeansFit, names: Sequence[str]
) -> tuple[dict[int, int], dict[int, str]]:
    """Cluster ids and names for `fit` from its centroids in original units (`rank_clusters`).

    Needs the clustering features; one groupBy, k rows collected.
    """
    assigned = with_clusters(accounts, fit, {c: c for c in range(fit.k)}, {}, "__cluster", "__unnamed")
    centroids, _ = cluster_means(assigned, "__cluster", B2B_FEATURES)
    return rank_clusters(centroids, names)


def with_b2b_segments(
    accounts: DataFrame,
    fit: KMeansFit,
    cluster_ids: Mapping[int, int],
    cluster_names: Mapping[int, str],
    usage_col: str,
    revenue_threshold: float,
    usage_threshold: float,
) -> DataFrame:
    """Add cluster_id, cluster_name, quadrant, is_upsell_candidate, is_cross_sell_candidate.

    Needs ``account_id``, ``monthly_revenue``, ``message_count_3m`` and `usage_col`.
    Quadrants are those of `cvo_spark.segments.rules.quadrant` on monthly_revenue against
    `usage_col` (>= threshold is high). Upsell candidates use a lot for what they pay
    (Sniper Zone: high usage, low revenue); cross-sell candidates pay a lot for little
    use (Risk Area: high revenue, low usage). Keeps one row per account.
    """
    require_columns(accounts, ["account_id", *B2B_FEATURES, usage_col], "with_b2b_segments")
    out = with_clusters(accounts, fit, cluster_ids, cluster_names, "cluster_id", "cluster_name")
    out = with_matrix_quadrant(
        out, "monthly_revenue", usage_col, revenue_threshold, usage_threshold, "quadrant"
    )
    return out.withColumn("is_upsell_candidate", F.col("quadrant") == F.lit(QUADRANT_SNIPER)).withColumn(
        "is_cross_sell_candidate", F.col("quadrant") == F.lit(QUADRANT_RISK)
    )


def b2b_profiles(segmented: DataFrame) -> DataFrame:
    """One row per cluster: accounts, revenue_share, arpu, aov, delivery/failure rates, trend.

    Needs cluster_id, cluster_name, monthly_revenue, aov, delivery_rate, failure_rate,
    revenue_trend_pct. arpu is the mean monthly_revenue; aov, the rates and the trend are
    means over the cluster's accounts that have them (each account counts once).
    """
    cols = [
        "cluster_id",
        "cluster_name",
        "monthly_revenue",
        "aov",
        "delivery_rate",
        "failure_rate",
        "revenue_trend_pct",
    ]
    require_columns(segmented, cols, "b2b_profiles")
    revenue = F.coalesce(F.col("monthly_revenue").cast("double"), F.lit(0.0))
    total = segmented.agg(F.sum(revenue).alias("__total"))
    return (
        segmented.groupBy("cluster_id", "cluster_name")
        .agg(
            F.count(F.lit(1)).alias("accounts"),
            F.sum(revenue).alias("__revenue"),
            F.avg(revenue).alias("arpu"),
            *[F.avg(c).alias(c) for c in ("aov", "delivery_rate", "failure_rate", "revenue_trend_pct")],
        )
        .join(total, how="cross")
        .withColumn("revenue_share", F.when(F.col("__total") != 0, F.col("__revenue") / F.col("__total")))
        .select(
            "cluster_id",
            "cluster_name",
            "accounts",
            "revenue_share",
            "arpu",
            "aov",
            "delivery_rate",
            "failure_rate",
            "revenue_trend_pct",
        )
    )


def revenue_concentration(
    accounts: DataFrame, revenue_col: str = "monthly_revenue", top_n: int = 3, top_fraction: float = 0.15
) -> DataFrame:
    """Rows (metric, value): top3_share, top15pct_share, gini, hhi (see the module docstring).

    Needs ``account_id`` and `revenue_col`. Ranks break revenue ties by account_id so the
    result is deterministic. With zero total revenue every value is null.
    """
    require_columns(accounts, ["account_id", revenue_col], "revenue_concentration")
    x = F.coalesce(F.col(revenue_col).cast("double"), F.lit(0.0))
    # Whole-portfolio windows: accounts are few, so one partition is fine here.
    desc_rank = F.row_number().over(Window.orderBy(x.desc(), F.col("account_id")))
    ranked = accounts.select(
        x.alias("x"), desc_rank.alias("r"), F.count(F.lit(1)).over(Window.partitionBy()).alias("n")
    )
    top_k = F.greatest(F.lit(1), F.ceil(F.round(F.col("n") * F.lit(top_fraction), 9)))
    stats = ranked.agg(
        F.sum("x").alias("total"),
        F.first("n").alias("n"),
        F.sum(F.when(F.col("r") <= top_n, F.col("x")).otherwise(0.0)).alias("top_n"),
        F.sum(F.when(F.col("r") <= top_k, F.col("x")).otherwise(0.0)).alias("top_frac"),
        # ascending rank i = n + 1 - r
        F.sum((F.col("n") + 1 - F.col("r")) * F.col("x")).alias("weighted"),
        F.sum(F.col("x") * F.col("x")).alias("squares"),
    )
    safe = F.when(F.col("total") != 0, F.col("total"))
    values = stats.select(
        (F.col("top_n") / safe).alias("top3_share"),
        (F.col("top_frac") / safe).alias("top15pct_share"),
        (2 * F.col("weighted") / (F.col("n") * safe) - (F.col("n") + 1) / F.col("n")).alias("gini"),
        (F.col("squares") / (safe * safe)).alias("hhi"),
    )
    return values.select(
        F.expr(
            "stack(4, 'top3_share', top3_share, 'top15pct_share', top15pct_share, 'gini', gini, 'hhi', hhi)"
            " AS (metric, value)"
        )
    )


def lorenz_curve(accounts: DataFrame, revenue_col: str = "monthly_revenue") -> DataFrame:
    """Lorenz curve points (account_share, revenue_share), ascending, starting at (0, 0).

    Needs ``account_id`` and `revenue_col`. Accounts sorted by revenue ascending (ties by
    account_id); point i is (i / n, cumulative revenue of the first i / total). With zero
    total revenue the revenue_share is null.
    """
    require_columns(accounts, ["account_id", revenue_col], "lorenz_curve")
    x = F.coalesce(F.col(revenue_col).cast("double"), F.lit(0.0))
    order = Window.orderBy(x, F.col("account_id"))
    whole = Window.partitionBy()
    points = accounts.select(
        F.row_number().over(order).alias("i"),
        F.sum(x).over(order.rowsBetween(Window.unboundedPreceding, Window.currentRow)).alias("cum"),
        F.count(F.lit(1)).over(whole).alias("n"),
        F.sum(x).over(whole).alias("total"),
    ).select(
        (F.col("i") / F.col("n")).alias("account_share"),
        F.when(F.col("total") != 0, F.col("cum") / F.col("total")).alias("revenue_share"),
    )
    origin = accounts.sparkSession.range(1).select(
        F.lit(0.0).alias("account_share"), F.lit(0.0).cast("double").alias("revenue_share")
    )
    return origin.unionByName(points)
