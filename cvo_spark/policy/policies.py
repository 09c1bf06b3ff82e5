"""Candidate policies, as the probability each would contact with each action at a decision point.

A policy frame has POLICY_COLUMNS (`cvo_spark.policy.ope`): one row per (policy, decision
point, action) the policy may take, with π(a|x) in ``pi``; a decision point without rows
is "no contact". All are built from a *scored actions* frame: every decision point x every
(offer, channel) the catalog allows, with the reward model's ``q_contacted`` and ``q_not``
(expected margin if contacted / if not) and the action's ``contact_cost``.

- ``uplift``: the engine's rule per contact opportunity: the action with the largest
  expected incremental margin net of the contact cost, and no contact when even that is
  not above `min_net_value` (contacting a sleeping dog or a sure thing earns nothing).
- ``response_model``: the practice the engine replaces: always contact, with the action of
  the largest expected margin *if contacted* (propensity x margin), blind to what the
  subscriber would have bought anyway.
- ``tier_rule``: the rule-of-thumb a CVM team starts from: High Value subscribers (as the
  segments stage defines them, `cvo_spark.segments.rules.with_value_tier` with the config's
  thresholds, from the features as of the decision) get the dearest allowed offer, everyone
  else the cheapest; always contact. It has no view on channels: the offer goes out on its
  cheapest channel (lowest contact cost), which is also what the allocation does with the
  same rule (`benchmarks/bench_allocation.py`: a contact's channel price is paid, so among
  an offer's channels of equal value the cheapest wins). Ties: offer_id, then channel.
- ``random``: uniform over the allowed actions, always contact.
- ``no_contact``: never contact (value 0 by definition; its row keeps the table honest).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from cvo_spark.core.config import ValueTiersConfig
from cvo_spark.core.util import require_columns
from cvo_spark.segments.rules import Tier, with_value_tier

SCORED_COLUMNS = ("decision_key", "offer_id", "channel", "q_contacted", "q_not", "contact_cost")
#: What the tier rule needs besides SCORED_COLUMNS.
TIER_COLUMNS = ("price", "is_high_value")
POLICIES = ("uplift", "response_model", "tier_rule", "random", "no_contact")


def _as_policy(rows: DataFrame, name: str, pi: Column) -> DataFrame:
    return rows.select(
        F.lit(name).alias("policy"),
        "decision_key",
        "offer_id",
        "channel",
        pi.alias("pi"),
        "q_contacted",
        "q_not",
        "contact_cost",
    )


def greedy_policy(scored: DataFrame, name: str, score: Column, min_score: float | None = None) -> DataFrame:
    """Per decision point, the one action with the largest `score` (ties: offer_id, channel),
    taken with probability 1 when its score exceeds `min_score` (always when None)."""
    require_columns(scored, SCORED_COLUMNS, f"greedy_policy({name})")
    order = Window.partitionBy("decision_key").orderBy(score.desc(), "offer_id", "channel")
    best = scored.withColumn("_score", score).withColumn("_rank", F.row_number().over(order))
    best = best.where(F.col("_rank") == 1)
    if min_score is not None:
        best = best.where(F.col("_score") > F.lit(min_score))
    return _as_policy(best, name, F.lit(1.0))


def uniform_policy(scored: DataFrame, name: str = "random") -> DataFrame:
    """Every allowed action of each decision point with the same probability; always contacts."""
    require_columns(scored, SCORED_COLUMNS, f"uniform_policy({name})")
    per_point = Window.partitionBy("decision_key")
    return _as_policy(scored, name, 1.0 / F.count(F.lit(1)).over(per_point))


def with_high_value(points: DataFrame, tiers: ValueTiersConfig) -> DataFrame:
    """Add ``is_high_value`` and ``value_tier`` to decision points, exactly as the segments
    stage defines them (same function, same config thresholds), from the point's own
    ``length_of_stay_days`` and ``arpu_3m`` (the features as of the decision, not as of today)."""
    ladder = [Tier(r.name, r.min_arpu_3m, r.min_los_days) for r in tiers.ladder]
    return with_value_tier(points, ladder, tiers.high_value_min_los_days, tiers.high_value_min_arpu_3m)


def tier_rule_policy(scored: DataFrame, name: str = "tier_rule") -> DataFrame:
    """High Value: the dearest allowed offer; everyone else: the cheapest; always one contact,
    on the offer's cheapest channel. Needs SCORED_COLUMNS and TIER_COLUMNS (a null
    ``is_high_value`` counts as not High Value, as in the segments stage)."""
    require_columns(scored, [*SCORED_COLUMNS, *TIER_COLUMNS], f"tier_rule_policy({name})")
    high = F.coalesce(F.col("is_high_value"), F.lit(False))
    offer_rank = F.when(high, -F.col("price")).otherwise(F.col("price"))
    order = Window.partitionBy("decision_key").orderBy(offer_rank, "contact_cost", "offer_id", "channel")
    best = scored.withColumn("_rank", F.row_number().over(order)).where(F.col("_rank") == 1)
    return _as_policy(best, name, F.lit(1.0))


def net_incremental_margin() -> Column:
    """The engine's value of an action: expected incremental margin minus the contact cost."""
    return F.col("q_contacted") - F.col("q_not") - F.col("contact_cost")


def candidate_policies(
    scored: DataFrame, names: tuple[str, ...] = POLICIES, min_net_value: float = 0.0
) -> DataFrame:
    """The named policies (POLICIES) stacked in one frame; 'no_contact' adds no rows.

    Needs SCORED_COLUMNS in `scored`, and TIER_COLUMNS when 'tier_rule' is named."""
    unknown = sorted(set(names) - set(POLICIES))
    if unknown:
        raise ValueError(f"unknown policy {', '.join(unknown)}: choose from {', '.join(POLICIES)}")
    builders = {
        "uplift": lambda: greedy_policy(scored, "uplift", net_incremental_margin(), min_net_value),
        "response_model": lambda: greedy_policy(scored, "response_model", F.col("q_contacted")),
        "tier_rule": lambda: tier_rule_policy(scored, "tier_rule"),
        "random": lambda: uniform_policy(scored, "random"),
    }
    frames = [builders[n]() for n in names if n in builders]
    if not frames:
        return _as_policy(scored.limit(0), "no_contact", F.lit(0.0))
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame)
    return out
