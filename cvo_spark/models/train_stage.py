"""Stage `train`: propensity (upsell, cross-sell, churn) and CLV models, judged out of time.

Data design (invariant 1, 7):

- `training_snapshots` snapshot dates T, `snapshot_spacing_days` apart, the latest at
  ``as_of - horizon_days`` so every label window (T, T+horizon] is complete by as_of.
  Features as of T come from `cvo_spark.features.subscriber.build_subscriber_features` (events <= T
  only), labels from `cvo_spark.models.labels.build_labels` (events in the window only).
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
- Uplift (`cvo_spark.models.uplift_stage`): what each offer on each channel adds over no
  contact, learned from offer_history's treatment and control contacts and judged by the
  Qini of its last contacts; its rows join `model_evaluations` (target 'uplift').
- CLV: BG/NBD + Gamma-Gamma fitted on the (frequency, recency, T, monetary) summary as
  of the latest snapshot and checked on the evaluation half against the actual spend in
  the following `horizon_days`; a naive baseline (last 90 days' spend rate) beside it.
  ``clv_method: gbt`` swaps in a GBT regressor on the same target.

The fitting lives in `cvo_spark.models.training`, the MLflow logging and champion/challenger
decision in `cvo_spark.models.mlflow_store`; this module wires them and writes the tables.
MLflow: one run per target, the GBT (or CLV model) registered as ``<prefix>_<target>``
and the propensity baseline as ``<prefix>_<target>_baseline@current``. A propensity
version becomes champion only through `cvo_spark.models.champion_gate` (better than chance
as the report reads it, beats its baseline, and over a champion a gain whose paired
interval excludes 0); the reason is in the checks (``<target>_gate``) and in
`model_evaluations` (metric ``promoted``). CLV becomes champion when it beats the
champion on this run's evaluation half. Tables: `model_evaluations` and
`model_curves` are rewritten for the as_of (overwrite_partition), so a re-run for the
same date leaves one set of rows (invariant 2).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from pyspark import StorageLevel
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

from cvo_spark.core.stage import StageContext, StageResult
from cvo_spark.core.util import first_row
from cvo_spark.models import evaluation as ev
from cvo_spark.models import mlflow_store
from cvo_spark.models.champion_gate import gate_rows
from cvo_spark.models.labels import (
    TARGETS,
    TRAIN,
    build_training_frame,
    snapshots_with_history,
    training_snapshot_dates,
)
from cvo_spark.models.mlflow_store import log_clv, log_target
from cvo_spark.models.propensity import MODEL_FEATURES, usable_features
from cvo_spark.models.training import fit_clv_target, fit_target, propensity_rows, with_stable_layout
from cvo_spark.models.uplift_stage import train_uplift

INPUTS: tuple[str, ...] = (
    "subscribers",
    "usage_daily",
    "recharges",
    "purchases",
    "quota_events",
    "offer_history",
)

log = logging.getLogger(__name__)

#: `models.engine` -> the classifier kind of `cvo_spark.models.propensity.build_classifier`.
ENGINE_KIND = {"mllib": "gbt", "xgboost": "xgboost"}

#: The tables this stage reads (`cvo_spark.pipeline`); the uplift part reads offer_history too.
READS: tuple[str, ...] = INPUTS

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


# --------------------------------------------------------------------------- stage
def run(ctx: StageContext) -> StageResult:
    """Train, judge, log and register every target for ``ctx.as_of``; write the evaluation tables."""
    cfg = ctx.config.models
    trained_at = datetime.now(UTC).replace(tzinfo=None)
    planned = training_snapshot_dates(
        ctx.as_of, cfg.horizon_days, cfg.training_snapshots, cfg.snapshot_spacing_days
    )
    silver = {name: ctx.store.input(name) for name in INPUTS}
    data_start = first_row(
        silver["usage_daily"].agg(F.min("usage_date")), "train: first usage_date of silver"
    )[0]
    snapshots = snapshots_with_history(planned, data_start, cfg.min_history_days)
    left_out = [d.isoformat() for d in planned if d not in snapshots]
    if left_out:
        log.warning(
            "train: snapshot(s) %s left out: fewer than %d days of usage history (data starts %s)",
            ", ".join(left_out),
            cfg.min_history_days,
            data_start,
        )
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
        cfg.inactive_days,
    )
    # Written once and read back: the frame's plan (three snapshots of every feature
    # family and their labels) is so large that planning it again for each of the many
    # queries a fit runs cost more than the fits (2-3x the stage time on small data).
    # The table also records exactly which rows each as_of's models learned from.
    stored = ctx.store.write_and_read_back(frame, "training_frames", ctx.as_of)
    shuffle_partitions = ctx.spark.conf.get("spark.sql.shuffle.partitions")
    if shuffle_partitions is None:
        raise ValueError("train: spark.sql.shuffle.partitions is not set in the session")
    partitions = int(shuffle_partitions)
    frame = with_stable_layout(stored, partitions).persist(StorageLevel.MEMORY_AND_DISK)
    eval_rows: list[tuple] = []
    curves: list[tuple] = []
    checks: dict[str, str] = {}
    # Where the baseline's summary-free copy is written (see `without_training_summary`):
    # a local temporary folder unless the lake is remote, where executors must reach it.
    scratch_dir = ctx.store.scratch_dir()
    try:
        counts = {r["split"]: int(r["count"]) for r in frame.groupBy("split").count().collect()}
        features = usable_features(frame.where(F.col("split") == TRAIN), MODEL_FEATURES)
        setup = mlflow_store.configure_mlflow(
            ctx.store.lake_root,
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
                engine=ENGINE_KIND[cfg.engine],
                xgboost_workers=cfg.xgboost_workers,
            )
            logged = log_target(fit, frame, ctx.config, ctx.as_of, ctx.run_id, snapshots)
            eval_rows += [(target, *r) for r in propensity_rows(fit, logged.version, logged.run_id)]
            promoted = logged.status == mlflow_store.CHAMPION
            eval_rows += [
                (target, *r)
                for r in gate_rows(promoted, logged.reason, logged.champion, logged.version, logged.run_id)
            ]
            curves += ev.curve_rows(target, fit.lift, fit.calibration)
            checks[f"{target}_roc_auc"] = (
                f"{fit.metrics['roc_auc']:.3f} (baseline {fit.baseline_metrics['roc_auc']:.3f})"
            )
            checks[f"{target}_registry"] = f"v{logged.version} {logged.status}"
            checks[f"{target}_gate"] = logged.reason
        clv_fit = fit_clv_target(silver, frame, snapshots[-1], cfg, features)
        version, run_id, status = log_clv(
            clv_fit, frame, silver, ctx.config, ctx.as_of, ctx.run_id, snapshots
        )
        for kind, m, ver in (
            ("naive", clv_fit.baseline_metrics, ""),
            (clv_fit.kind, clv_fit.metrics, version),
        ):
            rows = ev.evaluation_rows(kind, m, ev.regression_readings(m), ver, run_id)
            eval_rows += [("clv", *r) for r in rows]
        checks["clv_wape"] = f"{clv_fit.metrics['wape']:.3f} (naive {clv_fit.baseline_metrics['wape']:.3f})"
        checks["clv_registry"] = f"v{version} {status}"
        # The uplift model learns from offer_history's contacts, not from this frame.
        uplift_rows, uplift_curves, uplift_checks = train_uplift(ctx, silver)
        eval_rows += uplift_rows
        curves += uplift_curves
        checks.update(uplift_checks)
        if left_out:
            checks["snapshots_left_out"] = f"{', '.join(left_out)} (< {cfg.min_history_days} days of history)"
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
    ctx.store.write(evals, "model_evaluations", ctx.as_of)
    ctx.store.write(curve_df, "model_curves", ctx.as_of)
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
