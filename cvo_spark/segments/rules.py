"""Rule-based segments of subscribers: value tiers, lifecycle, strategic matrix, RFM.

Every function here is a pure DataFrame -> DataFrame transform (or computes a handful of
cut points from one aggregation); thresholds arrive as plain arguments from the stage.
Persona clustering lives in `cvo_spark.segments.personas`, the B2B portfolio in `cvo_spark.segments.b2b`.

Tie rules (documented because they decide who lands where):

- ``is_high_value`` is strict on both measures (LOS > days and arpu_3m > amount), as the
  business phrases it; the tier ladder is inclusive (arpu_3m >= min and LOS >= min).
- Matrix quadrants: a value >= its threshold counts as high. Median thresholds come from
  ``percentile_approx`` and are an element of the data (the lower middle value when the
  count is even).
- RFM quintiles: cut points are the 20/40/60/80 % ``percentile_approx`` values; a value
  scores 1 + the number of cut points it exceeds (recency: 5 minus that), so equal values
  always get equal scores, unlike ``ntile`` which splits ties arbitrarily.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cvo_spark.core.util import first_row, require_columns

#: percentile_approx accuracy: relative rank error 1/accuracy (1e-5 here), a few MB of
#: sketch at any data size.
QUANTILE_ACCURACY = 100_000

QUADRANT_STAR = "Star"
QUADRANT_RISK = "Risk Area"
QUADRANT_SNIPER = "Sniper Zone"
QUADRANT_INCUBATOR = "Incubator"


@dataclass(frozen=True)
class Tier:
    """One rung of the value ladder: met when arpu_3m >= min_arpu_3m and LOS >= min_los_days."""

    name: str
    min_arpu_3m: float
    min_los_days: int


# --------------------------------------------------------------------------- tiers
def with_value_tier(
    features: DataFrame,
    ladder: Sequence[Tier],
    high_value_min_los_days: int,
    high_value_min_arpu_3m: float,
) -> DataFrame:
    """Add ``is_high_value`` and ``value_tier``.

    Needs ``length_of_stay_days`` and ``arpu_3m``. ``is_high_value`` is
    LOS > high_value_min_los_days AND arpu_3m > high_value_min_arpu_3m (strict; a null
    measure gives False). ``value_tier`` is the first rung of `ladder` met; a row meeting
    none (or with a null measure) gets the last rung, which config guarantees is the
    catch-all. Keeps one row per input row.
    """
    require_columns(features, ["length_of_stay_days", "arpu_3m"], "with_value_tier")
    if not ladder:
        raise ValueError("with_value_tier: ladder is empty")
    los, arpu = F.col("length_of_stay_days"), F.col("arpu_3m")
    high = F.coalesce((los > high_value_min_los_days) & (arpu > high_value_min_arpu_3m), F.lit(False))
    tier: Column = F.lit(ladder[-1].name)
    for rung in reversed(ladder[:-1]):
        tier = F.when((arpu >= rung.min_arpu_3m) & (los >= rung.min_los_days), F.lit(rung.name)).otherwise(
            tier
        )
    return features.withColumn("is_high_value", high).withColumn("value_tier", tier)


def with_lifecycle(
    features: DataFrame, new_max_days: int, new_name: str = "new", base_name: str = "base"
) -> DataFrame:
    """Add ``lifecycle``: `new_name` when length_of_stay_days < new_max_days, else `base_name`.

    Needs ``length_of_stay_days``; a null LOS (unknown activation) counts as base.
    """
    require_columns(features, ["length_of_stay_days"], "with_lifecycle")
    is_new = F.coalesce(F.col("length_of_stay_days") < new_max_days, F.lit(False))
    return features.withColumn("lifecycle", F.when(is_new, F.lit(new_name)).otherwise(F.lit(base_name)))


# --------------------------------------------------------------------------- matrix
def with_usage_mb_equivalent(
    features: DataFrame, voice_minute_mb: float, output: str = "usage_mb_eq_3m"
) -> DataFrame:
    """Add the strategic matrix's usage axis: data_mb_3m + voice_minute_mb * voice_minutes_3m.

    Needs ``data_mb_3m`` and ``voice_minutes_3m``; nulls count as 0 (no traffic).
    """
    require_columns(features, ["data_mb_3m", "voice_minutes_3m"], "with_usage_mb_equivalent")
    usage = F.coalesce(F.col("data_mb_3m"), F.lit(0.0)) + F.lit(float(voice_minute_mb)) * F.coalesce(
        F.col("voice_minutes_3m"), F.lit(0.0)
    )
    return features.withColumn(output, usage.cast("double"))


def median_thresholds(
    df: DataFrame, columns: Sequence[str], accuracy: int = QUANTILE_ACCURACY
) -> dict[str, float | None]:
    """Medians of `columns` in one aggregation (``percentile_approx``; None for an all-null column)."""
    require_columns(df, columns, "median_thresholds")
    row = first_row(
        df.agg(*[F.percentile_approx(F.col(c), 0.5, accuracy).alias(c) for c in columns]), "median_thresholds"
    )
    return {c: (None if row[c] is None else float(row[c])) for c in columns}


def quadrant(revenue: Column, usage: Column, revenue_threshold: float, usage_threshold: float) -> Column:
    """Star (high, high), Risk Area (high revenue, low usage), Sniper Zone (low, high), Incubator.

    >= threshold counts as high; a null measure counts as low.
    """
    high_rev = F.coalesce(revenue >= F.lit(float(revenue_threshold)), F.lit(False))
    high_use = F.coalesce(usage >= F.lit(float(usage_threshold)), F.lit(False))
    return (
        F.when(high_rev & high_use, F.lit(QUADRANT_STAR))
        .when(high_rev, F.lit(QUADRANT_RISK))
        .when(high_use, F.lit(QUADRANT_SNIPER))
        .otherwise(F.lit(QUADRANT_INCUBATOR))
    )


def with_matrix_quadrant(
    df: DataFrame,
    revenue_col: str,
    usage_col: str,
    revenue_threshold: float,
    usage_threshold: float,
    output: str = "matrix_quadrant",
) -> DataFrame:
    """Add `output`, the strategic-matrix quadrant of `revenue_col` against `usage_col`."""
    require_columns(df, [revenue_col, usage_col], "with_matrix_quadrant")
    return df.withColumn(
        output, quadrant(F.col(revenue_col), F.col(usage_col), revenue_threshold, usage_threshold)
    )


# --------------------------------------------------------------------------- RFM
def quintile_cuts(
    df: DataFrame, columns: Sequence[str], accuracy: int = QUANTILE_ACCURACY
) -> dict[str, list[float]]:
    """The 20/40/60/80 % cut points of each column, from one aggregation (nulls ignored).

    An all-null column gets no cut points.
    """
    require_columns(df, columns, "quintile_cuts")
    row = first_row(
        df.agg(
            *[
                F.percentile_approx(F.col(c).cast("double"), [0.2, 0.4, 0.6, 0.8], accuracy).alias(c)
                for c in columns
            ]
        ),
        "quintile_cuts",
    )
    return {c: [float(v) for v in (row[c] or []) if v is not None] for c in columns}


def _cuts_exceeded(value: Column, cuts: Sequence[float]) -> Column:
    terms = [F.when(value > F.lit(float(c)), F.lit(1)).otherwise(F.lit(0)) for c in cuts]
    return reduce(lambda a, b: a + b, terms, F.lit(0))


def quintile_score(value: Column, cuts: Sequence[float], higher_is_better: bool = True) -> Column:
    """Score 1..5 from cut points: 1 + cuts exceeded (or 5 - cuts exceeded); null scores 1."""
    exceeded = _cuts_exceeded(value, cuts)
    score = F.lit(1) + exceeded if higher_is_better else F.lit(5) - exceeded
    return F.when(value.isNull(), F.lit(1)).otherwise(score).cast("int")


def with_rfm_scores(
    features: DataFrame,
    recency_cuts: Sequence[float],
    frequency_cuts: Sequence[float],
    monetary_cuts: Sequence[float],
) -> DataFrame:
    """Add ``r_score``, ``f_score``, ``m_score`` (int 1..5, 5 best) and ``rfm_score`` ('545').

    Needs ``recency_days`` (fewer days is better; null = no revenue event -> 1),
    ``frequency_3m`` and ``monetary_3m`` (more is better; null -> 1). Cut points come
    from `quintile_cuts` over the same population, so each score is a quintile.
    """
    require_columns(features, ["recency_days", "frequency_3m", "monetary_3m"], "with_rfm_scores")
    return (
        features.withColumn(
            "r_score", quintile_score(F.col("recency_days"), recency_cuts, higher_is_better=False)
        )
        .withColumn("f_score", quintile_score(F.col("frequency_3m"), frequency_cuts))
        .withColumn("m_score", quintile_score(F.col("monetary_3m"), monetary_cuts))
        .withColumn("rfm_score", F.concat_ws("", "r_score", "f_score", "m_score"))
    )


# --------------------------------------------------------------------------- profiles
def _array_lookup(col: Column, mapping: Mapping[str, Sequence[str]]) -> Column:
    expr = F.array().cast("array<string>")
    for key, values in sorted(mapping.items(), reverse=True):
        expr = F.when(
            col == F.lit(key), F.array(*[F.lit(v) for v in values]).cast("array<string>")
        ).otherwise(expr)
    return expr


def segment_profiles(
    segmented: DataFrame,
    centroid_columns: Mapping[str, str],
    persona_tactics: Mapping[str, Sequence[str]],
    tier_tactics: Mapping[str, Sequence[str]],
    all_tier: str = "ALL",
) -> DataFrame:
    """One row per (persona, value_tier) plus one per persona with value_tier = `all_tier`.

    Needs ``persona_id``, ``persona_name``, ``value_tier``, ``revenue_3m``, ``arpu_3m`` and
    the source columns of `centroid_columns` (centroid key -> column to average, so a
    centroid can report window-scaled values under the feature's name). Returns
    persona_id, persona_name, value_tier, subscribers,
    revenue_3m, revenue_share (of every subscriber's revenue_3m; null when that is 0),
    arpu_3m_mean, centroid (map of the group's means in original units, plus
    voice_sms_share when voice_share and sms_share are given) and tactics (the persona's
    from `persona_tactics`, then, on tier rows, the tier's from `tier_tactics`, distinct).
    """
    needed = ["persona_id", "persona_name", "value_tier", "revenue_3m", "arpu_3m", *centroid_columns.values()]
    require_columns(segmented, needed, "segment_profiles")
    aggs = [
        F.count(F.lit(1)).alias("subscribers"),
        F.sum(F.col("revenue_3m").cast("double")).alias("revenue_3m"),
        F.avg(F.col("arpu_3m").cast("double")).alias("arpu_3m_mean"),
        *[F.avg(F.col(src).cast("double")).alias(f"__c_{c}") for c, src in centroid_columns.items()],
    ]
    keys = ["persona_id", "persona_name"]
    by_tier = segmented.groupBy(*keys, "value_tier").agg(*aggs)
    whole = segmented.groupBy(*keys).agg(*aggs).withColumn("value_tier", F.lit(all_tier))
    entries = {c: F.col(f"__c_{c}") for c in centroid_columns}
    if "voice_share" in entries and "sms_share" in entries:
        entries["voice_sms_share"] = entries["voice_share"] + entries["sms_share"]
    centroid = F.create_map(*[x for name, value in entries.items() for x in (F.lit(name), value)])
    total = segmented.agg(F.sum(F.col("revenue_3m").cast("double")).alias("__total"))
    persona_part = _array_lookup(F.col("persona_name"), persona_tactics)
    tier_part = F.when(F.col("value_tier") == F.lit(all_tier), F.array().cast("array<string>")).otherwise(
        _array_lookup(F.col("value_tier"), tier_tactics)
    )
    return (
        by_tier.unionByName(whole)
        .join(total, how="cross")
        .select(
            *keys,
            "value_tier",
            "subscribers",
            "revenue_3m",
            F.when(F.col("__total") != 0, F.col("revenue_3m") / F.col("__total")).alias("revenue_share"),
            "arpu_3m_mean",
            centroid.alias("centroid"),
            F.array_distinct(F.concat(persona_part, tier_part)).alias("tactics"),
        )
    )
