"""Benchmark (not a test): the uplift model against today's ranking, random and the oracle,
judged on the generator's planted truth; and its fit and score cost as the base grows.

1. Quality (``--subscribers``, default 20,000 x 180 days): generates a lake, runs
   ingest..score through the same code `cvo run` uses (the train stage fits and registers
   the uplift model, score writes `offer_scores`), then on the train run's out-of-time
   evaluation contacts (gold `uplift_training_frames`, split 'evaluation'):
   - the Qini coefficient (area between the Qini curve and random per treated contact,
     not normalised by the best curve) of: the uplift model; ranking by its accept
     probability if contacted; today's type-level propensity (the offer engine's
     propensity from the champion p_upsell / p_cross_sell / p_churn models and the price
     factor); random; and the oracle (the planted per-contact effect) - with 95%
     bootstrap intervals over subscribers and the interval of each difference; uplift at
     the top 10/20/30 %;
   - on `offer_scores[as_of]` (every subscriber x offer x channel): each ranking picks
     every subscriber's best pair, then the top 20% of subscribers; the planted true
     incremental margin of those contacts (sum of true uplift x margin) for the uplift
     model (by expected incremental margin), today's engine (by its expected value) and
     the oracle (by the true incremental margin), and how many sleeping dogs each contacts.
2. Scale (``--scale-sizes``, e.g. 100000,1000000 x ``--scale-days``): for each size, the
   training frame (weekly feature snapshots joined to contacts), the fit of both arms and
   the scoring of every subscriber x offer x channel, each timed with peak memory.

    .venv/bin/python benchmarks/bench_uplift.py --subscribers 20000 --scale-sizes 100000,300000
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import yaml
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import measure  # noqa: E402

from cvo_spark.core.catalog import load_catalog, offer_channels_frame, offers_frame  # noqa: E402
from cvo_spark.core.config import load_config, parse_config  # noqa: E402
from cvo_spark.core.io import TableStore  # noqa: E402
from cvo_spark.core.session import get_spark  # noqa: E402
from cvo_spark.core.stage import StageContext  # noqa: E402
from cvo_spark.models import mlflow_store  # noqa: E402
from cvo_spark.models.labels import TARGETS  # noqa: E402
from cvo_spark.models.propensity import usable_features  # noqa: E402
from cvo_spark.models.qini import compare_rankings  # noqa: E402
from cvo_spark.models.score_stage import _scoring_model, score_propensities  # noqa: E402
from cvo_spark.models.uplift import (  # noqa: E402
    fit_uplift,
    model_features,
    scoring_frame,
    snapshot_dates,
    training_frame,
    with_model_rows,
    with_uplift,
)
from cvo_spark.models.uplift_stage import snapshot_features, uplift_params  # noqa: E402
from cvo_spark.offers.engine import OfferParams, with_expected_value  # noqa: E402
from cvo_spark.offers.stage import offer_params  # noqa: E402
from cvo_spark.pipeline import STAGES, new_run_id, run_pipeline  # noqa: E402
from cvo_spark.synth.generate import ACTIVITY_FLOOR, DEFAULT_END_DATE, write_bronze  # noqa: E402
from cvo_spark.synth.response import true_response  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RANKINGS = {
    "uplift": "uplift model (T-learner)",
    "p_accept_if_contacted": "its accept probability if contacted",
    "engine_propensity": "today's type-level propensity",
    "random": "random",
    "true_uplift": "oracle (planted effect)",
}


def _conf(root: Path, lake: Path) -> Path:
    conf = yaml.safe_load((REPO / "conf" / "local.yaml").read_text())
    conf["offers"]["catalog_file"] = str(REPO / "conf" / "offers.yaml")
    conf["lake"] = str(lake)
    path = root / "conf.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


def build_lake(spark: SparkSession, root: Path, n: int, days: int, seed: int) -> StageContext:
    lake = root / "lake"
    write_bronze(spark, str(lake / "bronze"), n, days, seed, DEFAULT_END_DATE)
    config = load_config(_conf(root, lake))
    ctx = StageContext(
        spark, config, TableStore(spark, config), DEFAULT_END_DATE, new_run_id(DEFAULT_END_DATE)
    )
    stages = tuple(s for s in STAGES if s in ("ingest", "features", "segments", "train", "score"))
    t0 = time.perf_counter()
    results = run_pipeline(ctx, stages)
    print(
        f"pipeline {', '.join(stages)}: {time.perf_counter() - t0:.0f} s; train checks: "
        f"{ {k: v for k, v in results['train'].checks.items() if k.startswith('uplift')} }",
        flush=True,
    )
    return ctx


def engine_propensity(rows: DataFrame, ctx: StageContext) -> DataFrame:
    """Today's engine's propensity and expected value for each row (its champions, its formula)."""
    prefix = ctx.config.mlflow.model_prefix
    # The model score uses for each target (champion, else its baseline): (model, version, meta).
    champions = {t: _scoring_model(prefix, t)[:3] for t in TARGETS}
    scored = score_propensities(rows, champions, ctx.config.models.reason_codes)
    p: OfferParams = offer_params(ctx.config)
    if "clv_12m" not in scored.columns:
        scored = scored.withColumn("clv_12m", F.lit(0.0))
    return with_expected_value(scored, p).withColumnRenamed("propensity", "engine_propensity")


def quality(spark: SparkSession, ctx: StageContext, bronze_path: Path, replicates: int, seed: int) -> dict:
    truth_contacts = spark.read.format("delta").load(str(bronze_path / "_ground_truth" / "contacts"))
    subs_truth = spark.read.format("delta").load(str(bronze_path / "_ground_truth" / "subscribers"))
    offers_truth = spark.read.format("delta").load(str(bronze_path / "_ground_truth" / "offers"))
    mlflow_store.configure_mlflow(ctx.config.lake, ctx.config.mlflow.experiment)
    model, mv = mlflow_store.load_spark_model(
        mlflow_store.registered_name(ctx.config.mlflow.model_prefix, "uplift")
    )
    if model is None:
        raise SystemExit("no uplift champion was registered: see the train run's checks above")
    frame = ctx.store.read("gold", "uplift_training_frames").where(
        (F.col("trained_as_of") == F.lit(ctx.as_of)) & (F.col("split") == "evaluation")
    )
    evaluation = (
        with_uplift(model, frame)
        .transform(engine_propensity, ctx)
        .withColumn(
            "random", F.xxhash64(F.lit(seed), F.col("subscriber_id"), F.col("contacted_ts")).cast("double")
        )
        .join(
            truth_contacts.select(
                "subscriber_id", "offer_id", "contacted_ts", "true_uplift", "response_type"
            ),
            on=["subscriber_id", "offer_id", "contacted_ts"],
            how="inner",
        )
        .cache()
    )
    t0 = time.perf_counter()
    cmp = compare_rankings(
        evaluation, list(RANKINGS), "treated", "label", bins=20, replicates=replicates, seed=seed
    )
    print(f"Qini with {replicates} bootstrap replicates: {time.perf_counter() - t0:.0f} s", flush=True)
    out: dict = {
        "evaluation_contacts": {
            "treated": cmp.results["uplift"].treated,
            "control": cmp.results["uplift"].control,
        },
        "qini": {},
        "differences": {},
    }
    for name, label in RANKINGS.items():
        r = cmp.results[name]
        out["qini"][name] = {
            "label": label,
            "coefficient": r.coefficient,
            "ci95": cmp.intervals[name],
            "uplift_at": {f"top{round(f * 100)}": v for f, v in r.uplift_at.items()},
        }
    for a, b in (
        ("uplift", "engine_propensity"),
        ("uplift", "random"),
        ("uplift", "p_accept_if_contacted"),
        ("true_uplift", "uplift"),
    ):
        out["differences"][f"{a} - {b}"] = dict(
            zip(("point", "low", "high"), cmp.differences[(a, b)], strict=True)
        )

    # --- top 20% of subscribers, each at its best pair, by each ranking: planted incremental margin
    scores = ctx.store.read("gold", "offer_scores").where(F.col("as_of") == F.lit(ctx.as_of))
    features = ctx.store.read("gold", "features").where(F.col("as_of") == F.lit(ctx.as_of))
    gold_scores = ctx.store.read("gold", "scores").where(F.col("as_of") == F.lit(ctx.as_of))
    catalog = load_catalog(ctx.config.offers.catalog_file)
    offers = offers_frame(spark, catalog, ctx.config.offers.validity_days).select(
        "offer_id", "offer_type", "price", "unit_cost"
    )
    pairs = (
        scores.join(offers, on="offer_id", how="inner")
        .join(features.select("subscriber_id", "arpu_3m"), on="subscriber_id", how="inner")
        .join(
            gold_scores.select("subscriber_id", "p_upsell", "p_cross_sell", "p_churn", "clv_12m"),
            on="subscriber_id",
            how="inner",
        )
        .transform(with_expected_value, offer_params(ctx.config))
        .withColumn("decision_date", F.lit(ctx.as_of))
    )
    judged = true_response(
        pairs, subs_truth, offers_truth, ACTIVITY_FLOOR, recent_contacts_col="recent_contacts"
    )
    judged = judged.withColumn(
        "true_margin", F.col("true_uplift") * (F.col("price") - F.col("unit_cost"))
    ).cache()
    subscribers = judged.select("subscriber_id").distinct().count()
    top_n = int(round(subscribers * 0.2))
    policies = {
        "uplift model": "expected_incremental_margin",
        "today's engine": "expected_value",
        "oracle": "true_margin",
    }
    margins = {}
    for name, col in policies.items():
        best = Window.partitionBy("subscriber_id").orderBy(F.col(col).desc(), "offer_id", "channel")
        chosen = (
            judged.withColumn("_r", F.row_number().over(best))
            .where(F.col("_r") == 1)
            .orderBy(F.col(col).desc(), "subscriber_id")
            .limit(top_n)
        )
        row = chosen.agg(
            F.sum("true_margin").alias("margin"),
            F.sum((F.col("response_type") == "sleeping_dog").cast("int")).alias("dogs"),
            F.sum((F.col("response_type") == "sure_thing").cast("int")).alias("sure"),
        ).first()
        margins[name] = {
            "true_incremental_margin": row["margin"],
            "sleeping_dogs": row["dogs"],
            "sure_things": row["sure"],
            "contacts": top_n,
        }
    oracle = margins["oracle"]["true_incremental_margin"]
    for m in margins.values():
        m["share_of_oracle"] = m["true_incremental_margin"] / oracle if oracle else float("nan")
    out["top20_true_incremental_margin"] = margins
    out["subscribers_scored"] = subscribers
    out["uplift_model_version"] = str(mv.version)
    return out


def scale(spark: SparkSession, sizes: list[int], days: int, seed: int) -> list[dict]:
    config = parse_config({}, "bench")
    p = uplift_params(config)
    catalog = load_catalog(REPO / "conf" / "offers.yaml")
    offers, channels = offers_frame(spark, catalog, 7), offer_channels_frame(spark, catalog)
    ids, cats = sorted(o.offer_id for o in catalog.offers), sorted({o.category for o in catalog.offers})
    snaps = snapshot_dates(DEFAULT_END_DATE, p)
    out = []
    for n in sizes:
        tmp = Path(tempfile.mkdtemp(prefix=f"bench_uplift_{n}_"))
        try:
            results: list = []
            with measure("generate bronze", n, results=results):
                write_bronze(spark, str(tmp / "bronze"), n, days, seed, DEFAULT_END_DATE)
            silver = {
                t: spark.read.format("delta").load(str(tmp / "bronze" / t))
                for t in (
                    "subscribers",
                    "usage_daily",
                    "recharges",
                    "purchases",
                    "quota_events",
                    "offer_history",
                )
            }
            with measure("uplift training frame", n, results=results) as h:
                frame = training_frame(
                    silver["offer_history"],
                    snapshot_features(silver, snaps, config),
                    offers,
                    snaps,
                    DEFAULT_END_DATE,
                    p,
                ).transform(with_model_rows, ids, cats)
                frame.write.format("delta").save(str(tmp / "frame"))
                frame = spark.read.format("delta").load(str(tmp / "frame"))
                h["rows"] = frame.count()
            train = frame.where(F.col("split") == "train")
            with measure("uplift fit (both arms)", n, results=results) as h:
                fit = fit_uplift(train, usable_features(train, model_features(ids, cats)), p)
                h["rows"] = sum(fit.train_rows.values())
            with measure("uplift score (all pairs)", n, results=results) as h:
                feats = snapshot_features(silver, [DEFAULT_END_DATE], config).drop("snapshot_date")
                rows = scoring_frame(
                    feats, silver["offer_history"], offers, channels, DEFAULT_END_DATE, p
                ).transform(with_model_rows, ids, cats, list(fit.features))
                scored = with_uplift(fit.model, rows).select("subscriber_id", "offer_id", "channel", "uplift")
                scored.write.format("delta").save(str(tmp / "offer_scores"))
                h["rows"] = spark.read.format("delta").load(str(tmp / "offer_scores")).count()
            out.append(
                {
                    "subscribers": n,
                    "days": days,
                    "train_rows": fit.train_rows,
                    "steps": [m.as_dict() for m in results],
                }
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subscribers", type=int, default=20_000, help="quality run size (0: skip)")
    ap.add_argument("--days", type=int, default=180)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--replicates", type=int, default=200)
    ap.add_argument("--scale-sizes", default="", help="comma-separated sizes for the fit/score timing")
    ap.add_argument("--scale-days", type=int, default=90)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "uplift.json"))
    args = ap.parse_args()
    spark = get_spark(
        app_name="bench_uplift",
        master="local[*]",
        shuffle_partitions=8,
        log_level="ERROR",
        extra_conf={"spark.driver.memory": "12g", "spark.ui.enabled": "false"},
        show_progress=False,
    )
    report: dict = {"date": date.today().isoformat(), "machine": "2 cores, 24 GiB, local[*]"}
    if args.subscribers:
        root = Path(tempfile.mkdtemp(prefix="bench_uplift_"))
        try:
            ctx = build_lake(spark, root, args.subscribers, args.days, args.seed)
            report["quality"] = {
                "subscribers": args.subscribers,
                "days": args.days,
                **quality(spark, ctx, root / "lake" / "bronze", args.replicates, args.seed),
            }
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(json.dumps(report["quality"], indent=1, default=str), flush=True)
    if args.scale_sizes:
        report["scale"] = scale(
            spark, [int(x) for x in args.scale_sizes.split(",")], args.scale_days, args.seed
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
