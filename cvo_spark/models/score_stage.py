"""Stage `score`: apply each target's champion model to the features as of a date.

Also writes gold `offer_scores` (per subscriber x offer x channel: accept probability if
contacted and if not, their difference, the uplift) with the uplift champion
(`cvo_spark.models.uplift_stage.score_uplift`); without one it says so and goes on.

Reads the gold `features` partition for ``as_of`` (written by stage `features`), loads
``<prefix>_<target>@champion`` for upsell, cross-sell and churn (Spark `PipelineModel`s
that end in their isotonic calibrator; a target with no champion is scored by its
logistic-regression baseline, ``<prefix>_<target>_baseline@current``, and the checks
``<target>_model`` say which model scored and why) and for CLV, adds calibrated probabilities,
reason codes and the 12-month CLV, and replaces the ``as_of`` partition of gold
`scores` (idempotent, invariant 2). Every row carries the versions that scored it
(``baseline-<n>`` for a baseline).

Scores are deterministic: the same features and champions give the same rows.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DateType, DoubleType, MapType, StringType, StructField, StructType

from cvo_spark.core.errors import MissingTableError
from cvo_spark.core.stage import StageContext, StageResult
from cvo_spark.core.util import first_row
from cvo_spark.models import clv as clv_lib
from cvo_spark.models import mlflow_store
from cvo_spark.models.champion_gate import fallback_note
from cvo_spark.models.labels import TARGETS
from cvo_spark.models.propensity import (
    regression_predictions,
    with_model_inputs,
    with_reason_codes,
    with_scores,
)
from cvo_spark.models.uplift_stage import score_uplift

SCORES_SCHEMA = StructType(
    [
        StructField("subscriber_id", StringType()),
        StructField("as_of", DateType()),
        StructField("p_upsell", DoubleType()),
        StructField("p_cross_sell", DoubleType()),
        StructField("p_churn", DoubleType()),
        StructField("clv_12m", DoubleType()),
        StructField("reasons_upsell", ArrayType(StringType())),
        StructField("reasons_cross_sell", ArrayType(StringType())),
        StructField("reasons_churn", ArrayType(StringType())),
        StructField("model_versions", MapType(StringType(), StringType())),
    ]
)

#: Days in the CLV horizon per month (365.25 / 12).
DAYS_PER_MONTH = 365.25 / 12


#: The tables this stage reads (`cvo_spark.pipeline`): features to score, the purchase
#: history the BG/NBD CLV model needs, and the contact history the uplift scores use.
READS: tuple[str, ...] = ("features", "recharges", "purchases", "offer_history")


def _scoring_model(prefix: str, target: str):
    """(PipelineModel, version label, meta, check) of the model that scores `target`.

    The champion when there is one (check ``champion v<n>``). Otherwise the baseline
    registered beside the newest training (``<prefix>_<target>_baseline@current``), its
    version labelled ``baseline-<n>`` and its meta's reason statistics its own; the check
    says so and quotes the gate's reason for the newest version not being champion. Raises
    `MissingModelError` only when neither exists (the train stage never ran).
    """
    name = mlflow_store.registered_name(prefix, target)
    model, mv = mlflow_store.load_spark_model(name)
    if model is not None:
        meta = mlflow_store.load_run_json(mv.run_id, mlflow_store.META_FILE)
        return model, str(mv.version), meta, f"champion v{mv.version}"
    base_name = mlflow_store.baseline_name(prefix, target)
    model, mv = mlflow_store.load_spark_model(base_name, mlflow_store.CURRENT)
    if model is None:
        raise mlflow_store.MissingModelError(
            f"no model to score {target}: neither {name}@champion nor {base_name}@{mlflow_store.CURRENT}; "
            "run the train stage first"
        )
    meta = mlflow_store.load_run_json(mv.run_id, mlflow_store.META_FILE)
    meta = {**meta, "reason_stats": meta.get("baseline_reason_stats", [])}
    newest = mlflow_store.latest_version(name)
    reason = (newest.tags or {}).get(mlflow_store.REASON_TAG) if newest is not None else None
    if newest is not None and reason:
        reason = f"v{newest.version} {reason}"
    chance_free = (mv.tags or {}).get("better_than_chance") == "1"
    return model, f"baseline-{mv.version}", meta, fallback_note(reason, str(mv.version), chance_free)


def score_propensities(features: DataFrame, champions: dict, top_k: int) -> DataFrame:
    """Add ``p_<target>`` and ``reasons_<target>`` for every champion to the features rows.

    `champions` maps target -> (PipelineModel, version, meta with `features` and
    `reason_stats`). Keeps one row per input row.
    """
    needed = sorted({f for _, _, meta in champions.values() for f in meta["features"]})
    df = with_model_inputs(features, needed)
    for target, (model, _, meta) in champions.items():
        df = with_scores(model, df, target, f"p_{target}")
        df = with_reason_codes(df, meta["reason_stats"], f"reasons_{target}", top_k)
    return df


def run(ctx: StageContext) -> StageResult:
    """Score every subscriber in ``features[as_of]`` with the champions; write `scores[as_of]`."""
    cfg = ctx.config.models
    features = ctx.store.read_as_of("features", ctx.as_of)
    if features.limit(1).count() == 0:
        raise MissingTableError(
            f"gold.features has no rows for as_of {ctx.as_of}: run the features stage first"
        )
    mlflow_store.configure_mlflow(
        ctx.store.lake_root,
        ctx.config.mlflow.experiment,
        ctx.config.mlflow.tracking_uri,
        ctx.config.mlflow.registry_uri,
    )
    prefix = ctx.config.mlflow.model_prefix
    # A target without a champion is scored by its baseline, and the checks say so:
    # a run never stops for want of a champion (only for want of any trained model).
    chosen = {t: _scoring_model(prefix, t) for t in TARGETS}
    champions = {t: (model, version, meta) for t, (model, version, meta, _) in chosen.items()}
    scored = score_propensities(features, champions, cfg.reason_codes)

    clv_name = mlflow_store.registered_name(prefix, "clv")
    clv_champion = mlflow_store.load_clv_champion(clv_name)
    if clv_champion is None:
        raise mlflow_store.MissingModelError(
            f"no champion model {clv_name}@champion: run the train stage first"
        )
    clv_version = str(mlflow_store.version_by_alias(clv_name, mlflow_store.CHAMPION).version)
    horizon_days = cfg.clv_horizon_months * DAYS_PER_MONTH
    kind, clv_model = clv_champion
    if kind == "bgnbd":
        clv = clv_lib.clv_for_subscribers(
            ctx.store.input("recharges"),
            ctx.store.input("purchases"),
            scored,
            clv_model,
            ctx.as_of,
            horizon_days,
            "clv_12m",
            cfg.clv_monthly_discount,
        )
    else:
        # The regressor predicts spend over the training horizon; scale it to the CLV horizon.
        clv = regression_predictions(
            clv_model, with_model_inputs(features), "clv", "clv_12m", horizon_days / cfg.horizon_days
        )
    versions = F.create_map(
        *[x for t, (_, v, _) in champions.items() for x in (F.lit(t), F.lit(v))],
        F.lit("clv"),
        F.lit(clv_version),
    )
    out = (
        scored.join(clv, on="subscriber_id", how="left")
        .withColumn("clv_12m", F.coalesce(F.col("clv_12m"), F.lit(0.0)))
        .withColumn("model_versions", versions)
        .select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in SCORES_SCHEMA.fields])
    )
    ctx.store.write(out, "scores", ctx.as_of)
    offer_score_rows, offer_score_checks = score_uplift(ctx, features)
    written = ctx.store.read_as_of("scores", ctx.as_of)
    stats = first_row(
        written.agg(
            F.count(F.lit(1)).alias("n"),
            *[F.avg(f"p_{t}").alias(t) for t in TARGETS],
            F.avg("clv_12m").alias("clv"),
        ),
        "score: summary of the written gold scores",
    )
    return StageResult(
        row_counts={"scores": int(stats["n"]), "offer_scores": offer_score_rows},
        checks={
            **offer_score_checks,
            **{f"mean_p_{t}": f"{stats[t]:.4f}" for t in TARGETS},
            **{f"{t}_model": note for t, (_, _, _, note) in chosen.items()},
            "mean_clv_12m": f"{stats['clv']:.0f}",
            "model_versions": ", ".join(f"{t}=v{v}" for t, (_, v, _) in champions.items())
            + f", clv=v{clv_version}",
        },
    )
