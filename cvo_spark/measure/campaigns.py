"""Campaign measurement: treatment vs control uplift, incremental revenue, sample-ratio check.

All work is Spark aggregation; the result (offer x channel x period x segment) is small.

Statistics (per row, treatment t and control c, n contacts, k acceptances, p = k / n):

- ``uplift`` = p_t - p_c, with a two-sided interval at ``confidence``. The control group
  is drawn per subscriber, and a subscriber contacted many times is one unit whose
  contacts answer alike, so the default ``method='clustered'`` is **cluster-robust by
  subscriber**: contacts are first summed per subscriber (n_i, k_i, r_i), p is the ratio
  estimator sum k_i / sum n_i, and its variance is the delta-method (linearisation) one,
  sum (k_i - p n_i)^2 / (sum n_i)^2 * m / (m - 1) with m subscribers in the group
  (`cvo_spark.measure.intervals`); the interval is uplift +/- z * sqrt(Var_t + Var_c).
  With a single subscriber in a group there is no variance to estimate: the interval is
  null. Like Wald's, it is a normal approximation: with very few acceptances in a group
  (none at all gives that group variance 0) it is too narrow, where Newcombe's score
  interval holds up if contacts are one per subscriber. ``method='newcombe'``
  (Newcombe's 1998 hybrid score interval from two Wilson intervals) and
  ``method='wald'`` treat contacts as independent; they are kept for
  comparison and are too narrow when subscribers are contacted repeatedly (1,000 seeded
  replications in ``benchmarks/bench_clustered_ci.py``).
- ``incremental_revenue`` = (mean revenue per contact t - mean per contact c) x n_t, the
  revenue the treatment contacts made that they would not have made untreated. Its
  interval is n_t * (diff +/- z * sqrt(V_t + V_c)): clustered, V is the same ratio
  variance with revenue r_i in place of k_i; contact-level (newcombe/wald), V = s^2 / n
  with the per-contact sample variance s^2 (Spark's ``var_samp``).
- ``srm_p_value``: chi-square goodness of fit (1 df) of the observed treatment/control
  split of distinct subscribers (the unit of assignment) against the expected control
  share; p = erfc(sqrt(chi2 / 2)), with erfc from the Numerical Recipes Chebyshev
  approximation (relative error < 1.2e-7), so the test runs in Spark. ``srm_flag`` =
  p < alpha: the split is not what the assignment promised, and the row's uplift should
  not be trusted.

Segments are taken as of the decision: a contact is labelled with the subscriber's newest
segments row dated on or before the contact's day, never a later one (a tier the offer
itself may have changed would credit the offer to the wrong segment).

Rows whose treatment or control group is empty get null rates, uplift and revenue figures
(nothing to compare), never a made-up zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from statistics import NormalDist

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, DateType, DoubleType, LongType, StringType, StructField, StructType

from cvo_spark.core.tables import partitions_through
from cvo_spark.core.util import require_columns
from cvo_spark.measure.intervals import (
    clustered_ratio_variance,
    newcombe_bounds,
    normal_bounds,
    wald_variance,
)

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
        # Distinct subscribers per group: the units the intervals and the SRM test count.
        StructField("subscribers_treatment", LongType()),
        StructField("subscribers_control", LongType()),
    ]
)

#: Interval methods of `with_uplift`; the first is the default.
METHODS = ("clustered", "newcombe", "wald")

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


def period_label(moment: Column, period: str) -> Column:
    """The period a date or timestamp falls in: 'YYYY-MM' ('month'), its Monday 'YYYY-MM-DD'
    ('week'), or the one label 'ALL' ('all')."""
    if period == "month":
        return F.date_format(moment, "yyyy-MM")
    if period == "week":
        return F.date_format(F.date_trunc("week", moment), "yyyy-MM-dd")
    if period == "all":
        return F.lit(ALL_PERIODS)
    raise ValueError(f"period must be 'month', 'week' or 'all', got {period!r}")


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
    period_col = period_label(F.col("contacted_ts"), period)
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


def with_segments_at_contact(contacts: DataFrame, segments: DataFrame, as_of: date) -> DataFrame:
    """Add ``value_tier`` and ``persona_name`` as they were when each contact was decided.

    Needs subscriber_id and contacted_ts in `contacts`; subscriber_id, as_of, value_tier,
    persona_name in `segments`. Each contact gets the subscriber's newest segments row with
    ``as_of <= to_date(contacted_ts)`` (a row of the contact's own day counts); a contact
    older than every segments row gets nulls. Rows keep their number and columns.

    Point in time: a later snapshot, even one still before `as_of`, never relabels a
    contact; a tier the treatment itself raised would otherwise credit the offer to the
    segment it created. Segments after `as_of` are dropped before anything else.
    """
    require_columns(contacts, ("subscriber_id", "contacted_ts"), "with_segments_at_contact")
    require_columns(
        segments, ("subscriber_id", "as_of", "value_tier", "persona_name"), "with_segments_at_contact"
    )
    # An as-of join as one sort per subscriber instead of a range join: segments rows and
    # contacts in one frame ordered by date (a segments row before a contact of the same
    # day), each contact taking the last segments row seen. The pair travels as one struct
    # so a null persona is never filled from an older row than the tier.
    snapshots = segments.filter(partitions_through(as_of)).select(
        "subscriber_id",
        F.col("as_of").alias("_event_date"),
        F.lit(0).alias("_is_contact"),
        F.struct("value_tier", "persona_name").alias("_segment"),
    )
    events = contacts.withColumn("_event_date", F.to_date("contacted_ts")).withColumn("_is_contact", F.lit(1))
    so_far = (
        Window.partitionBy("subscriber_id")
        .orderBy("_event_date", "_is_contact")
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    return (
        events.unionByName(snapshots, allowMissingColumns=True)
        .withColumn("_segment", F.last("_segment", ignorenulls=True).over(so_far))
        .filter(F.col("_is_contact") == 1)
        .select(
            *contacts.columns,
            F.col("_segment.value_tier").alias("value_tier"),
            F.col("_segment.persona_name").alias("persona_name"),
        )
    )


def with_segment_labels(contacts: DataFrame, segments: DataFrame | None, as_of: date) -> DataFrame:
    """One row per contact and segment label it belongs to (adds ``segment``).

    Every contact gets 'ALL'; with `segments` (gold segments: subscriber_id, as_of,
    value_tier, persona_name), a contact also gets 'value_tier:<tier>' and
    'persona:<persona_name>' from the segments at the contact (`with_segments_at_contact`;
    null labels are left out). The contact is therefore counted once per label: 'ALL' rows
    hold the whole population.
    """
    labels = [F.lit(ALL_SEGMENTS)]
    if segments is not None:
        contacts = with_segments_at_contact(contacts, segments, as_of)
        labels += [
            F.concat(F.lit(VALUE_TIER_PREFIX), F.col("value_tier")),
            F.concat(F.lit(PERSONA_PREFIX), F.col("persona_name")),
        ]
    exploded = F.explode(F.filter(F.array(*labels), lambda s: s.isNotNull()))
    return contacts.withColumn("segment", exploded)


_GROUP_COLUMNS = ("subscriber_id", *KEYS, "group", "is_accepted", "contact_revenue")


def aggregate_groups(labelled: DataFrame) -> DataFrame:
    """Per offer, channel, period and segment: counts, acceptances and revenue by group.

    Contact-level (the 'newcombe' and 'wald' methods). Needs subscriber_id, offer_id,
    channel, period, segment, group, is_accepted, contact_revenue. Returns the keys plus
    n_t, n_c, k_t, k_c (contacts and acceptances, long), revenue_t, revenue_c (sums),
    var_t, var_c (sample variance of revenue per contact; null with fewer than 2 contacts)
    and subscribers_t, subscribers_c (distinct subscribers: the unit the control group is
    drawn on).
    """
    require_columns(labelled, _GROUP_COLUMNS, "aggregate_groups")
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


def aggregate_subscribers(
    labelled: DataFrame, keys: Sequence[str] = KEYS, values: Sequence[str] = ()
) -> DataFrame:
    """One row per offer, channel, period, segment, group and subscriber: the cluster totals.

    Needs the columns of `aggregate_groups` (with `keys` in place of the campaign_results
    keys, e.g. the decision keys of `cvo_spark.measure.decisions`). Returns the keys, group,
    subscriber_id and n_i (contacts, long), k_i (acceptances, long), r_i (revenue, double),
    plus ``<v>_i`` (the subscriber's sum of column ``v``) for each name in `values`.
    """
    require_columns(
        labelled,
        ("subscriber_id", *keys, "group", "is_accepted", "contact_revenue", *values),
        "aggregate_subscribers",
    )
    return labelled.groupBy(*keys, "group", "subscriber_id").agg(
        F.count(F.lit(1)).alias("n_i"),
        F.sum(F.col("is_accepted").cast("long")).alias("k_i"),
        F.sum(F.col("contact_revenue")).alias("r_i"),
        *[F.sum(F.col(v).cast("double")).alias(f"{v}_i") for v in values],
    )


def _non_negative(variance: Column) -> Column:
    # Clip rounding below zero; a null (one subscriber: no variance to estimate) stays null,
    # which F.greatest would turn into 0 and so into a zero-width interval.
    return F.when(variance < 0.0, F.lit(0.0)).otherwise(variance)


def aggregate_clustered_groups(
    per_subscriber: DataFrame,
    keys: Sequence[str] = KEYS,
    baseline: str = "control",
    values: Sequence[str] = (),
) -> DataFrame:
    """Per offer, channel, period and segment: group totals and subscriber-clustered variances.

    Needs the columns of `aggregate_subscribers`. Returns the keys plus n_t, n_c, k_t, k_c,
    revenue_t, revenue_c, subscribers_t, subscribers_c (as `aggregate_groups`) and
    rate_var_t, rate_var_c (delta-method variance of the accept rate sum k_i / sum n_i)
    and rpc_var_t, rpc_var_c (of revenue per contact sum r_i / sum n_i); the variances are
    null for a group with fewer than 2 subscribers. One aggregation over the per-subscriber
    rows: the (co)variances come from ``var_samp`` / ``covar_samp`` (see
    `cvo_spark.measure.intervals`), never from collecting subscribers.

    The ``_c`` side is the group named `baseline` ('control' by default; 'holdout' to
    measure against the universal holdout); rows of any other group are ignored. For each
    name v in `values` (a ``<v>_i`` column of `aggregate_subscribers`) it also returns
    ``v_t``, ``v_c`` (sums) and ``v_var_t``, ``v_var_c`` (clustered variance of v per
    contact, like rpc_var for revenue).
    """
    value_cols = [f"{v}_i" for v in values]
    require_columns(
        per_subscriber,
        (*keys, "group", "subscriber_id", "n_i", "k_i", "r_i", *value_cols),
        "aggregate_clustered_groups",
    )
    n_i = F.col("n_i").cast("double")
    sums = {"k": F.col("k_i").cast("double"), "revenue": F.col("r_i").cast("double")}
    sums.update({v: F.col(f"{v}_i").cast("double") for v in values})
    aggs, variances = [], []
    for g, name in (("t", "treatment"), ("c", baseline)):
        is_g = F.col("group") == name
        n_g = F.when(is_g, n_i)
        aggs += [
            F.sum(F.when(is_g, F.col("n_i")).otherwise(0)).alias(f"n_{g}"),
            F.sum(F.when(is_g, F.col("k_i")).otherwise(0)).alias(f"k_{g}"),
            F.sum(is_g.cast("long")).alias(f"subscribers_{g}"),
            F.var_samp(n_g).alias(f"_snn_{g}"),
        ]
        m, total = F.col(f"subscribers_{g}").cast("double"), F.col(f"n_{g}").cast("double")
        for v, x in sums.items():
            x_g = F.when(is_g, x)
            if v != "k":
                aggs.append(F.sum(F.when(is_g, x).otherwise(0.0)).alias(f"{v}_{g}"))
            aggs += [F.var_samp(x_g).alias(f"_s{v}{v}_{g}"), F.covar_samp(x_g, n_g).alias(f"_s{v}n_{g}")]
            ratio = F.col(f"{v}_{g}") / total
            var = clustered_ratio_variance(
                m, total, F.col(f"_s{v}{v}_{g}"), F.col(f"_s{v}n_{g}"), F.col(f"_snn_{g}"), ratio
            )
            # Guarded: under ANSI a division by zero contacts would fail the query, not give null.
            out = {"k": "rate_var", "revenue": "rpc_var"}.get(v, f"{v}_var")
            variances.append(F.when(total > 0, _non_negative(var)).alias(f"{out}_{g}"))
    grouped = per_subscriber.groupBy(*keys).agg(*aggs)
    totals = [c for c in grouped.columns if not c.startswith("_")]
    return grouped.select(*totals, *variances)


def with_uplift(groups: DataFrame, z: float, method: str = "clustered") -> DataFrame:
    """Add accept rates, uplift and its interval, incremental revenue and its interval.

    Needs n_t, n_c, k_t, k_c, revenue_t, revenue_c and, for ``method='clustered'``, the
    variances of `aggregate_clustered_groups` (rate_var_*, rpc_var_*), for 'newcombe' and
    'wald' the var_t, var_c of `aggregate_groups`. Adds accept_rate_treatment,
    accept_rate_control, uplift, uplift_ci_low, uplift_ci_high, incremental_revenue,
    incremental_revenue_ci_low, incremental_revenue_ci_high; all null when either group is
    empty (intervals also null when a group has a single subscriber, clustered, or a single
    contact, for the contact-level revenue interval).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    n_t, n_c, k_t, k_c = (F.col(c).cast("double") for c in ("n_t", "n_c", "k_t", "k_c"))
    both = (F.col("n_t") > 0) & (F.col("n_c") > 0)
    p_t, p_c = k_t / n_t, k_c / n_c
    diff = p_t - p_c
    if method == "clustered":
        low, high = normal_bounds(diff, F.col("rate_var_t") + F.col("rate_var_c"), z)
        rpc_var = F.col("rpc_var_t") + F.col("rpc_var_c")
    else:
        if method == "wald":
            low, high = normal_bounds(diff, wald_variance(k_t, n_t) + wald_variance(k_c, n_c), z)
        else:
            low, high = newcombe_bounds(k_t, n_t, k_c, n_c, z)
        rpc_var = F.col("var_t") / n_t + F.col("var_c") / n_c
    mean_diff = F.col("revenue_t") / n_t - F.col("revenue_c") / n_c
    incremental = mean_diff * n_t
    rev_low, rev_high = normal_bounds(mean_diff, rpc_var, z)

    def guarded(col: Column) -> Column:
        return F.when(both, col)

    return (
        groups.withColumn("accept_rate_treatment", F.when(F.col("n_t") > 0, p_t))
        .withColumn("accept_rate_control", F.when(F.col("n_c") > 0, p_c))
        .withColumn("uplift", guarded(diff))
        .withColumn("uplift_ci_low", guarded(low))
        .withColumn("uplift_ci_high", guarded(high))
        .withColumn("incremental_revenue", guarded(incremental))
        .withColumn("incremental_revenue_ci_low", guarded(rev_low * n_t))
        .withColumn("incremental_revenue_ci_high", guarded(rev_high * n_t))
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
    method: str = "clustered",
) -> DataFrame:
    """The `campaign_results` rows for `as_of` (schema `CAMPAIGN_RESULTS_SCHEMA`).

    Parameters
    ----------
    offer_history : silver offer_history (subscriber_id, offer_id, channel, contacted_ts,
        group, accepted, accepted_ts, revenue).
    segments : gold segments (subscriber_id, as_of, value_tier, persona_name) or None;
        when given, rows per value tier and persona (as of each contact) are added to the
        'ALL' rows.
    as_of : contacts and outcomes up to the end of this day count (point in time).
    expected_control_share : the planned control share the split is tested against.
    method : interval method, one of `METHODS`: 'clustered' (by subscriber, the default),
        or the contact-level 'newcombe' / 'wald'.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    labelled = filter_contacts_as_of(offer_history, as_of, period).transform(
        with_segment_labels, segments, as_of
    )
    if method == "clustered":
        groups = labelled.transform(aggregate_subscribers).transform(aggregate_clustered_groups)
    else:
        groups = labelled.transform(aggregate_groups)
    return (
        groups.transform(with_uplift, z_value(confidence), method)
        .transform(with_sample_ratio_check, expected_control_share, srm_alpha)
        .withColumn("as_of", F.lit(as_of))
        .withColumnRenamed("n_t", "contacted_treatment")
        .withColumnRenamed("n_c", "contacted_control")
        .withColumnRenamed("subscribers_t", "subscribers_treatment")
        .withColumnRenamed("subscribers_c", "subscribers_control")
        .select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in CAMPAIGN_RESULTS_SCHEMA.fields])
    )
