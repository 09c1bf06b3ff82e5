"""Campaign measurement: treatment vs control uplift, incremental revenue, sample-ratio check.

All work is Spark aggregation; the result (offer x channel x period x segment) is small.

Statistics (per row, treatment t and control c, n contacts, k acceptances, p = k / n):

- ``uplift`` = p_t - p_c, with a two-sided interval at ``confidence``. Default
  **Newcombe's hybrid score interval** (method 10 of Newcombe 1998, built from the two
  Wilson score intervals): it keeps close to nominal coverage with small groups and rates
  near 0, where the Wald interval collapses to zero width. ``method='wald'`` gives the
  textbook p_t - p_c +/- z * sqrt(p_t(1-p_t)/n_t + p_c(1-p_c)/n_c).
- ``incremental_revenue`` = (mean revenue per contact t - mean per contact c) x n_t, the
  revenue the treatment contacts made that they would not have made untreated. Its
  interval is the normal approximation n_t * (diff +/- z * sqrt(s_t^2/n_t + s_c^2/n_c)),
  with the per-group sample variances computed in the same aggregation (Spark's
  ``var_samp``, a numerically stable form of sum / sum of squares).
- ``srm_p_value``: chi-square goodness of fit (1 df) of the observed treatment/control
  split of distinct subscribers (the unit of assignment) against the expected control share; p = erfc(sqrt(chi2 / 2)), with erfc from
  the Numerical Recipes Chebyshev approximation (relative error < 1.2e-7), so the test runs
  in Spark. ``srm_flag`` = p < alpha: the split is not what the assignment promised, and
  the row's uplift should not be trusted.

Rows whose treatment or control group is empty get null rates, uplift and revenue figures
(nothing to compare), never a made-up zero.
"""

from __future__ import annotations

from datetime import date
from statistics import NormalDist

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, DateType, DoubleType, LongType, StringType, StructField, StructType

from cvo_spark.core.util import require_columns

ALL_SEGMENTS = "ALL"
ALL_PERIODS = "ALL"
VALUE_TIER_PREFIX = "value_tier:"
PERSONA_PREFIX = "persona:"
KEYS = ("offer_id", "channel", "period", "segment")

CAMPAIGN_RESULTS_SCHEMA = StructType(
    [
        StructField("as_of", DateType()),
        StructField("offer_id", StringType()),
        StructField("channel", StringType()),
        StructField("period", StringType()),
        StructField("segment", StringType()),
        StructField("contacted_treatment", LongType()),
        StructField("contacted_control", LongType()),
        StructField("accept_rate_treatment", DoubleType()),
        StructField("accept_rate_control", DoubleType()),
        StructField("uplift", DoubleType()),
        StructField("uplift_ci_low", DoubleType()),
        StructField("uplift_ci_high", DoubleType()),
        StructField("incremental_revenue", DoubleType()),
        StructField("incremental_revenue_ci_low", DoubleType()),
        StructField("incremental_revenue_ci_high", DoubleType()),
        StructField("srm_p_value", DoubleType()),
        StructField("srm_flag", BooleanType()),
    ]
)

_HISTORY_COLUMNS = ("offer_id", "channel", "contacted_ts", "group", "accepted", "accepted_ts", "revenue")

# Numerical Recipes `erfcc` coefficients (Chebyshev fit, fractional error < 1.2e-7).
_ERFC_COEFFS = (
    -1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
    0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277,
)  # fmt: skip


def z_value(confidence: float) -> float:
    """Two-sided standard-normal quantile for a confidence level (0.95 -> 1.95996)."""
    return NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)


def erfc(x: Column) -> Column:
    """Complementary error function as a Spark expression (relative error < 1.2e-7)."""
    ax = F.abs(x)
    t = 1.0 / (1.0 + 0.5 * ax)
    poly = F.lit(_ERFC_COEFFS[-1])
    for c in reversed(_ERFC_COEFFS[:-1]):
        poly = poly * t + c
    value = t * F.exp(-ax * ax + poly)
    return F.when(x >= 0, value).otherwise(2.0 - value)


def chi2_1df_p_value(statistic: Column) -> Column:
    """Upper-tail p-value of a chi-square statistic with one degree of freedom."""
    return erfc(F.sqrt(statistic / 2.0))


def filter_contacts_as_of(offer_history: DataFrame, as_of: date, period: str = "month") -> DataFrame:
    """Contacts made on or before `as_of`, with the outcome known by the end of that day.

    Needs ``subscriber_id`` and the offer_history columns. Keeps rows with
    ``to_date(contacted_ts) <= as_of`` and group treatment/control; adds ``period``
    ('YYYY-MM'; for ``period='week'`` the Monday 'YYYY-MM-DD'; for 'all' the one label
    'ALL'), ``is_accepted`` (accepted
    and ``accepted_ts`` on or before `as_of`; an accepted row without a timestamp counts,
    its contact being in the window) and ``contact_revenue`` (revenue of an accepted row,
    else 0). Point in time: later acceptances and revenue do not count, so appending
    later events never changes the result.
    """
    require_columns(offer_history, ("subscriber_id", *_HISTORY_COLUMNS), "filter_contacts_as_of")
    if period == "month":
        period_col = F.date_format(F.col("contacted_ts"), "yyyy-MM")
    elif period == "week":
        period_col = F.date_format(F.date_trunc("week", F.col("contacted_ts")), "yyyy-MM-dd")
    elif period == "all":
        period_col = F.lit(ALL_PERIODS)
    else:
        raise ValueError(f"period must be 'month', 'week' or 'all', got {period!r}")
    as_of_lit = F.lit(as_of)
    accepted = F.coalesce(F.col("accepted"), F.lit(False)) & (
        F.col("accepted_ts").isNull() | (F.to_date("accepted_ts") <= as_of_lit)
    )
    return (
        offer_history.filter(
            (F.to_date("contacted_ts") <= as_of_lit) & F.col("group").isin("treatment", "control")
        )
        .withColumn("period", period_col)
        .withColumn("is_accepted", accepted)
        .withColumn(
            "contact_revenue", F.when(accepted, F.coalesce(F.col("revenue"), F.lit(0.0))).otherwise(0.0)
        )
    )


def latest_segments(segments: DataFrame, as_of: date) -> DataFrame:
    """Each subscriber's most recent segments row with ``as_of`` on or before `as_of`.

    Needs subscriber_id, as_of, value_tier, persona_name; returns those minus as_of,
    one row per subscriber (point in time: later snapshots are ignored).
    """
    require_columns(segments, ("subscriber_id", "as_of", "value_tier", "persona_name"), "latest_segments")
    newest_first = Window.partitionBy("subscriber_id").orderBy(F.col("as_of").desc())
    return (
        segments.filter(F.col("as_of") <= F.lit(as_of))
        .withColumn("_rn", F.row_number().over(newest_first))
        .filter(F.col("_rn") == 1)
        .select("subscriber_id", "value_tier", "persona_name")
    )


def with_segment_labels(contacts: DataFrame, segments: DataFrame | None) -> DataFrame:
    """One row per contact and segment label it belongs to (adds ``segment``).

    Every contact gets 'ALL'; one with a segments row (from `latest_segments`) also gets
    'value_tier:<tier>' and 'persona:<persona_name>' (null labels are left out). The
    contact is therefore counted once per label: 'ALL' rows hold the whole population.
    """
    labels = [F.lit(ALL_SEGMENTS)]
    if segments is not None:
        contacts = contacts.join(segments, on="subscriber_id", how="left")
        labels += [
            F.concat(F.lit(VALUE_TIER_PREFIX), F.col("value_tier")),
            F.concat(F.lit(PERSONA_PREFIX), F.col("persona_name")),
        ]
    exploded = F.explode(F.filter(F.array(*labels), lambda s: s.isNotNull()))
    return contacts.withColumn("segment", exploded)


def aggregate_groups(labelled: DataFrame) -> DataFrame:
    """Per offer, channel, period and segment: counts, acceptances and revenue by group.

    Needs subscriber_id, offer_id, channel, period, segment, group, is_accepted,
    contact_revenue. Returns the keys plus n_t, n_c, k_t, k_c (contacts and acceptances,
    long), revenue_t, revenue_c (sums), var_t, var_c (sample variance of revenue per
    contact; null with fewer than 2 contacts) and subscribers_t, subscribers_c (distinct
    subscribers: the unit the control group is drawn on).
    """
    require_columns(
        labelled, ("subscriber_id", *KEYS, "group", "is_accepted", "contact_revenue"), "aggregate_groups"
    )
    is_t = F.col("group") == "treatment"
    is_c = F.col("group") == "control"
    accepted = F.col("is_accepted").cast("long")
    revenue = F.col("contact_revenue")
    return labelled.groupBy(*KEYS).agg(
        F.sum(is_t.cast("long")).alias("n_t"),
        F.sum(is_c.cast("long")).alias("n_c"),
        F.sum(F.when(is_t, accepted).otherwise(0)).alias("k_t"),
        F.sum(F.when(is_c, accepted).otherwise(0)).alias("k_c"),
        F.sum(F.when(is_t, revenue).otherwise(0.0)).alias("revenue_t"),
        F.sum(F.when(is_c, revenue).otherwise(0.0)).alias("revenue_c"),
        F.var_samp(F.when(is_t, revenue)).alias("var_t"),
        F.var_samp(F.when(is_c, revenue)).alias("var_c"),
        F.countDistinct(F.when(is_t, F.col("subscriber_id"))).alias("subscribers_t"),
        F.countDistinct(F.when(is_c, F.col("subscriber_id"))).alias("subscribers_c"),
    )


def _wilson(k: Column, n: Column, z: float) -> tuple[Column, Column]:
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denom
    half = z * F.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denom
    return centre - half, centre + half


def with_uplift(groups: DataFrame, z: float, method: str = "newcombe") -> DataFrame:
    """Add accept rates, uplift and its interval, incremental revenue and its interval.

    Needs the columns of `aggregate_groups`. Adds accept_rate_treatment,
    accept_rate_control, uplift, uplift_ci_low, uplift_ci_high, incremental_revenue,
    incremental_revenue_ci_low, incremental_revenue_ci_high; all null when either group is
    empty (revenue interval also null when a group has a single contact).
    """
    if method not in ("newcombe", "wald"):
        raise ValueError(f"method must be 'newcombe' or 'wald', got {method!r}")
    n_t, n_c, k_t, k_c = (F.col(c).cast("double") for c in ("n_t", "n_c", "k_t", "k_c"))
    both = (F.col("n_t") > 0) & (F.col("n_c") > 0)
    p_t, p_c = k_t / n_t, k_c / n_c
    diff = p_t - p_c
    if method == "wald":
        half = z * F.sqrt(p_t * (1.0 - p_t) / n_t + p_c * (1.0 - p_c) / n_c)
        low, high = diff - half, diff + half
    else:
        l_t, u_t = _wilson(k_t, n_t, z)
        l_c, u_c = _wilson(k_c, n_c, z)
        low = diff - F.sqrt((p_t - l_t) ** 2 + (u_c - p_c) ** 2)
        high = diff + F.sqrt((u_t - p_t) ** 2 + (p_c - l_c) ** 2)
    mean_diff = F.col("revenue_t") / n_t - F.col("revenue_c") / n_c
    rev_half = z * n_t * F.sqrt(F.col("var_t") / n_t + F.col("var_c") / n_c)
    incremental = mean_diff * n_t

    def guarded(col: Column) -> Column:
        return F.when(both, col)

    return (
        groups.withColumn("accept_rate_treatment", F.when(F.col("n_t") > 0, p_t))
        .withColumn("accept_rate_control", F.when(F.col("n_c") > 0, p_c))
        .withColumn("uplift", guarded(diff))
        .withColumn("uplift_ci_low", guarded(low))
        .withColumn("uplift_ci_high", guarded(high))
        .withColumn("incremental_revenue", guarded(incremental))
        .withColumn("incremental_revenue_ci_low", guarded(incremental - rev_half))
        .withColumn("incremental_revenue_ci_high", guarded(incremental + rev_half))
    )


def with_sample_ratio_check(groups: DataFrame, expected_control_share: float, alpha: float) -> DataFrame:
    """Add ``srm_p_value`` and ``srm_flag`` (chi-square, 1 df, of the control/treatment split).

    Needs subscribers_t, subscribers_c. The test counts distinct subscribers, not
    contacts: control membership is drawn per subscriber, so a subscriber contacted five
    times moves five contacts at once and a contact-level test would flag chance clumps.
    With an expected share of 0 (no control group planned) the test is undefined: p is
    null and the flag false.
    """
    require_columns(groups, ("subscribers_t", "subscribers_c"), "with_sample_ratio_check")
    n_t, n_c = F.col("subscribers_t"), F.col("subscribers_c")
    n = (n_t + n_c).cast("double")
    q = expected_control_share
    if q <= 0.0 or q >= 1.0:
        p_value = F.lit(None).cast("double")
    else:
        exp_c, exp_t = n * q, n * (1.0 - q)
        chi2 = (n_c - exp_c) ** 2 / exp_c + (n_t - exp_t) ** 2 / exp_t
        p_value = F.when(n > 0, chi2_1df_p_value(chi2))
    return groups.withColumn("srm_p_value", p_value).withColumn(
        "srm_flag", F.coalesce(F.col("srm_p_value") < alpha, F.lit(False))
    )


def campaign_results(
    offer_history: DataFrame,
    segments: DataFrame | None,
    as_of: date,
    *,
    expected_control_share: float,
    confidence: float = 0.95,
    srm_alpha: float = 0.001,
    period: str = "month",
    method: str = "newcombe",
) -> DataFrame:
    """The `campaign_results` rows for `as_of` (schema `CAMPAIGN_RESULTS_SCHEMA`).

    Parameters
    ----------
    offer_history : silver offer_history (subscriber_id, offer_id, channel, contacted_ts,
        group, accepted, accepted_ts, revenue).
    segments : gold segments (subscriber_id, as_of, value_tier, persona_name) or None;
        when given, rows per value tier and persona are added to the 'ALL' rows.
    as_of : contacts and outcomes up to the end of this day count (point in time).
    expected_control_share : the planned control share the split is tested against.
    """
    contacts = filter_contacts_as_of(offer_history, as_of, period)
    latest = latest_segments(segments, as_of) if segments is not None else None
    return (
        contacts.transform(with_segment_labels, latest)
        .transform(aggregate_groups)
        .transform(with_uplift, z_value(confidence), method)
        .transform(with_sample_ratio_check, expected_control_share, srm_alpha)
        .withColumn("as_of", F.lit(as_of))
        .withColumnRenamed("n_t", "contacted_treatment")
        .withColumnRenamed("n_c", "contacted_control")
        .select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in CAMPAIGN_RESULTS_SCHEMA.fields])
    )
