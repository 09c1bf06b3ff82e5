"""Benchmark (not a test): the Spark propensity model vs LightGBM on one node, same data.

Builds a synthetic training frame shaped like the real one (N subscribers x S snapshots,
the `MODEL_FEATURES` columns, a churn label driven non-linearly by a few of them), then
times, side by side:

- Spark: GBT fit + isotonic calibration (`fit_calibrated`), scoring with calibrated
  probabilities and reason codes (`with_scores` + `with_reason_codes`, written to the
  no-op sink so the whole plan runs), and ROC-AUC on the evaluation half;
- LightGBM (same trees, depth and learning rate) fitted on the same rows pulled to pandas.

Synthetic rather than `cvo generate` data, because the generator needs tens of minutes
for 100k subscribers x 180 days on 2 cores and would dominate the timing; the model work
measured here is the same either way.

    .venv/bin/python benchmarks/bench_models.py --subscribers 100000
"""

from __future__ import annotations

import argparse
import time
from datetime import date

from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cvo_spark.core.session import get_spark
from cvo_spark.models.evaluation import binary_metrics
from cvo_spark.models.labels import CALIBRATION, EVALUATION, TRAIN, with_split
from cvo_spark.models.propensity import (
    BASE_FEATURES,
    build_classifier,
    fit_calibrated,
    gbt_importances,
    reason_stats,
    with_reason_codes,
    with_scores,
)

FEATURES = list(BASE_FEATURES[:24])
LATEST = date(2026, 6, 1)


def synthetic_frame(spark: SparkSession, subscribers: int, snapshots: int, seed: int) -> DataFrame:
    """N x S rows: lognormal/normal features, churn depends on an interaction and a threshold."""
    rows = spark.range(subscribers * snapshots, numPartitions=max(2, subscribers * snapshots // 200_000))
    cols = [
        F.exp(F.randn(seed + i)).alias(c) if i % 2 else F.randn(seed + i).alias(c)
        for i, c in enumerate(FEATURES)
    ]
    df = rows.select(
        F.format_string("s%09d", F.col("id") % subscribers).alias("subscriber_id"),
        F.date_sub(F.lit(LATEST), (F.floor(F.col("id") / subscribers) * 30).cast("int")).alias(
            "snapshot_date"
        ),
        *cols,
        F.rand(seed + 999).alias("u"),
    )
    f = [F.col(c) for c in FEATURES]
    logit = (
        -2.8
        + 1.2 * f[0]
        - 0.8 * (f[1] > 2).cast("double")
        + 0.9 * f[2] * (f[4] > 0).cast("double")
        - 0.5 * f[6]
    )
    return with_split(
        df.withColumn("label_churn", (F.col("u") < 1 / (1 + F.exp(-logit))).cast("double")), LATEST, seed
    )


def bench_spark(frame: DataFrame, iters: int, depth: int, seed: int) -> dict:
    train, calib, evaluation = (frame.where(F.col("split") == s) for s in (TRAIN, CALIBRATION, EVALUATION))
    t0 = time.perf_counter()
    model = fit_calibrated(
        build_classifier("gbt", FEATURES, "label_churn", "churn", seed, iters, depth),
        train,
        calib,
        "label_churn",
        "churn",
    )
    t_fit = time.perf_counter() - t0
    stats = reason_stats(train, FEATURES, "label_churn", gbt_importances(model, FEATURES))
    t0 = time.perf_counter()
    latest = frame.where(F.col("snapshot_date") == F.lit(LATEST))
    scored = with_reason_codes(with_scores(model, latest, "churn", "p_churn"), stats, "reasons_churn", 3)
    scored.select("subscriber_id", "p_churn", "reasons_churn").write.format("noop").mode("overwrite").save()
    t_score = time.perf_counter() - t0
    auc = binary_metrics(with_scores(model, evaluation, "churn", "p", "raw"), "label_churn", "p", "raw")[
        "roc_auc"
    ]
    return {"fit_s": t_fit, "score_s": t_score, "auc": auc}


def bench_lightgbm(frame: DataFrame, iters: int, depth: int, seed: int) -> dict:
    import lightgbm as lgb
    from sklearn.metrics import roc_auc_score

    t0 = time.perf_counter()
    pdf = frame.select("split", "label_churn", *FEATURES).toPandas()
    t_pull = time.perf_counter() - t0
    train, evaluation = pdf[pdf["split"] == TRAIN], pdf[pdf["split"] == EVALUATION]
    t0 = time.perf_counter()
    clf = lgb.LGBMClassifier(
        n_estimators=iters,
        max_depth=depth,
        num_leaves=2**depth,
        learning_rate=0.1,
        random_state=seed,
        n_jobs=2,
        verbose=-1,
    )
    clf.fit(train[FEATURES], train["label_churn"])
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    p = clf.predict_proba(pdf[FEATURES])[:, 1]
    t_score = time.perf_counter() - t0
    auc = roc_auc_score(evaluation["label_churn"], clf.predict_proba(evaluation[FEATURES])[:, 1])
    return {"pull_s": t_pull, "fit_s": t_fit, "score_s": t_score, "auc": auc, "rows_scored": len(p)}


def bench_xgboost_spark(frame: DataFrame, iters: int, depth: int, seed: int, workers: int) -> dict:
    """xgboost.spark on the same Spark frame: the distributed alternative to MLlib's GBT."""
    from pyspark.ml import Pipeline
    from xgboost.spark import SparkXGBClassifier

    from cvo_spark.models.propensity import _inputs

    train, evaluation = (frame.where(F.col("split") == s) for s in (TRAIN, EVALUATION))
    clf = SparkXGBClassifier(
        features_col="churn__vec",
        label_col="label_churn",
        prediction_col="churn__pred",
        probability_col="churn__prob",
        raw_prediction_col="churn__rawpred",
        n_estimators=iters,
        max_depth=depth,
        learning_rate=0.1,
        tree_method="hist",
        random_state=seed,
        num_workers=workers,
    )
    t0 = time.perf_counter()
    model = Pipeline(stages=[*_inputs(FEATURES, "churn"), clf]).fit(train)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    latest = frame.where(F.col("snapshot_date") == F.lit(LATEST))
    model.transform(latest).select("subscriber_id", "churn__prob").write.format("noop").mode(
        "overwrite"
    ).save()
    t_score = time.perf_counter() - t0
    scored = model.transform(evaluation).withColumn("raw", vector_to_array("churn__prob")[1])
    auc = binary_metrics(scored.withColumn("p", F.col("raw")), "label_churn", "p", "raw")["roc_auc"]
    return {"fit_s": t_fit, "score_s": t_score, "auc": auc}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subscribers", type=int, default=100_000)
    ap.add_argument("--snapshots", type=int, default=3)
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--xgboost-workers", type=int, default=0, help="also time xgboost.spark (0: skip)")
    args = ap.parse_args()
    spark = get_spark(
        app_name="bench_models",
        master="local[*]",
        shuffle_partitions=8,
        log_level="ERROR",
        show_progress=False,
    )
    t0 = time.perf_counter()
    frame = synthetic_frame(spark, args.subscribers, args.snapshots, args.seed).cache()
    n = frame.count()
    print(
        f"data: {args.subscribers:,} subscribers x {args.snapshots} snapshots = {n:,} rows, "
        f"{len(FEATURES)} features, built in {time.perf_counter() - t0:.1f}s"
    )
    s = bench_spark(frame, args.iters, args.depth, args.seed)
    g = bench_lightgbm(frame, args.iters, args.depth, args.seed)
    x = (
        bench_xgboost_spark(frame, args.iters, args.depth, args.seed, args.xgboost_workers)
        if (args.xgboost_workers)
        else None
    )
    xs = (lambda k, f: f"{x[k]:>16{f}}") if x else (lambda k, f: f"{'-':>16}")
    print(f"{'':28}{'Spark MLlib GBT':>18}{'LightGBM':>12}{'xgboost.spark':>16}")
    print(
        f"{'fit (s)':28}{s['fit_s']:>18.1f}{g['fit_s']:>12.1f}{xs('fit_s', '.1f')}   "
        "(MLlib incl. isotonic calibration)"
    )
    print(
        f"{'score latest snapshot (s)':28}{s['score_s']:>18.1f}{g['score_s']:>12.1f}{xs('score_s', '.1f')}   "
        "(MLlib incl. reason codes; LightGBM all rows)"
    )
    print(f"{'pull to pandas (s)':28}{'-':>18}{g['pull_s']:>12.1f}")
    print(f"{'OOT ROC-AUC':28}{s['auc']:>18.4f}{g['auc']:>12.4f}{xs('auc', '.4f')}")
    if x:
        print(f"{'MLlib / xgboost.spark fit':28}{s['fit_s'] / x['fit_s']:>18.2f}")


if __name__ == "__main__":
    main()
