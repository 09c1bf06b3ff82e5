"""Measurement of the engine's own decisions: gold `decision_results`.

Per campaign, offer, channel, period and segment (as of the decision), the treatment
decisions of gold `decisions` against a baseline group of the same campaign: the
per-campaign ``control`` and, where the log has one, the universal ``holdout`` (one row
per baseline, column ``baseline``). What each decision led to comes from
`cvo_spark.measure.attribution` (the same outcome rule for every group); the statistics are
those of `cvo_spark.measure.campaigns`, with the decision in place of the contact:

- ``uplift`` = accept rate treatment - baseline, interval clustered by subscriber (a
  subscriber decided for several times, or for several offers, is one unit);
- ``incremental_revenue`` = (revenue per decision, treatment - baseline) x treatment
  decisions; ``incremental_margin`` the same with the margin net of unit costs, incentives
  and contact costs (`attribution`), both with clustered intervals;
- ``srm_p_value`` / ``srm_flag``: the split of distinct subscribers against the planned
  share of the baseline (null where no share is given, e.g. a holdout whose share the
  caller does not pass).

Besides each offer and channel, every campaign gets a row with offer_id and channel 'ALL'
(all its decisions: the campaign's own uplift). Rows whose baseline is empty get null
comparisons for the control (nothing to compare, never a made-up zero); a holdout row is
written only where the holdout has decisions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, DateType, DoubleType, LongType, StringType, StructField, StructType

from cvo_spark.core.util import require_columns
from cvo_spark.measure.attribution import ATTRIBUTED_COLUMNS
from cvo_spark.measure.campaigns import (
    aggregate_clustered_groups,
    aggregate_subscribers,
    period_label,
    with_sample_ratio_check,
    with_segment_labels,
    with_uplift,
    z_value,
)
from cvo_spark.measure.intervals import normal_bounds

DECISION_KEYS = ("campaign_id", "offer_id", "channel", "period", "segment")
#: The groups the treatment is measured against, in output order.
BASELINES = ("control", "holdout")
ALL_OFFERS = ALL_CHANNELS = "ALL"
#: Per-decision sums carried to the groups (beside acceptances and revenue).
_VALUES = ("margin", "contact_cost", "incentive_cost", "is_window_open", "is_delivered")

DECISION_RESULTS_SCHEMA = StructType(
    [
        StructField("as_of", DateType()),
        StructField("campaign_id", StringType()),
        StructField("offer_id", StringType()),
        StructField("channel", StringType()),
        StructField("period", StringType()),
        StructField("segment", StringType()),
        StructField("baseline", StringType()),
        StructField("decisions_treatment", LongType()),
        StructField("decisions_baseline", LongType()),
        StructField("subscribers_treatment", LongType()),
        StructField("subscribers_baseline", LongType()),
        StructField("accept_rate_treatment", DoubleType()),
        StructField("accept_rate_baseline", DoubleType()),
        StructField("uplift", DoubleType()),
        StructField("uplift_ci_low", DoubleType()),
        StructField("uplift_ci_high", DoubleType()),
        StructField("incremental_revenue", DoubleType()),
        StructField("incremental_revenue_ci_low", DoubleType()),
        StructField("incremental_revenue_ci_high", DoubleType()),
        StructField("incremental_margin", DoubleType()),
        StructField("incremental_margin_ci_low", DoubleType()),
        StructField("incremental_margin_ci_high", DoubleType()),
        StructField("contact_cost", DoubleType()),
        StructField("incentive_cost", DoubleType()),
        StructField("srm_p_value", DoubleType()),
        StructField("srm_flag", BooleanType()),
        # Treatment decisions with any channel response (delivery evidence), baseline ones
        # with any (should be 0: an answered control decision was contacted after all).
        StructField("responded_treatment", LongType()),
        StructField("responded_baseline", LongType()),
        # Decisions (both groups) whose validity had not ended by as_of: figures still moving.
        StructField("open_decisions", LongType()),
    ]
)


def with_incremental(groups: DataFrame, value: str, z: float, name: str) -> DataFrame:
    """Add `name`, `name`_ci_low, `name`_ci_high: (mean `value` per decision, treatment - baseline)
    x treatment decisions, with the clustered interval.

    Needs n_t, n_c and the ``<value>_t``, ``<value>_c``, ``<value>_var_t``, ``<value>_var_c``
    of `aggregate_clustered_groups`; all null unless both groups have decisions.
    """
    cols = ("n_t", "n_c", f"{value}_t", f"{value}_c", f"{value}_var_t", f"{value}_var_c")
    require_columns(groups, cols, "with_incremental")
    n_t, n_c = F.col("n_t").cast("double"), F.col("n_c").cast("double")
    both = (F.col("n_t") > 0) & (F.col("n_c") > 0)
    diff = F.col(f"{value}_t") / n_t - F.col(f"{value}_c") / n_c
    low, high = normal_bounds(diff, F.col(f"{value}_var_t") + F.col(f"{value}_var_c"), z)
    return (
        groups.withColumn(name, F.when(both, diff * n_t))
        .withColumn(f"{name}_ci_low", F.when(both, low * n_t))
        .withColumn(f"{name}_ci_high", F.when(both, high * n_t))
    )


def with_decision_labels(
    attributed: DataFrame, segments: DataFrame | None, as_of: date, period: str
) -> DataFrame:
    """One row per attributed decision and (scope, segment) label it is counted under.

    Adds ``period`` (of the decision's day), ``segment`` ('ALL', and the value tier and
    persona as of the decision's day: `campaigns.with_segment_labels`), and doubles each
    row into its own offer and channel and the campaign's 'ALL'/'ALL'. Renames revenue to
    ``contact_revenue`` for the shared aggregators.
    """
    require_columns(attributed, ATTRIBUTED_COLUMNS, "with_decision_labels")
    scopes = F.array(
        F.struct(F.col("offer_id").alias("o"), F.col("channel").alias("c")),
        F.struct(F.lit(ALL_OFFERS).alias("o"), F.lit(ALL_CHANNELS).alias("c")),
    )
    return (
        attributed.withColumn("period", period_label(F.col("as_of"), period))
        # The decision was made on its as_of day, from that day's segments.
        .withColumn("contacted_ts", F.col("as_of").cast("timestamp"))
        .transform(with_segment_labels, segments, as_of)
        .withColumn("_scope", F.explode(scopes))
        .withColumn("offer_id", F.col("_scope.o"))
        .withColumn("channel", F.col("_scope.c"))
        .withColumn("contact_revenue", F.col("revenue"))
        .drop("_scope")
    )


def _against(labelled: DataFrame, baseline: str, z: float, share: float, srm_alpha: float) -> DataFrame:
    groups = (
        labelled.where(F.col("group").isin("treatment", baseline))
        .transform(aggregate_subscribers, DECISION_KEYS, _VALUES)
        .transform(aggregate_clustered_groups, DECISION_KEYS, baseline, _VALUES)
        .transform(with_uplift, z, "clustered")
        .transform(with_incremental, "margin", z, "incremental_margin")
        .transform(with_sample_ratio_check, share, srm_alpha)
    )
    if baseline != "control":  # a holdout row only where the holdout has decisions
        groups = groups.where(F.col("n_c") > 0)
    return groups.select(
        "*",
        F.lit(baseline).alias("baseline"),
        F.col("n_t").alias("decisions_treatment"),
        F.col("n_c").alias("decisions_baseline"),
        F.col("subscribers_c").alias("subscribers_baseline"),
        F.col("accept_rate_control").alias("accept_rate_baseline"),
        F.col("contact_cost_t").alias("contact_cost"),
        F.col("incentive_cost_t").alias("incentive_cost"),
        F.col("is_delivered_t").alias("responded_treatment"),
        F.col("is_delivered_c").alias("responded_baseline"),
        (F.col("is_window_open_t") + F.col("is_window_open_c")).alias("open_decisions"),
    ).withColumnRenamed("subscribers_t", "subscribers_treatment")


def decision_results(
    attributed: DataFrame,
    segments: DataFrame | None,
    as_of: date,
    *,
    expected_baseline_shares: Mapping[str, float],
    confidence: float = 0.95,
    srm_alpha: float = 0.001,
    period: str = "month",
    baselines: Sequence[str] = BASELINES,
) -> DataFrame:
    """The `decision_results` rows for `as_of` (schema `DECISION_RESULTS_SCHEMA`).

    Parameters
    ----------
    attributed : `attribution.attribute_decisions` for `as_of`.
    segments : gold segments (subscriber_id, as_of, value_tier, persona_name) or None.
    expected_baseline_shares : baseline group -> its planned share of (treatment +
        baseline) subscribers, for the SRM test; a baseline not in it gets a null p-value.
    baselines : the groups to measure against ('control', 'holdout').
    """
    labelled = with_decision_labels(attributed, segments, as_of, period)
    z = z_value(confidence)
    parts = [_against(labelled, b, z, expected_baseline_shares.get(b, 0.0), srm_alpha) for b in baselines]
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    return union.withColumn("as_of", F.lit(as_of)).select(
        *[F.col(f.name).cast(f.dataType).alias(f.name) for f in DECISION_RESULTS_SCHEMA.fields]
    )
