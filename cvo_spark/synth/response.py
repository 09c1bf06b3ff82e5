"""The generator's planted response model: how a subscriber answers an offer, with and without contact.

For a contact of subscriber i with offer o (family f, price P) on channel c on day d, after
n treatment contacts in the `FATIGUE_DAYS` before d:

    p_if_not       = base_rate[f][persona] x activity(d)                 (buys anyway)
    effect         = EFFECT_SCALE x uplift(o) x affinity[f][persona] x price_fit(P / denomination)
                     x new_subscriber x sure_thing x channel[c] / (1 + FATIGUE_PER_CONTACT x n)
    p_if_contacted = min(p_if_not + effect, MAX_ACCEPT)

except for *sleeping dogs*, whom a contact puts off: subscribers whose activity is already
declining towards churn, and long-tenure high spenders (tenure >= `SLEEPING_DOG_TENURE_DAYS`
and expected monthly revenue >= `SLEEPING_DOG_REVENUE_MULTIPLE` x their persona's typical
revenue, so every persona has some): for them

    p_if_contacted = max(p_if_not - (SLEEPING_DOG_LOSS x p_if_not + SLEEPING_DOG_FLOOR), 0).

Every driver is something a model can see in the features: the service mix (persona), the
usual recharge size (price sensitivity), tenure, the revenue trend (decline), ARPU, the
channel and the recent contacts. The four classic response types follow: *persuadables*
(a clear positive effect), *sure things* (a high base rate and a small effect), *lost causes*
(a low base rate and no effect: an offer far above what they recharge, or an offer with
no planted uplift), *sleeping dogs* (a negative effect).

The same expressions serve the generator (`planted_response` on its hidden columns) and
anyone judging a set of decisions (`true_response`, from the `_ground_truth` tables).
No engine code reads any of this: it is the truth the engine is judged against.
"""

from __future__ import annotations

from collections.abc import Mapping

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cvo_spark.core.util import require_columns

#: Scale of every positive effect: a persuadable's effect is a few to ten points of accept rate.
EFFECT_SCALE = 2.0
#: Planted affinity of each offer family per persona (order of `generate.PERSONAS`:
#: voice_sms_heavy, data_digital_heavy, all_round_heavy, light): a multiplier of the effect.
FAMILY_AFFINITY: dict[str, tuple[float, float, float, float]] = {
    "data": (0.3, 1.6, 1.0, 0.9),
    "voice": (1.6, 0.2, 0.8, 1.0),
    "sms": (1.4, 0.2, 0.6, 0.9),
    "digital": (0.2, 1.7, 1.1, 0.5),
    "combo": (0.8, 0.8, 1.6, 0.6),
    "retention": (1.0, 1.0, 1.0, 1.0),
    "loyalty": (1.0, 1.0, 1.0, 1.0),
    "newbie": (1.0, 1.0, 1.0, 1.0),
}
#: Effect multiplier per channel (an app card persuades more than a banking banner).
CHANNEL_EFFECT: dict[str, float] = {
    "sms": 1.0,
    "ussd": 0.8,
    "app": 1.3,
    "ecommerce": 0.9,
    "banking": 0.6,
    "call_centre": 1.2,
    "retail": 0.7,
}
#: Price fit: the offer's price over the subscriber's usual recharge denomination.
PRICE_FIT_BOUNDS: tuple[float, float] = (1.0, 2.5)
PRICE_FIT_EFFECT: tuple[float, float, float] = (1.4, 0.9, 0.25)  # <= 1x, <= 2.5x, above
NEW_SUBSCRIBER_DAYS = 90
NEW_SUBSCRIBER_EFFECT = 1.4
#: A subscriber who buys this family anyway at this rate or more is a sure thing.
SURE_THING_BASE_RATE = 0.12
SURE_THING_EFFECT = 0.2
SLEEPING_DOG_TENURE_DAYS = 5 * 365
SLEEPING_DOG_REVENUE_MULTIPLE = 1.0
SLEEPING_DOG_LOSS = 0.6
SLEEPING_DOG_FLOOR = 0.03
FATIGUE_DAYS = 14
FATIGUE_PER_CONTACT = 0.5
MAX_ACCEPT = 0.95

#: Response types (`response_type` in `_ground_truth/contacts`).
PERSUADABLE, SURE_THING, LOST_CAUSE, SLEEPING_DOG = "persuadable", "sure_thing", "lost_cause", "sleeping_dog"
#: An effect at least this large makes a persuadable.
PERSUADABLE_MIN_EFFECT = 0.02


def _by_family(values: Mapping[str, tuple[float, ...]], family: Column, persona_idx: Column) -> Column:
    expr = F.lit(None).cast("double")
    for fam, per_persona in sorted(values.items()):
        arr = F.array(*[F.lit(float(v)) for v in per_persona])
        expr = F.when(family == fam, arr[persona_idx]).otherwise(expr)
    return expr


def _by_channel(channel: Column) -> Column:
    expr = F.lit(1.0)
    for name, value in sorted(CHANNEL_EFFECT.items()):
        expr = F.when(channel == name, F.lit(value)).otherwise(expr)
    return expr


def is_sleeping_dog(
    activity: Column, tenure_days: Column, monthly_revenue: Column, typical_revenue: Column
) -> Column:
    """Declining towards churn, or a long-tenure high spender for their persona: a contact puts them off."""
    return (activity < F.lit(1.0)) | (
        (tenure_days >= F.lit(SLEEPING_DOG_TENURE_DAYS))
        & (monthly_revenue >= F.lit(SLEEPING_DOG_REVENUE_MULTIPLE) * typical_revenue)
    )


def planted_response(
    *,
    base_rate: Column,
    activity: Column,
    family: Column,
    persona_idx: Column,
    offer_uplift: Column,
    price: Column,
    denomination: Column,
    channel: Column,
    tenure_days: Column,
    monthly_revenue: Column,
    typical_revenue: Column,
    recent_contacts: Column,
) -> tuple[Column, Column, Column]:
    """(p_if_not, p_if_contacted, response_type) of one contact, as column expressions."""
    p_not = base_rate * activity
    ratio = price / F.greatest(denomination, F.lit(1.0))
    price_fit = (
        F.when(ratio <= PRICE_FIT_BOUNDS[0], F.lit(PRICE_FIT_EFFECT[0]))
        .when(ratio <= PRICE_FIT_BOUNDS[1], F.lit(PRICE_FIT_EFFECT[1]))
        .otherwise(F.lit(PRICE_FIT_EFFECT[2]))
    )
    newcomer = F.when(tenure_days < NEW_SUBSCRIBER_DAYS, F.lit(NEW_SUBSCRIBER_EFFECT)).otherwise(F.lit(1.0))
    sure = F.when(p_not >= SURE_THING_BASE_RATE, F.lit(SURE_THING_EFFECT)).otherwise(F.lit(1.0))
    fatigue = 1.0 / (1.0 + F.lit(FATIGUE_PER_CONTACT) * F.coalesce(recent_contacts, F.lit(0)).cast("double"))
    effect = (
        F.lit(EFFECT_SCALE)
        * offer_uplift
        * _by_family(FAMILY_AFFINITY, family, persona_idx)
        * price_fit
        * newcomer
        * sure
        * _by_channel(channel)
        * fatigue
    )
    dog = is_sleeping_dog(activity, tenure_days, monthly_revenue, typical_revenue)
    p_contacted = F.when(
        dog, F.greatest(p_not - (F.lit(SLEEPING_DOG_LOSS) * p_not + F.lit(SLEEPING_DOG_FLOOR)), F.lit(0.0))
    ).otherwise(F.least(p_not + effect, F.lit(MAX_ACCEPT)))
    kind = (
        F.when(dog, F.lit(SLEEPING_DOG))
        .when(p_contacted - p_not >= PERSUADABLE_MIN_EFFECT, F.lit(PERSUADABLE))
        .when(p_not >= SURE_THING_BASE_RATE, F.lit(SURE_THING))
        .otherwise(F.lit(LOST_CAUSE))
    )
    return p_not, p_contacted, kind


def activity_on(day: Column, churn_date: Column, decline_days: Column, floor: float) -> Column:
    """The generator's activity multiplier on a date: 1, declining linearly to `floor` before churn."""
    to_churn = F.datediff(churn_date, day) / decline_days
    return F.when(churn_date.isNull(), F.lit(1.0)).otherwise(
        F.greatest(F.lit(floor), F.least(F.lit(1.0), to_churn))
    )


TRUTH_SUBSCRIBER_COLUMNS = (
    "subscriber_id",
    "persona_idx",
    "activation_date",
    "churn_date",
    "decline_days",
    "expected_monthly_revenue",
    "persona_monthly_revenue",
    "recharge_denomination",
)
TRUTH_OFFER_COLUMNS = ("offer_id", "family", "price", "base_uplift", "base_rate_by_persona")


def true_response(
    decisions: DataFrame,
    subscriber_truth: DataFrame,
    offer_truth: DataFrame,
    activity_floor: float,
    day_col: str = "decision_date",
    recent_contacts_col: str | None = None,
) -> DataFrame:
    """The planted p_if_not, p_if_contacted and response_type of any set of decisions.

    Needs ``subscriber_id, offer_id, channel`` and `day_col` (DATE) in `decisions`, the
    generator's ``_ground_truth/subscribers`` and ``_ground_truth/offers``; optional
    `recent_contacts_col` (treatment contacts in the `FATIGUE_DAYS` before; 0 when absent).
    Adds ``p_if_not``, ``p_if_contacted``, ``true_uplift`` (their difference) and
    ``response_type``; a subscriber or offer the truth does not know gets nulls (left joins).
    """
    require_columns(decisions, ["subscriber_id", "offer_id", "channel", day_col], "true_response")
    require_columns(subscriber_truth, TRUTH_SUBSCRIBER_COLUMNS, "true_response(subscriber_truth)")
    require_columns(offer_truth, TRUTH_OFFER_COLUMNS, "true_response(offer_truth)")
    subs = subscriber_truth.select(
        *[F.col(c).alias(f"_t_{c}") if c != "subscriber_id" else c for c in TRUTH_SUBSCRIBER_COLUMNS]
    )
    offers = F.broadcast(
        offer_truth.select(
            *[F.col(c).alias(f"_t_{c}") if c != "offer_id" else c for c in TRUTH_OFFER_COLUMNS]
        )
    )
    joined = decisions.join(subs, on="subscriber_id", how="left").join(offers, on="offer_id", how="left")
    day = F.col(day_col)
    persona = F.col("_t_persona_idx")
    activity = activity_on(day, F.col("_t_churn_date"), F.col("_t_decline_days"), activity_floor)
    recent = F.col(recent_contacts_col) if recent_contacts_col else F.lit(0)
    p_not, p_contacted, kind = planted_response(
        base_rate=F.col("_t_base_rate_by_persona")[persona],
        activity=activity,
        family=F.col("_t_family"),
        persona_idx=persona,
        offer_uplift=F.col("_t_base_uplift"),
        price=F.col("_t_price"),
        denomination=F.col("_t_recharge_denomination"),
        channel=F.col("channel"),
        tenure_days=F.datediff(day, F.col("_t_activation_date")),
        monthly_revenue=F.col("_t_expected_monthly_revenue"),
        typical_revenue=F.col("_t_persona_monthly_revenue"),
        recent_contacts=recent,
    )
    out = joined.select(
        "*",
        p_not.alias("p_if_not"),
        p_contacted.alias("p_if_contacted"),
        kind.alias("response_type"),
    ).withColumn("true_uplift", F.col("p_if_contacted") - F.col("p_if_not"))
    return out.drop(*[c for c in out.columns if c.startswith("_t_")])
