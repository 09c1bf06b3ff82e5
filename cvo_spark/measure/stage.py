"""Stage `measure`: how offers did, as of a date.

- gold `campaign_results` from silver offer_history (+ gold segments): uplift of treatment
  over control per offer, channel, period and segment, with intervals and a
  sample-ratio-mismatch check (see `cvo_spark.measure.campaigns`);
- gold `decision_results` from the engine's own gold `decisions`, attributed to silver
  `channel_responses` (optional) and `purchases` within each offer's validity
  (`cvo_spark.measure.attribution`, `cvo_spark.measure.decisions`), with costs from the
  offer catalog. Skipped, and said so, while the engine has published no decision.

Each ``as_of`` partition is replaced in one commit, so a re-run for the same date leaves
the same rows (invariant 2); only contacts, decisions and outcomes up to ``as_of`` count
(invariant 1).
"""

from __future__ import annotations

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cvo_spark.core.catalog import Catalog, load_checked_catalog
from cvo_spark.core.stage import StageContext, StageResult
from cvo_spark.core.util import first_row
from cvo_spark.measure.attribution import attribute_decisions
from cvo_spark.measure.campaigns import ALL_SEGMENTS, campaign_results
from cvo_spark.measure.decisions import ALL_CHANNELS, ALL_OFFERS, decision_results

#: The tables this stage reads (`cvo_spark.pipeline`): the contact history and segments for
#: campaign_results; the engine's decisions, channel responses and purchases for decision_results.
READS: tuple[str, ...] = ("offer_history", "segments", "decisions", "channel_responses", "purchases")


def offer_terms(spark: SparkSession, catalog: Catalog) -> DataFrame:
    """offer_id, price, unit_cost, incentive of every catalog offer (a tiny frame)."""
    rows = [(o.offer_id, float(o.price), float(o.unit_cost), float(o.incentive)) for o in catalog.offers]
    return spark.createDataFrame(rows, "offer_id string, price double, unit_cost double, incentive double")


def channel_costs(spark: SparkSession, catalog: Catalog) -> DataFrame:
    """channel, contact_cost of every catalog channel (a tiny frame)."""
    rows = [(name, float(spec.contact_cost)) for name, spec in catalog.channels.items()]
    return spark.createDataFrame(rows, "channel string, contact_cost double")


def measure_decisions(
    ctx: StageContext, segments: DataFrame | None
) -> tuple[dict[str, int], dict[str, str], str]:
    """Attribute and measure the engine's own decisions; write gold `decision_results`.

    Returns row counts, checks and a message part for the stage result.
    """
    store, as_of, measure = ctx.store, ctx.as_of, ctx.config.measure
    catalog = load_checked_catalog(ctx.config)
    responses = store.input("channel_responses") if store.has("channel_responses") else None
    attributed = attribute_decisions(
        store.table("decisions"),
        responses,
        store.input("purchases"),
        offer_terms(ctx.spark, catalog),
        channel_costs(ctx.spark, catalog),
        as_of,
    ).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        results = decision_results(
            attributed,
            segments,
            as_of,
            expected_baseline_shares={"control": ctx.config.offers.control_share},
            confidence=measure.confidence,
            srm_alpha=measure.srm_alpha,
            period=measure.period,
        )
        store.write(results, "decision_results", as_of)
        unknown = attributed.where(~F.col("has_terms")).select("offer_id").distinct().limit(5).collect()
    finally:
        attributed.unpersist()

    written = store.read_as_of("decision_results", as_of)
    campaign = (F.col("offer_id") == ALL_OFFERS) & (F.col("channel") == ALL_CHANNELS)
    whole = campaign & (F.col("segment") == ALL_SEGMENTS) & (F.col("baseline") == "control")
    summary = first_row(
        written.agg(
            F.count(F.lit(1)).alias("rows"),
            F.sum(F.col("srm_flag").cast("long")).alias("srm_flags"),
            F.sum(F.when(whole, F.col("decisions_treatment"))).alias("treatment"),
            F.sum(F.when(whole, F.col("decisions_baseline"))).alias("control"),
            F.sum(F.when(whole, F.col("incremental_margin"))).alias("margin"),
            F.sum(F.when(campaign & (F.col("segment") == ALL_SEGMENTS), F.col("responded_baseline"))).alias(
                "leaks"
            ),
        ),
        "decision_results summary",
    )
    rows, flags, leaks = int(summary["rows"]), int(summary["srm_flags"] or 0), int(summary["leaks"] or 0)
    checks = {
        "decision_srm_flags": str(flags),
        # A control or holdout decision with a channel response was contacted after all.
        "responses_outside_treatment": str(leaks),
    }
    if unknown:
        checks["offers_without_terms"] = ", ".join(sorted(r["offer_id"] for r in unknown))
    message = (
        f"decision results: {rows:,} rows, {int(summary['treatment'] or 0):,} treatment and "
        f"{int(summary['control'] or 0):,} control decisions whose window has opened, incremental margin "
        f"{float(summary['margin'] or 0.0):,.0f}, {flags} row(s) with sample-ratio mismatch"
    )
    return {"decision_results": rows}, checks, message


def run(ctx: StageContext) -> StageResult:
    """Compute and write `campaign_results` (and `decision_results` when the engine has
    published decisions) for ``ctx.as_of``; report rows and SRM flags."""
    measure = ctx.config.measure
    history = ctx.store.input("offer_history")
    # Segments are optional: without them every row is segment 'ALL'.
    segments = ctx.store.optional("segments")
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
    # The registry merges schemas: a lake written before the subscriber counts were added
    # gains the columns (older partitions read null) instead of failing the write.
    ctx.store.write(results, "campaign_results", ctx.as_of)

    # The written partition is small (offers x channels x periods x segments): summarise it.
    written = ctx.store.read_as_of("campaign_results", ctx.as_of)
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
    row_counts, checks = {"campaign_results": rows}, {"srm_flags": str(flags)}
    message = (
        f"campaign results as of {ctx.as_of}: {rows:,} rows, {treatment:,} treatment and "
        f"{control:,} control contacts, incremental revenue {incremental:,.0f}, "
        f"{flags} row(s) with sample-ratio mismatch"
    )
    if ctx.store.has("decisions"):
        counts, more_checks, more = measure_decisions(ctx, segments)
        row_counts.update(counts)
        checks.update(more_checks)
        message += f"; {more}"
    else:
        message += "; no decisions of the engine's own to measure yet (gold decisions absent)"
    return StageResult(row_counts=row_counts, checks=checks, message=message)
