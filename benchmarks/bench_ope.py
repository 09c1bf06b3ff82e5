"""Benchmark (not a test): do the off-policy estimates cover the planted truth?

On the generator's lake (ingest..train, so the uplift model, the reward model q̂, is trained
on contacts before the evaluation window), the decision points are the train stage's
out-of-time evaluation contacts and the actions every (offer, channel) the catalog allows.
The generator's planted response model (`cvo_spark.synth.response.true_response`, never
read by engine code) gives each (decision point, action) its true accept probability with
and without contact, hence each policy's true incremental margin per decision point.

Then ``--replications`` times (seeded): a known random logging policy (an action uniform
among the point's allowed actions, held back as control with probability
``--control-share``) is drawn at every decision point, and its outcome from the planted
probability of the drawn arm; `cvo_spark.policy.ope.evaluate_policies` judges the
candidate policies (`cvo_spark.policy.policies`: uplift, response_model, tier_rule, random) on that log
with ``--bootstrap`` Poisson resamples of subscribers. Reported per policy and estimator:
coverage of the truth by the 95% interval, bias, RMSE, mean interval width, mean effective
sample size. The same policies are also judged on the generator's own log (its logging
policy, with the logged propensities), beside the truth.

    .venv/bin/python benchmarks/bench_ope.py --keep-lake /work/bench_lake --replications 200
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_uplift import build_lake  # noqa: E402

from cvo_spark.core.config import load_config  # noqa: E402
from cvo_spark.core.io import TableStore  # noqa: E402
from cvo_spark.core.session import get_spark  # noqa: E402
from cvo_spark.core.stage import StageContext  # noqa: E402
from cvo_spark.models import mlflow_store  # noqa: E402
from cvo_spark.models.uplift_stage import catalog_frames  # noqa: E402
from cvo_spark.policy.ope import ESTIMATORS, evaluate_policies  # noqa: E402
from cvo_spark.policy.policies import candidate_policies, with_high_value  # noqa: E402
from cvo_spark.policy.stage import (  # noqa: E402
    evaluation_contacts,
    logged_rows,
    scored_actions,
    with_logged_propensity,
)
from cvo_spark.synth.generate import ACTIVITY_FLOOR, DEFAULT_END_DATE  # noqa: E402
from cvo_spark.synth.response import true_response  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
POLICIES = ("uplift", "response_model", "tier_rule", "random")


def _u(seed: int, stream: int, *cols) -> F.Column:
    h = F.xxhash64(F.lit(seed), F.lit(stream), *cols)
    return F.pmod(h, F.lit(1_000_003)).cast("double") / 1_000_003.0


def inputs(ctx: StageContext, bronze: Path, max_points: int) -> tuple[DataFrame, DataFrame]:
    """(decision points, scored actions with the planted truth)."""
    mf = ctx.config.mlflow
    mlflow_store.configure_mlflow(ctx.config.lake, mf.experiment, mf.tracking_uri, mf.registry_uri)
    model, mv = mlflow_store.load_spark_model(mlflow_store.registered_name(mf.model_prefix, "uplift"))
    if model is None:
        raise SystemExit("no uplift champion in this lake: nothing to use as the reward model")
    meta = mlflow_store.load_run_json(mv.run_id, mlflow_store.META_FILE)
    history = ctx.store.read_input("silver", "offer_history")
    points = (
        with_logged_propensity(evaluation_contacts(ctx), history)
        .where(F.col("propensity") > 0)
        .transform(with_high_value, ctx.config.segments.value_tiers)
    )
    if max_points:
        # A seeded subset of subscribers (whole subscribers, so clusters stay whole).
        n = points.count()
        share = min(1.0, max_points / max(n, 1))
        points = points.where(_u(99, 0, F.col("subscriber_id")) < share)
    points = points.persist()
    offers, channels, _, _ = catalog_frames(ctx)
    actions = offers.select("offer_id", "offer_type", "category", "price", "unit_cost").join(
        channels.select("offer_id", "channel", "contact_cost"), on="offer_id", how="inner"
    )
    scored = scored_actions(points, actions, model, meta)
    where = points.select("decision_key", "subscriber_id", "contact_date", "recent_contacts")
    truth_in = scored.join(where, on="decision_key")
    subs = ctx.spark.read.format("delta").load(str(bronze / "_ground_truth" / "subscribers"))
    offers_truth = ctx.spark.read.format("delta").load(str(bronze / "_ground_truth" / "offers"))
    judged = true_response(
        truth_in,
        subs,
        offers_truth,
        ACTIVITY_FLOOR,
        day_col="contact_date",
        recent_contacts_col="recent_contacts",
    )
    order = Window.partitionBy("decision_key").orderBy("offer_id", "channel")
    judged = (
        judged.withColumn("action_idx", F.row_number().over(order) - 1)
        .withColumn("n_actions", F.count(F.lit(1)).over(Window.partitionBy("decision_key")))
        .persist()
    )
    judged.count()
    return points, judged


def true_values(policy: DataFrame, judged: DataFrame, n_points: int) -> dict[str, float]:
    """Each policy's planted incremental margin per decision point (before contact costs)."""
    keys = ["decision_key", "offer_id", "channel"]
    rows = (
        policy.select("policy", *keys, "pi")
        .join(judged.select(*keys, "p_if_contacted", "p_if_not", "margin"), on=keys)
        .groupBy("policy")
        .agg(F.sum(F.col("pi") * (F.col("p_if_contacted") - F.col("p_if_not")) * F.col("margin")).alias("v"))
        .collect()
    )
    return {r["policy"]: float(r["v"]) / n_points for r in rows}


def simulated_logs(judged: DataFrame, replications: int, seed: int, control_share: float) -> DataFrame:
    """`replications` logs of a known uniform logging policy, outcomes from the planted truth."""
    per_point = judged.select("decision_key", "subscriber_id", "n_actions").distinct()
    reps = per_point.select("*", F.explode(F.sequence(F.lit(1), F.lit(replications))).alias("replicate"))
    drawn = reps.select(
        "*",
        F.floor(_u(seed, 1, F.col("replicate"), F.col("decision_key")) * F.col("n_actions"))
        .cast("int")
        .alias("action_idx"),
        (_u(seed, 2, F.col("replicate"), F.col("decision_key")) >= control_share)
        .cast("int")
        .alias("treated"),
        _u(seed, 3, F.col("replicate"), F.col("decision_key")).alias("_u_accept"),
    )
    cols = ["decision_key", "action_idx", "offer_id", "channel", "q_contacted", "q_not", "margin"]
    arms = judged.select(*cols, "p_if_contacted", "p_if_not")
    logged = drawn.join(arms, on=["decision_key", "action_idx"])
    p_arm = F.when(F.col("treated") == 1, F.col("p_if_contacted")).otherwise(F.col("p_if_not"))
    p_group = F.when(F.col("treated") == 1, F.lit(1.0 - control_share)).otherwise(F.lit(control_share))
    return logged.select(
        "replicate",
        "decision_key",
        "subscriber_id",
        "offer_id",
        "channel",
        "treated",
        (p_group / F.col("n_actions")).alias("propensity"),
        ((F.col("_u_accept") < p_arm).cast("double") * F.col("margin")).alias("reward"),
        "q_contacted",
        "q_not",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subscribers", type=int, default=20_000, help="lake size when building one")
    ap.add_argument("--days", type=int, default=180)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument(
        "--keep-lake", default="", help="build the lake here and keep it; reuse it when it exists"
    )
    ap.add_argument("--replications", type=int, default=200)
    ap.add_argument("--bootstrap", type=int, default=100, help="bootstrap resamples per replication")
    ap.add_argument("--max-points", type=int, default=4000, help="decision points (a seeded subset)")
    ap.add_argument("--control-share", type=float, default=0.1)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "ope.json"))
    args = ap.parse_args()
    spark = get_spark(
        app_name="bench_ope",
        master="local[*]",
        shuffle_partitions=8,
        log_level="ERROR",
        extra_conf={"spark.driver.memory": "8g", "spark.ui.enabled": "false"},
        show_progress=False,
    )
    root = Path(args.keep_lake) if args.keep_lake else Path(tempfile.mkdtemp(prefix="bench_ope_"))
    if (root / "lake" / "gold" / "uplift_training_frames").exists():
        config = load_config(root / "conf.yaml")
        ctx = StageContext(spark, config, TableStore(spark, config), DEFAULT_END_DATE, "bench")
    else:
        ctx = build_lake(spark, root, args.subscribers, args.days, args.seed)
    t0 = time.perf_counter()
    points, judged = inputs(ctx, root / "lake" / "bronze", args.max_points)
    n_points = points.count()
    subscribers = points.select("subscriber_id").distinct().count()
    policy = candidate_policies(judged, POLICIES, ctx.config.offers.allocation.min_net_value).persist()
    truth = true_values(policy, judged, n_points)
    print(f"{n_points:,} decision points, {subscribers:,} subscribers; truth per point: {truth}")

    # 1. The generator's own log, as `cvo evaluate-policy` judges it.
    own = evaluate_policies(
        logged_rows(points, judged), policy, POLICIES, replicates=args.bootstrap, seed=args.seed
    )
    own_log = {
        r.policy: {
            "truth": truth.get(r.policy, 0.0),
            **{e: [r.estimates[e], *r.intervals[e]] for e in ESTIMATORS},
            "effective_sample_size": r.effective_sample_size,
            "matched": r.matched,
            "unsupported_share": r.unsupported_mass,
        }
        for r in own
    }
    # 2. Replications of a known random logging policy.
    logs = simulated_logs(judged, args.replications, args.seed, args.control_share)
    t1 = time.perf_counter()
    results = evaluate_policies(logs, policy, POLICIES, replicates=args.bootstrap, seed=args.seed)
    sim_seconds = time.perf_counter() - t1
    summary: dict = {}
    for name in POLICIES:
        mine = [r for r in results if r.policy == name]
        v = truth.get(name, 0.0)
        figures: dict = {"truth": v, "replications": len(mine)}
        for e in ESTIMATORS:
            est = np.array([r.estimates[e] for r in mine])
            lo = np.array([r.intervals[e][0] for r in mine])
            hi = np.array([r.intervals[e][1] for r in mine])
            figures[e] = {
                "coverage": float(np.mean((lo <= v) & (v <= hi))),
                "bias": float(np.mean(est) - v),
                "rmse": float(np.sqrt(np.mean((est - v) ** 2))),
                "mean_width": float(np.mean(hi - lo)),
            }
        figures["mean_effective_sample_size"] = float(np.mean([r.effective_sample_size for r in mine]))
        figures["mean_matched"] = float(np.mean([r.matched for r in mine]))
        summary[name] = figures
        print(
            f"{name:<15} truth {v:9.2f}  "
            + "  ".join(
                f"{e.upper()} cover {figures[e]['coverage']:.1%} bias {figures[e]['bias']:+.2f} "
                f"rmse {figures[e]['rmse']:.2f}"
                for e in ("dr", "ips", "snips")
            )
            + f"  ESS {figures['mean_effective_sample_size']:,.0f}"
        )
    report = {
        "date": date.today().isoformat(),
        "machine": "2 cores, 24 GiB, local[*]",
        "decision_points": n_points,
        "subscribers": subscribers,
        "replications": args.replications,
        "bootstrap": args.bootstrap,
        "control_share": args.control_share,
        "truth_per_decision_point": truth,
        "own_log": own_log,
        "simulated": summary,
        "seconds": {"total": time.perf_counter() - t0, "replications": sim_seconds},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
