"""MLflow logging and registry decisions for the models the `train` stage fits.

Each target gets one MLflow run (parameters, metrics, feature list, snapshot dates,
importance / lift / calibration charts, the model with its signature) and a registered
version ``<prefix>_<target>``. The version becomes `challenger` and is promoted to
`champion` only when it beats the current champion on the *same* evaluation rows by the
configured metric (`cvo_spark.tracking.assign_aliases`). A champion that can no longer
score those rows (say, trained on a feature that was since removed) counts as absent.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cvo_spark import clv as clv_lib
from cvo_spark import evaluation as ev
from cvo_spark import tracking
from cvo_spark.config import Config
from cvo_spark.labels import EVALUATION
from cvo_spark.propensity import FEATURE_LABELS, regression_predictions, with_scores
from cvo_spark.training import ClvFit, TargetFit, clv_evaluation_frame, evaluate_model

log = logging.getLogger(__name__)

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
    fit: TargetFit,
    frame: DataFrame,
    config: Config,
    as_of: date,
    run_id: str,
    snapshots: Sequence[date],
) -> tuple[str, str, str]:
    """Log one target's run (params, metrics, meta, charts, model), register it, set its alias.

    Returns (version, run_id, 'champion' | 'challenger').
    """
    import mlflow
    from mlflow.models import infer_signature

    cfg = config.models
    name = tracking.registered_name(config.mlflow.model_prefix, fit.target)
    evaluation = frame.where(F.col("split") == EVALUATION)
    champion_metric = _champion_metric(name, evaluation, fit.target, cfg.promote_metric)
    with mlflow.start_run(run_name=f"{fit.target} {as_of}") as run:
        mlflow.set_tags({"target": fit.target, "as_of": as_of.isoformat(), "cvo_run_id": run_id})
        mlflow.log_params(
            {
                "model_kind": "gbt",
                "engine": fit.engine,
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
                "engine": fit.engine,
                "features": fit.features,
                "snapshot_dates": [d.isoformat() for d in snapshots],
                "reason_stats": fit.stats,
                "as_of": as_of.isoformat(),
            },
            tracking.META_FILE,
        )
        tracking.log_importance_artifacts(fit.importances, FEATURE_LABELS)
        tracking.log_curve_charts(fit.target, fit.lift, fit.calibration, fit.baseline_lift)
        sample = frame.select(*fit.features).limit(5)
        signature = infer_signature(
            sample.toPandas(), with_scores(fit.model, sample, fit.target, "p").select("p").toPandas()
        )
        version = tracking.log_spark_model(fit.model, name, signature, with_xgboost=fit.engine == "xgboost")
        # The gate is the point estimate: a small evaluation half often has an interval
        # reaching 0.5 (reported as "not shown better than chance") for a model that does
        # rank; an AUC under CHANCE_AUC ranks no better than a coin and never scores anyone.
        auc = fit.metrics.get("roc_auc", float("nan"))
        promotable = math.isfinite(auc) and auc >= ev.CHANCE_AUC
        status = tracking.assign_aliases(
            name,
            version,
            fit.metrics.get(cfg.promote_metric),
            champion_metric,
            promotable=promotable,
            as_of=as_of.isoformat(),
        )
        if not promotable:
            log.warning(
                "%s v%s has out-of-time ROC-AUC %.3f < %.2f (chance): not promoted", name, version, auc, ev.CHANCE_AUC
            )
        if champion_metric is not None:
            mlflow.log_metric(f"champion_{cfg.promote_metric}", champion_metric)
        mlflow.set_tag("registry_status", status)
        tracking.tag_version(
            name, version, {"model_kind": "gbt", "engine": fit.engine, "as_of": as_of.isoformat()}
        )
        return version, run.info.run_id, status


def log_clv(
    fit: ClvFit,
    frame: DataFrame,
    silver: dict[str, DataFrame],
    config: Config,
    as_of: date,
    run_id: str,
    snapshots: Sequence[date],
) -> tuple[str, str, str]:
    """Log and register the CLV model; promoted when its WAPE (lower is better) beats the champion's."""
    import mlflow

    cfg = config.models
    name = tracking.registered_name(config.mlflow.model_prefix, "clv")
    champion_wape = _clv_champion_wape(name, frame, silver, snapshots[-1], cfg.horizon_days)
    with mlflow.start_run(run_name=f"clv {as_of}") as run:
        mlflow.set_tags({"target": "clv", "as_of": as_of.isoformat(), "cvo_run_id": run_id})
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
            "as_of": as_of.isoformat(),
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
            name, version, fit.metrics.get("wape"), champion_wape, higher_is_better=False, as_of=as_of.isoformat()
        )
        if champion_wape is not None:
            mlflow.log_metric("champion_wape", champion_wape)
        mlflow.set_tag("registry_status", status)
        tracking.tag_version(name, version, {"model_kind": fit.kind, "as_of": as_of.isoformat()})
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
