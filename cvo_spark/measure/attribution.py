"""Attribution: what each of the engine's own published decisions led to, within its validity.

One row per decision of gold `decisions` (any group: treatment, control, holdout) whose
validity window has opened by `as_of`, with what the subscriber did in that window. Pure
transforms; `cvo_spark.measure.stage` reads and writes.

The rule, and why it makes the groups comparable
    A control or holdout subscriber was never contacted, so the channel has nothing to say
    about them; what they did shows only in their own purchases. If treatment were judged
    by the channel's 'accepted' events and control by purchases, the two groups would be
    measured with different instruments, and the uplift would be partly a difference of
    instruments. So the outcome is defined the same way for every group:

    *accepted* = a purchase of the offer's product (``purchases.product_id`` equal to the
    ``offer_id``, ignoring case: the product an accepted offer activates) dated within the
    window, **or** an 'accepted' channel response to the decision dated within the window.

    Only treatment decisions are exported, so in practice only they have responses; a
    response to a control or holdout decision would mean the group was contacted after
    all, and it counts (intention to treat: the outcome never depends on the group label)
    and is reported by the stage (``responses_outside_treatment``).

The window
    From ``valid_from`` to ``valid_to`` (both inclusive, the offer's validity), cut at
    `as_of`: an event counts when its day is in ``[valid_from, min(valid_to, as_of)]``.
    Treatment and control decisions of one day share the same window, so a window still
    open on `as_of` is cut alike for both (``is_window_open`` marks them). Recharges are
    not attributed: a top-up is cash, not the offer's product, and would make almost every
    subscriber an acceptor in either group.

One purchase, one decision
    A purchase falls in the windows of every decision of that subscriber and offer whose
    validity covers its day (the offer decided again on a later day); it is attributed
    to the newest of them (then the smallest decision_id), so it is counted once.

Money per decision
    - ``revenue``: the price of every attributed purchase; an acceptance the channel
      reported without a purchase row counts the offer's catalog price once.
    - ``margin``: revenue - units x unit_cost - incentive (treatment acceptors: every
      contacted acceptor gets it, DECISION_CORE) - contact_cost (treatment only: one
      contact per subscriber, channel and decision day, shared evenly by the decisions it
      carried). Control and holdout pay neither. Displaced regular spend is not subtracted:
      the difference against control already takes out what would have been bought anyway.

Point in time and idempotent: only decisions with ``as_of`` and ``valid_from`` on or before
`as_of`, and events on or before `as_of`, count; nothing depends on run time or order, so
appending later events or later decisions never changes the rows for an earlier `as_of`.
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from cvo_spark.core.tables import partitions_through
from cvo_spark.core.util import require_columns

DECISION_COLUMNS = (
    "decision_id",
    "subscriber_id",
    "offer_id",
    "channel",
    "group",
    "campaign_id",
    "valid_from",
    "valid_to",
    "as_of",
)
TERM_COLUMNS = ("offer_id", "price", "unit_cost", "incentive")
CHANNEL_COST_COLUMNS = ("channel", "contact_cost")

#: The columns `attribute_decisions` returns, in order.
ATTRIBUTED_COLUMNS = (
    *DECISION_COLUMNS,
    "is_window_open",
    "is_accepted",
    "accepted_by_response",
    "purchases",
    "is_delivered",
    "responses",
    "revenue",
    "incentive_cost",
    "contact_cost",
    "margin",
    "has_terms",
)


def filter_decisions_as_of(decisions: DataFrame, as_of: date) -> DataFrame:
    """Decisions published on or before `as_of` whose validity has begun by then.

    Needs ``as_of`` and ``valid_from``. A decision whose window opens after `as_of` has had
    no chance to be answered: it is left out, not counted as a refusal.
    """
    require_columns(decisions, ("as_of", "valid_from"), "filter_decisions_as_of")
    return decisions.where(partitions_through(as_of) & (F.col("valid_from") <= F.lit(as_of)))


def is_offer_product(product_id: Column, offer_id: Column) -> Column:
    """A purchase is of the offer's product when its product_id is the offer_id, ignoring case
    and surrounding blanks (the offer activates a product of its own id, e.g. 'data_boost_5gb')."""
    return F.upper(F.trim(product_id)) == F.upper(offer_id)


def _in_window(day: Column, as_of: date) -> Column:
    return (day >= F.col("valid_from")) & (day <= F.least(F.col("valid_to"), F.lit(as_of)))


def _purchases_per_decision(decisions: DataFrame, purchases: DataFrame, as_of: date) -> DataFrame:
    """decision_id, purchases (count), purchase_revenue: each purchase to one decision only."""
    bought = purchases.where(F.to_date("purchase_ts") <= F.lit(as_of)).select(
        "subscriber_id", "purchase_ts", "product_id", F.col("price").alias("_paid")
    )
    windows = decisions.select("decision_id", "subscriber_id", "offer_id", "valid_from", "valid_to", "as_of")
    matched = bought.join(windows, on="subscriber_id", how="inner").where(
        is_offer_product(F.col("product_id"), F.col("offer_id")) & _in_window(F.to_date("purchase_ts"), as_of)
    )
    newest = Window.partitionBy("subscriber_id", "purchase_ts", "product_id").orderBy(
        F.col("as_of").desc(), F.col("decision_id")
    )
    return (
        matched.withColumn("_rank", F.row_number().over(newest))
        .where(F.col("_rank") == 1)
        .groupBy("decision_id")
        .agg(
            F.count(F.lit(1)).alias("purchases"),
            F.sum(F.coalesce(F.col("_paid"), F.lit(0.0))).alias("purchase_revenue"),
        )
    )


def _responses_per_decision(decisions: DataFrame, responses: DataFrame, as_of: date) -> DataFrame:
    """decision_id, accepted_by_response, is_delivered, responses (events on or before as_of)."""
    window = decisions.select("decision_id", "valid_from", "valid_to")
    events = responses.where(F.to_date("event_ts") <= F.lit(as_of)).join(
        window, on="decision_id", how="inner"
    )
    accepted = (F.col("event") == "accepted") & _in_window(F.to_date("event_ts"), as_of)
    return events.groupBy("decision_id").agg(
        F.max(accepted.cast("int")).cast("boolean").alias("accepted_by_response"),
        F.lit(True).alias("is_delivered"),
        F.count(F.lit(1)).alias("responses"),
    )


def _contact_cost_share() -> Column:
    """The channel's cost of one contact, split evenly over the treatment decisions it carried."""
    message = Window.partitionBy("subscriber_id", "channel", "as_of", "group")
    per_message = F.count(F.lit(1)).over(message)
    return F.when(
        F.col("group") == "treatment", F.coalesce(F.col("_contact_cost"), F.lit(0.0)) / per_message
    ).otherwise(F.lit(0.0))


def attribute_decisions(
    decisions: DataFrame,
    responses: DataFrame | None,
    purchases: DataFrame,
    offer_terms: DataFrame,
    channel_costs: DataFrame,
    as_of: date,
) -> DataFrame:
    """One row per decision whose window opened by `as_of`, with its outcome (columns
    `ATTRIBUTED_COLUMNS`; rule and money in the module docstring).

    Parameters
    ----------
    decisions : gold `decisions` (DECISION_COLUMNS; other columns are ignored).
    responses : silver `channel_responses` (decision_id, event, event_ts), or None when the
        source sends none (then acceptance comes from purchases alone, in every group).
    purchases : silver `purchases` (subscriber_id, purchase_ts, product_id, price).
    offer_terms : offer_id, price, unit_cost, incentive (the catalog); an offer it does not
        know gets 0 for each and ``has_terms`` false.
    channel_costs : channel, contact_cost (the catalog's cost per contact).
    as_of : the measurement date (point in time).
    """
    require_columns(decisions, DECISION_COLUMNS, "attribute_decisions(decisions)")
    require_columns(purchases, ("subscriber_id", "purchase_ts", "product_id", "price"), "attribute_decisions")
    require_columns(offer_terms, TERM_COLUMNS, "attribute_decisions(offer_terms)")
    require_columns(channel_costs, CHANNEL_COST_COLUMNS, "attribute_decisions(channel_costs)")
    base = filter_decisions_as_of(decisions, as_of).select(*DECISION_COLUMNS)
    bought = _purchases_per_decision(base, purchases, as_of)
    if responses is not None:
        require_columns(responses, ("decision_id", "event", "event_ts"), "attribute_decisions(responses)")
        answered = _responses_per_decision(base, responses, as_of)
    else:
        answered = base.sparkSession.createDataFrame(
            [], "decision_id string, accepted_by_response boolean, is_delivered boolean, responses long"
        )
    terms = F.broadcast(
        offer_terms.select(
            "offer_id",
            F.col("price").alias("_price"),
            F.col("unit_cost").alias("_unit_cost"),
            F.col("incentive").alias("_incentive"),
            F.lit(True).alias("has_terms"),
        )
    )
    costs = F.broadcast(channel_costs.select("channel", F.col("contact_cost").alias("_contact_cost")))
    joined = (
        base.join(bought, on="decision_id", how="left")
        .join(answered, on="decision_id", how="left")
        .join(terms, on="offer_id", how="left")
        .join(costs, on="channel", how="left")
    )
    n_bought = F.coalesce(F.col("purchases"), F.lit(0)).cast("long")
    by_response = F.coalesce(F.col("accepted_by_response"), F.lit(False))
    accepted = by_response | (n_bought > 0)
    price, unit_cost, incentive = (
        F.coalesce(F.col(c), F.lit(0.0)) for c in ("_price", "_unit_cost", "_incentive")
    )
    reported_only = by_response & (n_bought == 0)
    revenue = F.coalesce(F.col("purchase_revenue"), F.lit(0.0)) + F.when(reported_only, price).otherwise(0.0)
    units = F.when(reported_only, F.lit(1)).otherwise(n_bought)
    treated = F.col("group") == "treatment"
    out = (
        joined.withColumn("is_window_open", F.col("valid_to") > F.lit(as_of))
        .withColumn("is_accepted", accepted)
        .withColumn("accepted_by_response", by_response)
        .withColumn("purchases", n_bought)
        .withColumn("is_delivered", F.coalesce(F.col("is_delivered"), F.lit(False)))
        .withColumn("responses", F.coalesce(F.col("responses"), F.lit(0)).cast("long"))
        .withColumn("revenue", revenue)
        .withColumn("incentive_cost", F.when(treated & accepted, incentive).otherwise(0.0))
        .withColumn("contact_cost", _contact_cost_share())
        .withColumn("has_terms", F.coalesce(F.col("has_terms"), F.lit(False)))
    )
    margin = F.col("revenue") - units * unit_cost - F.col("incentive_cost") - F.col("contact_cost")
    return out.withColumn("margin", margin).select(*ATTRIBUTED_COLUMNS)
