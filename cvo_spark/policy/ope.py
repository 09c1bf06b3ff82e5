"""Off-policy evaluation: what a candidate policy would have earned, from logged decisions.

The unit is a *decision point*: a logged contact opportunity i (subscriber, time, features
x_i) at which the logging policy drew an action a_i = (offer, channel) and a group (treatment:
sent; control: chosen and held back), with a known probability p_i (``propensity``, DESIGN
invariant 9), and saw a reward r_i (the margin of an acceptance within the outcome window).
A candidate policy π says, at each decision point, with what probability it would contact
with each (offer, channel); whatever mass is left is "no contact".

The estimand is the policy's *incremental* value per decision point over doing nothing,

    V(π) = E_x [ Σ_a π(a|x) (μ₁(x, a) − μ₀(x, a)) ],

μ₁ the expected reward if contacted with a, μ₀ if a is chosen and not sent (the subscriber
buys that offer anyway). The control rows of the log identify μ₀ exactly as the treatment
rows identify μ₁, so with w_i = π(a_i|x_i) / p_i and s_i = +1 for treatment, −1 for control:

- IPS:   V̂ = (1/n) Σ_i s_i w_i r_i
- SNIPS: V̂ = m̄ · (Σ_T w r / Σ_T w − Σ_C w r / Σ_C w), m̄ = (1/n) Σ_i Σ_a π(a|x_i), the
  policy's contact mass (known exactly); each arm is self-normalised.
- DR:    V̂ = (1/n) Σ_i [ Σ_a π(a|x_i) (q̂₁ − q̂₀)(x_i, a) + s_i w_i (r_i − q̂_{g_i}(x_i, a_i)) ]
- DM:    the first term of DR alone (the reward model's own opinion, for comparison).

Pooling the control arm across channels (``pool_control_channels``). Nobody held back sees
the channel, so μ₀(x, o, c) = μ₀(x, o) does not depend on it: a control row that logged
(o, c') says as much about μ₀ of (o, c) as about (o, c'). The control part of any action
(o, c) is then estimated from every control row of offer o, with weight

    w̃_i = π_o(x_i) / (K_o(x_i) · p_i),   π_o = Σ_c π(o, c | x),

K_o(x) the number of channels on which the logging policy could hold back offer o at x
(``control_channels`` in the log). This is λ(c'|o, x) = 1/K_o spread over the logged
channels, and E[Σ_C w̃ r] = Σ_c' p(control, o, c') · π_o μ₀ / (K_o p(control, o, c')) =
π_o μ₀ exactly *when every one of the K_o channels has positive logging probability*. If
some have none, the K_o counted exceed the channels that can ever be logged, the control
part is scaled down by (supported / K_o) and the incremental value is overstated; so K_o
must count the channels the logging policy really could use (the catalog's, for a logger
that explores uniformly over it). DR's control residual and its DM term then use q̂₀ of
the *offer*, q̂₀(x, o) = Σ_c π(o, c|x) q̂₀(x, o, c) / π_o (the reward model may still
read the channel), so the two cancel exactly as they do per action. For a deterministic
policy over ~30 actions with 3 channels an offer, this triples the control rows the
estimate rests on. The treated arm is not pooled: the channel does change μ₁.

q̂ must not have learnt from the rows it corrects (cross-fitting): the stage uses the uplift
model trained on contacts *before* the evaluation window, which is a sample split by time.
Intervals are a Poisson bootstrap over subscribers (a subscriber's decision points move
together), percentile. The effective sample size (Σw)²/Σw² and the largest weights say how
much of the log the estimate really rests on; actions the policy takes that the log never
took (probability 0 under the logging policy) cannot be evaluated and are reported with the
policy mass they carry, never silently dropped.

Transforms here are DataFrame to DataFrame; only per-policy summaries (a few numbers per
bootstrap replicate) reach the driver.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cvo_spark.core.util import require_columns
from cvo_spark.models.qini import poisson_weight

#: One row per logged decision point.
LOGGED_COLUMNS = (
    "decision_key", "subscriber_id", "offer_id", "channel", "treated", "propensity", "reward",
    "q_contacted", "q_not",
)  # fmt: skip
#: One row per (policy, decision point, contact action it may take) with π(a|x) > 0.
POLICY_COLUMNS = ("policy", "decision_key", "offer_id", "channel", "pi", "q_contacted", "q_not")
#: Optional in a policy frame: the cost of the contact (0 when absent).
CONTACT_COST = "contact_cost"
#: Optional in a logged frame: independent replications of the log (simulations); every
#: estimate is per replicate, and subscribers are resampled within their replicate.
REPLICATE = "replicate"
#: Optional in a logged frame, required when pooling the control arm: K_o(x), the number of
#: channels on which the logging policy could hold back the logged offer at that decision point.
CONTROL_CHANNELS = "control_channels"
#: Estimators reported, in this order.
ESTIMATORS = ("ips", "snips", "dr", "dm")

#: The per-subscriber sums every estimator is a function of (see `_estimates`).
_SUMS = ("n", "ips", "dr", "dm", "mass", "t_w", "t_wr", "c_w", "c_wr", "cost")


@dataclass
class PolicyEstimate:
    """One policy's estimates per decision point, with bootstrap intervals and diagnostics."""

    policy: str
    replicate: int
    decision_points: int
    subscribers: int
    estimates: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    contact_mass: float
    contact_cost: float
    effective_sample_size: float
    matched: int
    #: The control arm alone: (Σ_C w)²/Σ_C w² and its rows with w > 0. The control part of
    #: a deterministic policy's value rests on few rows; this is where its interval is thin.
    control_effective_sample_size: float = 0.0
    matched_control: int = 0
    largest_weights: list[float] = field(default_factory=list)
    unsupported_mass: float = 0.0
    unsupported_actions: list[str] = field(default_factory=list)
    #: True when the policy contacts and its estimate rests on fewer than the configured
    #: minimum of effective decisions (`effective_decisions`): the interval is not to be trusted.
    low_support: bool = False

    @property
    def effective_decisions(self) -> float:
        """What the estimate rests on: the smaller of the whole log's and the control arm's
        effective sample sizes (an incremental value needs both arms; the control arm,
        10% of the log, is usually the thinner)."""
        return min(self.effective_sample_size, self.control_effective_sample_size)


def logged_support(logged: DataFrame, pool_control_channels: bool = False) -> DataFrame:
    """``offer_id, channel, treated_rows, control_rows``: what the log ever did, per action.

    Needs ``offer_id, channel, treated``. With `pool_control_channels`, ``control_rows`` of
    an action counts the control rows of its offer on any channel (what the pooled control
    arm rests on), and an offer held back but never sent on a channel still appears there.
    """
    require_columns(logged, ["offer_id", "channel", "treated"], "logged_support")
    per_action = logged.groupBy("offer_id", "channel").agg(
        F.sum(F.col("treated").cast("long")).alias("treated_rows"),
        F.sum((1 - F.col("treated")).cast("long")).alias("control_rows"),
    )
    if not pool_control_channels:
        return per_action
    per_offer = per_action.groupBy("offer_id").agg(F.sum("control_rows").alias("offer_control_rows"))
    return per_action.join(per_offer, on="offer_id").select(
        "offer_id", "channel", "treated_rows", F.col("offer_control_rows").alias("control_rows")
    )


def _zero_if_null(name: str) -> Column:
    return F.coalesce(F.col(name), F.lit(0.0))


def policy_contributions(
    logged: DataFrame, policy: DataFrame, names: Sequence[str], pool_control_channels: bool = False
) -> DataFrame:
    """Per (policy, decision point): every term the estimators add up.

    Needs LOGGED_COLUMNS in `logged` (``treated`` 1/0, ``propensity`` > 0; CONTROL_CHANNELS
    too with `pool_control_channels`) and POLICY_COLUMNS in `policy` (optional
    ``contact_cost``: what the policy pays per contact). `names` lists the policies: one
    with no rows in `policy` never contacts (e.g. 'no_contact').
    Adds, per policy and decision point: ``w`` (the row's weight: π(a_i|x_i)/p_i, or for a
    pooled control row π_o(x_i)/(K_o p_i), see the module docstring), ``ips``, ``dr``,
    ``dm``, ``mass`` (Σ_a π), the self-normalisation sums ``t_w, t_wr, c_w, c_wr`` and
    ``cost`` (Σ_a π · contact cost). A decision point where the policy puts no mass anywhere
    still counts (all terms 0): "no contact" is a decision, and n is every decision point.
    """
    require_columns(logged, LOGGED_COLUMNS, "policy_contributions(logged)")
    require_columns(policy, POLICY_COLUMNS, "policy_contributions(policy)")
    if pool_control_channels:
        require_columns(logged, [CONTROL_CHANNELS], "policy_contributions(logged, pooled control)")
    if REPLICATE not in logged.columns:
        logged = logged.withColumn(REPLICATE, F.lit(0))
    pol = policy if CONTACT_COST in policy.columns else policy.withColumn(CONTACT_COST, F.lit(0.0))
    per_point = pol.groupBy("policy", "decision_key").agg(
        F.sum(F.col("pi") * (F.col("q_contacted") - F.col("q_not"))).alias("dm"),
        F.sum("pi").alias("mass"),
        F.sum(F.col("pi") * F.coalesce(F.col("contact_cost"), F.lit(0.0))).alias("cost"),
    )
    # π of the logged action, per policy: a join on the action the log took.
    on_logged = pol.select("policy", "decision_key", "offer_id", "channel", F.col("pi").alias("pi_logged"))
    spark = logged.sparkSession
    policies = spark.createDataFrame([(n,) for n in names], "policy string")
    rows = (
        logged.crossJoin(F.broadcast(policies))
        .join(per_point, on=["policy", "decision_key"], how="left")
        .join(on_logged, on=["policy", "decision_key", "offer_id", "channel"], how="left")
    )
    t = F.col("treated").cast("double")
    sign = 2 * t - 1
    w_action = F.coalesce(F.col("pi_logged"), F.lit(0.0)) / F.col("propensity")
    q_control = F.col("q_not")
    if pool_control_channels:
        # π_o and the policy-weighted q̂₀ of the logged *offer*, whatever the channel.
        on_offer = pol.groupBy("policy", "decision_key", "offer_id").agg(
            F.sum("pi").alias("pi_offer"),
            (F.sum(F.col("pi") * F.col("q_not")) / F.sum("pi")).alias("q_not_offer"),
        )
        rows = rows.join(on_offer, on=["policy", "decision_key", "offer_id"], how="left")
        w_pooled = F.coalesce(F.col("pi_offer"), F.lit(0.0)) / (
            F.col(CONTROL_CHANNELS).cast("double") * F.col("propensity")
        )
        w = F.when(F.col("treated") == 1, w_action).otherwise(w_pooled)
        q_control = F.coalesce(F.col("q_not_offer"), F.col("q_not"))
    else:
        w = w_action
    q_logged = F.when(F.col("treated") == 1, F.col("q_contacted")).otherwise(q_control)
    return rows.select(
        "policy",
        REPLICATE,
        "decision_key",
        "subscriber_id",
        "offer_id",
        "channel",
        "treated",
        w.alias("w"),
        (sign * w * F.col("reward")).alias("ips"),
        (_zero_if_null("dm") + sign * w * (F.col("reward") - q_logged)).alias("dr"),
        _zero_if_null("dm").alias("dm"),
        _zero_if_null("mass").alias("mass"),
        (t * w).alias("t_w"),
        (t * w * F.col("reward")).alias("t_wr"),
        ((1 - t) * w).alias("c_w"),
        ((1 - t) * w * F.col("reward")).alias("c_wr"),
        _zero_if_null("cost").alias("cost"),
    )


def _estimates(s: np.ndarray) -> np.ndarray:
    """Estimator values from the column sums `s` (order _SUMS); rows are replicates."""
    n = np.maximum(s[..., 0], 1e-12)
    with np.errstate(invalid="ignore", divide="ignore"):
        treated = np.where(s[..., 5] > 0, s[..., 6] / s[..., 5], 0.0)
        control = np.where(s[..., 7] > 0, s[..., 8] / s[..., 7], 0.0)
    snips = s[..., 4] / n * (treated - control)
    return np.stack([s[..., 1] / n, snips, s[..., 2] / n, s[..., 3] / n], axis=-1)


def _sums(contributions: DataFrame, replicates: int, seed: int) -> dict[tuple[str, int], np.ndarray]:
    """Per (policy, log replicate): the _SUMS over decision points, for the sample (row 0) and each Poisson
    bootstrap replicate over subscribers (rows 1..B)."""
    per_sub = contributions.groupBy("policy", REPLICATE, "subscriber_id").agg(
        F.count(F.lit(1)).cast("double").alias("n"),
        *[F.sum(c).alias(c) for c in _SUMS if c != "n"],
    )
    reps = per_sub.select("*", F.explode(F.sequence(F.lit(0), F.lit(replicates))).alias("_rep"))
    cluster = F.xxhash64(F.lit(seed), F.col(REPLICATE), F.col("_rep"), F.col("subscriber_id"))
    u = F.pmod(cluster, F.lit(1_000_003)) / 1_000_003.0
    weighted = reps.withColumn(
        "_bw", F.when(F.col("_rep") == 0, F.lit(1.0)).otherwise(poisson_weight(u.cast("double")))
    )
    rows = (
        weighted.groupBy("policy", REPLICATE, "_rep")
        .agg(*[F.sum(F.col("_bw") * F.col(c)).alias(c) for c in _SUMS])
        .collect()  # policies x log replicates x (bootstrap replicates + 1) rows of ten sums: small
    )
    out: dict[tuple[str, int], np.ndarray] = {}
    for r in rows:
        arr = out.setdefault((r["policy"], r[REPLICATE]), np.zeros((replicates + 1, len(_SUMS))))
        arr[r["_rep"]] = [float(r[c] or 0.0) for c in _SUMS]
    return out


def evaluate_policies(
    logged: DataFrame,
    policy: DataFrame,
    names: Sequence[str],
    replicates: int = 200,
    seed: int = 7,
    confidence: float = 0.95,
    top_weights: int = 5,
    pool_control_channels: bool = False,
    min_effective_sample: float = 0.0,
) -> list[PolicyEstimate]:
    """IPS, SNIPS, DR and DM of every policy in `policy` on the `logged` decision points.

    See the module docstring for the estimators and for `pool_control_channels` (then
    `logged` needs CONTROL_CHANNELS). Intervals are bootstrap percentiles over
    subscribers (`replicates` Poisson resamples, seeded). Unsupported actions: those with
    π > 0 for which the log holds no treatment or no control row (the two arms an
    incremental value needs; pooled: no control row of the offer on any channel); their
    mass per decision point is reported and the action ids listed. A policy named in
    `names` without rows in `policy` never contacts. ``low_support`` is set on a policy that
    contacts (mass > 0) when its `effective_decisions` fall below `min_effective_sample`:
    a percentile bootstrap of a mean resting on a few dozen large weights misses its tail
    (bench_ope: 74-81% coverage of a nominal 95% at ~20-40 effective decisions).
    """
    logged = logged.persist()
    try:
        contributions = policy_contributions(logged, policy, names, pool_control_channels).persist()
        try:
            sums = _sums(contributions, replicates, seed)
            diag = {
                (r["policy"], r[REPLICATE]): r
                for r in contributions.groupBy("policy", REPLICATE)
                .agg(
                    F.countDistinct("subscriber_id").alias("subscribers"),
                    F.sum("w").alias("sw"),
                    F.sum(F.col("w") * F.col("w")).alias("sw2"),
                    F.sum((F.col("w") > 0).cast("long")).alias("matched"),
                    F.sum(F.col("c_w")).alias("cw"),
                    F.sum(F.col("c_w") * F.col("c_w")).alias("cw2"),
                    F.sum((F.col("c_w") > 0).cast("long")).alias("matched_control"),
                    F.slice(
                        F.sort_array(F.collect_list(F.when(F.col("w") > 0, F.col("w"))), False),
                        1,
                        top_weights,
                    ).alias("largest"),
                )
                .collect()
            }
        finally:
            contributions.unpersist()
        support = logged_support(logged, pool_control_channels)
        unsupported_rows = (
            policy.join(support, on=["offer_id", "channel"], how="left")
            .where(
                (F.coalesce(F.col("treated_rows"), F.lit(0)) == 0)
                | (F.coalesce(F.col("control_rows"), F.lit(0)) == 0)
            )
            .groupBy("policy", "offer_id", "channel")
            .agg(F.sum("pi").alias("mass"))
            .collect()  # actions (offers x channels) per policy: small
        )
    finally:
        logged.unpersist()
    alpha = (1 - confidence) / 2
    out: list[PolicyEstimate] = []
    for name, rep in sorted(sums, key=lambda k: (k[1], list(names).index(k[0]))):
        s = sums[(name, rep)]
        est = _estimates(s)
        point, boot = est[0], est[1:]
        lo = np.quantile(boot, alpha, axis=0) if len(boot) else point
        hi = np.quantile(boot, 1 - alpha, axis=0) if len(boot) else point
        n = s[0, 0]
        d = diag[(name, rep)]
        sw, sw2 = float(d["sw"] or 0.0), float(d["sw2"] or 0.0)
        cw, cw2 = float(d["cw"] or 0.0), float(d["cw2"] or 0.0)
        mine = [r for r in unsupported_rows if r["policy"] == name]
        out.append(
            PolicyEstimate(
                policy=name,
                replicate=int(rep),
                decision_points=int(n),
                subscribers=int(d["subscribers"]),
                estimates={e: float(point[k]) for k, e in enumerate(ESTIMATORS)},
                intervals={e: (float(lo[k]), float(hi[k])) for k, e in enumerate(ESTIMATORS)},
                contact_mass=float(s[0, 4] / max(n, 1.0)),
                contact_cost=float(s[0, 9] / max(n, 1.0)),
                effective_sample_size=(sw * sw / sw2) if sw2 > 0 else 0.0,
                matched=int(d["matched"] or 0),
                control_effective_sample_size=(cw * cw / cw2) if cw2 > 0 else 0.0,
                matched_control=int(d["matched_control"] or 0),
                largest_weights=[float(x) for x in (d["largest"] or [])],
                unsupported_mass=float(sum(r["mass"] for r in mine) / max(n, 1.0)),
                unsupported_actions=sorted(f"{r['offer_id']}/{r['channel']}" for r in mine),
            )
        )
        e = out[-1]
        e.low_support = e.contact_mass > 0 and e.effective_decisions < min_effective_sample
    return out


def estimate_rows(results: Sequence[PolicyEstimate]) -> list[tuple]:
    """(policy, estimator, value, ci_low, ci_high) per policy and estimator: the gold rows' core."""
    return [
        (r.policy, e, r.estimates[e], r.intervals[e][0], r.intervals[e][1])
        for r in results
        for e in ESTIMATORS
    ]
