"""Judging the judge: simulated logs with a known logging policy and outcomes from the planted truth.

THIS IS A JUDGING TOOL, NOT ENGINE CODE. It reads the synthetic generator's planted
response model (`cvo_spark.synth.response.true_response` over ``bronze/_ground_truth``),
which no real lake has and no engine code may look at; it exists only so the benchmark
(`benchmarks/bench_ope.py`) and the slow coverage test can ask "does the interval cover
the true value?". It lives outside the package, where no engine module can import it
(only `cvo_spark.synth` may read the truth; tests check both).

On a lake trained through the uplift stage: the decision points are the train stage's
out-of-time evaluation contacts (as `cvo evaluate-policy` uses them), every allowed
(offer, channel) is scored by the reward model (the uplift champion) *and* given its
planted accept probabilities with and without contact (`judged_actions`). Each policy's
true incremental margin per decision point follows (`true_values`). `simulated_logs`
draws `replications` logs of a known logging policy: an action uniform among the point's
allowed actions, held back as control with probability `control_share`, the outcome drawn
from the planted probability of the drawn arm. `coverage_summary` says how often each
estimator's interval covered the truth over the replications.

Draws are hashes of (seed, stream, replicate, decision point), so a replication is the
same whatever the partitioning; only summaries reach the driver.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from cvo_spark.core.stage import StageContext
from cvo_spark.models import mlflow_store
from cvo_spark.models.uplift_stage import catalog_frames
from cvo_spark.policy.ope import CONTROL_CHANNELS, ESTIMATORS, PolicyEstimate
from cvo_spark.policy.policies import with_high_value
from cvo_spark.policy.stage import evaluation_contacts, scored_actions, with_logged_propensity
from cvo_spark.synth.generate import ACTIVITY_FLOOR
from cvo_spark.synth.response import true_response


def uniform(seed: int, stream: int, *cols: Column) -> Column:
    """A uniform draw in [0, 1) from a hash of (seed, stream, cols): reproducible per row."""
    h = F.xxhash64(F.lit(seed), F.lit(stream), *cols)
    return F.pmod(h, F.lit(1_000_003)).cast("double") / 1_000_003.0


def judged_actions(ctx: StageContext, bronze: Path, max_points: int = 0) -> tuple[DataFrame, DataFrame]:
    """(decision points, judged actions), both persisted.

    Decision points: the evaluation contacts as of ``ctx.as_of`` with a logged propensity
    (a seeded subset of whole subscribers when `max_points` > 0), with ``is_high_value``.
    Judged actions: `cvo_spark.policy.stage.scored_actions` (reward model columns) plus
    ``subscriber_id``, the planted ``p_if_contacted`` and ``p_if_not``, ``action_idx`` (0-based
    position among the point's actions), ``n_actions`` and CONTROL_CHANNELS (channels of the
    action's offer at the point: every one is a possible logged control for the uniform
    logger, so pooling's assumption holds here by construction).
    """
    mf = ctx.config.mlflow
    mlflow_store.configure_mlflow(ctx.store.lake_root, mf.experiment, mf.tracking_uri, mf.registry_uri)
    model, mv = mlflow_store.load_spark_model(mlflow_store.registered_name(mf.model_prefix, "uplift"))
    if model is None:
        raise ValueError("no uplift champion in this lake: nothing to use as the reward model")
    meta = mlflow_store.load_run_json(mv.run_id, mlflow_store.META_FILE)
    history = ctx.store.input("offer_history")
    points = (
        with_logged_propensity(evaluation_contacts(ctx), history)
        .where(F.col("propensity") > 0)
        .transform(with_high_value, ctx.config.segments.value_tiers)
    )
    if max_points:
        # Whole subscribers, so the bootstrap's clusters stay whole; one count to size the share.
        n = points.count()
        share = min(1.0, max_points / max(n, 1))
        points = points.where(uniform(99, 0, F.col("subscriber_id")) < share)
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
        .withColumn(CONTROL_CHANNELS, F.count(F.lit(1)).over(Window.partitionBy("decision_key", "offer_id")))
        .persist()
    )
    judged.count()
    return points, judged


def true_values(policy: DataFrame, judged: DataFrame, n_points: int) -> dict[str, float]:
    """Each policy's planted incremental margin per decision point (before contact costs).

    Needs POLICY_COLUMNS' keys and ``pi`` in `policy`; `judged` from `judged_actions`.
    A policy without rows (no_contact) is absent: its value is 0.
    """
    keys = ["decision_key", "offer_id", "channel"]
    rows = (
        policy.select("policy", *keys, "pi")
        .join(judged.select(*keys, "p_if_contacted", "p_if_not", "margin"), on=keys)
        .groupBy("policy")
        .agg(F.sum(F.col("pi") * (F.col("p_if_contacted") - F.col("p_if_not")) * F.col("margin")).alias("v"))
        .collect()  # one row per policy
    )
    return {r["policy"]: float(r["v"]) / n_points for r in rows}


def simulated_logs(judged: DataFrame, replications: int, seed: int, control_share: float) -> DataFrame:
    """`replications` logs of a known uniform logging policy, outcomes from the planted truth.

    `judged` from `judged_actions`. Returns `ope.LOGGED_COLUMNS` plus ``replicate`` and
    CONTROL_CHANNELS: one row per (replicate, decision point), the drawn action's
    propensity (1 - control_share or control_share, over the point's action count).
    """
    per_point = judged.select("decision_key", "subscriber_id", "n_actions").distinct()
    reps = per_point.select("*", F.explode(F.sequence(F.lit(1), F.lit(replications))).alias("replicate"))
    drawn = reps.select(
        "*",
        F.floor(uniform(seed, 1, F.col("replicate"), F.col("decision_key")) * F.col("n_actions"))
        .cast("int")
        .alias("action_idx"),
        (uniform(seed, 2, F.col("replicate"), F.col("decision_key")) >= control_share)
        .cast("int")
        .alias("treated"),
        uniform(seed, 3, F.col("replicate"), F.col("decision_key")).alias("_u_accept"),
    )
    cols = ["decision_key", "action_idx", "offer_id", "channel", "q_contacted", "q_not", "margin"]
    arms = judged.select(*cols, "p_if_contacted", "p_if_not", CONTROL_CHANNELS)
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
        CONTROL_CHANNELS,
    )


def coverage_summary(
    results: Sequence[PolicyEstimate], truth: dict[str, float], names: Sequence[str]
) -> dict:
    """Per policy, over the replications: each estimator's coverage of the truth by its
    interval, bias, RMSE and mean width; the mean (control) effective sample size and matched rows."""
    summary: dict = {}
    for name in names:
        mine = [r for r in results if r.policy == name]
        v = truth.get(name, 0.0)
        figures: dict = {"truth": v, "replications": len(mine)}
        for e in ESTIMATORS:
            est = np.array([r.estimates[e] for r in mine])
            lo = np.array([r.intervals[e][0] for r in mine])
            hi = np.array([r.intervals[e][1] for r in mine])
            figures[e] = {
                "coverage": float(np.mean((lo <= v) & (v <= hi))),
                "covered": int(np.sum((lo <= v) & (v <= hi))),
                "bias": float(np.mean(est) - v),
                "rmse": float(np.sqrt(np.mean((est - v) ** 2))),
                "mean_width": float(np.mean(hi - lo)),
            }
        figures["mean_effective_sample_size"] = float(np.mean([r.effective_sample_size for r in mine]))
        figures["mean_control_effective_sample_size"] = float(
            np.mean([r.control_effective_sample_size for r in mine])
        )
        figures["mean_matched"] = float(np.mean([r.matched for r in mine]))
        figures["mean_matched_control"] = float(np.mean([r.matched_control for r in mine]))
        summary[name] = figures
    return summary
