"""Behavioural personas: K-Means over usage/revenue-mix features, named from centroids.

The flow the `segments` stage runs:

1. `fit_kmeans` fits `kmeans_pipeline` (window totals of young subscribers scaled to the
   full window, log1p of skewed amounts -> VectorAssembler -> StandardScaler -> KMeans)
   on a seeded, hash-based sample, for each k of a range, scoring every k by silhouette
   (on a smaller seeded sample) and recording the within-cluster cost; the best
   silhouette wins (ties: smaller k).
2. `cluster_means` gives each cluster's mean of the original feature columns (one
   groupBy; k rows reach the driver).
3. `name_personas` names clusters with the configured rules; `match_persona_ids` keeps
   ids stable across runs by matching centroids to the previous run's (Hungarian).
4. `with_personas` assigns every subscriber; `migration_matrix` counts moves between two
   dates (profiles: `cvo_spark.segments.rules.segment_profiles`).

Determinism: the sample is a hash of (key, seed), not a random draw, and it is laid out
by a fixed hash partitioning sorted by key before fitting, so the same rows and seed
give the same model whatever the file layout or the session's history.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.clustering import KMeans, KMeansModel
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.feature import SQLTransformer, StandardScaler, StandardScalerModel, VectorAssembler
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from scipy.optimize import linear_sum_assignment

from cvo_spark.core.errors import CvoError
from cvo_spark.core.util import require_columns

#: Columns the naming rules read (voice_sms_share is derived from the first two).
NAMING_COLUMNS: tuple[str, ...] = ("voice_share", "sms_share", "digital_share", "arpu_3m")
VOICE_SMS_SHARE = "voice_sms_share"
_PREFIX = "__km_"
_VECTOR = "__km_vector"
SCALED = "__km_scaled"
#: Rows per partition of the fit sample (a fixed layout keeps the fit reproducible).
ROWS_PER_FIT_PARTITION = 50_000
#: Hash buckets of the seeded sample: a sampling fraction is resolved to 1e-6.
_BUCKETS = 1_000_000


class NotEnoughDataError(CvoError):
    """Too few rows to fit the requested number of clusters."""


@dataclass(frozen=True)
class NamingRule:
    """A cluster gets the first rule whose conditions its centroid meets (original units)."""

    name: str
    min_voice_sms_share: float | None = None
    min_digital_share: float | None = None
    min_arpu_3m: float | None = None
    max_arpu_3m: float | None = None


@dataclass(frozen=True)
class KScore:
    k: int
    silhouette: float | None
    wcss: float
    chosen: bool


@dataclass(frozen=True)
class WindowRates:
    """Scale window totals of subscribers younger than the window up to the full window.

    A subscriber active for d < `window_days` days (d = length_of_stay_days + 1) has
    3-month totals covering only d days; multiplying `columns` by window_days / d puts
    them on the footing of everyone else, so tenure does not masquerade as behaviour
    (lifecycle is its own segment). Empty `columns` turns the scaling off.
    """

    columns: tuple[str, ...] = ()
    window_days: int = 90
    los_col: str = "length_of_stay_days"

    def sql(self, column: str) -> str:
        """SQL for `column`, scaled when it is one of `columns` (used inside the pipeline too)."""
        value = f"CAST(`{column}` AS DOUBLE)"
        if column not in self.columns:
            return value
        days = f"least(greatest(coalesce(`{self.los_col}`, {self.window_days}) + 1, 1), {self.window_days})"
        return f"({value} * {float(self.window_days)} / {days})"


@dataclass(frozen=True)
class KMeansFit:
    """The fitted pipeline, the k it uses and the score of every k tried."""

    model: PipelineModel
    k: int
    scores: tuple[KScore, ...]
    features: tuple[str, ...]
    log_features: tuple[str, ...]
    rates: WindowRates = WindowRates()

    @property
    def scaler_mean(self) -> np.ndarray:
        return np.asarray(cast(StandardScalerModel, self.model.stages[2]).mean.toArray())

    @property
    def scaler_std(self) -> np.ndarray:
        return np.asarray(cast(StandardScalerModel, self.model.stages[2]).std.toArray())


# --------------------------------------------------------------------------- fitting
def with_window_rates(df: DataFrame, rates: WindowRates, prefix: str = "") -> DataFrame:
    """Add `prefix` + column for each of ``rates.columns``, scaled as `WindowRates` says.

    Needs those columns and ``rates.los_col``; with an empty prefix the columns are
    replaced. A null length of stay counts as a full window.
    """
    require_columns(df, [*rates.columns, rates.los_col] if rates.columns else [], "with_window_rates")
    return df.withColumns({f"{prefix}{c}": F.expr(rates.sql(c)) for c in rates.columns})


def kmeans_pipeline(
    features: Sequence[str],
    log_features: Sequence[str],
    k: int,
    seed: int,
    max_iter: int = 40,
    prediction_col: str = "cluster",
    rates: WindowRates = WindowRates(),
) -> Pipeline:
    """Build the unfitted persona pipeline.

    Stages: SQLTransformer (window totals scaled by `rates`, then log1p of
    `log_features`, clipped at 0, because amounts are heavy-tailed and would otherwise
    dominate the distance; nulls count as 0, which the features contract already
    guarantees), VectorAssembler, StandardScaler (mean and std, so every feature weighs
    the same), KMeans(k, seed). Keeping the scaling inside the model means whoever
    applies it assigns subscribers the way it was fitted.
    """
    logs = set(log_features)
    exprs = []
    for c in features:
        value = f"coalesce({rates.sql(c)}, 0D)"
        exprs.append((f"log1p(greatest({value}, 0D))" if c in logs else value) + f" AS `{_PREFIX}{c}`")
    return Pipeline(
        stages=[
            SQLTransformer(statement=f"SELECT *, {', '.join(exprs)} FROM __THIS__"),
            VectorAssembler(inputCols=[f"{_PREFIX}{c}" for c in features], outputCol=_VECTOR),
            StandardScaler(inputCol=_VECTOR, outputCol=SCALED, withMean=True, withStd=True),
            KMeans(featuresCol=SCALED, predictionCol=prediction_col, k=k, seed=seed, maxIter=max_iter),
        ]
    )


def seeded_sample(df: DataFrame, key: str, max_rows: int, seed: int, rows: int | None = None) -> DataFrame:
    """At most about `max_rows` rows chosen by a hash of (key, seed): same rows every run.

    `rows` is the row count of `df` when the caller already knows it.
    """
    rows = df.count() if rows is None else rows
    if rows <= max_rows:
        return df
    cutoff = int(_BUCKETS * max_rows / rows)
    bucket = F.pmod(F.xxhash64(F.col(key), F.lit(seed)), F.lit(_BUCKETS))
    return df.filter(bucket < F.lit(cutoff))


def _silhouette(scored: DataFrame, prediction_col: str) -> float | None:
    if scored.select(prediction_col).distinct().limit(2).count() < 2:
        return None  # silhouette is undefined for a single cluster
    evaluator = ClusteringEvaluator(featuresCol=SCALED, predictionCol=prediction_col, metricName="silhouette")
    return float(evaluator.evaluate(scored))


def fit_kmeans(
    df: DataFrame,
    key: str,
    features: Sequence[str],
    log_features: Sequence[str],
    k_values: Sequence[int],
    seed: int,
    max_iter: int = 40,
    fit_sample_rows: int = 200_000,
    silhouette_sample_rows: int = 50_000,
    prediction_col: str = "cluster",
    rates: WindowRates = WindowRates(),
    n_init: int = 1,
) -> KMeansFit:
    """Fit the pipeline for each k in `k_values` and keep the best silhouette.

    Needs `key` and `features` in `df`. The pipeline's preprocessing stages (log1p,
    assembler, scaler) are fitted once on the sample and only KMeans is refitted per k;
    the returned model is the whole `PipelineModel`. Silhouette (squared Euclidean, in
    the scaled space) is computed on a seeded sub-sample of at most
    `silhouette_sample_rows`; wcss is KMeans' training cost on the fit sample. With a
    single k that one is fitted and chosen (its silhouette is still reported). Raises
    `NotEnoughDataError` when the sample has fewer rows than the smallest k. `rates`
    (scaling of partial-window totals) becomes part of the model. With `n_init` > 1 each
    k is fitted from that many initialisations (seeds seed, seed + 1, ...) and the
    lowest within-cluster cost is kept, as scikit-learn's n_init does.
    """
    extra = [rates.los_col] if rates.columns else []
    require_columns(df, [key, *features, *extra], "fit_kmeans")
    k_values = sorted(set(k_values))
    pipeline = kmeans_pipeline(features, log_features, k_values[0], seed, max_iter, prediction_col, rates)
    *prep_stages, last = pipeline.getStages()
    kmeans = cast(KMeans, last)
    rows = df.count()
    fit_rows = seeded_sample(df.select(key, *features, *extra), key, fit_sample_rows, seed, rows=rows)
    # KMeans' k-means|| initialisation samples per partition, so the fit is only
    # reproducible on a reproducible layout: hash partitions by key (a fixed count: AQE
    # leaves explicit repartitions alone), sorted inside. A range sort (orderBy) is not
    # enough: its boundaries come from a sample seeded by the internal RDD id.
    partitions = max(1, math.ceil(min(rows, fit_sample_rows) / ROWS_PER_FIT_PARTITION))
    fit_rows = fit_rows.repartition(partitions, key).sortWithinPartitions(key)
    prep = Pipeline(stages=prep_stages).fit(fit_rows)
    scaled = prep.transform(fit_rows).select(key, SCALED).cache()
    try:
        n = scaled.count()
        if n < k_values[0]:
            raise NotEnoughDataError(f"k-means: {n} rows to fit, fewer than k={k_values[0]}")
        k_values = [k for k in k_values if k <= n]
        sil_rows = seeded_sample(scaled, key, silhouette_sample_rows, seed + 1, rows=n)
        fitted: dict[int, tuple[KMeansModel, float | None, float]] = {}
        for k in k_values:
            starts = [kmeans.copy({kmeans.k: k, kmeans.seed: seed + i}).fit(scaled) for i in range(n_init)]
            km = min(starts, key=lambda m: m.summary.trainingCost)  # first wins ties
            sil = _silhouette(km.transform(sil_rows), prediction_col)
            fitted[k] = (km, sil, float(km.summary.trainingCost))
    finally:
        scaled.unpersist()
    if len(fitted) == 1:
        best = k_values[0]
    else:
        # Best silhouette; ties (and undefined silhouettes last) go to the smaller k.
        best = max(fitted, key=lambda k: (fitted[k][1] if fitted[k][1] is not None else -math.inf, -k))
    scores = tuple(KScore(k, sil, wcss, k == best) for k, (_, sil, wcss) in sorted(fitted.items()))
    model = PipelineModel(stages=[*prep.stages, fitted[best][0]])
    return KMeansFit(model, best, scores, tuple(features), tuple(log_features), rates)


def cluster_means(
    assigned: DataFrame, cluster_col: str, columns: Sequence[str]
) -> tuple[dict[int, dict[str, float]], dict[int, int]]:
    """Per-cluster means of `columns` in original units, and cluster sizes (k rows collected).

    When voice_share and sms_share are among `columns`, the centroid also carries
    ``voice_sms_share`` (their sum: both are fractions of revenue).
    """
    require_columns(assigned, [cluster_col, *columns], "cluster_means")
    rows = (
        assigned.groupBy(cluster_col)
        .agg(F.count(F.lit(1)).alias("__size"), *[F.avg(F.col(c).cast("double")).alias(c) for c in columns])
        .collect()
    )
    centroids: dict[int, dict[str, float]] = {}
    sizes: dict[int, int] = {}
    for r in rows:
        c = int(r[cluster_col])
        centroids[c] = {col: (0.0 if r[col] is None else float(r[col])) for col in columns}
        if "voice_share" in centroids[c] and "sms_share" in centroids[c]:
            centroids[c][VOICE_SMS_SHARE] = centroids[c]["voice_share"] + centroids[c]["sms_share"]
        sizes[c] = int(r["__size"])
    return centroids, sizes


# --------------------------------------------------------------------------- naming and ids
def _conditions(rule: NamingRule) -> list[tuple[str, float, bool]]:
    """(centroid column, threshold, is_minimum) for each condition the rule sets."""
    out = []
    for col, thr, is_min in (
        (VOICE_SMS_SHARE, rule.min_voice_sms_share, True),
        ("digital_share", rule.min_digital_share, True),
        ("arpu_3m", rule.min_arpu_3m, True),
        ("arpu_3m", rule.max_arpu_3m, False),
    ):
        if thr is not None:
            out.append((col, float(thr), is_min))
    return out


def _margin(centroid: Mapping[str, float], rule: NamingRule) -> float | None:
    """Smallest relative slack over the rule's conditions; None when a condition fails."""
    slacks = []
    for col, thr, is_min in _conditions(rule):
        value = centroid.get(col, 0.0)
        if (value < thr) if is_min else (value > thr):
            return None
        slacks.append(((value - thr) if is_min else (thr - value)) / max(abs(thr), 1e-9))
    return min(slacks, default=0.0)


def name_personas(
    centroids: Mapping[int, Mapping[str, float]], sizes: Mapping[int, int], rules: Sequence[NamingRule]
) -> tuple[dict[int, str], list[int]]:
    """Name each cluster by the first rule its centroid meets; names are unique.

    Clusters sharing a first rule are ranked by fit (their smallest relative slack over
    the rule's conditions, then size, then cluster index): the best keeps the plain name,
    the others get "<name> 2", "<name> 3". Clusters no rule fits are "Cluster 1", "Cluster 2"
    (largest first).
    Returns the names and the clusters in naming order (rule order, then rank), which is
    the order fresh persona ids are handed out in.
    """
    by_rule: dict[int, list[tuple[float, int, int]]] = {}
    for c, centroid in centroids.items():
        for i, rule in enumerate(rules):
            margin = _margin(centroid, rule)
            if margin is not None:
                by_rule.setdefault(i, []).append((-margin, -sizes.get(c, 0), c))
                break
        else:
            by_rule.setdefault(len(rules), []).append((0.0, -sizes.get(c, 0), c))
    names: dict[int, str] = {}
    order: list[int] = []
    used: set[str] = set()
    for i in sorted(by_rule):
        for rank, (_, _, c) in enumerate(sorted(by_rule[i]), start=1):
            base = rules[i].name if i < len(rules) else "Cluster"
            n = rank
            name = base if (n == 1 and i < len(rules)) else f"{base} {n}"
            while name in used:  # a configured name could itself look like "X 2"
                n += 1
                name = f"{base} {n}"
            used.add(name)
            names[c] = name
            order.append(c)
    return names, order


def standardize_centroid(
    centroid: Mapping[str, float],
    features: Sequence[str],
    log_features: Sequence[str],
    mean: np.ndarray,
    std: np.ndarray,
) -> np.ndarray:
    """A centroid in the pipeline's scaled space (log1p where the pipeline logs, then z-score)."""
    logs = set(log_features)
    x = np.array([math.log1p(max(centroid[f], 0.0)) if f in logs else centroid[f] for f in features])
    return (x - mean) / np.where(std > 0, std, 1.0)


def match_persona_ids(
    new_centroids: Mapping[int, Mapping[str, float]],
    naming_order: Sequence[int],
    previous_centroids: Mapping[int, Mapping[str, float]],
    features: Sequence[str],
    log_features: Sequence[str],
    mean: np.ndarray,
    std: np.ndarray,
) -> dict[int, int]:
    """Map cluster index -> persona_id, keeping the previous run's ids where centroids match.

    New and previous centroids (original units) are standardised with the current
    scaler and paired by minimum total Euclidean distance (Hungarian assignment). A
    cluster left unpaired (k grew) gets a fresh id above every previous one. Without
    usable previous centroids (none, or a different feature list) ids are 1..k in
    `naming_order`.
    """
    usable = {
        pid: c for pid, c in previous_centroids.items() if all(f in c and c[f] is not None for f in features)
    }
    ids: dict[int, int] = {}
    if usable:
        new_keys, old_keys = list(new_centroids), sorted(usable)
        z_new = np.array(
            [standardize_centroid(new_centroids[c], features, log_features, mean, std) for c in new_keys]
        )
        z_old = np.array(
            [standardize_centroid(usable[p], features, log_features, mean, std) for p in old_keys]
        )
        cost = np.linalg.norm(z_new[:, None, :] - z_old[None, :, :], axis=2)
        rows, cols = linear_sum_assignment(cost)
        ids = {new_keys[r]: old_keys[c] for r, c in zip(rows, cols, strict=True)}
    fresh = max(previous_centroids, default=0) + 1
    for c in naming_order:
        if c not in ids:
            ids[c] = fresh
            fresh += 1
    return ids


# --------------------------------------------------------------------------- assignment
def _lookup(col: Column, mapping: Mapping, default: Column) -> Column:
    expr = default
    for key, value in sorted(mapping.items(), reverse=True):
        expr = F.when(col == F.lit(key), F.lit(value)).otherwise(expr)
    return expr


def with_clusters(
    df: DataFrame,
    fit: KMeansFit,
    cluster_ids: Mapping[int, int],
    cluster_names: Mapping[int, str],
    id_col: str,
    name_col: str,
    prediction_col: str = "__cluster",
) -> DataFrame:
    """Add `id_col` (int) and `name_col` to every row of `df`, from the fitted model.

    Needs the model's feature columns. Keeps one row per input row and the input columns.
    """
    require_columns(df, [*fit.features, *([fit.rates.los_col] if fit.rates.columns else [])], "with_clusters")
    model = fit.model.copy()
    cast(KMeansModel, model.stages[-1]).setPredictionCol(prediction_col)
    cluster = F.col(prediction_col)
    scored = (
        model.transform(df)
        .withColumn(id_col, _lookup(cluster, cluster_ids, F.lit(None)).cast("int"))
        .withColumn(name_col, _lookup(cluster, cluster_names, F.lit(None)).cast("string"))
    )
    return scored.select(*df.columns, id_col, name_col)


def with_personas(
    features: DataFrame, fit: KMeansFit, persona_ids: Mapping[int, int], persona_names: Mapping[int, str]
) -> DataFrame:
    """Add ``persona_id`` and ``persona_name`` to every subscriber (see `with_clusters`)."""
    return with_clusters(features, fit, persona_ids, persona_names, "persona_id", "persona_name")


def migration_matrix(segments_a: DataFrame, segments_b: DataFrame) -> DataFrame:
    """Subscribers moving from each persona at date A to each persona at date B.

    Needs ``subscriber_id``, ``persona_id``, ``persona_name`` in both. Only subscribers
    present on both dates count (joiners and leavers are not moves). Returns
    from_persona_id, from_persona_name, to_persona_id, to_persona_name, subscribers.
    """
    cols = ["subscriber_id", "persona_id", "persona_name"]
    require_columns(segments_a, cols, "migration_matrix (from)")
    require_columns(segments_b, cols, "migration_matrix (to)")
    a = segments_a.select(
        "subscriber_id",
        F.col("persona_id").alias("from_persona_id"),
        F.col("persona_name").alias("from_persona_name"),
    )
    b = segments_b.select(
        "subscriber_id",
        F.col("persona_id").alias("to_persona_id"),
        F.col("persona_name").alias("to_persona_name"),
    )
    return (
        a.join(b, on="subscriber_id", how="inner")
        .groupBy("from_persona_id", "from_persona_name", "to_persona_id", "to_persona_name")
        .agg(F.count(F.lit(1)).alias("subscribers"))
    )
