"""Simulated answers to the engine's own decisions, drawn from the planted truth.

The generator cannot write `channel_responses`: they answer decisions the engine makes
later. Once it has published some (gold `decisions`), `simulate_responses` draws each
subscriber's answer from the planted response model (`cvo_spark.synth.response`, read from
the ``_ground_truth`` tables):

- a **treatment** decision was delivered, so the subscriber accepts with
  ``p_if_contacted``; the channel reports 'delivered' on the decision's day, 'opened' for
  about half, then 'accepted' on a day within the offer's validity, or 'declined' for a
  `decline_share` of those who did not accept; an acceptance activates the offer's product,
  so it is also a `purchases` row (product_id = the offer_id in lower case, at the planted
  price);
- a **control** or **holdout** decision was never sent: the subscriber buys the offer's
  product anyway with ``p_if_not``, which shows only as a `purchases` row in the window.

Every draw is a hash of (seed, decision_id, stream): the same decisions and seed give the
same answers whatever the partitioning. ``truth`` keeps, per decision, the planted
probabilities and the draw: what a test compares the engine's measurement with. Only this
module, the generator and judging code read ``_ground_truth``; the engine never does.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cvo_spark.core.schemas import INPUT_SCHEMAS, SUBSCRIBER_CHANNELS
from cvo_spark.core.util import require_columns
from cvo_spark.synth.random_columns import uniform
from cvo_spark.synth.response import true_response

#: Hash streams of the draws (any fixed numbers distinct from each other).
_ACCEPT, _DAY, _SECOND, _OPENED, _DECLINED = 101, 102, 103, 104, 105
#: Seconds after midnight of the decision's day the channel reports delivery: 18:00 at
#: the earliest (exports are picked up the evening they are written).
_DELIVERED_FROM_SECOND = 18 * 3600
OPENED_SHARE = 0.5

DECISION_COLUMNS = (
    "decision_id",
    "subscriber_id",
    "offer_id",
    "channel",
    "group",
    "valid_from",
    "valid_to",
    "as_of",
)


@dataclass(frozen=True)
class SimulatedResponses:
    """What `simulate_responses` draws: bronze rows to write, and the truth behind them."""

    channel_responses: DataFrame  # the channel_responses contract
    purchases: DataFrame  # the purchases contract: acceptances as purchases of the offer's product
    truth: DataFrame  # per decision: p_if_not, p_if_contacted, true_uplift, p_accept, accepted


def _at(day: Column, second: Column) -> Column:
    return F.timestamp_seconds(F.unix_timestamp(day.cast("timestamp")) + second)


def simulate_responses(
    decisions: DataFrame,
    subscriber_truth: DataFrame,
    offer_truth: DataFrame,
    *,
    seed: int,
    activity_floor: float,
    recent_contacts_col: str | None = None,
    decline_share: float = 0.3,
) -> SimulatedResponses:
    """Draw every decision's answer from the planted truth (see the module docstring).

    Parameters
    ----------
    decisions : gold `decisions` (decision_id, subscriber_id, offer_id, channel, group,
        valid_from, valid_to, as_of), any groups.
    subscriber_truth, offer_truth : the generator's ``_ground_truth/subscribers`` and
        ``_ground_truth/offers``.
    seed : the draws' seed.
    activity_floor : the generator's ``ACTIVITY_FLOOR`` (the truth's decline towards churn).
    recent_contacts_col : a column of `decisions` with the subscriber's treatment contacts
        in the fatigue window before the decision (0 when None).
    """
    require_columns(decisions, DECISION_COLUMNS, "simulate_responses")
    extra = [recent_contacts_col] if recent_contacts_col else []
    judged = true_response(
        decisions.select(*DECISION_COLUMNS, *extra).withColumn("decision_date", F.col("as_of")),
        subscriber_truth,
        offer_truth,
        activity_floor,
        recent_contacts_col=recent_contacts_col,
    ).join(F.broadcast(offer_truth.select("offer_id", F.col("price").alias("_price"))), "offer_id", "left")
    key = (F.lit(seed).cast("long"), F.col("decision_id"))
    treated = F.col("group") == "treatment"
    p_accept = F.when(treated, F.col("p_if_contacted")).otherwise(F.col("p_if_not"))
    window_days = F.datediff(F.col("valid_to"), F.col("valid_from")) + 1
    day = F.date_add(F.col("valid_from"), F.floor(uniform(key, _DAY) * window_days).cast("int"))
    moment = _at(day, F.floor(uniform(key, _SECOND) * 86_400).cast("long"))
    drawn = (
        judged.withColumn("p_accept", p_accept)
        .withColumn("accepted", F.coalesce(uniform(key, _ACCEPT) < F.col("p_accept"), F.lit(False)))
        .withColumn("_moment", moment)
    )

    delivered_at = _at(
        F.col("as_of"), _DELIVERED_FROM_SECOND + F.floor(uniform(key, _OPENED, 1) * 3600).cast("long")
    )
    sent = drawn.where(treated)
    events = F.array_compact(
        F.array(
            F.struct(F.lit("delivered").alias("event"), delivered_at.alias("event_ts")),
            F.when(
                uniform(key, _OPENED) < OPENED_SHARE,
                F.struct(
                    F.lit("opened").alias("event"),
                    (delivered_at + F.expr("INTERVAL 30 MINUTES")).alias("event_ts"),
                ),
            ),
            F.when(
                F.col("accepted"),
                F.struct(F.lit("accepted").alias("event"), F.col("_moment").alias("event_ts")),
            ),
            F.when(
                ~F.col("accepted") & (uniform(key, _DECLINED) < decline_share),
                F.struct(F.lit("declined").alias("event"), F.col("_moment").alias("event_ts")),
            ),
        )
    )
    responses = sent.select("decision_id", F.explode(events).alias("_e")).select(
        "decision_id", F.col("_e.event").alias("event"), F.col("_e.event_ts").alias("event_ts")
    )
    channel = F.when(F.col("channel").isin(*SUBSCRIBER_CHANNELS), F.col("channel")).otherwise(F.lit("app"))
    purchases = drawn.where(F.col("accepted")).select(
        "subscriber_id",
        F.col("_moment").alias("purchase_ts"),
        F.lower(F.col("offer_id")).alias("product_id"),
        F.col("_price").alias("price"),
        channel.alias("channel"),
    )
    truth = drawn.select(
        *DECISION_COLUMNS,
        "p_if_not",
        "p_if_contacted",
        "true_uplift",
        "response_type",
        "p_accept",
        "accepted",
    )
    return SimulatedResponses(
        channel_responses=_conform(responses, "channel_responses"),
        purchases=_conform(purchases, "purchases"),
        truth=truth,
    )


def _conform(df: DataFrame, table: str) -> DataFrame:
    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in INPUT_SCHEMAS[table].fields])


def write_simulated_responses(simulated: SimulatedResponses, bronze_dir: str) -> dict[str, int]:
    """Write the draws into a bronze lake (Delta under `bronze_dir`).

    ``channel_responses`` is replaced in one commit; the purchases are appended to
    ``purchases``, only those not already there (its natural key: subscriber_id,
    purchase_ts, product_id), so writing the same draws twice adds nothing. Returns the
    rows of each.
    """
    base = bronze_dir.rstrip("/")
    spark = simulated.purchases.sparkSession
    responses = simulated.channel_responses
    responses.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(
        f"{base}/channel_responses"
    )
    existing = spark.read.format("delta").load(f"{base}/purchases")
    new = simulated.purchases.join(
        existing.select("subscriber_id", "purchase_ts", "product_id"),
        on=["subscriber_id", "purchase_ts", "product_id"],
        how="left_anti",
    ).cache()
    try:
        added = new.count()
        new.write.format("delta").mode("append").save(f"{base}/purchases")
    finally:
        new.unpersist()
    return {
        "channel_responses": spark.read.format("delta").load(f"{base}/channel_responses").count(),
        "purchases": added,
    }


def planted_uplift(truth: DataFrame) -> dict[str, float]:
    """The truth a measurement of these decisions should recover (tiny aggregate).

    ``uplift``: mean of p_if_contacted - p_if_not over the treatment decisions (what treating
    them added, in expectation); ``treatment``/``control``: decisions per group.
    """
    row = truth.agg(
        F.avg(F.when(F.col("group") == "treatment", F.col("true_uplift"))).alias("uplift"),
        F.sum((F.col("group") == "treatment").cast("long")).alias("treatment"),
        F.sum((F.col("group") == "control").cast("long")).alias("control"),
    ).first()
    assert row is not None  # a global aggregate has exactly one row
    return {
        "uplift": float(row["uplift"]),
        "treatment": float(row["treatment"]),
        "control": float(row["control"]),
    }


__all__ = ["SimulatedResponses", "planted_uplift", "simulate_responses", "write_simulated_responses"]
