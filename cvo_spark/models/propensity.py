"""Propensity models (upsell, cross-sell, churn): MLlib pipelines, isotonic calibration, reason codes.

One pipeline per target: median `Imputer` -> `VectorAssembler` -> `GBTClassifier` (seeded),
with a `LogisticRegression` on the same features as the baseline it must beat. Every
intermediate column is prefixed with the target (``churn__vec``...) so the three models
can be applied one after another to the same DataFrame without collisions.

Calibration: an MLlib `IsotonicRegression` fitted on the model's probability for rows the
classifier never saw (the caller decides which; see `cvo_spark.models.training`) is
appended as the last stage, so the stored `PipelineModel` outputs calibrated
probabilities directly (``<target>__p``).

Reason codes: for each scored subscriber, contribution of feature j =
importance_j x sign_j x (x_j - mean_j) / std_j, where importance is the GBT's feature
importance, mean/std are training statistics and sign_j is the sign of the feature's
correlation with the label in training (the direction that raises the score). The top
positive contributions, largest first, become human-readable strings. All in column
expressions; a null feature value contributes nothing (it tells us nothing).
This is an approximation, not a per-prediction attribution such as TreeSHAP: it takes
each feature's effect as monotonic in its training direction, so a feature whose effect
is U-shaped can be named in the wrong direction. It is tested where it must hold: a
feature planted to drive the label comes out on top.
"""

from __future__ import annotations

import math
import tempfile
import uuid
from collections.abc import Sequence
from typing import Any

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import GBTClassifier, LogisticRegression
from pyspark.ml.feature import Imputer, VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.ml.regression import GBTRegressor, IsotonicRegression
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cvo_spark.core.util import first_row, require_columns

#: Numeric columns of the `features` table the models use (docs/tables.md). Exact
#: duplicates (arpu_1m = revenue_1m, monetary_3m = revenue_3m) are left out so
#: importance is not split between two names for one number.
BASE_FEATURES: tuple[str, ...] = (
    "length_of_stay_days",
    "revenue_1m",
    "revenue_3m",
    "arpu_3m",
    "voice_revenue_3m",
    "sms_revenue_3m",
    "data_revenue_3m",
    "digital_revenue_3m",
    "voice_share",
    "sms_share",
    "data_share",
    "digital_share",
    "voice_minutes_3m",
    "sms_count_3m",
    "data_mb_3m",
    "active_days_3m",
    "recharge_count_3m",
    "recharge_amount_3m",
    "recharge_mean_amount",
    "recharge_std_amount",
    "days_since_last_recharge",
    "purchase_count_3m",
    "purchase_amount_3m",
    "recency_days",
    "frequency_3m",
    "revenue_trend_pct",
    "data_trend_pct",
    "voice_trend_pct",
    "revenue_volatility",
    "quota_low_count",
    "quota_expiring_count",
    "package_expired_count",
    "offers_contacted",
    "offers_accepted",
    "offer_accept_rate",
    "days_since_last_contact",
)

#: 0/1 indicators derived from the enumerated string columns (known values only).
INDICATORS: dict[str, tuple[str, str]] = {
    "is_postpaid": ("payment_type", "postpaid"),
    "is_device_high": ("device_tier", "high"),
    "is_device_low": ("device_tier", "low"),
}

MODEL_FEATURES: tuple[str, ...] = BASE_FEATURES + tuple(INDICATORS)

#: Human-readable names used in reason codes; unknown columns read as their name.
FEATURE_LABELS: dict[str, str] = {
    "length_of_stay_days": "length of stay",
    "revenue_1m": "revenue last month",
    "revenue_3m": "revenue last 3 months",
    "arpu_3m": "3-month ARPU",
    "voice_revenue_3m": "voice revenue",
    "sms_revenue_3m": "SMS revenue",
    "data_revenue_3m": "data revenue",
    "digital_revenue_3m": "digital services revenue",
    "voice_share": "voice share of spend",
    "sms_share": "SMS share of spend",
    "data_share": "data share of spend",
    "digital_share": "digital share of spend",
    "voice_minutes_3m": "voice minutes",
    "sms_count_3m": "SMS sent",
    "data_mb_3m": "data volume",
    "active_days_3m": "active days",
    "recharge_count_3m": "number of recharges",
    "recharge_amount_3m": "recharge amount",
    "recharge_mean_amount": "typical recharge size",
    "recharge_std_amount": "recharge size variability",
    "days_since_last_recharge": "days since last recharge",
    "purchase_count_3m": "number of package purchases",
    "purchase_amount_3m": "package spend",
    "recency_days": "days since last spend",
    "frequency_3m": "purchase frequency",
    "revenue_trend_pct": "revenue trend",
    "data_trend_pct": "data usage trend",
    "voice_trend_pct": "voice usage trend",
    "revenue_volatility": "revenue volatility",
    "quota_low_count": "low-quota alerts",
    "quota_expiring_count": "quota-expiring alerts",
    "package_expired_count": "expired packages",
    "offers_contacted": "offers received",
    "offers_accepted": "offers accepted",
    "offer_accept_rate": "offer acceptance rate",
    "days_since_last_contact": "days since last offer",
    "is_postpaid": "postpaid plan",
    "is_device_high": "high-end device",
    "is_device_low": "low-end device",
}


def feature_label(column: str) -> str:
    return FEATURE_LABELS.get(column, column.replace("_", " "))


def with_model_inputs(features: DataFrame, columns: Sequence[str] = MODEL_FEATURES) -> DataFrame:
    """Add the 0/1 indicator columns and cast every model column to double.

    Needs the `features` table columns listed in `columns` (indicators are derived from
    payment_type / device_tier when asked for). Keeps every input row and column.
    """
    out = features
    for name, (source, value) in INDICATORS.items():
        if name in columns and name not in features.columns:
            require_columns(features, [source], "with_model_inputs")
            out = out.withColumn(name, (F.col(source) == F.lit(value)).cast("double"))
    require_columns(out, list(columns), "with_model_inputs")
    return out.withColumns({c: F.col(c).cast("double") for c in columns})


def usable_features(train: DataFrame, candidates: Sequence[str]) -> list[str]:
    """The candidates that vary in training (not all null, not constant); order kept.

    A column with no values cannot be imputed and a constant one carries no signal.
    """
    require_columns(train, list(candidates), "usable_features")
    row = first_row(train.agg(*[F.stddev_pop(c).alias(c) for c in candidates]), "usable_features (spreads)")
    return [c for c in candidates if row[c] is not None and row[c] > 0]


def _prefixed(prefix: str, name: str) -> str:
    return f"{prefix}__{name}"


def _inputs(features: Sequence[str], prefix: str) -> list:
    imputed = [_prefixed(prefix, f"in_{c}") for c in features]
    return [
        Imputer(inputCols=list(features), outputCols=imputed, strategy="median"),
        VectorAssembler(inputCols=imputed, outputCol=_prefixed(prefix, "vec"), handleInvalid="keep"),
    ]


#: Classifier kinds `build_classifier` knows: the two boosting engines and the baseline.
CLASSIFIER_KINDS = ("gbt", "xgboost", "baseline")


def _xgboost_classifier(label_col: str, prefix: str, seed: int, max_iter: int, max_depth: int, workers: int):
    """xgboost.spark with the same trees, depth, learning rate and column names as the GBT."""
    from xgboost.spark import SparkXGBClassifier

    return SparkXGBClassifier(
        features_col=_prefixed(prefix, "vec"),
        label_col=label_col,
        prediction_col=_prefixed(prefix, "pred"),
        probability_col=_prefixed(prefix, "prob"),
        raw_prediction_col=_prefixed(prefix, "rawpred"),
        n_estimators=max_iter,
        max_depth=max_depth,
        learning_rate=0.1,
        tree_method="hist",
        random_state=seed,
        num_workers=workers,
    )


def build_classifier(
    kind: str,
    features: Sequence[str],
    label_col: str,
    prefix: str,
    seed: int,
    max_iter: int,
    max_depth: int,
    xgboost_workers: int = 2,
) -> Pipeline:
    """An unfitted pipeline: impute -> assemble -> a classifier of `kind` (`CLASSIFIER_KINDS`).

    'gbt' is MLlib's GBTClassifier, 'xgboost' xgboost.spark's classifier on
    `xgboost_workers` barrier tasks (same trees, depth and step), 'baseline' a
    logistic regression. Every kind writes ``<prefix>__prob`` (probability vector).
    """
    if kind == "xgboost":
        clf = _xgboost_classifier(label_col, prefix, seed, max_iter, max_depth, xgboost_workers)
        return Pipeline(stages=[*_inputs(features, prefix), clf])
    common: dict[str, Any] = {
        "featuresCol": _prefixed(prefix, "vec"),
        "labelCol": label_col,
        "predictionCol": _prefixed(prefix, "pred"),
    }
    if kind == "gbt":
        clf = GBTClassifier(seed=seed, maxIter=max_iter, maxDepth=max_depth, stepSize=0.1, **common)
    elif kind == "baseline":
        # Each L-BFGS iteration is a Spark job; 50 is ample for a standardized, L2-regularised fit.
        clf = LogisticRegression(maxIter=50, tol=1e-5, regParam=0.01, elasticNetParam=0.0, **common)
    else:
        raise ValueError(f"unknown classifier kind {kind!r}")
    # GBTClassifier's constructor does not take these, its setters do.
    clf.setProbabilityCol(_prefixed(prefix, "prob")).setRawPredictionCol(_prefixed(prefix, "rawpred"))
    return Pipeline(stages=[*_inputs(features, prefix), clf])


def build_regressor(
    features: Sequence[str], label_col: str, prefix: str, seed: int, max_iter: int, max_depth: int
) -> Pipeline:
    """Impute -> assemble -> GBTRegressor on `label_col` (prediction in ``<prefix>__p``)."""
    reg = GBTRegressor(
        featuresCol=_prefixed(prefix, "vec"),
        labelCol=label_col,
        predictionCol=_prefixed(prefix, "p"),
        seed=seed,
        maxIter=max_iter,
        maxDepth=max_depth,
    )
    return Pipeline(stages=[*_inputs(features, prefix), reg])


def without_training_summary(stage, scratch_dir: str | None = None):
    """The same fitted model without its training summary (a save/load round trip).

    Spark 4.0.1 bug: a `LogisticRegressionModel` keeps its training summary, which holds
    the SparkSession; once the session has used `DataFrame.observe` (the generator and
    Delta writes do), that session is not serializable and every transform with the model
    fails with "Task not serializable". A reloaded model has no summary. `scratch_dir`
    must be reachable by the executors on a cluster (a lake path); None uses a local
    temporary folder, fine for local mode.
    """
    if not getattr(stage, "hasSummary", False):
        return stage
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{scratch_dir.rstrip('/')}/{uuid.uuid4().hex}" if scratch_dir else f"{tmp}/model"
        stage.write().overwrite().save(path)
        return type(stage).load(path)


def fit_calibrated(
    pipeline: Pipeline,
    train: DataFrame,
    calibration: DataFrame,
    label_col: str,
    prefix: str,
    scratch_dir: str | None = None,
) -> PipelineModel:
    """Fit `pipeline` on `train`, then an isotonic calibrator on `calibration`; one PipelineModel.

    The calibrator maps the classifier's probability of class 1 to the observed rate on
    rows the classifier never saw, so a calibrated 0.3 means about 30%.
    """
    fitted = pipeline.fit(train)
    fitted = PipelineModel(stages=[without_training_summary(s, scratch_dir) for s in fitted.stages])
    iso = IsotonicRegression(
        featuresCol=_prefixed(prefix, "prob"),
        featureIndex=1,
        labelCol=label_col,
        predictionCol=_prefixed(prefix, "p"),
        isotonic=True,
    )
    calibrator = iso.fit(fitted.transform(calibration))
    return PipelineModel(stages=[*fitted.stages, calibrator])


def with_scores(
    model: PipelineModel, df: DataFrame, prefix: str, prob_col: str, raw_col: str | None = None
) -> DataFrame:
    """Apply a fitted (calibrated) model: adds `prob_col` (and `raw_col`, the uncalibrated score).

    Drops every ``<prefix>__*`` intermediate column, so the input columns plus the new
    ones come out. Probabilities are clipped into [0, 1].
    """
    scored = model.transform(df)
    extra = {prob_col: F.least(F.greatest(F.col(_prefixed(prefix, "p")), F.lit(0.0)), F.lit(1.0))}
    if raw_col:
        extra[raw_col] = vector_to_array(F.col(_prefixed(prefix, "prob"))).getItem(1)
    scored = scored.withColumns(extra)
    return scored.drop(*[c for c in scored.columns if c.startswith(f"{prefix}__")])


def regression_predictions(
    model: PipelineModel, df: DataFrame, prefix: str, out_col: str, scale: float = 1.0
) -> DataFrame:
    """``subscriber_id, <out_col>``: a fitted `build_regressor` model's prediction.

    The prediction is floored at 0, then multiplied by `scale`.
    """
    scored = model.transform(df)
    return scored.select(
        "subscriber_id", (F.greatest(F.col(_prefixed(prefix, "p")), F.lit(0.0)) * F.lit(scale)).alias(out_col)
    )


def gbt_importances(model: PipelineModel, features: Sequence[str]) -> dict[str, float]:
    """Feature importances (sum 1) of the tree-ensemble stage of a fitted pipeline.

    MLlib's trees report impurity-based importances; an xgboost.spark model the total
    gain per feature (named ``f<i>`` after its position in the assembled vector),
    normalised here to sum 1, so both read the same way.
    """
    for stage in model.stages:
        if hasattr(stage, "featureImportances"):
            values = stage.featureImportances.toArray()
            return {f: float(values[i]) for i, f in enumerate(features)}
        if hasattr(stage, "get_feature_importances"):
            gains = stage.get_feature_importances(importance_type="total_gain")
            total = sum(gains.values()) or 1.0
            return {f: float(gains.get(f"f{i}", 0.0)) / total for i, f in enumerate(features)}
    raise ValueError("pipeline has no tree-ensemble stage with feature importances")


def linear_importances(model: PipelineModel, features: Sequence[str], train: DataFrame) -> dict[str, float]:
    """Importances (sum 1) of the logistic-regression stage of a fitted baseline pipeline.

    |coefficient| x training standard deviation per feature: the change in log-odds for a
    one-standard-deviation move, so `with_reason_codes` weighs a baseline's reasons the way
    that model scores (used when the baseline scores for want of a champion). Needs
    `features` in `train`; one row of aggregates reaches the driver.
    """
    require_columns(train, list(features), "linear_importances")
    coefs = next(s.coefficients.toArray() for s in model.stages if hasattr(s, "coefficients"))
    row = first_row(
        train.agg(*[F.stddev_pop(c).alias(f"s{i}") for i, c in enumerate(features)]),
        "linear_importances (spreads)",
    )
    raw = {f: abs(float(coefs[i])) * float(row[f"s{i}"] or 0.0) for i, f in enumerate(features)}
    total = sum(raw.values()) or 1.0
    return {f: v / total for f, v in raw.items()}


#: Significant digits kept of the reason statistics. A sum over partitions depends on the
#: order the partial sums meet in (local mode vs a cluster), in the last bits; rounded,
#: the same data gives the same statistics and so the same reason order.
REASON_STAT_DIGITS = 9


def reason_stats(
    train: DataFrame, features: Sequence[str], label_col: str, importances: dict[str, float]
) -> list[dict]:
    """Training mean, std, direction (sign of correlation with the label) and importance per feature.

    Small: one row of aggregates reaches the driver. Features with zero importance, zero
    spread or no correlation are dropped (they can never be a reason). Values are rounded
    to `REASON_STAT_DIGITS` significant digits.
    """
    require_columns(train, [*features, label_col], "reason_stats")
    aggs = []
    for i, c in enumerate(features):
        aggs += [F.avg(c).alias(f"m{i}"), F.stddev_pop(c).alias(f"s{i}"), F.corr(c, label_col).alias(f"r{i}")]
    row = first_row(train.agg(*aggs), "reason_stats")
    stats = []
    for i, c in enumerate(features):
        mean, std, corr, imp = row[f"m{i}"], row[f"s{i}"], row[f"r{i}"], importances.get(c, 0.0)
        if imp <= 0 or not std or corr is None or math.isnan(corr) or corr == 0:
            continue
        stats.append(
            {
                "feature": c,
                "mean": _significant(mean),
                "std": _significant(std),
                "sign": 1.0 if corr > 0 else -1.0,
                "importance": _significant(imp),
            }
        )
    return stats


def _significant(value: float, digits: int = REASON_STAT_DIGITS) -> float:
    """`value` rounded to `digits` significant digits (0 stays 0)."""
    value = float(value)
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def with_reason_codes(df: DataFrame, stats: Sequence[dict], out_col: str, top_k: int) -> DataFrame:
    """Add `out_col`: array of up to `top_k` readable reasons, the largest contribution first.

    Needs every feature named in `stats`. A reason reads ``"<feature label>: high"`` or
    ``": low"`` (the subscriber's value against the training mean, in the direction that
    raises the score). Empty array when nothing raises it.
    """
    require_columns(df, [s["feature"] for s in stats], "with_reason_codes")
    if not stats:
        return df.withColumn(out_col, F.array().cast("array<string>"))
    items = []
    for s in stats:
        z = (F.coalesce(F.col(s["feature"]).cast("double"), F.lit(s["mean"])) - F.lit(s["mean"])) / F.lit(
            s["std"]
        )
        contribution = F.lit(s["importance"] * s["sign"]) * z
        label = feature_label(s["feature"])
        text = F.when(z > 0, F.lit(f"{label}: high")).otherwise(F.lit(f"{label}: low"))
        items.append(F.struct(contribution.alias("c"), text.alias("reason")))
    ranked = F.sort_array(F.filter(F.array(*items), lambda x: x["c"] > 0), asc=False)
    return df.withColumn(out_col, F.transform(F.slice(ranked, 1, top_k), lambda x: x["reason"]))
