"""Stage `measure`: silver offer_history (+ gold segments) -> gold `campaign_results` as of a date.

Uplift of treatment over control per offer, channel, period and segment, with intervals
and a sample-ratio-mismatch check (see `cvo_spark.measure.campaigns`). The ``as_of`` partition
is replaced in one commit, so a re-run for the same date leaves the same rows
(invariant 2); only contacts and outcomes up to ``as_of`` count (invariant 1).
"""

from __future__ import annotations

from pyspark.sql import functions as F

from cvo_spark.core.stage import StageContext, StageResult
from cvo_spark.core.util import first_row
from cvo_spark.measure.campaigns import ALL_SEGMENTS, campaign_results


def run(ctx: StageContext) -> StageResult:
    """Compute and write `campaign_results` for ``ctx.as_of``; report rows and SRM flags."""
    measure = ctx.config.measure
    history = ctx.store.read_input("silver", "offer_history")
    # Segments are optional: without them every row is segment 'ALL'.
    segments = ctx.store.read("gold", "segments") if ctx.store.exists("gold", "segments") else None
    results = campaign_results(
        history,
        segments,
        ctx.as_of,
        expected_control_share=ctx.config.offers.control_share,
        confidence=measure.confidence,
        srm_alpha=measure.srm_alpha,
        period=measure.period,
        method=measure.uplift_interval,
    )
    # merge_schema: a lake written before the subscriber counts were added gains the columns
    # (older partitions read null) instead of failing the write.
    ctx.store.overwrite_partition(results, "gold", "campaign_results", ctx.as_of, merge_schema=True)

    # The written partition is small (offers x channels x periods x segments): summarise it.
    written = ctx.store.read("gold", "campaign_results").where(F.col("as_of") == F.lit(ctx.as_of))
    summary = first_row(
        written.agg(
            F.count(F.lit(1)).alias("rows"),
            F.sum(F.col("srm_flag").cast("long")).alias("srm_flags"),
            F.sum(F.when(F.col("segment") == ALL_SEGMENTS, F.col("contacted_treatment"))).alias("treatment"),
            F.sum(F.when(F.col("segment") == ALL_SEGMENTS, F.col("contacted_control"))).alias("control"),
            F.sum(F.when(F.col("segment") == ALL_SEGMENTS, F.col("incremental_revenue"))).alias(
                "incremental"
            ),
        ),
        "measure: summary of the written gold campaign_results",
    )
    rows, flags = int(summary["rows"]), int(summary["srm_flags"] or 0)
    treatment, control = int(summary["treatment"] or 0), int(summary["control"] or 0)
    incremental = float(summary["incremental"] or 0.0)
    return StageResult(
        row_counts={"campaign_results": rows},
        checks={"srm_flags": str(flags)},
        message=f"campaign results as of {ctx.as_of}: {rows:,} rows, {treatment:,} treatment and "
        f"{control:,} control contacts, incremental revenue {incremental:,.0f}, "
        f"{flags} row(s) with sample-ratio mismatch",
    )
