"""Stage `train`: propensity (upsell, cross-sell, churn) and CLV models, judged out of time.

Data design (invariant 1, 7):

- `training_snapshots` snapshot dates T, `snapshot_spacing_days` apart, the latest at
  ``as_of - horizon_days`` so every label window (T, T+horizon] is complete by as_of.
  Features as of T come from `cvo_spark.features.build_subscriber_features` (events <= T
  only), labels from `cvo_spark.labels.build_labels` (events in the window only).
- The classifier trains on the earlier snapshots. The latest snapshot is out of time
  (never seen in training) and is split by a seeded hash of subscriber_id into halves:
  the *calibration* half fits the isotonic calibrator, the *evaluation* half gives every
  reported metric. So no reported number comes from rows the classifier or its
  calibrator saw. (The alternative, calibrating on the second-latest snapshot with a
  model fitted on the ones before, costs a whole snapshot of training data and
  calibrates on an older period; splitting the newest period calibrates closest to the
  period the scores are used in.)
- Each target gets a GBT and a logistic-regression baseline, calibrated the same way.
  The honesty guard stops the stage (`ModelQualityError`) on an AUC above
  `auc_ceiling` or 100% accuracy.
- CLV: BG/NBD + Gamma-Gamma fitted on the (frequency, recency, T, monetary) summary as
  of the latest snapshot and checked on the evaluation half against the actual spend in
  the following `horizon_days`; a naive baseline (last 90 days' spend rate) beside it.
  ``clv_method: gbt`` swaps in a GBT regressor on the same target.

MLflow: one run per target, the GBT (or CLV model) registered as ``<prefix>_<target>``;
it becomes challenger and is promoted to champion only when it beats the champion on
this run's evaluation half (`cvo_spark.tracking`). Tables: `model_evaluations` and
`model_curves` are rewritten for the as_of (overwrite_partition), so a re-run for the
same date leaves one set of rows (invariant 2).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from pyspark import StorageLevel
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    DateType,
    DoubleType,
    IntegerType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from cvo_spark import clv as clv_lib
from cvo_spark import evaluation as ev
from cvo_spark import tracking
from cvo_spark.config import ModelsConfig
from cvo_spark.labels import (
    CALIBRATION,
    EVALUATION,
    TARGETS,
    TRAIN,
    build_training_frame,
    training_snapshot_dates,
)
from cvo_spark.pipeline import StageContext, StageResult
from cvo_spark.propensity import (
    FEATURE_LABELS,
    MODEL_FEATURES,
    build_classifier,
    build_regressor,
    fit_calibrated,
    gbt_importances,
    reason_stats,
    regression_predictions,
    usable_features,
    with_scores,
)

log = logging.getLogger(__name__)

INPUTS: tuple[str, ...] = (
    "subscribers",
    "usage_daily",
    "recharges",
    "purchases",
    "quota_events",
    "offer_history",
)
#: Days the naive CLV baseline looks back for its spend rate.
NAIVE_LOOKBACK_DAYS = 90

EVALUATIONS_SCHEMA = StructType(
    [
        StructField("trained_at", TimestampType()),
        StructField("as_of", DateType()),
        StructField("target", StringType()),
        StructField("model_kind", StringType()),
        StructField("metric", StringType()),
        StructField("value", DoubleType()),
        StructField("model_version", StringType()),
        StructField("mlflow_run_id", StringType()),
        StructField("reading", StringType()),
    ]
)
CURVES_SCHEMA = StructType(
    [
        StructField("trained_at", TimestampType()),
        StructField("as_of", DateType()),
        StructField("target", StringType()),
        StructField("curve", StringType()),
        StructField("bucket", IntegerType()),
        StructField("x", DoubleType()),
        StructField("y", DoubleType()),
    ]
)


# --------------------------------------------------------------------------- data
# --------------------------------------------------------------------------- propensity
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
) -> TargetFit:
    """Fit, calibrate and judge the GBT and its baseline for one target on a split frame.

    Needs `split`, ``label_<target>``, subscriber_id and `features`. Raises
    `ModelQualityError` (via `evaluation.check_honesty`) when either model looks too good
    to be true on the evaluation half.
    """
    label = f"label_{target}"
    train = frame.where(F.col("split") == TRAIN)
    calibration = frame.where(F.col("split") == CALIBRATION)
    evaluation = frame.where(F.col("split") == EVALUATION)
    gbt = fit_calibrated(
        build_classifier("gbt", features, label, target, seed, max_iter, max_depth),
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
    )


def propensity_rows(fit: TargetFit, version: str, run_id: str) -> list[tuple]:
    """`model_evaluations` rows (without target/dates) of a target's GBT and baseline."""
    return ev.classifier_rows(fit.target, fit.metrics, fit.baseline_metrics, version, run_id)


@dataclass
class ClvFit:
    kind: str
    model: object  # ClvModel (bgnbd) or PipelineModel (gbt)
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


# --------------------------------------------------------------------------- MLflow
def _champion_metric(name: str, evaluation: DataFrame, target: str, metric: str) -> float | None:
    """The current champion's `metric` on this run's evaluation rows (None: no usable champion).

    A champion that cannot score these rows (e.g. trained on a feature list that no longer
    exists) is treated as absent, so the new version can replace it; the log says so.
    """
    model, mv = tracking.load_spark_model(name)
    if model is None:
        return None
    try:
        metrics, _, _ = evaluate_model(model, evaluation, target)
    except Exception as err:  # noqa: BLE001 - any scoring failure means "cannot compare"
        log.warning(
            "champion %s v%s cannot score the evaluation rows (%s); treating it as absent",
            name,
            mv.version,
            str(err).splitlines()[0],
        )
        return None
    return metrics.get(metric)


def log_target(
    fit: TargetFit, frame: DataFrame, ctx: StageContext, snapshots: Sequence[date]
) -> tuple[str, str, str]:
    """Log one target's run (params, metrics, meta, charts, model), register it, set its alias.

    Returns (version, run_id, 'champion' | 'challenger').
    """
    import mlflow
    from mlflow.models import infer_signature

    cfg = ctx.config.models
    name = tracking.registered_name(ctx.config.mlflow.model_prefix, fit.target)
    evaluation = frame.where(F.col("split") == EVALUATION)
    champion_metric = _champion_metric(name, evaluation, fit.target, cfg.promote_metric)
    with mlflow.start_run(run_name=f"{fit.target} {ctx.as_of}") as run:
        mlflow.set_tags({"target": fit.target, "as_of": ctx.as_of.isoformat(), "cvo_run_id": ctx.run_id})
        mlflow.log_params(
            {
                "model_kind": "gbt",
                "seed": cfg.seed,
                "gbt_max_iter": cfg.gbt_max_iter,
                "gbt_max_depth": cfg.gbt_max_depth,
                "horizon_days": cfg.horizon_days,
                "snapshots": ",".join(d.isoformat() for d in snapshots),
                "calibration": "isotonic on the calibration half of the latest snapshot",
                "n_features": len(fit.features),
            }
        )
        mlflow.log_metrics(tracking.finite_metrics(fit.metrics))
        mlflow.log_metrics(tracking.finite_metrics(fit.baseline_metrics, "baseline_"))
        tracking.log_json(
            {
                "target": fit.target,
                "model_kind": "gbt",
                "features": fit.features,
                "snapshot_dates": [d.isoformat() for d in snapshots],
                "reason_stats": fit.stats,
                "as_of": ctx.as_of.isoformat(),
            },
            tracking.META_FILE,
        )
        tracking.log_importance_artifacts(fit.importances, FEATURE_LABELS)
        tracking.log_curve_charts(fit.target, fit.lift, fit.calibration, fit.baseline_lift)
        sample = frame.select(*fit.features).limit(5)
        signature = infer_signature(
            sample.toPandas(), with_scores(fit.model, sample, fit.target, "p").select("p").toPandas()
        )
        version = tracking.log_spark_model(fit.model, name, signature)
        status = tracking.assign_aliases(name, version, fit.metrics.get(cfg.promote_metric), champion_metric)
        if champion_metric is not None:
            mlflow.log_metric(f"champion_{cfg.promote_metric}", champion_metric)
        mlflow.set_tag("registry_status", status)
        tracking.tag_version(name, version, {"model_kind": "gbt", "as_of": ctx.as_of.isoformat()})
        return version, run.info.run_id, status


def log_clv(
    fit: ClvFit, frame: DataFrame, silver: dict[str, DataFrame], ctx: StageContext, snapshots: Sequence[date]
) -> tuple[str, str, str]:
    """Log and register the CLV model; promoted when its WAPE (lower is better) beats the champion's."""
    import mlflow

    cfg = ctx.config.models
    name = tracking.registered_name(ctx.config.mlflow.model_prefix, "clv")
    champion_wape = _clv_champion_wape(name, frame, silver, snapshots[-1], cfg.horizon_days)
    with mlflow.start_run(run_name=f"clv {ctx.as_of}") as run:
        mlflow.set_tags({"target": "clv", "as_of": ctx.as_of.isoformat(), "cvo_run_id": ctx.run_id})
        mlflow.log_params(
            {
                "model_kind": fit.kind,
                "horizon_days": cfg.horizon_days,
                "clv_horizon_months": cfg.clv_horizon_months,
                "snapshot": snapshots[-1].isoformat(),
            }
        )
        mlflow.log_metrics(tracking.finite_metrics(fit.metrics))
        mlflow.log_metrics(tracking.finite_metrics(fit.baseline_metrics, "naive_"))
        meta = {
            "target": "clv",
            "model_kind": fit.kind,
            "features": fit.features,
            "snapshot_dates": [d.isoformat() for d in snapshots],
            "as_of": ctx.as_of.isoformat(),
            "horizon_days": cfg.horizon_days,
        }
        if fit.kind == "bgnbd":
            meta["params"] = fit.model.as_dict()
            mlflow.log_params({k: round(v, 6) for k, v in fit.model.as_dict().items()})
        tracking.log_json(meta, tracking.META_FILE)
        if fit.kind == "bgnbd":
            version = tracking.log_clv_model(fit.model.as_dict(), name)
        else:
            from mlflow.models import infer_signature

            sample = frame.select(*fit.features).limit(5)
            out = regression_predictions(
                fit.model, sample.withColumn("subscriber_id", F.lit("x")), "clv", "clv"
            )
            version = tracking.log_spark_model(
                fit.model, name, infer_signature(sample.toPandas(), out.select("clv").toPandas())
            )
        status = tracking.assign_aliases(
            name, version, fit.metrics.get("wape"), champion_wape, higher_is_better=False
        )
        if champion_wape is not None:
            mlflow.log_metric("champion_wape", champion_wape)
        mlflow.set_tag("registry_status", status)
        tracking.tag_version(name, version, {"model_kind": fit.kind, "as_of": ctx.as_of.isoformat()})
        return version, run.info.run_id, status


def _clv_champion_wape(
    name: str, frame: DataFrame, silver: dict[str, DataFrame], latest: date, horizon_days: int
) -> float | None:
    """The CLV champion's WAPE on this run's evaluation half (None: no usable champion)."""
    champion = tracking.load_clv_champion(name)
    if champion is None:
        return None
    kind, model = champion
    truth = clv_evaluation_frame(silver, frame, latest, horizon_days)
    try:
        if kind == "bgnbd":
            pred = clv_lib.clv_for_subscribers(
                silver["recharges"],
                silver["purchases"],
                truth,
                model,
                latest,
                horizon_days,
                "predicted_spend",
            )
        else:
            pred = regression_predictions(
                model, frame.where(F.col("split") == EVALUATION), "clv", "predicted_spend"
            )
        judged = truth.join(pred, on="subscriber_id", how="left").fillna({"predicted_spend": 0.0})
        return ev.regression_metrics(judged, "actual_spend", "predicted_spend")["wape"]
    except Exception as err:  # noqa: BLE001 - any scoring failure means "cannot compare"
        log.warning(
            "CLV champion %s cannot score the evaluation rows (%s); treating it as absent",
            name,
            str(err).splitlines()[0],
        )
        return None


# --------------------------------------------------------------------------- stage
def run(ctx: StageContext) -> StageResult:
    """Train, judge, log and register every target for ``ctx.as_of``; write the evaluation tables."""
    cfg = ctx.config.models
    trained_at = datetime.now(UTC).replace(tzinfo=None)
    snapshots = training_snapshot_dates(
        ctx.as_of, cfg.horizon_days, cfg.training_snapshots, cfg.snapshot_spacing_days
    )
    silver = {name: ctx.store.read_input("silver", name) for name in INPUTS}
    frame = build_training_frame(
        silver,
        snapshots,
        ctx.as_of,
        cfg.horizon_days,
        ctx.config.features.windows,
        ctx.config.segments.lifecycle.new_max_days,
        cfg.upsell_arpu_increase,
        cfg.cross_sell_lookback_days,
        cfg.seed,
    ).persist(StorageLevel.MEMORY_AND_DISK)
    eval_rows: list[tuple] = []
    curves: list[tuple] = []
    checks: dict[str, str] = {}
    # Where the baseline's summary-free copy is written (see `without_training_summary`):
    # a local temporary folder unless the lake is remote, where executors must reach it.
    scratch_dir = f"{ctx.config.lake.rstrip('/')}/_scratch/models" if "://" in ctx.config.lake else None
    try:
        counts = {r["split"]: int(r["count"]) for r in frame.groupBy("split").count().collect()}
        features = usable_features(frame.where(F.col("split") == TRAIN), MODEL_FEATURES)
        setup = tracking.configure_mlflow(
            ctx.config.lake,
            ctx.config.mlflow.experiment,
            ctx.config.mlflow.tracking_uri,
            ctx.config.mlflow.registry_uri,
        )
        for target in TARGETS:
            fit = fit_target(
                frame,
                target,
                features,
                cfg.seed,
                cfg.gbt_max_iter,
                cfg.gbt_max_depth,
                cfg.auc_ceiling,
                scratch_dir,
            )
            version, run_id, status = log_target(fit, frame, ctx, snapshots)
            eval_rows += [(target, *r) for r in propensity_rows(fit, version, run_id)]
            curves += ev.curve_rows(target, fit.lift, fit.calibration)
            checks[f"{target}_roc_auc"] = (
                f"{fit.metrics['roc_auc']:.3f} (baseline {fit.baseline_metrics['roc_auc']:.3f})"
            )
            checks[f"{target}_registry"] = f"v{version} {status}"
        clv_fit = fit_clv_target(silver, frame, snapshots[-1], cfg, features)
        version, run_id, status = log_clv(clv_fit, frame, silver, ctx, snapshots)
        for kind, m, ver in (
            ("naive", clv_fit.baseline_metrics, ""),
            (clv_fit.kind, clv_fit.metrics, version),
        ):
            rows = ev.evaluation_rows(kind, m, ev.regression_readings(m), ver, run_id)
            eval_rows += [("clv", *r) for r in rows]
        checks["clv_wape"] = f"{clv_fit.metrics['wape']:.3f} (naive {clv_fit.baseline_metrics['wape']:.3f})"
        checks["clv_registry"] = f"v{version} {status}"
    finally:
        frame.unpersist()
    evals = ctx.spark.createDataFrame(
        [
            (trained_at, ctx.as_of, t, kind, m, v, ver, rid, reading)
            for t, kind, m, v, ver, rid, reading in eval_rows
        ],
        EVALUATIONS_SCHEMA,
    )
    curve_df = ctx.spark.createDataFrame([(trained_at, ctx.as_of, *c) for c in curves], CURVES_SCHEMA)
    ctx.store.overwrite_partition(
        evals.select(*EVALUATIONS_SCHEMA.fieldNames()), "gold", "model_evaluations", ctx.as_of
    )
    ctx.store.overwrite_partition(
        curve_df.select(*CURVES_SCHEMA.fieldNames()), "gold", "model_curves", ctx.as_of
    )
    return StageResult(
        row_counts={
            "training_rows": sum(counts.values()),
            **{f"{k}_rows": v for k, v in counts.items()},
            "model_evaluations": len(eval_rows),
            "model_curves": len(curves),
        },
        checks=checks,
        message=f"snapshots {', '.join(d.isoformat() for d in snapshots)}; experiment {setup.experiment_id}",
    )
