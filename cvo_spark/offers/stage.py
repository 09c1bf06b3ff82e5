"""Stage `offers`: next-best-offers per subscriber and channel, staged, checked, published.

Reads gold features / segments / scores of as_of and silver offer_history, builds the
offers with `cvo_spark.offers.engine.build_offers`, writes them to gold `offers_staging`, runs
the publish checks (`cvo_spark.offers.publish`) and, only if they pass or are overridden,
publishes them to gold `offers` in one commit and writes the channel exports.
"""

from __future__ import annotations

import logging
from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DateType, DoubleType, IntegerType, StringType, StructField, StructType

from cvo_spark.core.catalog import (
    DEFAULT_CHANNEL_KIND,
    Catalog,
    load_checked_catalog,
    offer_channels_frame,
    offers_frame,
)
from cvo_spark.core.config import ChecksConfig, Config
from cvo_spark.core.errors import MissingTableError
from cvo_spark.core.schemas import EVENT_TIME_COLUMN
from cvo_spark.core.stage import StageContext, StageResult
from cvo_spark.core.util import first_row
from cvo_spark.offers.allocation import AllocationParams, AllocationResult, Constraint, paced_allowance
from cvo_spark.offers.campaigns import CAMPAIGN_POWER_SCHEMA, PowerSettings, power_checks, run_catalog
from cvo_spark.offers.engine import OfferParams, build_offers
from cvo_spark.offers.publish import (
    BATCH_SOURCE,
    audit_decisions,
    check_allocation,
    check_holdout,
    decide,
    decision_rows,
    export_channels,
    newest_event_dates,
    previous_snapshot,
    publish_snapshot,
    run_checks,
    summarize_offers,
)

log = logging.getLogger(__name__)

#: The tables this stage reads (`cvo_spark.pipeline`): the day's features, segments and
#: scores, the contact history and consents, the uplift scores, what the trigger stream
#: already sent, and the silver tables the freshness check reads by default (a config that
#: names others makes the run log them as undeclared reads).
READS: tuple[str, ...] = tuple(
    dict.fromkeys(
        (
            "features",
            "segments",
            "scores",
            "offer_scores",
            "offer_history",
            "consents",
            "trigger_offers",
            *ChecksConfig.model_fields["freshness_tables"].default,
        )
    )
)


def consent_defaults(config: Config, catalog: Catalog) -> dict[str, bool]:
    """channel -> allowed when a subscriber has no consent row for it: the channel's own
    key in ``offers.allocation.consent_when_missing``, else its kind's ('push'/'pull')."""
    missing = config.offers.allocation.consent_when_missing
    return {ch: missing.get(ch, missing[catalog.kind(ch)]) == "allow" for ch in catalog.channels}


def offer_params(config: Config, catalog: Catalog | None = None) -> OfferParams:
    """Plain values for the offer transforms, from config (and the catalog's channel kinds)."""
    catalog = catalog or load_checked_catalog(config)
    o, w, a = config.offers, config.features.windows, config.offers.allocation
    return OfferParams(
        allocate=a.enabled,
        push_channels=tuple(
            sorted(
                {
                    *(c for c in catalog.channels if catalog.kind(c) == "push"),
                    *(c for c, k in DEFAULT_CHANNEL_KIND.items() if k == "push"),
                }
            )
        ),
        max_push_contacts=a.max_push_contacts,
        fatigue_ignored_contacts=a.fatigue_ignored_contacts,
        fatigue_window_days=a.fatigue_window_days,
        consent_when_missing=consent_defaults(config, catalog),
        uplift_fallback_share=a.uplift_fallback_share,
        exploration_share=a.exploration_share,
        exploration_key=a.exploration_key,
        campaign_id=o.campaign_id,
        control_share=o.control_share,
        universal_holdout_share=o.universal_holdout_share,
        universal_holdout_key=o.universal_holdout_key,
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


def allocation_params(config: Config) -> AllocationParams:
    a = config.offers.allocation
    return AllocationParams(
        max_offers=a.max_offers_per_subscriber,
        min_net_value=a.min_net_value,
        sample_share=a.solver_sample_share,
        max_iterations=a.solver_max_iterations,
        full_passes=a.solver_full_passes,
        tolerance=a.solver_tolerance,
        seed=a.solver_seed,
    )


def budget_spend(history: DataFrame, catalog: Catalog, as_of: date) -> dict[str, float]:
    """Incentive spent so far per budget: every acceptance of its offers from its start to
    the end of as_of, at the offer's incentive (one tiny aggregate: offers x days)."""
    if not catalog.budgets:
        return {}
    since = min(b.start for b in catalog.budgets)
    rows = (
        history.where(
            F.coalesce(F.col("accepted"), F.lit(False))
            & F.col("accepted_ts").isNotNull()
            & (F.to_date("accepted_ts") >= F.lit(since))
            & (F.to_date("accepted_ts") <= F.lit(as_of))
        )
        .groupBy("offer_id", F.to_date("accepted_ts").alias("day"))
        .count()
        .collect()
    )
    incentive = {o.offer_id: o.incentive for o in catalog.offers}
    spent = {b.name: 0.0 for b in catalog.budgets}
    for b in catalog.budgets:
        members = set(catalog.budget_offers(b))
        spent[b.name] = sum(
            r["count"] * incentive.get(r["offer_id"], 0.0)
            for r in rows
            if r["offer_id"] in members and b.start <= r["day"] <= min(b.end, as_of)
        )
    return spent


def allocation_constraints(catalog: Catalog, spent: dict[str, float], as_of: date) -> tuple[Constraint, ...]:
    """The per-run constraints of the catalog for `as_of`: channel capacities, paced
    budgets (`paced_allowance`) and per-offer daily volumes."""
    out = [
        Constraint(f"capacity:{ch}", "channel_capacity", ch, float(spec.daily_capacity))
        for ch, spec in sorted(catalog.channels.items())
        if spec.daily_capacity is not None
    ]
    for b in catalog.budgets:
        allowance = paced_allowance(b.amount, spent.get(b.name, 0.0), b.start, b.end, as_of)
        out.append(
            Constraint(f"budget:{b.name}", "budget", b.name, allowance, offers=catalog.budget_offers(b))
        )
    for o in catalog.offers:
        if o.max_daily_volume is not None:
            out.append(
                Constraint(f"max_volume:{o.offer_id}", "offer_max", o.offer_id, float(o.max_daily_volume))
            )
        if o.min_daily_volume:
            out.append(
                Constraint(f"min_volume:{o.offer_id}", "offer_min", o.offer_id, float(o.min_daily_volume))
            )
    return tuple(out)


ALLOCATION_SCHEMA = StructType(
    [
        StructField(n, t)
        for n, t in (
            ("as_of", DateType()),
            ("constraint", StringType()),
            ("kind", StringType()),
            ("sense", StringType()),
            ("limit", DoubleType()),
            ("use", DoubleType()),
            ("shadow_price", DoubleType()),
            ("passes", IntegerType()),
            ("run_id", StringType()),
        )
    ]
)


def allocation_rows(result: AllocationResult, as_of: date, run_id: str) -> list[tuple]:
    """gold `allocation_constraints` rows: each constraint's limit, use and shadow price."""
    return [
        (
            as_of,
            r["constraint"],
            r["kind"],
            r["sense"],
            float(r["limit"]),
            float(r["use"]),
            float(r["shadow_price"]),
            int(result.iterations),
            run_id,
        )
        for r in result.report()
    ]


def allocation_summary(result: AllocationResult) -> str:
    """One line for `runs`: passes, then each constraint's use / limit and shadow price."""
    parts = [f"{result.iterations} solver pass(es)"]
    for r in result.report():
        parts.append(
            f"{r['constraint']} {r['use']:,.0f}/{r['limit']:,.0f} ({r['sense']}) "
            f"shadow price Rp {r['shadow_price']:,.0f}"
        )
    return "; ".join(parts)


def optional_gold(ctx: StageContext, name: str, as_of: date | None = None) -> DataFrame | None:
    """A gold table (one as_of partition when given), or None when absent or empty."""
    if not ctx.store.has(name):
        return None
    if as_of is None:
        return ctx.store.table(name)
    df = ctx.store.read_as_of(name, as_of)
    return None if df.limit(1).count() == 0 else df


def read_as_of(ctx: StageContext, name: str) -> DataFrame:
    """One as_of partition of a gold table; an empty one is a `MissingTableError`."""
    df = ctx.store.read_as_of(name, ctx.as_of)
    if df.limit(1).count() == 0:
        raise MissingTableError(
            f"gold.{name} has no rows as of {ctx.as_of}: run its stage for that date first"
        )
    return df


def exports_root(ctx: StageContext) -> str:
    """``<lake>/<offers.exports_dir>`` (a URI stays a URI, a local path becomes absolute)."""
    return ctx.store.lake_path(ctx.config.offers.exports_dir)


def run_catalog_of(config: Config, as_of: date) -> tuple[Catalog, dict[str, tuple[str, float]]]:
    """The checked catalog with the campaigns running on `as_of` folded in
    (`cvo_spark.offers.campaigns.run_catalog`), and offer_id -> (campaign_id, control_share)."""
    o = config.offers
    return run_catalog(load_checked_catalog(config), o.campaigns, as_of, o.campaign_id, o.control_share)


def power_settings(config: Config) -> PowerSettings:
    p = config.offers.power
    return PowerSettings(
        alpha=p.alpha,
        power=p.power,
        icc=p.icc,
        contacts_per_subscriber=p.contacts_per_subscriber,
        min_baseline_contacts=p.min_baseline_contacts,
        default_accept_rate=p.default_accept_rate,
        default_control_share=config.offers.control_share,
    )


def check_power(ctx: StageContext, features: DataFrame, segments: DataFrame, history: DataFrame) -> list[str]:
    """Power before launch of each running campaign with a goal: rows in gold
    ``campaign_power`` (the as_of partition replaced), a warning per underpowered campaign;
    returns their messages."""
    o = ctx.config.offers
    profiles = features.select("subscriber_id", "payment_type", "arpu_3m", "length_of_stay_days").join(
        segments.select("subscriber_id", "value_tier", "persona_name", "lifecycle"),
        on="subscriber_id",
        how="left",
    )
    rows = power_checks(
        profiles,
        history,
        o.campaigns,
        ctx.as_of,
        ctx.run_id,
        power_settings(ctx.config),
        holdout_share=o.universal_holdout_share,
        holdout_key=o.universal_holdout_key,
        baseline_days=o.power.baseline_days,
    )
    if rows or ctx.store.has("campaign_power"):  # an empty partition replaces a stale one
        frame = ctx.spark.createDataFrame(rows, CAMPAIGN_POWER_SCHEMA)
        ctx.store.write(frame, "campaign_power", ctx.as_of)
    names = CAMPAIGN_POWER_SCHEMA.fieldNames()
    flagged = [r[names.index("message")] for r in rows if r[names.index("underpowered")]]
    for message in flagged:
        log.warning("underpowered: %s", message)
    return flagged


def run(ctx: StageContext) -> StageResult:
    config, as_of = ctx.config, ctx.as_of
    catalog, campaigns = run_catalog_of(config, as_of)
    params = offer_params(config, catalog)
    features = read_as_of(ctx, "features")
    segments = read_as_of(ctx, "segments")
    scores = read_as_of(ctx, "scores")
    history = ctx.store.table("offer_history")
    underpowered = check_power(ctx, features, segments, history)
    consents = ctx.store.optional("consents")
    constraints = allocation_constraints(catalog, budget_spend(history, catalog, as_of), as_of)
    # Optional gold inputs, looked up once: the batch, the audit and the decision log share them.
    offer_scores = optional_gold(ctx, "offer_scores", as_of)
    triggers = optional_gold(ctx, "trigger_offers")

    batch = build_offers(
        features,
        segments,
        scores,
        history,
        offers_frame(ctx.spark, catalog, config.offers.validity_days, campaigns),
        offer_channels_frame(ctx.spark, catalog),
        as_of,
        ctx.run_id,
        params,
        constraints=constraints,
        alloc=allocation_params(config),
        consents=consents,
        offer_scores=offer_scores,
        triggers=triggers,
    )
    offers = batch.offers
    ctx.store.write(offers, "offers_staging", as_of)
    staged = ctx.store.read_as_of("offers_staging", as_of)

    checks_cfg = config.offers.checks
    newest = newest_event_dates(
        {t: (ctx.store.table(t), EVENT_TIME_COLUMN[t]) for t in checks_cfg.freshness_tables}, as_of
    )
    floors = (
        features.select("subscriber_id", "arpu_3m")
        .join(segments.select("subscriber_id", "is_high_value"), on="subscriber_id", how="inner")
        .where(F.col("is_high_value"))
        .select(
            "subscriber_id",
            (F.col("arpu_3m") * F.lit(config.offers.high_value_min_price_share)).alias("min_price"),
        )
    )
    summary = summarize_offers(staged, floors, config.offers.price_floor)
    previous, previous_as_of = previous_snapshot(ctx.store, as_of)
    results = run_checks(
        staged,
        summary,
        features.count(),
        scores,
        newest,
        previous,
        previous_as_of,
        as_of,
        freshness_max_days=checks_cfg.freshness_max_days,
        min_coverage=checks_cfg.min_coverage,
        max_coverage=checks_cfg.max_coverage,
        price_floor=config.offers.price_floor,
        min_propensity_std=checks_cfg.min_propensity_std,
        max_psi=checks_cfg.max_psi,
    )
    results.append(
        check_holdout(staged, config.offers.universal_holdout_share, config.offers.universal_holdout_key)
    )
    allocation = batch.allocation
    if allocation is not None:
        ctx.store.write(
            ctx.spark.createDataFrame(allocation_rows(allocation, as_of, ctx.run_id), ALLOCATION_SCHEMA),
            "allocation_constraints",
            as_of,
        )
        results.append(check_allocation(allocation.infeasible, allocation_summary(allocation)))
        results += audit_decisions(
            staged,
            history,
            consents,
            as_of,
            constraints,
            catalog,
            max_offers=config.offers.allocation.max_offers_per_subscriber,
            max_push_contacts=config.offers.allocation.max_push_contacts,
            contact_window_days=config.offers.contact_window_days,
            consent_allowed=params.consent_when_missing,
            triggers=triggers,
        )
        batch.release()
    checks = decide(results, ctx.overrides)  # raises PublishRefused; `offers` untouched

    publish_snapshot(ctx.store, staged, as_of)
    published = ctx.store.read_as_of("offers", as_of)
    # The decision log (DESIGN `decisions`): what was decided, with which models, by what chance.
    uplift_version = (
        first_row(offer_scores.select("model_version"), "offers: model_version of gold offer_scores")[
            "model_version"
        ]
        if offer_scores
        else None
    )
    ctx.store.write(
        decision_rows(published, scores, config.offers.campaign_id, uplift_version),
        "decisions",
        as_of,
        only=BATCH_SOURCE,  # the day's trigger decisions (`cvo stream`) stay
    )
    export_channels(published, exports_root(ctx), as_of, catalog.channels, config.offers.export_format)
    row_counts = {
        "offers": int(summary["rows"]),
        "treatment": summary["treatment"],
        "control": summary["control"],
        "holdout": summary["holdout"],
        "explored": summary["explored"],
        "subscribers": int(summary["subscribers"]),
        "underpowered_campaigns": len(underpowered),
    }
    message = f"published offers as of {as_of}"
    if underpowered:
        message += "; underpowered: " + "; ".join(underpowered)
    return StageResult(row_counts=row_counts, checks=checks, message=message)
