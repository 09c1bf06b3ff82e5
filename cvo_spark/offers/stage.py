"""Stage `offers`: next-best-offers per subscriber and channel, staged, checked, published.

Reads gold features / segments / scores of as_of and silver offer_history, builds the
offers with `cvo_spark.offers.engine.build_offers`, writes them to gold `offers_staging`, runs
the publish checks (`cvo_spark.offers.publish`) and, only if they pass or are overridden,
publishes them to gold `offers` in one commit and writes the channel exports.
"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cvo_spark.core.catalog import load_checked_catalog, offer_channels_frame, offers_frame
from cvo_spark.core.config import Config
from cvo_spark.core.errors import MissingTableError
from cvo_spark.core.schemas import EVENT_TIME_COLUMN
from cvo_spark.core.stage import StageContext, StageResult
from cvo_spark.offers.engine import OfferParams, build_offers
from cvo_spark.offers.publish import (
    decide,
    export_channels,
    newest_event_dates,
    previous_snapshot,
    publish_snapshot,
    run_checks,
    summarize_offers,
)


def offer_params(config: Config) -> OfferParams:
    """Plain values for the offer transforms, from config."""
    o, w = config.offers, config.features.windows
    return OfferParams(
        campaign_id=o.campaign_id,
        control_share=o.control_share,
        contact_window_days=o.contact_window_days,
        max_contacts_per_channel=o.max_contacts_per_channel,
        cooldown_days_after_reject=o.cooldown_days_after_reject,
        high_value_min_price_share=o.high_value_min_price_share,
        price_elasticity=o.price_elasticity,
        arpu_floor=o.arpu_floor,
        retention_min_p_churn=o.retention_min_p_churn,
        retention_save_rate=o.retention_save_rate,
        type_weights=dict(o.type_weights),
        trend_days=w.trend_recent_days,
        quota_days=w.quota_days,
    )


def read_as_of(ctx: StageContext, name: str) -> DataFrame:
    """One as_of partition of a gold table; an empty one is a `MissingTableError`."""
    df = ctx.store.read("gold", name).where(F.col("as_of") == F.lit(ctx.as_of))
    if df.limit(1).count() == 0:
        raise MissingTableError(f"gold.{name} has no rows as of {ctx.as_of}: run its stage for that date first")
    return df


def exports_root(config: Config) -> str:
    """``<lake>/<offers.exports_dir>`` (a URI stays a URI, a local path becomes absolute)."""
    if "://" in config.lake:
        return f"{config.lake.rstrip('/')}/{config.offers.exports_dir}"
    return str(Path(config.lake, config.offers.exports_dir).absolute())


def run(ctx: StageContext) -> StageResult:
    config, as_of = ctx.config, ctx.as_of
    catalog = load_checked_catalog(config)
    params = offer_params(config)
    features = read_as_of(ctx, "features")
    segments = read_as_of(ctx, "segments")
    scores = read_as_of(ctx, "scores")
    history = ctx.store.read("silver", "offer_history")

    offers = build_offers(
        features, segments, scores, history,
        offers_frame(ctx.spark, catalog, config.offers.validity_days), offer_channels_frame(ctx.spark, catalog),
        as_of, ctx.run_id, params,
    )
    ctx.store.overwrite_partition(offers, "gold", "offers_staging", as_of)
    staged = ctx.store.read("gold", "offers_staging").where(F.col("as_of") == F.lit(as_of))

    checks_cfg = config.offers.checks
    newest = newest_event_dates(
        {t: (ctx.store.read("silver", t), EVENT_TIME_COLUMN[t]) for t in checks_cfg.freshness_tables}, as_of
    )
    floors = (
        features.select("subscriber_id", "arpu_3m")
        .join(segments.select("subscriber_id", "is_high_value"), on="subscriber_id", how="inner")
        .where(F.col("is_high_value"))
        .select("subscriber_id", (F.col("arpu_3m") * F.lit(config.offers.high_value_min_price_share)).alias("min_price"))
    )
    summary = summarize_offers(staged, floors, config.offers.price_floor)
    previous, previous_as_of = previous_snapshot(ctx.store, as_of)
    results = run_checks(
        staged, summary, features.count(), scores, newest, previous, previous_as_of, as_of,
        freshness_max_days=checks_cfg.freshness_max_days,
        min_coverage=checks_cfg.min_coverage,
        max_coverage=checks_cfg.max_coverage,
        price_floor=config.offers.price_floor,
        min_propensity_std=checks_cfg.min_propensity_std,
        max_psi=checks_cfg.max_psi,
    )
    checks = decide(results, ctx.overrides)  # raises PublishRefused; `offers` untouched

    publish_snapshot(ctx.store, staged, as_of)
    published = ctx.store.read("gold", "offers").where(F.col("as_of") == F.lit(as_of))
    export_channels(published, exports_root(config), as_of, catalog.channels, config.offers.export_format)
    row_counts = {
        "offers": int(summary["rows"]),
        "treatment": summary["treatment"],
        "control": summary["control"],
        "subscribers": int(summary["subscribers"]),
    }
    return StageResult(row_counts=row_counts, checks=checks, message=f"published offers as of {as_of}")
