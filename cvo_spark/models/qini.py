"""Judging an uplift ranking on a randomised experiment: Qini curve, coefficient, bootstrap.

Rows are contacts of a randomised test (``treated`` 1 = contacted, 0 = held-out control)
with an outcome (1 = accepted). Sort by a score, best first; for the top fraction phi

    Qini(phi) = Y_T(phi) - Y_C(phi) * N_T(phi) / N_C(phi)

is the number of *incremental* acceptances among the treated in that top fraction (Y the
acceptances, N the rows, of treatment T and control C). A random ranking gives the straight
line from (0, 0) to (1, Qini(1)).

**Qini coefficient** here = (area between the Qini curve and that random line) / N_T, the
total number of treated rows: normalised by the treated count, not by the best possible
curve. 0 is no better than random; its unit is incremental acceptances per treated contact
(x the fraction axis). **Uplift at top k%** = accept rate of the treated minus that of the
control among the top k% of rows.

Scale: rows are put in `bins` score buckets by approximate quantiles (one pass), and every
figure comes from the per-bucket sums, so nothing per-row reaches the driver. The bootstrap
resamples *subscribers* (every contact of a subscriber shares its weight, since the
assignment and the answers of one subscriber are not independent) with Poisson(1) weights
from a hash of (seed, replicate, subscriber): a weighted sum per (replicate, bucket), one
aggregation for all replicates. The order of rows does not depend on the weights, so the
weighted curve of a replicate is exact, with the buckets of the full sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cvo_spark.core.util import require_columns

TOP_FRACTIONS: tuple[float, ...] = (0.1, 0.2, 0.3)
#: Poisson(1) cumulative probabilities for k = 0..6 (the rest, 0.0001%, counts as 7).
_POISSON_1_CDF = tuple(sum(math.exp(-1.0) / math.factorial(i) for i in range(k + 1)) for k in range(7))


@dataclass(frozen=True)
class QiniResult:
    """Figures of one ranking: the curve (fraction, incremental acceptances), the coefficient,
    uplift at the top fractions, and the sample it was measured on."""

    curve: tuple[tuple[float, float], ...]
    coefficient: float
    uplift_at: dict[float, float]
    treated: int
    control: int


def _bucket(score: Column, cuts: Sequence[float]) -> Column:
    """Bucket 0 holds the highest scores; cuts ascend."""
    n = len(cuts)
    expr = F.lit(0)
    # Built inside out, so the smallest cut is tested first: below cuts[i] (and not below
    # cuts[i - 1]) is bucket n - i.
    for i in reversed(range(n)):
        expr = F.when(score < F.lit(float(cuts[i])), F.lit(n - i)).otherwise(expr)
    return expr


def score_buckets(
    df: DataFrame, score_cols: Sequence[str], bins: int = 100, accuracy: float = 1e-4
) -> list[Column]:
    """Per score column, a column: the score bucket of each row (0 = best), from approximate
    quantiles of all the columns in one pass; a null score ranks last."""
    probs = [i / bins for i in range(1, bins)]
    quantiles = df.approxQuantile(list(score_cols), probs, accuracy)
    out = []
    for c, q in zip(score_cols, quantiles, strict=True):
        cuts = sorted(set(q))
        out.append(F.when(F.col(c).isNull(), F.lit(len(cuts) + 1)).otherwise(_bucket(F.col(c), cuts)))
    return out


def poisson_weight(u: Column) -> Column:
    """A Poisson(1) draw from a uniform in [0, 1)."""
    expr = F.lit(len(_POISSON_1_CDF))
    for k in reversed(range(len(_POISSON_1_CDF))):
        expr = F.when(u < F.lit(_POISSON_1_CDF[k]), F.lit(k)).otherwise(expr)
    return expr.cast("double")


def _unit(seed: int, rep: Column, cluster: Column) -> Column:
    h = F.xxhash64(F.lit(seed), rep, cluster)
    return F.pmod(h, F.lit(1_000_003)).cast("double") / 1_000_003.0


def bucket_sums(
    df: DataFrame,
    score_cols: Sequence[str],
    treated_col: str,
    outcome_col: str,
    cluster_col: str = "subscriber_id",
    bins: int = 100,
    replicates: int = 0,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Per ranking, an array [replicate, bucket, (n_t, y_t, n_c, y_c)]; replicate 0 is the sample itself.

    Needs `score_cols`, `treated_col` (0/1 or boolean), `outcome_col` (0/1) and `cluster_col`.
    """
    require_columns(df, [*score_cols, treated_col, outcome_col, cluster_col], "bucket_sums")
    t = F.col(treated_col).cast("double")
    y = F.col(outcome_col).cast("double")
    # One row per (input row, ranking): every ranking's sums come from one aggregation.
    rankings = F.array(
        *[
            F.struct(F.lit(i).alias("r"), b.alias("b"))
            for i, b in enumerate(score_buckets(df, score_cols, bins))
        ]
    )
    base = df.select(
        F.col(cluster_col).alias("_cluster"),
        t.alias("_t"),
        y.alias("_y"),
        F.explode(rankings).alias("_rb"),
    )
    reps = F.sequence(F.lit(0), F.lit(replicates))
    exploded = base.select("*", F.explode(reps).alias("_rep")).withColumn(
        "_w",
        F.when(F.col("_rep") == 0, F.lit(1.0)).otherwise(
            poisson_weight(_unit(seed, F.col("_rep"), F.col("_cluster")))
        ),
    )
    rows = (
        exploded.groupBy(F.col("_rb.r").alias("_ranking"), "_rep", F.col("_rb.b").alias("_bucket"))
        .agg(
            F.sum(F.col("_w") * F.col("_t")).alias("n_t"),
            F.sum(F.col("_w") * F.col("_t") * F.col("_y")).alias("y_t"),
            F.sum(F.col("_w") * (1 - F.col("_t"))).alias("n_c"),
            F.sum(F.col("_w") * (1 - F.col("_t")) * F.col("_y")).alias("y_c"),
        )
        .collect()  # rankings x (replicates + 1) x bins rows of four sums: small
    )
    out: dict[str, np.ndarray] = {}
    for i, c in enumerate(score_cols):
        mine = [r for r in rows if r["_ranking"] == i]
        n_buckets = max((r["_bucket"] for r in mine), default=0) + 1
        arr = np.zeros((replicates + 1, n_buckets, 4))
        for r in mine:
            arr[r["_rep"], r["_bucket"]] = (r["n_t"], r["y_t"], r["n_c"], r["y_c"])
        out[c] = arr
    return out


def qini_from_sums(sums: np.ndarray, fractions: Sequence[float] = TOP_FRACTIONS) -> QiniResult:
    """The Qini figures of one ranking from its bucket sums [bucket, (n_t, y_t, n_c, y_c)], best first."""
    nonempty = sums[sums[:, 0] + sums[:, 2] > 0]
    cum = np.cumsum(nonempty, axis=0)
    n_t, y_t, n_c, y_c = cum[:, 0], cum[:, 1], cum[:, 2], cum[:, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        qini = np.where(n_c > 0, y_t - y_c * n_t / n_c, y_t)
    total = n_t + n_c
    if len(total) == 0 or total[-1] == 0 or n_t[-1] == 0:
        return QiniResult(((0.0, 0.0),), float("nan"), {f: float("nan") for f in fractions}, 0, 0)
    x = np.concatenate([[0.0], total / total[-1]])
    q = np.concatenate([[0.0], qini])
    area = float(np.sum((x[1:] - x[:-1]) * (q[1:] + q[:-1]) / 2.0))
    coefficient = (area - q[-1] / 2.0) / n_t[-1]
    uplift_at = {}
    for f in fractions:
        k = int(np.searchsorted(x[1:], f - 1e-12))  # first bucket reaching the fraction
        k = min(k, len(n_t) - 1)
        rate_t = y_t[k] / n_t[k] if n_t[k] > 0 else float("nan")
        rate_c = y_c[k] / n_c[k] if n_c[k] > 0 else float("nan")
        uplift_at[f] = float(rate_t - rate_c)
    curve = tuple((float(a), float(b)) for a, b in zip(x, q, strict=True))
    return QiniResult(curve, float(coefficient), uplift_at, int(round(n_t[-1])), int(round(n_c[-1])))


@dataclass(frozen=True)
class QiniComparison:
    """Qini figures of several rankings on the same rows, with bootstrap intervals."""

    results: dict[str, QiniResult]
    intervals: dict[str, tuple[float, float]]  # coefficient, 95% percentile interval
    differences: dict[tuple[str, str], tuple[float, float, float]]  # (a, b): point, low, high of a - b
    replicates: int


def compare_rankings(
    df: DataFrame,
    score_cols: Sequence[str],
    treated_col: str,
    outcome_col: str,
    cluster_col: str = "subscriber_id",
    bins: int = 100,
    replicates: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> QiniComparison:
    """Qini of each ranking in `score_cols` and the bootstrap interval of each pairwise difference.

    The replicates share their weights across rankings (same subscribers drawn), so the
    interval of a difference is that of the paired difference.
    """
    sums = bucket_sums(df, score_cols, treated_col, outcome_col, cluster_col, bins, replicates, seed)
    results = {c: qini_from_sums(sums[c][0]) for c in score_cols}
    boot = {
        c: np.array([qini_from_sums(sums[c][r]).coefficient for r in range(1, replicates + 1)])
        for c in score_cols
    }
    lo_q, hi_q = (1 - level) / 2 * 100, (1 + level) / 2 * 100

    def interval(values: np.ndarray) -> tuple[float, float]:
        values = values[np.isfinite(values)]
        if len(values) == 0:
            return (float("nan"), float("nan"))
        return (float(np.percentile(values, lo_q)), float(np.percentile(values, hi_q)))

    intervals = {c: interval(boot[c]) for c in score_cols}
    differences = {}
    for a in score_cols:
        for b in score_cols:
            if a != b:
                point = results[a].coefficient - results[b].coefficient
                differences[(a, b)] = (point, *interval(boot[a] - boot[b]))
    return QiniComparison(results, intervals, differences, replicates)
