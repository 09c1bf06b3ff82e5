"""Model fitting for the `train` stage: propensity targets and CLV, judged on held-out rows.

Pure results, no MLflow (`cvo_spark.models.mlflow_store` logs and registers them). The frame
these functions take comes from `cvo_spark.models.labels.build_training_frame`: features as of
each snapshot T, labels from (T, T+horizon], and a `split` column (train: earlier
snapshots; calibration / evaluation: the two seeded-hash halves of the latest, out-of-
time snapshot). No reported metric comes from rows the classifier or its calibrator saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from pyspark import StorageLevel
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cvo_spark.core.config import ModelsConfig
from cvo_spark.core.util import require_columns
from cvo_spark.models import clv as clv_lib
from cvo_spark.models import evaluation as ev
from cvo_spark.models.labels import CALIBRATION, EVALUATION, TRAIN
from cvo_spark.models.propensity import (
    build_classifier,
    build_regressor,
    fit_calibrated,
    gbt_importances,
    linear_importances,
    reason_stats,
    regression_predictions,
    with_scores,
)

#: Days the naive CLV baseline looks back for its spend rate.
NAIVE_LOOKBACK_DAYS = 90


@dataclass
class TargetFit:
    """Everything one target's training produced (pure results; MLflow logging is separate)."""

    target: str
    features: list[str]
    model: PipelineModel
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    lift: list = field(default_factory=list)
    baseline_lift: list = field(default_factory=list)
    calibration: list = field(default_factory=list)
    importances: dict[str, float] = field(default_factory=dict)
    stats: list[dict] = field(default_factory=list)
    engine: str = "gbt"  # the boosting classifier kind: 'gbt' (MLlib) or 'xgboost'
    # The logistic-regression baseline, kept so `score` can fall back on it when no
    # version qualifies as champion, with reason statistics of its own coefficients.
    baseline_model: PipelineModel | None = None
    baseline_stats: list[dict] = field(default_factory=list)


def with_stable_layout(frame: DataFrame, partitions: int) -> DataFrame:
    """The same rows, hash-partitioned by (subscriber_id, snapshot_date) and sorted inside.

    MLlib's tree and gradient statistics are float sums over each partition's rows, then
    over partitions. After the joins that build the training frame, the order of rows
    inside a partition depends on the order shuffle blocks arrived in, which differs
    between local mode and a cluster (and between runs on a cluster); a near-tie between
    two splits can then go either way. A fixed layout makes every per-partition sum the
    same wherever it runs; what remains is the order partitions are merged in (exact for
    two, last-bit noise beyond). Needs subscriber_id and snapshot_date.
    """
    keys = ["subscriber_id", "snapshot_date"]
    require_columns(frame, keys, "with_stable_layout")
    return frame.repartition(partitions, *keys).sortWithinPartitions(*keys)


def evaluate_model(model: PipelineModel, evaluation: DataFrame, target: str) -> tuple[dict, list, list]:
    """Metrics, lift curve and calibration table of a calibrated model on the evaluation rows."""
    label = f"label_{target}"
    scored = with_scores(model, evaluation, target, "_p", "_raw").select("subscriber_id", label, "_p", "_raw")
    scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        metrics = ev.binary_metrics(scored, label, "_p", "_raw")
        lift = ev.lift_curve(scored, label, "_p", "_raw")
        calibration = ev.calibration_table(scored, label, "_p")
    finally:
        scored.unpersist()
    return metrics, lift, calibration


def fit_target(
    frame: DataFrame,
    target: str,
    features: Sequence[str],
    seed: int,
    max_iter: int,
    max_depth: int,
    auc_ceiling: float,
    scratch_dir: str | None = None,
    engine: str = "gbt",
    xgboost_workers: int = 2,
) -> TargetFit:
    """Fit, calibrate and judge the boosted model and its baseline for one target on a split frame.

    Needs `split`, ``label_<target>``, subscriber_id and `features`. Both fitted models come
    back (the baseline is what `score` uses when no version qualifies as champion). `engine` is the
    boosting classifier kind ('gbt': MLlib, 'xgboost': xgboost.spark). Raises
    `ModelQualityError` (via `evaluation.check_honesty`) when either model looks too good
    to be true on the evaluation half.
    """
    label = f"label_{target}"
    train = frame.where(F.col("split") == TRAIN)
    calibration = frame.where(F.col("split") == CALIBRATION)
    evaluation = frame.where(F.col("split") == EVALUATION)
    gbt = fit_calibrated(
        build_classifier(engine, features, label, target, seed, max_iter, max_depth, xgboost_workers),
        train,
        calibration,
        label,
        target,
    )
    metrics, lift, calib = evaluate_model(gbt, evaluation, target)
    ev.check_honesty(target, metrics, auc_ceiling)
    base = fit_calibrated(
        build_classifier("baseline", features, label, target, seed, max_iter, max_depth),
        train,
        calibration,
        label,
        target,
        scratch_dir,
    )
    base_metrics, base_lift, _ = evaluate_model(base, evaluation, target)
    ev.check_honesty(f"{target} baseline", base_metrics, auc_ceiling)
    importances = gbt_importances(gbt, features)
    base_importances = linear_importances(base, features, train)
    return TargetFit(
        target,
        list(features),
        gbt,
        metrics,
        base_metrics,
        lift,
        base_lift,
        calib,
        importances,
        reason_stats(train, features, label, importances),
        engine,
        base,
        reason_stats(train, features, label, base_importances),
    )


def propensity_rows(fit: TargetFit, version: str, run_id: str) -> list[tuple]:
    """`model_evaluations` rows (without target/dates) of a target's GBT and baseline."""
    return ev.classifier_rows(fit.target, fit.metrics, fit.baseline_metrics, version, run_id)


@dataclass
class ClvFit:
    kind: str
    model: clv_lib.ClvModel | PipelineModel  # ClvModel (bgnbd) or PipelineModel (gbt)
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    features: list[str] = field(default_factory=list)


def clv_evaluation_frame(
    silver: dict[str, DataFrame], frame: DataFrame, latest: date, horizon_days: int
) -> DataFrame:
    """Evaluation-half subscribers with `actual_spend` in (T, T+h] and the naive `baseline_spend`."""
    ids = frame.where(F.col("split") == EVALUATION).select("subscriber_id")
    rech, purch = silver["recharges"], silver["purchases"]
    actual = clv_lib.spend_in_window(rech, purch, latest, latest + timedelta(days=horizon_days))
    past = clv_lib.spend_in_window(rech, purch, latest - timedelta(days=NAIVE_LOOKBACK_DAYS), latest)
    return (
        ids.join(actual, on="subscriber_id", how="left")
        .withColumnRenamed("spend", "actual_spend")
        .join(past, on="subscriber_id", how="left")
        .select(
            "subscriber_id",
            F.coalesce("actual_spend", F.lit(0.0)).alias("actual_spend"),
            (F.coalesce("spend", F.lit(0.0)) * F.lit(horizon_days / NAIVE_LOOKBACK_DAYS)).alias(
                "baseline_spend"
            ),
        )
    )


def fit_clv_target(
    silver: dict[str, DataFrame], frame: DataFrame, latest: date, cfg: ModelsConfig, features: Sequence[str]
) -> ClvFit:
    """Fit the configured CLV model as of the latest snapshot and judge it on the evaluation half.

    BG/NBD + Gamma-Gamma learn from the spend history up to the latest snapshot; the GBT
    regressor learns spend in the horizon from the features of the earlier snapshots.
    Both predict spend over the next `horizon_days` for the evaluation half.
    """
    h = cfg.horizon_days
    truth = clv_evaluation_frame(silver, frame, latest, h).persist(StorageLevel.MEMORY_AND_DISK)
    model: clv_lib.ClvModel | PipelineModel
    try:
        if cfg.clv_method == "bgnbd":
            model = clv_lib.fit_clv(clv_lib.rfm_summary(silver["recharges"], silver["purchases"], latest))
            pred = clv_lib.clv_for_subscribers(
                silver["recharges"], silver["purchases"], truth, model, latest, h, "predicted_spend"
            )
            kind, feats = "bgnbd", []
        else:
            labelled = frame.join(
                _future_spend(silver, frame, h), on=["subscriber_id", "snapshot_date"], how="left"
            ).fillna({"future_spend": 0.0})
            model = build_regressor(
                features, "future_spend", "clv", cfg.seed, cfg.gbt_max_iter, cfg.gbt_max_depth
            ).fit(labelled.where(F.col("split") == TRAIN))
            pred = regression_predictions(
                model, frame.where(F.col("split") == EVALUATION), "clv", "predicted_spend"
            )
            kind, feats = "gbt", list(features)
        judged = truth.join(pred, on="subscriber_id", how="left").fillna({"predicted_spend": 0.0})
        metrics = ev.regression_metrics(judged, "actual_spend", "predicted_spend")
        baseline = ev.regression_metrics(judged, "actual_spend", "baseline_spend")
    finally:
        truth.unpersist()
    return ClvFit(kind, model, metrics, baseline, feats)


def _future_spend(silver: dict[str, DataFrame], frame: DataFrame, horizon_days: int) -> DataFrame:
    """``subscriber_id, snapshot_date, future_spend`` for every snapshot in `frame` (GBT CLV label)."""
    parts = []
    for row in frame.select("snapshot_date").distinct().orderBy("snapshot_date").collect():  # a few dates
        t = row["snapshot_date"]
        spend = clv_lib.spend_in_window(
            silver["recharges"], silver["purchases"], t, t + timedelta(days=horizon_days)
        )
        parts.append(
            spend.select(
                "subscriber_id", F.lit(t).alias("snapshot_date"), F.col("spend").alias("future_spend")
            )
        )
    out = parts[0]
    for part in parts[1:]:
        out = out.unionByName(part)
    return out
