"""Model metrics on the out-of-time set, each with a plain-language reading.

Classification: ROC-AUC and PR-AUC (MLlib `BinaryClassificationEvaluator`), a confidence
interval for the AUC (DeLong, DeLong & Clarke-Pearson 1988, computed in Spark; Hanley &
McNeil 1982 on request), the paired DeLong interval of the difference of two models' AUCs
on the same rows (`delong_paired_difference`, what the champion gate tests), lift and
capture in the top decile, Brier score, accuracy at 0.5, a 10-bin calibration table and a
cumulative lift curve.
Regression (CLV): MAE, RMSE, R^2 and WAPE. MAPE is never computed: actual revenue is
often zero, where it is undefined.

Every number is aggregated in Spark; only the handful of summary values reach the driver.
The honesty guard (`check_honesty`) turns a too-good-to-be-true result into a
`ModelQualityError`: an AUC above the ceiling or 100% accuracy is a leak to investigate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from cvo_spark.core.errors import ModelQualityError
from cvo_spark.core.util import first_row, require_columns

#: An AUC below this, or whose confidence interval includes 0.5, is "no better than chance".
CHANCE_AUC = 0.55


@dataclass(frozen=True)
class CurvePoint:
    bucket: int
    x: float
    y: float
    n: int


#: AUC interval methods of `binary_metrics`; the first is the default.
AUC_INTERVALS = ("delong", "hanley_mcneil")


def auc_confidence_interval(
    auc: float, positives: int, negatives: int, z: float = 1.96
) -> tuple[float, float]:
    """95% interval of a ROC-AUC by the Hanley & McNeil (1982) standard error.

    Not the default (`delong_auc_interval` is): it needs only the AUC and the counts
    because it assumes a shape for the two score distributions (exponential), so its
    width is right only when the scores have that shape; it comes out too narrow when the
    positives' scores spread wider than the negatives', and too wide in the opposite case.
    """
    if positives == 0 or negatives == 0 or auc is None or math.isnan(auc):
        return (float("nan"), float("nan"))
    q1 = auc / (2 - auc)
    q2 = 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)) / (
        positives * negatives
    )
    se = math.sqrt(max(var, 0.0))
    return (max(0.0, auc - z * se), min(1.0, auc + z * se))


def delong_auc_variance(df: DataFrame, label_col: str, score_col: str) -> tuple[float, float, int, int]:
    """Mann-Whitney ROC-AUC and its DeLong variance, aggregated in Spark.

    Needs `label_col` (1 positive, 0 negative) and `score_col`; rows where either is null
    are left out. Returns (auc, variance, positives, negatives); auc is NaN without both
    classes, the variance NaN with fewer than two of either.

    Placement values: a positive's V10 is the share of negatives it outscores, a
    negative's V01 the share of positives that outscore it, ties counting half (so the
    AUC equals MLlib's trapezoid AUC, and the mean of either is the AUC). DeLong's
    variance is var_samp(V10) / positives + var_samp(V01) / negatives: estimated from the
    scores themselves, with no assumption on their distributions. It is still a
    large-sample variance: with a handful of positives (~10) the interval covers somewhat
    less than its nominal level.

    The data are first reduced to one row per distinct score (positive and negative
    counts), so every subscriber with the same score gets the same placement; the
    cumulative counts are one window over those rows, ordered by score. That window has
    no partition (one task), but it holds distinct scores, not subscribers: calibrated
    probabilities have few. The weighted sums of squares are safe from cancellation here:
    placements lie in [0, 1].
    """
    require_columns(df, [label_col, score_col], "delong_auc_variance")
    per_score = (
        df.select(F.col(label_col).cast("double").alias("y"), F.col(score_col).cast("double").alias("s"))
        .dropna()
        .groupBy("s")
        .agg(F.sum("y").alias("pos"), F.sum(1.0 - F.col("y")).alias("neg"))
    )
    upto = Window.orderBy("s").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    whole = Window.orderBy("s").rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    pos, neg = F.col("pos"), F.col("neg")
    n1, n0 = F.sum(pos).over(whole), F.sum(neg).over(whole)
    placed = per_score.select(
        pos,
        neg,
        n1.alias("n1"),
        n0.alias("n0"),
        (F.sum(neg).over(upto) - neg).alias("neg_below"),
        (n1 - F.sum(pos).over(upto)).alias("pos_above"),
    )
    # Guarded: under ANSI a division by an empty class would fail the query, not give null.
    v10 = F.when(F.col("n0") > 0, (F.col("neg_below") + 0.5 * neg) / F.col("n0"))
    v01 = F.when(F.col("n1") > 0, (F.col("pos_above") + 0.5 * pos) / F.col("n1"))
    r = first_row(
        placed.agg(
            F.max("n1").alias("n1"),
            F.max("n0").alias("n0"),
            F.sum(pos * v10).alias("s10"),
            F.sum(pos * v10 * v10).alias("ss10"),
            F.sum(neg * v01 * v01).alias("ss01"),
        ),
        "ROC-AUC placement sums",
    )
    n_pos, n_neg = float(r["n1"] or 0.0), float(r["n0"] or 0.0)
    if n_pos == 0 or n_neg == 0:
        return float("nan"), float("nan"), int(n_pos), int(n_neg)
    auc = float(r["s10"]) / n_pos
    if n_pos < 2 or n_neg < 2:
        return auc, float("nan"), int(n_pos), int(n_neg)
    s10 = max(float(r["ss10"]) - n_pos * auc * auc, 0.0) / (n_pos - 1)
    s01 = max(float(r["ss01"]) - n_neg * auc * auc, 0.0) / (n_neg - 1)
    return auc, s10 / n_pos + s01 / n_neg, int(n_pos), int(n_neg)


def delong_auc_interval(
    df: DataFrame, label_col: str, score_col: str, z: float = 1.96
) -> tuple[float, float]:
    """Interval (low, high) of the ROC-AUC, auc +/- z * DeLong standard error, clipped to [0, 1].

    Needs `label_col` and `score_col` (see `delong_auc_variance`); centred on the exact
    Mann-Whitney AUC. NaN when the variance cannot be estimated (fewer than two of a class).
    """
    auc, variance, _, _ = delong_auc_variance(df, label_col, score_col)
    if math.isnan(auc) or math.isnan(variance):
        return (float("nan"), float("nan"))
    se = math.sqrt(variance)
    return (max(0.0, auc - z * se), min(1.0, auc + z * se))


@dataclass(frozen=True)
class AucDifference:
    """ROC-AUC of model a minus model b on the same rows, with its paired 95% interval."""

    auc_a: float
    auc_b: float
    diff: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        """True when the whole interval lies above 0 (a NaN interval excludes nothing)."""
        return bool(math.isfinite(self.low) and self.low > 0)


def _placements(rows: DataFrame, score_col: str) -> DataFrame:
    """``<score_col>, _v10, _v01`` per distinct score of `rows` (which need ``y`` 0/1).

    The DeLong placements of `delong_auc_variance` (ties count half), one row per
    distinct score so they can be joined back to the rows that carry that score.
    """
    per_score = rows.groupBy(score_col).agg(F.sum("y").alias("pos"), F.sum(1.0 - F.col("y")).alias("neg"))
    upto = Window.orderBy(score_col).rowsBetween(Window.unboundedPreceding, Window.currentRow)
    whole = Window.orderBy(score_col).rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    pos, neg = F.col("pos"), F.col("neg")
    n1, n0 = F.sum(pos).over(whole), F.sum(neg).over(whole)
    return per_score.select(
        F.col(score_col),
        # Guarded: under ANSI a division by an empty class would fail the query, not give null.
        F.when(n0 > 0, (F.sum(neg).over(upto) - neg + 0.5 * neg) / n0).alias("_v10"),
        F.when(n1 > 0, (n1 - F.sum(pos).over(upto) + 0.5 * pos) / n1).alias("_v01"),
    )


def delong_paired_difference(
    df: DataFrame, label_col: str, score_a: str, score_b: str, z: float = 1.96
) -> AucDifference:
    """AUC(a) - AUC(b) on the same rows, with DeLong's interval for two correlated AUCs.

    Needs `label_col` (1/0) and the two score columns on one row per subscriber (rows
    with a null in any of them are left out). DeLong, DeLong & Clarke-Pearson (1988):
    each row gets its placement under each model (`_placements`, joined back by score);
    var(diff) = var(V10_a - V10_b) / positives + var(V01_a - V01_b) / negatives, sample
    variances of the per-row differences, so the covariance of two models scored on the
    same subscribers is accounted for (a challenger and a champion ranking alike have a
    narrow interval for their difference). Aggregated in Spark; two rows reach the driver.
    NaN interval with fewer than two of either class; a model against itself gives
    diff 0 with a zero-width interval (which does not exclude 0).
    """
    require_columns(df, [label_col, score_a, score_b], "delong_paired_difference")
    rows = df.select(
        F.col(label_col).cast("double").alias("y"),
        F.col(score_a).cast("double").alias("_a"),
        F.col(score_b).cast("double").alias("_b"),
    ).dropna()
    pa = _placements(rows, "_a").withColumnsRenamed({"_v10": "_a10", "_v01": "_a01"})
    pb = _placements(rows, "_b").withColumnsRenamed({"_v10": "_b10", "_v01": "_b01"})
    placed = rows.join(pa, on="_a", how="inner").join(pb, on="_b", how="inner")
    # A positive's placement is its V10, a negative's its V01: one column per model.
    va = F.when(F.col("y") == 1.0, F.col("_a10")).otherwise(F.col("_a01"))
    vb = F.when(F.col("y") == 1.0, F.col("_b10")).otherwise(F.col("_b01"))
    per_class = {
        r["y"]: r
        for r in placed.groupBy("y")
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.avg(va).alias("ma"),
            F.avg(vb).alias("mb"),
            F.var_samp(va - vb).alias("var_d"),
        )
        .collect()
    }
    pos, neg = per_class.get(1.0), per_class.get(0.0)
    nan = float("nan")
    if pos is None or neg is None:
        return AucDifference(nan, nan, nan, nan, nan)
    auc_a, auc_b = float(pos["ma"]), float(pos["mb"])
    diff = auc_a - auc_b
    if pos["n"] < 2 or neg["n"] < 2:
        return AucDifference(auc_a, auc_b, diff, nan, nan)
    se = math.sqrt(max(float(pos["var_d"]), 0.0) / pos["n"] + max(float(neg["var_d"]), 0.0) / neg["n"])
    return AucDifference(auc_a, auc_b, diff, diff - z * se, diff + z * se)


def is_no_better_than_chance(auc: float, ci_low: float) -> bool:
    """True when the AUC is under `CHANCE_AUC` or its interval reaches down to 0.5."""
    return bool(math.isnan(auc) or auc < CHANCE_AUC or math.isnan(ci_low) or ci_low <= 0.5)


def _ranked(df: DataFrame, score_col: str, tiebreak_col: str | None) -> DataFrame:
    # One global order: deciles need it. Ties in the score (isotonic steps) are broken by
    # the raw score, then by the key, so the split is deterministic.
    order = [F.col(score_col).desc()]
    if tiebreak_col:
        order.append(F.col(tiebreak_col).desc())
    if "subscriber_id" in df.columns:
        order.append(F.col("subscriber_id"))
    return df.withColumn("_decile", F.ntile(10).over(Window.orderBy(*order)))


def lift_curve(
    df: DataFrame, label_col: str, score_col: str, tiebreak_col: str | None = None
) -> list[CurvePoint]:
    """Cumulative lift by decile: x = share of subscribers targeted, y = lift over random.

    Bucket k holds the top k deciles by score; lift = their positive rate / overall rate.
    """
    require_columns(df, [label_col, score_col], "lift_curve")
    per = (
        _ranked(df, score_col, tiebreak_col)
        .groupBy("_decile")
        .agg(F.count(F.lit(1)).alias("n"), F.sum(label_col).alias("pos"))
        .orderBy("_decile")
        .collect()
    )
    total_n = sum(r["n"] for r in per)
    total_pos = sum(r["pos"] or 0.0 for r in per)
    base = total_pos / total_n if total_n else float("nan")
    out, cum_n, cum_pos = [], 0, 0.0
    for r in per:
        cum_n += r["n"]
        cum_pos += r["pos"] or 0.0
        lift = (cum_pos / cum_n) / base if base and base > 0 else float("nan")
        out.append(CurvePoint(int(r["_decile"]), cum_n / total_n, lift, cum_n))
    return out


def calibration_table(df: DataFrame, label_col: str, prob_col: str, bins: int = 10) -> list[CurvePoint]:
    """Equal-width probability bins: x = mean predicted, y = observed rate, n = rows (empty bins left out)."""
    require_columns(df, [label_col, prob_col], "calibration_table")
    bucket = F.least(F.floor(F.col(prob_col) * bins), F.lit(bins - 1)).cast("int") + 1
    rows = (
        df.groupBy(bucket.alias("bucket"))
        .agg(F.avg(prob_col).alias("x"), F.avg(label_col).alias("y"), F.count(F.lit(1)).alias("n"))
        .orderBy("bucket")
        .collect()
    )
    return [CurvePoint(int(r["bucket"]), float(r["x"]), float(r["y"]), int(r["n"])) for r in rows]


def binary_metrics(
    df: DataFrame,
    label_col: str,
    prob_col: str,
    tiebreak_col: str | None = None,
    auc_interval: str = "delong",
) -> dict[str, float]:
    """ROC-AUC, PR-AUC, AUC interval, lift/capture in the top decile, Brier, accuracy, base rate.

    Needs `label_col` (0/1 double) and `prob_col` (probability of 1). `auc_interval`
    (one of `AUC_INTERVALS`): 'delong' (default; `delong_auc_interval` on `prob_col`, ties
    counting half as in the AUC) or 'hanley_mcneil' (`auc_confidence_interval`).
    """
    require_columns(df, [label_col, prob_col], "binary_metrics")
    if auc_interval not in AUC_INTERVALS:
        raise ValueError(f"auc_interval must be one of {', '.join(AUC_INTERVALS)}, got {auc_interval!r}")
    data = df.select(
        F.col(label_col).cast("double").alias("label"),
        F.col(prob_col).cast("double").alias("score"),
        *([F.col(tiebreak_col).cast("double").alias("tiebreak")] if tiebreak_col else []),
        *(["subscriber_id"] if "subscriber_id" in df.columns else []),
    )
    stats = first_row(
        data.agg(
            F.count(F.lit(1)).alias("n"),
            F.sum("label").alias("pos"),
            F.avg((F.col("score") - F.col("label")) ** 2).alias("brier"),
            F.avg(((F.col("score") >= 0.5).cast("double") == F.col("label")).cast("double")).alias(
                "accuracy"
            ),
            F.avg("score").alias("mean_score"),
        ),
        "binary metrics",
    )
    n, pos = int(stats["n"]), float(stats["pos"] or 0.0)
    out = {
        "n": float(n),
        "positives": pos,
        "base_rate": pos / n if n else float("nan"),
        "mean_predicted": float(stats["mean_score"]) if n else float("nan"),
        "brier": float(stats["brier"]) if n else float("nan"),
        "accuracy": float(stats["accuracy"]) if n else float("nan"),
    }
    if n == 0 or pos == 0 or pos == n:
        out.update(
            roc_auc=float("nan"),
            pr_auc=float("nan"),
            auc_ci_low=float("nan"),
            auc_ci_high=float("nan"),
            lift_top_decile=float("nan"),
            capture_top_decile=float("nan"),
        )
        return out
    evaluator = BinaryClassificationEvaluator(labelCol="label", rawPredictionCol="score")
    out["roc_auc"] = float(evaluator.setMetricName("areaUnderROC").evaluate(data))
    out["pr_auc"] = float(evaluator.setMetricName("areaUnderPR").evaluate(data))
    if auc_interval == "delong":
        out["auc_ci_low"], out["auc_ci_high"] = delong_auc_interval(data, "label", "score")
    else:
        out["auc_ci_low"], out["auc_ci_high"] = auc_confidence_interval(
            out["roc_auc"], int(pos), int(n - pos)
        )
    top = lift_curve(data, "label", "score", "tiebreak" if tiebreak_col else None)[0]
    out["lift_top_decile"] = top.y
    out["capture_top_decile"] = top.y * top.x
    return out


def regression_metrics(df: DataFrame, actual_col: str, predicted_col: str) -> dict[str, float]:
    """MAE, RMSE, R^2 and WAPE (= sum|error| / sum|actual|) of a prediction; never MAPE."""
    require_columns(df, [actual_col, predicted_col], "regression_metrics")
    y, p = F.col(actual_col).cast("double"), F.col(predicted_col).cast("double")
    s = first_row(
        df.agg(
            F.count(F.lit(1)).alias("n"),
            F.avg(F.abs(y - p)).alias("mae"),
            F.avg((y - p) ** 2).alias("mse"),
            F.sum(F.abs(y - p)).alias("abs_err"),
            F.sum(F.abs(y)).alias("abs_actual"),
            F.var_pop(y).alias("var_y"),
            F.avg(y).alias("mean_actual"),
            F.avg(p).alias("mean_predicted"),
        ),
        "regression metrics",
    )
    n = int(s["n"])
    if n == 0:
        return {k: float("nan") for k in ("n", "mae", "rmse", "r2", "wape", "mean_actual", "mean_predicted")}
    var_y = float(s["var_y"] or 0.0)
    return {
        "n": float(n),
        "mae": float(s["mae"]),
        "rmse": math.sqrt(float(s["mse"])),
        "r2": 1.0 - float(s["mse"]) / var_y if var_y > 0 else float("nan"),
        "wape": float(s["abs_err"]) / float(s["abs_actual"]) if s["abs_actual"] else float("nan"),
        "mean_actual": float(s["mean_actual"]),
        "mean_predicted": float(s["mean_predicted"]),
    }


# --------------------------------------------------------------------------- readings
def _fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def binary_readings(target: str, m: dict[str, float]) -> dict[str, str]:
    """One plain-language sentence per classification metric (what the number means)."""
    verdict = (
        "NO BETTER THAN CHANCE: do not use this model to rank subscribers"
        if is_no_better_than_chance(m.get("roc_auc", float("nan")), m.get("auc_ci_low", float("nan")))
        else "better than chance"
    )
    auc = m.get("roc_auc", float("nan"))
    base = m.get("base_rate", float("nan"))
    return {
        "roc_auc": (
            f"ROC-AUC {_fmt(auc, 2)} "
            f"(95% CI {_fmt(m.get('auc_ci_low'), 2)}-{_fmt(m.get('auc_ci_high'), 2)}): "
            f"0.50 is chance, 1.00 perfect; a random {target} subscriber outranks a random non-{target} one "
            f"{_fmt(auc * 100 if not math.isnan(auc) else auc, 0)}% of the time - {verdict}"
        ),
        "auc_ci_low": (
            "lower end of the 95% interval of the ROC-AUC; "
            "at or below 0.50 means not shown better than chance"
        ),
        "auc_ci_high": "upper end of the 95% interval of the ROC-AUC",
        "pr_auc": (
            f"PR-AUC {_fmt(m.get('pr_auc'), 3)} against a base rate of {_fmt(base, 3)}: "
            "precision averaged over recall; a random ranking scores about the base rate"
        ),
        "lift_top_decile": (
            f"the 10% highest-scored subscribers are {_fmt(m.get('lift_top_decile'), 2)}x "
            f"as likely to {target} "
            "as average (1.0 = no better than random targeting)"
        ),
        "capture_top_decile": (
            "contacting the top 10% reaches "
            f"{_fmt(m.get('capture_top_decile', float('nan')) * 100, 0)}% of all "
            f"{target} cases (10% would be random)"
        ),
        "brier": (
            f"Brier score {_fmt(m.get('brier'), 4)}: mean squared error of the probabilities, "
            "lower is better; always predicting the base rate would score "
            f"{_fmt(base * (1 - base) if not math.isnan(base) else base, 4)}"
        ),
        "accuracy": (
            f"{_fmt(m.get('accuracy', float('nan')) * 100, 1)}% right at a 0.5 cut; "
            f"with a {_fmt(base * 100, 1)}% "
            "base rate this says little, and 100% would be a leak to investigate, not a result"
        ),
        "base_rate": f"{_fmt(base * 100, 1)}% of out-of-time subscribers had the outcome",
        "mean_predicted": (
            f"mean predicted probability {_fmt(m.get('mean_predicted'), 3)} "
            f"vs observed rate {_fmt(base, 3)}: "
            "close means calibrated on average"
        ),
        "n": f"{int(m.get('n', 0)):,} out-of-time subscribers the model and its calibrator never saw",
        "positives": f"{int(m.get('positives', 0)):,} of them had the outcome",
    }


def regression_readings(m: dict[str, float]) -> dict[str, str]:
    """Plain-language readings of the CLV metrics (MAPE deliberately absent)."""
    return {
        "mae": f"on average the prediction is off by {_fmt(m.get('mae'), 0)} per subscriber",
        "rmse": f"root mean squared error {_fmt(m.get('rmse'), 0)}: like MAE but large misses weigh more",
        "r2": (
            f"R^2 {_fmt(m.get('r2'), 2)}: share of the variance between subscribers explained "
            "(0 = no better than predicting the average, negative = worse)"
        ),
        "wape": (
            f"WAPE {_fmt(m.get('wape', float('nan')) * 100, 1)}%: "
            "total absolute error as a share of total actual "
            "revenue (MAPE is not used: many actuals are zero)"
        ),
        "mean_actual": f"actual mean revenue in the window {_fmt(m.get('mean_actual'), 0)}",
        "mean_predicted": f"predicted mean revenue in the window {_fmt(m.get('mean_predicted'), 0)}",
        "n": f"{int(m.get('n', 0)):,} subscribers in the out-of-time check",
    }


def check_honesty(target: str, metrics: dict[str, float], auc_ceiling: float) -> None:
    """Raise `ModelQualityError` when a result is too good to be true, or not measurable.

    An out-of-time ROC-AUC above `auc_ceiling`, or 100% accuracy, on churn/upsell data
    means a feature knows the future: a leak to investigate, not a model to publish.
    """
    auc, acc = metrics.get("roc_auc", float("nan")), metrics.get("accuracy", float("nan"))
    if math.isnan(auc):
        raise ModelQualityError(
            f"{target}: out-of-time set has a single class ({int(metrics.get('positives', 0))} positives of "
            f"{int(metrics.get('n', 0))}); the model cannot be evaluated"
        )
    if auc > auc_ceiling:
        raise ModelQualityError(
            f"{target}: out-of-time ROC-AUC {auc:.4f} exceeds the ceiling {auc_ceiling}: "
            "a leak to investigate (a feature that knows the label), not a result"
        )
    if acc >= 1.0:
        raise ModelQualityError(f"{target}: 100% out-of-time accuracy: a leak to investigate, not a result")


# --------------------------------------------------------------------------- table rows
def evaluation_rows(
    kind: str, metrics: dict[str, float], readings: dict[str, str], version: str, run_id: str
) -> list[tuple]:
    """(model_kind, metric, value, model_version, mlflow_run_id, reading) per metric (`model_evaluations`)."""
    return [(kind, m, float(v), version, run_id, readings.get(m, m)) for m, v in metrics.items()]


def classifier_rows(
    target: str, metrics: dict[str, float], baseline_metrics: dict[str, float], version: str, run_id: str
) -> list[tuple]:
    """Rows for a target's registered GBT and its (unregistered) baseline, plus verdict rows.

    Each model gets a ``better_than_chance`` row (1/0) whose reading says plainly when a
    model must not be used to rank; the GBT gets its ROC-AUC gain over the baseline.
    """
    rows = []
    for kind, m in (("gbt", metrics), ("baseline", baseline_metrics)):
        chance = is_no_better_than_chance(m.get("roc_auc", float("nan")), m.get("auc_ci_low", float("nan")))
        kind_version = version if kind == "gbt" else ""
        rows += evaluation_rows(kind, m, binary_readings(target, m), kind_version, run_id)
        verdict = (
            "0 = NO BETTER THAN CHANCE (AUC < 0.55 or its 95% interval includes 0.50): do not use to rank"
            if chance
            else "1 = the ROC-AUC is above 0.55 and its 95% interval excludes 0.50"
        )
        rows.append((kind, "better_than_chance", 0.0 if chance else 1.0, kind_version, run_id, verdict))
    gain = metrics.get("roc_auc", float("nan")) - baseline_metrics.get("roc_auc", float("nan"))
    reading = (
        f"GBT ROC-AUC minus the logistic-regression baseline's on the same rows: {gain:+.3f} "
        "(positive = the GBT ranks better than the simple model)"
    )
    rows.append(("gbt", "roc_auc_gain_over_baseline", gain, version, run_id, reading))
    return rows


def curve_rows(target: str, lift: list[CurvePoint], calibration: list[CurvePoint]) -> list[tuple]:
    """(target, curve, bucket, x, y) rows for `model_curves`."""
    return [(target, "lift", p.bucket, p.x, p.y) for p in lift] + [
        (target, "calibration", p.bucket, p.x, p.y) for p in calibration
    ]
