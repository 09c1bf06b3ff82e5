"""Stage `features`: silver event tables -> gold `features` and `b2b_features` as of a date.

Reads the silver tables through the store, computes both feature tables with the pure
transforms of `cvo_spark.features.subscriber` / `cvo_spark.features.b2b` (windows passed as plain
values from ``config.features.windows``), and replaces exactly the ``as_of`` partition
of each gold table, so a re-run for the same date leaves the same rows (invariant 2).
"""

from __future__ import annotations

from cvo_spark.core.stage import StageContext, StageResult
from cvo_spark.features.b2b import B2B_FEATURES_SCHEMA, build_b2b_features
from cvo_spark.features.subscriber import FEATURES_SCHEMA, select_schema, subscriber_features_from

SUBSCRIBER_INPUTS: tuple[str, ...] = (
    "subscribers",
    "usage_daily",
    "recharges",
    "purchases",
    "quota_events",
    "offer_history",
)
B2B_INPUTS: tuple[str, ...] = ("b2b_accounts", "b2b_messages")
#: The tables this stage reads (`cvo_spark.pipeline` orders stages by them); what it writes
#: is what the table registry says stage `features` produces (features, b2b_features).
READS: tuple[str, ...] = (*SUBSCRIBER_INPUTS, *B2B_INPUTS)


def run(ctx: StageContext) -> StageResult:
    """Compute and write `features` and `b2b_features` for ``ctx.as_of``; return row counts."""
    windows = ctx.config.features.windows
    silver = {name: ctx.store.input(name) for name in SUBSCRIBER_INPUTS + B2B_INPUTS}
    features = subscriber_features_from(
        silver,
        ctx.as_of,
        windows,
        new_max_days=ctx.config.segments.lifecycle.new_max_days,
    )
    b2b = build_b2b_features(
        silver["b2b_accounts"],
        silver["b2b_messages"],
        ctx.as_of,
        window_days=windows.arpu_long_days,
        trend_recent_days=windows.trend_recent_days,
        trend_prior_days=windows.trend_prior_days,
    )
    counts: dict[str, int] = {}
    for name, df, schema in (
        ("features", features, FEATURES_SCHEMA),
        ("b2b_features", b2b, B2B_FEATURES_SCHEMA),
    ):
        ctx.store.write(select_schema(df, schema), name, ctx.as_of)
        # Counted from the written partition (Delta answers from file stats) rather than
        # by computing the features a second time.
        counts[name] = ctx.store.read_as_of(name, ctx.as_of).count()
    return StageResult(
        row_counts=counts,
        message=f"features as of {ctx.as_of}: {counts['features']:,} subscribers, "
        f"{counts['b2b_features']:,} accounts",
    )
