"""Propensity models on planted data: calibration, reason codes, the leak guard, shuffled labels."""

from __future__ import annotations

from datetime import date

import pytest
from pyspark.sql import functions as F

from cvo_spark.core.errors import ModelQualityError
from cvo_spark.models.evaluation import calibration_table
from cvo_spark.models.labels import EVALUATION, with_split
from cvo_spark.models.propensity import (
    usable_features,
    with_model_inputs,
    with_reason_codes,
    with_scores,
)
from cvo_spark.models.training import fit_target, propensity_rows

FEATURES = ["driver", "weak_negative", "noise_a", "noise_b"]
OLD, LATEST = date(2026, 3, 1), date(2026, 4, 1)


def _frame(spark, n: int, seed: int, label_expr):
    """n subscribers x 2 snapshots; label from `label_expr` over the features (seeded, deterministic)."""
    df = (
        spark.range(2 * n, numPartitions=2)
        .select(
            F.format_string("s%06d", F.col("id") % n).alias("subscriber_id"),
            F.when(F.col("id") < n, F.lit(OLD)).otherwise(F.lit(LATEST)).alias("snapshot_date"),
            F.randn(seed).alias("driver"),
            F.randn(seed + 1).alias("weak_negative"),
            F.randn(seed + 2).alias("noise_a"),
            F.rand(seed + 3).alias("noise_b"),
            F.rand(seed + 4).alias("u"),
        )
        .withColumn("label_churn", label_expr.cast("double"))
    )
    return with_split(df, LATEST, seed=7)


def _planted(spark):
    logit = -1.2 + 1.8 * F.col("driver") - 0.5 * F.col("weak_negative")
    return _frame(spark, 3000, 1, F.col("u") < 1 / (1 + F.exp(-logit))).cache()


@pytest.fixture(scope="module")
def planted_fit(spark):
    frame = _planted(spark)
    return frame, fit_target(frame, "churn", FEATURES, seed=3, max_iter=8, max_depth=3, auc_ceiling=0.99)


def test_gbt_learns_the_planted_driver_and_beats_chance(planted_fit):
    _, fit = planted_fit
    assert fit.metrics["roc_auc"] > 0.75
    assert fit.metrics["auc_ci_low"] > 0.5
    assert fit.baseline_metrics["roc_auc"] > 0.75  # the logistic baseline fits this linear truth too
    assert max(fit.importances, key=fit.importances.get) == "driver"


def test_probabilities_are_calibrated_on_unseen_rows(planted_fit):
    frame, fit = planted_fit
    assert fit.metrics["mean_predicted"] == pytest.approx(fit.metrics["base_rate"], abs=0.03)
    scored = with_scores(fit.model, frame.where(F.col("split") == EVALUATION), "churn", "p")
    for b in calibration_table(scored, "label_churn", "p"):
        if b.n >= 100:
            assert b.x == pytest.approx(b.y, abs=0.1), b


def test_planted_driver_tops_the_reason_codes(planted_fit):
    frame, fit = planted_fit
    scored = with_scores(fit.model, frame.where(F.col("split") == EVALUATION), "churn", "p")
    scored = with_reason_codes(scored, fit.stats, "reasons", 3)
    top = scored.orderBy(F.col("p").desc(), "subscriber_id").limit(150)
    share = top.agg(F.avg((F.col("reasons").getItem(0) == "driver: high").cast("double"))).first()[0]
    assert share >= 0.9
    # The weakly negative feature reads "low" when it raises the score.
    stats = {s["feature"]: s for s in fit.stats}
    assert stats["driver"]["sign"] == 1.0 and stats["weak_negative"]["sign"] == -1.0


def test_leaking_feature_trips_the_guard(spark):
    frame = _planted(spark).withColumn("leak", F.col("label_churn") + 0.01 * F.col("noise_b"))
    with pytest.raises(ModelQualityError, match="leak to investigate"):
        fit_target(frame, "churn", FEATURES + ["leak"], seed=3, max_iter=5, max_depth=3, auc_ceiling=0.99)


def test_shuffled_labels_score_chance_and_say_so(spark):
    frame = _frame(spark, 3000, 5, F.col("u") < 0.3)  # label independent of every feature
    fit = fit_target(frame, "churn", FEATURES, seed=3, max_iter=5, max_depth=3, auc_ceiling=0.99)
    assert fit.metrics["roc_auc"] == pytest.approx(0.5, abs=0.06)
    rows = {
        (kind, metric): (value, reading)
        for kind, metric, value, _, _, reading in propensity_rows(fit, "1", "r")
    }
    assert rows[("gbt", "better_than_chance")][0] == 0.0
    assert "NO BETTER THAN CHANCE" in rows[("gbt", "roc_auc")][1]
    assert "NO BETTER THAN CHANCE" in rows[("gbt", "better_than_chance")][1]


def test_reason_codes_by_hand(spark):
    df = spark.createDataFrame(
        [("a", 3.0, 0.0), ("b", -1.0, -4.0), ("c", None, 1.0), ("d", 1.0, 1.0)],
        "subscriber_id string, x double, y double",
    )
    stats = [
        {"feature": "x", "mean": 1.0, "std": 1.0, "sign": 1.0, "importance": 0.5},  # high x raises the score
        {"feature": "y", "mean": 0.0, "std": 2.0, "sign": -1.0, "importance": 0.5},  # low y raises it
    ]
    got = {r["subscriber_id"]: r["r"] for r in with_reason_codes(df, stats, "r", 2).collect()}
    assert got["a"] == ["x: high"]  # x z=+2 -> +1.0; y z=0 -> 0 (not a reason)
    assert got["b"] == ["y: low"]  # x z=-2 -> -1.0 (lowers); y z=-2 -> +1.0
    assert got["c"] == []  # null x tells nothing; y z=+0.5 lowers the score
    assert got["d"] == []
    assert with_reason_codes(df, stats, "r", 1).where("subscriber_id = 'b'").first()["r"] == ["y: low"]


def test_model_inputs_and_usable_features(spark):
    df = spark.createDataFrame(
        [
            ("a", "postpaid", "high", 1, None, 5.0),
            ("b", "prepaid", "low", 2, None, 5.0),
            ("c", None, None, 3, None, 5.0),
        ],
        "subscriber_id string, payment_type string, device_tier string, n int, empty double, constant double",
    )
    out = with_model_inputs(df, ["n", "empty", "constant", "is_postpaid", "is_device_high", "is_device_low"])
    rows = {r["subscriber_id"]: r for r in out.collect()}
    assert (rows["a"]["is_postpaid"], rows["a"]["is_device_high"], rows["b"]["is_device_low"]) == (
        1.0,
        1.0,
        1.0,
    )
    assert rows["c"]["is_postpaid"] is None  # unknown stays unknown (imputed in the pipeline)
    assert dict(out.dtypes)["n"] == "double"
    assert usable_features(out, ["n", "empty", "constant", "is_postpaid"]) == ["n", "is_postpaid"]


def test_baseline_scores_after_the_session_used_observe(spark):
    # Spark 4.0.1: a LogisticRegressionModel's training summary holds the session, which
    # stops being serializable once DataFrame.observe was used (the generator does).
    from pyspark.sql import Observation

    from cvo_spark.models.propensity import build_classifier, fit_calibrated

    seen = Observation("rows")
    spark.range(3).observe(seen, F.count(F.lit(1)).alias("n")).write.format("noop").mode("overwrite").save()
    assert seen.get["n"] == 3
    frame = _frame(spark, 400, 9, F.col("u") < 1 / (1 + F.exp(-F.col("driver"))))
    train = frame.where(F.col("split") == "train")
    calib = frame.where(F.col("split") == "calibration")
    model = fit_calibrated(
        build_classifier("baseline", FEATURES, "label_churn", "churn", 1, 5, 3),
        train,
        calib,
        "label_churn",
        "churn",
    )
    scored = with_scores(model, frame, "churn", "p")
    assert scored.where(F.col("p").isNull()).count() == 0


# --------------------------------------------------------------------------- xgboost engine
def test_xgboost_engine_learns_the_driver_calibrates_and_round_trips_mlflow(spark, tmp_path):
    """The optional engine on the same planted data: as good as MLlib's GBT, calibrated,
    the driver on top, and the PipelineModel stored by MLflow scores exactly as fitted."""
    import mlflow
    from mlflow.models import infer_signature

    from cvo_spark.models import mlflow_store

    frame = _planted(spark)
    fit = fit_target(
        frame,
        "churn",
        FEATURES,
        seed=3,
        max_iter=8,
        max_depth=3,
        auc_ceiling=0.99,
        engine="xgboost",
        xgboost_workers=2,
    )
    assert fit.engine == "xgboost"
    assert fit.metrics["roc_auc"] > 0.75 and fit.metrics["auc_ci_low"] > 0.5
    assert fit.metrics["mean_predicted"] == pytest.approx(fit.metrics["base_rate"], abs=0.03)
    assert max(fit.importances, key=fit.importances.get) == "driver"
    assert sum(fit.importances.values()) == pytest.approx(1.0)

    mlflow_store.configure_mlflow(str(tmp_path), "xgb_test", None, None)
    evaluation = frame.where(F.col("split") == EVALUATION)
    sample = evaluation.select(*FEATURES).limit(5)
    signature = infer_signature(
        sample.toPandas(), with_scores(fit.model, sample, "churn", "p").select("p").toPandas()
    )
    with mlflow.start_run():
        version = mlflow_store.log_spark_model(fit.model, "xgb_churn", signature, with_xgboost=True)
    mlflow_store.assign_aliases("xgb_churn", version, fit.metrics["roc_auc"], None)
    loaded, _ = mlflow_store.load_spark_model("xgb_churn")
    before = with_scores(fit.model, evaluation, "churn", "p").select("subscriber_id", "p")
    after = with_scores(loaded, evaluation, "churn", "p").select("subscriber_id", F.col("p").alias("q"))
    worst = before.join(after, "subscriber_id", "inner").agg(F.max(F.abs(F.col("p") - F.col("q")))).first()[0]
    assert worst == pytest.approx(0.0, abs=1e-12)
