"""Stage `segments`: value tiers, lifecycle, matrix, RFM and personas; the B2B portfolio.

Reads gold ``features`` (and ``b2b_features`` when the lake has them) of ``ctx.as_of``;
writes ``segments``, ``segment_profiles``, ``persona_k_selection``, ``persona_migration``
(when an earlier as_of exists) and ``b2b_segments``, ``b2b_profiles``,
``b2b_concentration``, ``b2b_lorenz``, each with `overwrite_partition` (idempotent).

Persona ids stay stable across runs: the new centroids are matched to the latest earlier
``segment_profiles`` (see `cvo_spark.segments.personas.match_persona_ids`). Only strictly earlier
dates are read, so re-running a date gives the same ids.
"""

from __future__ import annotations

import logging
import re
from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DataType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
)

from cvo_spark.core.config import PersonasConfig, SegmentsConfig
from cvo_spark.core.errors import ConfigError, MissingTableError
from cvo_spark.core.io import TableStore
from cvo_spark.core.stage import StageContext, StageResult
from cvo_spark.segments import b2b
from cvo_spark.segments.personas import (
    NAMING_COLUMNS,
    KMeansFit,
    NamingRule,
    WindowRates,
    cluster_means,
    fit_kmeans,
    match_persona_ids,
    migration_matrix,
    name_personas,
    with_clusters,
    with_personas,
    with_window_rates,
)
from cvo_spark.segments.rules import (
    Tier,
    median_thresholds,
    quintile_cuts,
    segment_profiles,
    with_lifecycle,
    with_matrix_quadrant,
    with_rfm_scores,
    with_usage_mb_equivalent,
    with_value_tier,
)

log = logging.getLogger(__name__)

ALL_TIERS = "ALL"
USAGE_COL = "usage_mb_eq_3m"
RATE_PREFIX = "__rate_"
#: The tables this stage reads from other stages (`cvo_spark.pipeline`); it also reads the
#: previous partitions of its own tables (persona ids and migration follow them).
READS: tuple[str, ...] = ("features", "b2b_features")


def _schema(*fields: tuple[str, DataType]) -> StructType:
    return StructType([StructField(name, dtype, True) for name, dtype in fields])


S, D, DT, L, INT, B = StringType(), DoubleType(), DateType(), LongType(), IntegerType(), BooleanType()

SEGMENTS_SCHEMA = _schema(
    ("subscriber_id", S), ("as_of", DT), ("value_tier", S), ("is_high_value", B), ("lifecycle", S),
    ("persona_id", INT), ("persona_name", S), ("matrix_quadrant", S),
    ("r_score", INT), ("f_score", INT), ("m_score", INT), ("rfm_score", S),
)  # fmt: skip
PROFILES_SCHEMA = _schema(
    ("as_of", DT), ("persona_id", INT), ("persona_name", S), ("value_tier", S), ("subscribers", L),
    ("revenue_3m", D), ("revenue_share", D), ("arpu_3m_mean", D), ("centroid", MapType(S, D)),
    ("tactics", ArrayType(S)),
)  # fmt: skip
K_SELECTION_SCHEMA = _schema(("as_of", DT), ("k", INT), ("silhouette", D), ("wcss", D), ("chosen", B))
MIGRATION_SCHEMA = _schema(
    ("as_of", DT), ("from_as_of", DT), ("from_persona_id", INT), ("from_persona_name", S),
    ("to_persona_id", INT), ("to_persona_name", S), ("subscribers", L),
)  # fmt: skip
B2B_SEGMENTS_SCHEMA = _schema(
    ("account_id", S), ("as_of", DT), ("cluster_id", INT), ("cluster_name", S), ("quadrant", S),
    ("monthly_revenue", D), ("aov", D), ("message_count_3m", L), ("delivery_rate", D), ("failure_rate", D),
    ("revenue_trend_pct", D), ("is_upsell_candidate", B), ("is_cross_sell_candidate", B),
)  # fmt: skip
B2B_PROFILES_SCHEMA = _schema(
    ("as_of", DT), ("cluster_id", INT), ("cluster_name", S), ("accounts", L), ("revenue_share", D),
    ("arpu", D), ("aov", D), ("delivery_rate", D), ("failure_rate", D), ("revenue_trend_pct", D),
)  # fmt: skip
B2B_CONCENTRATION_SCHEMA = _schema(("as_of", DT), ("metric", S), ("value", D))
B2B_LORENZ_SCHEMA = _schema(("as_of", DT), ("account_share", D), ("revenue_share", D))


def _select(df: DataFrame, schema: StructType) -> DataFrame:
    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])


def _with_as_of(df: DataFrame, as_of: date) -> DataFrame:
    return df.withColumn("as_of", F.lit(as_of).cast("date"))


def _partition(store: TableStore, name: str, as_of: date) -> DataFrame:
    return store.read_as_of(name, as_of)


def _previous_as_of(store: TableStore, name: str, as_of: date) -> date | None:
    """The latest as_of strictly before `as_of` in gold `name`, or None."""
    return store.latest_as_of(name, before=as_of)


def _previous_centroids(store: TableStore, as_of: date) -> dict[int, dict[str, float]]:
    previous = _previous_as_of(store, "segment_profiles", as_of)
    if previous is None:
        return {}
    rows = (
        _partition(store, "segment_profiles", previous)
        .filter(F.col("value_tier") == F.lit(ALL_TIERS))
        .select("persona_id", "centroid")
        .collect()
    )
    return {int(r["persona_id"]): dict(r["centroid"]) for r in rows}


def _base_name(name: str, rules: tuple[NamingRule, ...]) -> str:
    """The rule name behind a numbered duplicate ("Digital Active 2" -> "Digital Active")."""
    for rule in sorted(rules, key=lambda r: -len(r.name)):
        if name == rule.name or re.fullmatch(re.escape(rule.name) + r" \d+", name):
            return rule.name
    return name


def _naming_rules(pc: PersonasConfig) -> tuple[NamingRule, ...]:
    return tuple(NamingRule(**r.model_dump()) for r in pc.naming)


def _centroid_columns(features: tuple[str, ...], available: list[str]) -> list[str]:
    """The clustering features plus the columns the naming rules read, once each."""
    return list(dict.fromkeys([*features, *[c for c in NAMING_COLUMNS if c in available]]))


def _fit_personas(
    store: TableStore, features: DataFrame, pc: PersonasConfig, window_days: int, as_of: date
) -> tuple[KMeansFit, dict[int, str], dict[int, int], list[int], WindowRates]:
    """Fit K-Means, name the clusters from their centroids and give them stable ids."""
    rates = WindowRates(tuple(pc.window_total_features), window_days)
    k_values = [pc.k] if pc.k is not None else list(range(pc.k_min, pc.k_max + 1))
    fit_population = features
    if pc.fit_full_window_only:
        # Subscribers younger than the window are scaled, not observed, on window totals:
        # fit on complete windows (then assign everyone) unless too few have one.
        full = features.filter(F.col("length_of_stay_days") + 1 >= F.lit(window_days))
        if full.count() >= max(k_values):
            fit_population = full
    fit = fit_kmeans(
        fit_population, "subscriber_id", pc.features, pc.log_features, k_values, pc.seed, pc.max_iter,
        pc.fit_sample_rows, pc.silhouette_sample_rows, rates=rates, n_init=pc.n_init,
    )  # fmt: skip
    assigned = with_clusters(features, fit, {c: c for c in range(fit.k)}, {}, "__cluster", "__unnamed")
    columns = _centroid_columns(pc.features, features.columns)
    centroids, sizes = cluster_means(with_window_rates(assigned, rates), "__cluster", columns)
    names, order = name_personas(centroids, sizes, _naming_rules(pc))
    ids = match_persona_ids(
        centroids, order, _previous_centroids(store, as_of), pc.features, pc.log_features,
        fit.scaler_mean, fit.scaler_std,
    )  # fmt: skip
    return fit, names, ids, order, rates


def _segment_subscribers(ctx: StageContext, cfg: SegmentsConfig, result: StageResult) -> None:
    store, as_of = ctx.store, ctx.as_of
    features = _partition(store, "features", as_of)
    if features.limit(1).count() == 0:
        raise MissingTableError(f"gold.features has no rows for as_of {as_of}: run the features stage first")
    vt, lc, mx, pc = cfg.value_tiers, cfg.lifecycle, cfg.matrix, cfg.personas

    ladder = [Tier(r.name, r.min_arpu_3m, r.min_los_days) for r in vt.ladder]
    df = (
        features.transform(with_value_tier, ladder, vt.high_value_min_los_days, vt.high_value_min_arpu_3m)
        .transform(with_lifecycle, lc.new_max_days, lc.new_name, lc.base_name)
        .transform(with_usage_mb_equivalent, mx.voice_minute_mb, USAGE_COL)
    )
    if mx.method == "median":
        medians = median_thresholds(df, ["arpu_3m", USAGE_COL])
        revenue_thr, usage_thr = medians["arpu_3m"] or 0.0, medians[USAGE_COL] or 0.0
    else:
        if mx.revenue_threshold is None or mx.usage_threshold is None:
            raise ConfigError("segments.matrix: method fixed needs revenue_threshold and usage_threshold")
        revenue_thr, usage_thr = mx.revenue_threshold, mx.usage_threshold
    cuts = quintile_cuts(df, ["recency_days", "frequency_3m", "monetary_3m"])
    df = with_matrix_quadrant(df, "arpu_3m", USAGE_COL, revenue_thr, usage_thr).transform(
        with_rfm_scores, cuts["recency_days"], cuts["frequency_3m"], cuts["monetary_3m"]
    )

    window_days = ctx.config.features.windows.arpu_long_days
    fit, names, ids, order, rates = _fit_personas(store, features, pc, window_days, as_of)
    # Profiles report centroids on the scale the clusters were fitted on (window rates).
    centroid_cols = {
        c: (RATE_PREFIX + c if c in rates.columns else c)
        for c in _centroid_columns(pc.features, features.columns)
    }
    segmented = with_window_rates(with_personas(df, fit, ids, names), rates, RATE_PREFIX).persist()
    try:
        store.write(_select(_with_as_of(segmented, as_of), SEGMENTS_SCHEMA), "segments", as_of)
        rules = _naming_rules(pc)
        persona_tactics = {n: list(cfg.tactics.get(_base_name(n, rules), ())) for n in names.values()}
        tier_tactics = {t.name: list(cfg.tactics[t.name]) for t in ladder if t.name in cfg.tactics}
        profiles = segment_profiles(segmented, centroid_cols, persona_tactics, tier_tactics, ALL_TIERS)
        profiles = _select(_with_as_of(profiles, as_of), PROFILES_SCHEMA)
        store.write(profiles, "segment_profiles", as_of)
    finally:
        segmented.unpersist()

    scores = [(as_of, s.k, s.silhouette, s.wcss, s.chosen) for s in fit.scores]
    k_table = ctx.spark.createDataFrame(scores, K_SELECTION_SCHEMA)
    store.write(k_table, "persona_k_selection", as_of)

    result.row_counts.update(
        segments=_partition(store, "segments", as_of).count(),
        segment_profiles=_partition(store, "segment_profiles", as_of).count(),
        persona_k_selection=len(scores),
    )
    chosen = next(s for s in fit.scores if s.chosen)
    result.checks.update(
        persona_k=str(fit.k),
        persona_silhouette="n/a" if chosen.silhouette is None else f"{chosen.silhouette:.3f}",
        personas=", ".join(f"{ids[c]}={names[c]}" for c in order),
        matrix_thresholds=f"arpu_3m>={revenue_thr:,.0f}, {USAGE_COL}>={usage_thr:,.0f}",
    )
    _write_migration(ctx, result)


def _write_migration(ctx: StageContext, result: StageResult) -> None:
    store, as_of = ctx.store, ctx.as_of
    previous = _previous_as_of(store, "segments", as_of)
    if previous is None:
        result.checks["persona_migration"] = "skipped: no earlier segments"
        return
    moves = migration_matrix(_partition(store, "segments", previous), _partition(store, "segments", as_of))
    moves = _with_as_of(moves, as_of).withColumn("from_as_of", F.lit(previous).cast("date"))
    store.write(_select(moves, MIGRATION_SCHEMA), "persona_migration", as_of)
    result.row_counts["persona_migration"] = _partition(store, "persona_migration", as_of).count()
    result.checks["persona_migration"] = f"from {previous}"


def _segment_accounts(ctx: StageContext, cfg: SegmentsConfig, result: StageResult) -> None:
    store, as_of = ctx.store, ctx.as_of
    if not store.has("b2b_features"):
        result.checks["b2b"] = "skipped: no gold.b2b_features table"
        return
    accounts = _partition(store, "b2b_features", as_of).persist()
    try:
        if accounts.limit(1).count() == 0:
            result.checks["b2b"] = f"skipped: gold.b2b_features has no rows for as_of {as_of}"
            return
        k_values = [cfg.b2b_k] if cfg.b2b_k is not None else list(range(cfg.b2b_k_min, cfg.b2b_k_max + 1))
        fit = b2b.fit_b2b_clusters(accounts, k_values, cfg.personas.seed, cfg.personas.max_iter)
        ids, names = b2b.label_b2b_clusters(accounts, fit, cfg.b2b_cluster_names)
        medians = median_thresholds(accounts, ["monthly_revenue", cfg.b2b_usage])
        segmented = b2b.with_b2b_segments(
            accounts,
            fit,
            ids,
            names,
            cfg.b2b_usage,
            medians["monthly_revenue"] or 0.0,
            medians[cfg.b2b_usage] or 0.0,
        )
        outputs = {
            "b2b_segments": (segmented, B2B_SEGMENTS_SCHEMA),
            "b2b_profiles": (b2b.b2b_profiles(segmented), B2B_PROFILES_SCHEMA),
            "b2b_concentration": (b2b.revenue_concentration(accounts), B2B_CONCENTRATION_SCHEMA),
            "b2b_lorenz": (b2b.lorenz_curve(accounts), B2B_LORENZ_SCHEMA),
        }
        for name, (df, schema) in outputs.items():
            store.write(_select(_with_as_of(df, as_of), schema), name, as_of)
            result.row_counts[name] = _partition(store, name, as_of).count()
        result.checks["b2b_k"] = str(fit.k)
    finally:
        accounts.unpersist()


def run(ctx: StageContext) -> StageResult:
    """Segment subscribers (and B2B accounts when present) as of ``ctx.as_of``."""
    cfg = ctx.config.segments
    result = StageResult()
    _segment_subscribers(ctx, cfg, result)
    _segment_accounts(ctx, cfg, result)
    result.message = f"personas k={result.checks['persona_k']}: {result.checks['personas']}"
    return result
