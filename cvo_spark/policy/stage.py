"""`cvo evaluate-policy`: judge candidate policies offline on logged decisions -> gold `policy_evaluations`.

Decision points are the train stage's out-of-time evaluation contacts as of the date (gold
`uplift_training_frames`, split 'evaluation': each logged contact with the features of the
latest weekly snapshot before it), joined back to silver `offer_history` for the
probability with which the logging policy chose each (``propensity``, DESIGN invariant 9).
Contacts without a logged propensity cannot be weighted: they are counted and left out,
and the run says how many.

The reward of a decision point is the margin of an acceptance within the uplift model's
outcome window (price - unit cost); the reward model q̂ is the registered uplift champion,
trained on contacts *before* the evaluation window, so it has not seen the rows it corrects
(a sample split by time). Every decision point is scored for every (offer, channel) the
catalog allows; the policies of `cvo_spark.policy.policies` choose among those; the
estimators of `cvo_spark.policy.ope` judge them. Values are per decision point, in the
currency of the offers' prices; the contact cost a policy pays is reported beside them.
The ``as_of`` partition is replaced in one commit (invariant 2).
"""

from __future__ import annotations

import logging
from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DateType,
    DoubleType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from cvo_spark.core.errors import CvoError
from cvo_spark.core.stage import StageContext, StageResult
from cvo_spark.models import mlflow_store
from cvo_spark.models.uplift import with_model_rows, with_uplift
from cvo_spark.models.uplift_stage import catalog_frames
from cvo_spark.policy.ope import CONTROL_CHANNELS, ESTIMATORS, PolicyEstimate, evaluate_policies
from cvo_spark.policy.policies import POLICIES, candidate_policies, with_high_value

log = logging.getLogger(__name__)

#: Columns of the logged contact that describe the action (replaced when scoring other actions).
ACTION_COLUMNS = ("offer_id", "channel", "offer_type", "category", "price", "unit_cost")
HISTORY_KEY = ("subscriber_id", "offer_id", "channel", "contacted_ts")

#: The tables `cvo evaluate-policy` reads (`cvo_spark.pipeline`).
READS: tuple[str, ...] = ("uplift_training_frames", "offer_history")
POLICY_EVALUATIONS_SCHEMA = StructType(
    [
        StructField("policy", StringType(), False),
        StructField("estimator", StringType(), False),
        StructField("value", DoubleType(), True),
        StructField("ci_low", DoubleType(), True),
        StructField("ci_high", DoubleType(), True),
        StructField("net_value", DoubleType(), True),
        StructField("decision_points", LongType(), False),
        StructField("subscribers", LongType(), False),
        StructField("contact_share", DoubleType(), True),
        StructField("contact_cost", DoubleType(), True),
        StructField("effective_sample_size", DoubleType(), True),
        StructField("matched", LongType(), True),
        StructField("control_effective_sample_size", DoubleType(), True),
        StructField("matched_control", LongType(), True),
        StructField("low_support", BooleanType(), True),
        StructField("largest_weights", ArrayType(DoubleType()), True),
        StructField("unsupported_share", DoubleType(), True),
        StructField("unsupported_actions", ArrayType(StringType()), True),
        StructField("reward_model_version", StringType(), True),
        StructField("replicates", LongType(), False),
        StructField("confidence", DoubleType(), False),
        StructField("run_id", StringType(), True),
        StructField("as_of", DateType(), False),
    ]
)


def evaluation_contacts(ctx: StageContext) -> DataFrame:
    """The out-of-time evaluation contacts the train stage stored for ``ctx.as_of``."""
    missing = (
        f"gold uplift_training_frames has no evaluation contacts as of {ctx.as_of}: "
        f"run `cvo run --as-of {ctx.as_of}` (the train stage) first"
    )
    if not ctx.store.has("uplift_training_frames"):
        raise CvoError(missing)
    frame = ctx.store.read_as_of("uplift_training_frames", ctx.as_of).where(F.col("split") == "evaluation")
    if frame.isEmpty():
        raise CvoError(missing)
    return frame


def with_logged_propensity(contacts: DataFrame, offer_history: DataFrame) -> DataFrame:
    """Add ``propensity`` and ``decision_key`` from offer_history (natural key join).

    Needs HISTORY_KEY in both. ``decision_key`` is the logged decision_id, or a hash of the
    contact's key when the source sends none. Raises CvoError when offer_history has no
    propensity column at all: nothing could be weighted.
    """
    if "propensity" not in offer_history.columns:
        raise CvoError(
            "offer_history has no propensity column: off-policy evaluation needs the probability "
            "with which each logged offer was chosen (DESIGN invariant 9)"
        )
    decision = F.col("decision_id") if "decision_id" in offer_history.columns else F.lit(None).cast("string")
    logged = offer_history.select(*HISTORY_KEY, "propensity", decision.alias("_decision_id"))
    key = F.coalesce(
        F.col("_decision_id"),
        F.concat(F.lit("contact-"), F.hex(F.xxhash64(*[F.col(c) for c in HISTORY_KEY]))),
    )
    return (
        contacts.join(logged, on=list(HISTORY_KEY), how="left")
        .withColumn("decision_key", key)
        .drop("_decision_id")
    )


def scored_actions(points: DataFrame, actions: DataFrame, model, meta: dict) -> DataFrame:
    """Every decision point x every allowed (offer, channel), scored by the reward model.

    `points` are evaluation contacts with ``decision_key`` (and optionally
    ``is_high_value``, kept for the tier rule); `actions` has ACTION_COLUMNS and
    ``contact_cost``. Returns ``decision_key, offer_id, channel, contact_cost, price,
    margin, q_contacted, q_not`` (expected margin if contacted / if not) per action, plus
    ``is_high_value`` when the points carry it.
    """
    subscriber_part = points.select(
        "decision_key", *[c for c in points.columns if c not in ACTION_COLUMNS and c != "decision_key"]
    )
    rows = subscriber_part.crossJoin(F.broadcast(actions)).transform(
        with_model_rows, meta["offer_ids"], meta["categories"], meta["features"]
    )
    margin = (F.col("price") - F.col("unit_cost")).cast("double")
    keep = ["is_high_value"] if "is_high_value" in points.columns else []
    return (
        with_uplift(model, rows)
        .withColumn("margin", margin)
        .select(
            "decision_key",
            "offer_id",
            "channel",
            "contact_cost",
            F.col("price").cast("double").alias("price"),
            *keep,
            "margin",
            (F.col("p_accept_if_contacted") * F.col("margin")).alias("q_contacted"),
            (F.col("p_accept_if_not") * F.col("margin")).alias("q_not"),
        )
    )


def logged_rows(points: DataFrame, scored: DataFrame) -> DataFrame:
    """The logged decision points in the estimators' form (`ope.LOGGED_COLUMNS` and
    `ope.CONTROL_CHANNELS`).

    The reward is the logged outcome times the logged offer's margin; q̂ of the logged action
    comes from `scored` (an action outside the catalog's channels has no score: q̂ = 0, and
    no candidate policy can take it, so its weight is 0 anyway).

    ``control_channels`` (K_o, for the pooled control arm) must count the channels on which
    the *logging* policy could send or hold back the offer, not the catalog's: the
    generator's logger, for one, draws the channel regardless of the offer's catalog
    channels, and with the catalog's count (2-4 instead of its 5) the pooled control part
    was 1-2.5 times too large and the estimates of deterministic policies fell to -6,000 and
    -16,000 against a planted +582 and +188. The log does not say which channels its policy
    could use at each point, so K_o is the number of distinct channels the offer was logged
    on in these decision points (either arm): right for a logger whose channel choice does
    not depend on the subscriber; where it does (consent, per-subscriber rules), or a
    channel is so rare it never shows, K_o is off for some points and pooling is biased
    (turn `policy_evaluation.pool_control_channels` off).
    """
    margin = (F.col("price") - F.col("unit_cost")).cast("double")
    logged = points.select(
        "decision_key",
        "subscriber_id",
        "offer_id",
        "channel",
        F.col("treated").cast("int").alias("treated"),
        "propensity",
        (F.col("label").cast("double") * F.coalesce(margin, F.lit(0.0))).alias("reward"),
    )
    q = scored.select("decision_key", "offer_id", "channel", "q_contacted", "q_not")
    k = logged.groupBy("offer_id").agg(F.countDistinct("channel").alias(CONTROL_CHANNELS))
    return (
        logged.join(q, on=["decision_key", "offer_id", "channel"], how="left")
        .join(F.broadcast(k), on="offer_id", how="left")
        .fillna(0.0, subset=["q_contacted", "q_not"])
    )


def evaluation_rows(
    results: list[PolicyEstimate], version: str, replicates: int, confidence: float, run_id: str, as_of: date
) -> list[tuple]:
    rows = []
    for r in results:
        for e in ESTIMATORS:
            value = r.estimates[e]
            rows.append(
                (
                    r.policy,
                    e,
                    value,
                    r.intervals[e][0],
                    r.intervals[e][1],
                    value - r.contact_cost,
                    r.decision_points,
                    r.subscribers,
                    r.contact_mass,
                    r.contact_cost,
                    r.effective_sample_size,
                    r.matched,
                    r.control_effective_sample_size,
                    r.matched_control,
                    r.low_support,
                    r.largest_weights,
                    r.unsupported_mass,
                    r.unsupported_actions,
                    version,
                    replicates,
                    confidence,
                    run_id,
                    as_of,
                )
            )
    return rows


def summary_lines(results: list[PolicyEstimate], excluded: int) -> list[str]:
    """The figures a person reads first: DR with its interval, then IPS and SNIPS beside it."""
    lines = [
        "incremental margin per decision point over no contact "
        "(doubly robust [interval]; IPS, SNIPS; contact share; effective sample size)"
    ]
    for r in results:
        lo, hi = r.intervals["dr"]
        line = (
            f"  {r.policy:<15} DR {r.estimates['dr']:>9.2f} [{lo:.2f}, {hi:.2f}]  "
            f"IPS {r.estimates['ips']:.2f}  "
            f"SNIPS {r.estimates['snips']:.2f}  contacts {r.contact_mass:.0%}  cost {r.contact_cost:.2f}  "
            f"ESS {r.effective_sample_size:,.0f} of {r.decision_points:,}"
        )
        if r.low_support:
            line += (
                f"  LOW SUPPORT: interval unreliable, rests on {r.effective_decisions:,.0f} effective "
                f"decisions ({r.matched_control:,} matched control rows)"
            )
        if r.unsupported_actions:
            line += (
                f"  UNSUPPORTED: {r.unsupported_mass:.0%} of its contacts are actions the log never tested "
                f"({', '.join(r.unsupported_actions[:5])}): estimate not valid for them"
            )
        lines.append(line)
    if excluded:
        lines.append(
            f"  {excluded:,} logged contact(s) without a propensity were left out (cannot be weighted)"
        )
    return lines


def run(ctx: StageContext) -> StageResult:
    """Evaluate the policies (``ctx.options['policies']``, else the config's) as of
    ``ctx.as_of`` and write gold `policy_evaluations`."""
    cfg = ctx.config.policy_evaluation
    names = tuple(ctx.options.get("policies") or cfg.policies)
    unknown = sorted(set(names) - set(POLICIES))
    if unknown:
        raise CvoError(f"unknown policy {', '.join(unknown)}: choose from {', '.join(POLICIES)}")
    mf = ctx.config.mlflow
    mlflow_store.configure_mlflow(ctx.store.lake_root, mf.experiment, mf.tracking_uri, mf.registry_uri)
    name = mlflow_store.registered_name(mf.model_prefix, "uplift")
    model, mv = mlflow_store.load_spark_model(name)
    if model is None:
        raise CvoError(f"no reward model: {name}@champion is not registered (train the uplift model first)")
    meta = mlflow_store.load_run_json(mv.run_id, mlflow_store.META_FILE)

    history = ctx.store.input("offer_history")
    contacts = with_logged_propensity(evaluation_contacts(ctx), history)
    counts = contacts.agg(
        F.count(F.lit(1)).alias("n"), F.sum(F.col("propensity").isNull().cast("long")).alias("missing")
    ).first()
    excluded = int(counts["missing"] or 0) if counts else 0
    points = (
        contacts.where(F.col("propensity").isNotNull() & (F.col("propensity") > 0))
        .transform(with_high_value, ctx.config.segments.value_tiers)
        .persist()
    )
    try:
        offers, channels, _, _ = catalog_frames(ctx)
        actions = offers.select("offer_id", "offer_type", "category", "price", "unit_cost").join(
            channels.select("offer_id", "channel", "contact_cost"), on="offer_id", how="inner"
        )
        scored = scored_actions(points, actions, model, meta).persist()
        try:
            logged = logged_rows(points, scored)
            policy = candidate_policies(scored, names, ctx.config.offers.allocation.min_net_value)
            results = evaluate_policies(
                logged, policy, names, replicates=cfg.bootstrap_replicates, seed=cfg.seed,
                confidence=ctx.config.measure.confidence, pool_control_channels=cfg.pool_control_channels,
                min_effective_sample=cfg.min_effective_sample,
            )  # fmt: skip
        finally:
            scored.unpersist()
    finally:
        points.unpersist()
    rows = evaluation_rows(
        results,
        str(mv.version),
        cfg.bootstrap_replicates,
        ctx.config.measure.confidence,
        ctx.run_id,
        ctx.as_of,
    )
    frame = ctx.spark.createDataFrame(rows, POLICY_EVALUATIONS_SCHEMA)
    ctx.store.write(frame, "policy_evaluations", ctx.as_of)
    lines = summary_lines(results, excluded)
    for line in lines:
        log.info(line)
    best = max(results, key=lambda r: r.estimates["dr"] - r.contact_cost)
    return StageResult(
        row_counts={"policy_evaluations": len(rows)},
        checks={
            "reward_model": f"uplift v{mv.version}",
            "excluded_without_propensity": str(excluded),
            **{f"dr_{r.policy}": f"{r.estimates['dr']:.4f}" for r in results},
        },
        message="\n".join([*lines, f"  best net of contact cost (DR): {best.policy}"]),
    )
