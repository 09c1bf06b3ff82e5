"""The uplift model's part of the `train` and `score` stages (IO through the stage context).

train: weekly feature snapshots -> one row per logged contact with its snapshot's
features (`uplift.training_frame`), written to gold `uplift_training_frames` for the as_of
(what the model learned from, and one plan instead of many) -> the pooled T-learner on
the earlier contacts -> Qini on the last `evaluation_days` of contacts (out of time),
against ranking by the accept probability if contacted (propensity) and against random,
with bootstrap intervals over subscribers -> MLflow ``<prefix>_uplift`` with its gate.

score: the champion on every subscriber x catalog offer x channel as of the date ->
gold `offer_scores` (overwrite of the as_of partition: idempotent).

Too few control contacts to learn from, or no champion yet, is not a failure of the run:
the stage says so in its checks and `offer_scores` keeps what it had.
"""

from __future__ import annotations

import logging
from datetime import date

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DateType,
    DoubleType,
    IntegerType,
    StringType,
    StructField,
    StructType,
)

from cvo_spark.core.catalog import load_checked_catalog, offer_channels_frame, offers_frame
from cvo_spark.core.config import Config
from cvo_spark.core.stage import StageContext
from cvo_spark.core.util import first_row
from cvo_spark.features.subscriber import subscriber_features_from
from cvo_spark.models import mlflow_store
from cvo_spark.models.propensity import usable_features
from cvo_spark.models.qini import QiniComparison, compare_rankings
from cvo_spark.models.uplift import (
    UpliftParams,
    fit_uplift,
    model_features,
    scoring_frame,
    snapshot_dates,
    training_frame,
    with_model_rows,
    with_uplift,
    with_uplift_reasons,
)

log = logging.getLogger(__name__)

OFFER_SCORES_SCHEMA = StructType(
    [
        StructField("subscriber_id", StringType()),
        StructField("offer_id", StringType()),
        StructField("channel", StringType()),
        StructField("as_of", DateType()),
        StructField("p_accept_if_contacted", DoubleType()),
        StructField("p_accept_if_not", DoubleType()),
        StructField("uplift", DoubleType()),
        StructField("expected_incremental_margin", DoubleType()),
        StructField("recent_contacts", IntegerType()),
        StructField("uplift_reasons", ArrayType(StringType())),
        StructField("model_version", StringType()),
    ]
)
#: Score buckets of the Qini curve on the evaluation contacts.
QINI_BINS = 20
RANKINGS = ("uplift", "p_accept_if_contacted", "random")


def uplift_params(config: Config) -> UpliftParams:
    u = config.uplift
    return UpliftParams(
        snapshot_days=u.snapshot_days,
        history_days=u.history_days,
        outcome_days=u.outcome_days,
        fatigue_days=u.fatigue_days,
        evaluation_days=u.evaluation_days,
        max_iter=u.gbt_max_iter,
        max_depth=u.gbt_max_depth,
        seed=config.models.seed,
        max_contacts_per_arm=u.max_contacts_per_arm,
    )


def snapshot_features(silver: dict[str, DataFrame], snapshots: list[date], config: Config) -> DataFrame:
    """The features table as of each snapshot date, stacked, with ``snapshot_date``."""
    frames = [
        subscriber_features_from(
            silver,
            d,
            config.features.windows,
            new_max_days=config.segments.lifecycle.new_max_days,
        ).withColumn("snapshot_date", F.lit(d))
        for d in snapshots
    ]
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f)
    return out


def catalog_frames(ctx: StageContext) -> tuple[DataFrame, DataFrame, list[str], list[str]]:
    catalog = load_checked_catalog(ctx.config)
    offers = offers_frame(ctx.spark, catalog, ctx.config.offers.validity_days)
    channels = offer_channels_frame(ctx.spark, catalog)
    return (
        offers,
        channels,
        sorted(o.offer_id for o in catalog.offers),
        sorted({o.category for o in catalog.offers}),
    )


def readings(comparison: QiniComparison) -> dict[str, str]:
    """What the Qini figures mean, in words, per ranking."""
    out = {}
    for name, r in comparison.results.items():
        low, high = comparison.intervals[name]
        verdict = "better than random" if low > 0 else "not shown better than random (interval reaches 0)"
        out[name] = (
            f"Qini coefficient {r.coefficient:.4f} [{low:.4f}, {high:.4f}] (area between the Qini curve and "
            f"random, per treated contact; 0 = random): {verdict}"
        )
    return out


def train_uplift(
    ctx: StageContext, silver: dict[str, DataFrame]
) -> tuple[list[tuple], list[tuple], dict[str, str]]:
    """Fit, judge and register the uplift model; returns (evaluation rows, curve rows, checks).

    Evaluation rows are (target, model_kind, metric, value, version, mlflow_run_id, reading)
    as the train stage writes them; curve rows (target, curve, bucket, x, y).
    """
    if not ctx.config.uplift.enabled:
        return [], [], {"uplift": "disabled in config"}
    p = uplift_params(ctx.config)
    snapshots = snapshot_dates(ctx.as_of, p)
    offers, _, offer_ids, categories = catalog_frames(ctx)
    frame = training_frame(
        silver["offer_history"],
        snapshot_features(silver, snapshots, ctx.config),
        offers,
        snapshots,
        ctx.as_of,
        p,
    ).transform(with_model_rows, offer_ids, categories)
    # Written once and read back, as the propensity frame is: the stacked snapshots' plan is
    # far larger than the data; the table also records what the model learned from.
    stored = ctx.store.write_and_read_back(frame, "uplift_training_frames", ctx.as_of).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    try:
        counts = {
            (r["split"], r["treated"]): int(r["n"])
            for r in stored.groupBy("split", "treated").agg(F.count(F.lit(1)).alias("n")).collect()
        }
        control_train = counts.get(("train", 0), 0)
        checks = {
            "uplift_contacts": ", ".join(
                f"{s} {'treatment' if t else 'control'} {n:,}" for (s, t), n in sorted(counts.items())
            )
        }
        minimum = ctx.config.uplift.min_control_contacts
        if control_train < minimum or counts.get(("evaluation", 0), 0) == 0:
            checks["uplift"] = (
                f"skipped: {control_train} control contacts to learn from (< {minimum}) or none to judge on"
            )
            log.warning("uplift: %s", checks["uplift"])
            return [], [], checks
        train = stored.where(F.col("split") == "train")
        evaluation = stored.where(F.col("split") == "evaluation")
        features = usable_features(train, model_features(offer_ids, categories))
        scratch = ctx.store.scratch_dir()
        fit = fit_uplift(train, features, p, scratch)
        scored = with_uplift(fit.model, evaluation).withColumn(
            "random", F.xxhash64(F.lit(p.seed), F.col("subscriber_id"), F.col("contacted_ts")).cast("double")
        )
        comparison = compare_rankings(
            scored,
            RANKINGS,
            "treated",
            "label",
            bins=QINI_BINS,
            replicates=ctx.config.uplift.bootstrap_replicates,
            seed=p.seed,
        )
        meta = {
            "features": list(fit.features),
            "offer_ids": offer_ids,
            "categories": categories,
            "snapshot_dates": [d.isoformat() for d in snapshots],
            "train_rows": fit.train_rows,
        }
        params = {k: getattr(p, k) for k in UpliftParams.__dataclass_fields__}
        version, run_id, status = mlflow_store.log_uplift(
            fit, evaluation, comparison, meta, params, ctx.config, ctx.as_of, ctx.run_id, QINI_BINS
        )
    finally:
        stored.unpersist()
    words = readings(comparison)
    rows: list[tuple] = []
    kinds = {"uplift": "t_learner", "p_accept_if_contacted": "propensity_if_contacted", "random": "random"}
    for name, r in comparison.results.items():
        low, high = comparison.intervals[name]
        ver = version if name == "uplift" else ""
        figures = {
            "qini_coefficient": r.coefficient,
            "qini_ci_low": low,
            "qini_ci_high": high,
            **{f"uplift_top{round(f * 100)}": v for f, v in r.uplift_at.items()},
        }
        rows += [("uplift", kinds[name], m, float(v), ver, run_id, words[name]) for m, v in figures.items()]
    diff, lo, hi = comparison.differences[("uplift", "p_accept_if_contacted")]
    rows.append(
        (
            "uplift",
            "t_learner",
            "qini_gain_over_propensity",
            diff,
            version,
            run_id,
            f"Qini coefficient minus the propensity ranking's: {diff:.4f} [{lo:.4f}, {hi:.4f}]",
        )
    )
    curves = [
        ("uplift", f"qini_{kinds[name]}", i, x, y)
        for name, r in comparison.results.items()
        for i, (x, y) in enumerate(r.curve)
    ]
    checks["uplift_qini"] = (
        f"{comparison.results['uplift'].coefficient:.4f} [{comparison.intervals['uplift'][0]:.4f}, "
        f"{comparison.intervals['uplift'][1]:.4f}] "
        f"(propensity {comparison.results['p_accept_if_contacted'].coefficient:.4f},"
        f" random {comparison.results['random'].coefficient:.4f})"
    )
    checks["uplift_registry"] = f"v{version} {status}"
    return rows, curves, checks


def score_uplift(ctx: StageContext, features: DataFrame) -> tuple[int, dict[str, str]]:
    """Write gold `offer_scores[as_of]` with the uplift champion; (rows, checks). No champion: 0 rows."""
    if not ctx.config.uplift.enabled:
        return 0, {"offer_scores": "uplift disabled in config"}
    name = mlflow_store.registered_name(ctx.config.mlflow.model_prefix, "uplift")
    model, mv = mlflow_store.load_spark_model(name)
    if model is None:
        message = f"no champion {name}@champion (too little control data, or none shown better than random)"
        log.warning("offer_scores not written: %s", message)
        return 0, {"offer_scores": f"not written: {message}"}
    meta = mlflow_store.load_run_json(mv.run_id, mlflow_store.META_FILE)
    offers, channels, _, _ = catalog_frames(ctx)
    p = uplift_params(ctx.config)
    history = ctx.store.input("offer_history")
    rows = scoring_frame(features, history, offers, channels, ctx.as_of, p).transform(
        with_model_rows, meta["offer_ids"], meta["categories"], meta["features"]
    )
    scored = (
        with_uplift(model, rows)
        .withColumn("expected_incremental_margin", F.col("uplift") * (F.col("price") - F.col("unit_cost")))
        .transform(with_uplift_reasons)
        .withColumn("as_of", F.lit(ctx.as_of))
        .withColumn("model_version", F.lit(str(mv.version)))
        .select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in OFFER_SCORES_SCHEMA.fields])
    )
    ctx.store.write(scored, "offer_scores", ctx.as_of)
    written = ctx.store.read_as_of("offer_scores", ctx.as_of)
    stats = first_row(
        written.agg(
            F.count(F.lit(1)).alias("n"),
            F.avg("uplift").alias("uplift"),
            F.avg((F.col("uplift") < 0).cast("double")).alias("negative"),
        ),
        "score: summary of the written gold offer_scores",
    )
    return int(stats["n"]), {
        "offer_scores": f"uplift v{mv.version}: mean uplift {stats['uplift']:.4f}, "
        f"{stats['negative']:.1%} of pairs with a negative effect",
    }
