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
- ``random``: uniform over the allowed actions, always contact.
- ``no_contact``: never contact (value 0 by definition; its row keeps the table honest).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from cvo_spark.core.util import require_columns

SCORED_COLUMNS = ("decision_key", "offer_id", "channel", "q_contacted", "q_not", "contact_cost")
POLICIES = ("uplift", "response_model", "random", "no_contact")


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


def net_incremental_margin() -> Column:
    """The engine's value of an action: expected incremental margin minus the contact cost."""
    return F.col("q_contacted") - F.col("q_not") - F.col("contact_cost")


def candidate_policies(
    scored: DataFrame, names: tuple[str, ...] = POLICIES, min_net_value: float = 0.0
) -> DataFrame:
    """The named policies (POLICIES) stacked in one frame; 'no_contact' adds no rows."""
    unknown = sorted(set(names) - set(POLICIES))
    if unknown:
        raise ValueError(f"unknown policy {', '.join(unknown)}: choose from {', '.join(POLICIES)}")
    builders = {
        "uplift": lambda: greedy_policy(scored, "uplift", net_incremental_margin(), min_net_value),
        "response_model": lambda: greedy_policy(scored, "response_model", F.col("q_contacted")),
        "random": lambda: uniform_policy(scored, "random"),
    }
    frames = [builders[n]() for n in names if n in builders]
    if not frames:
        return _as_policy(scored.limit(0), "no_contact", F.lit(0.0))
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame)
    return out
