"""Campaigns as data: which offers run in which campaign today, and can each one measure its goal.

A campaign (config ``offers.campaigns``, `cvo_spark.core.config.CampaignConfig`) has an id,
dates, an audience rule (the catalog's eligibility rule form, `cvo_spark.core.rules`), its
offers, a goal, a control share and an optional budget. A run folds the campaigns into the
catalog it decides with (`run_catalog`):

- an offer of a campaign running on as_of is kept, its eligibility narrowed to the
  campaign's audience (`both_rules`), tagged with the campaign's id and control share;
- an offer named only by campaigns not running on as_of is left out (nobody gets it);
- an offer no campaign names stays in the always-on default campaign (``offers.campaign_id``,
  ``offers.control_share``): with no campaigns configured, the run is what it was.

A campaign budget becomes a catalog budget on its offers (`campaign_budgets`), paced over
its dates like any other.

Power before launch (`power_checks`): for each running campaign with a goal, the audience
(profiles the audience rule admits, less the universal holdout) and the baseline accept
rate (control contacts of offer_history, `baseline_accept_rates`) give the smallest uplift
it can detect (`cvo_spark.core.power`); above the goal it is flagged. Gold
``campaign_power`` keeps one row per campaign and as_of.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BooleanType,
    DateType,
    DoubleType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from cvo_spark.core.catalog import Budget, Catalog, campaign_budget_name
from cvo_spark.core.config import CampaignConfig, OffersConfig, PowerConfig
from cvo_spark.core.power import check_campaign_power
from cvo_spark.core.rules import Eligibility, both_rules
from cvo_spark.core.util import first_row, require_columns
from cvo_spark.offers.engine import base_persona, is_holdout


# ---------------------------------------------------------------------------- catalog of a run
def run_catalog(
    catalog: Catalog,
    campaigns: Sequence[CampaignConfig],
    as_of: date,
    default_campaign_id: str,
    default_control_share: float,
) -> tuple[Catalog, dict[str, tuple[str, float]]]:
    """The catalog a run on `as_of` decides with, and offer_id -> (campaign_id, control_share).

    See the module docstring. Config validation guarantees an offer is in at most one
    campaign running on any day. The catalog's budgets gain the campaigns' (`campaign_budgets`).
    """
    running = [c for c in campaigns if c.active(as_of)]
    named = {o for c in campaigns for o in c.offers}
    offers = []
    assigned: dict[str, tuple[str, float]] = {}
    for offer in catalog.offers:
        campaign = next((c for c in running if offer.offer_id in c.offers), None)
        if campaign is not None:
            narrowed = both_rules(offer.eligibility, campaign.audience)
            offers.append(offer.model_copy(update={"eligibility": narrowed}))
            share = default_control_share if campaign.control_share is None else campaign.control_share
            assigned[offer.offer_id] = (campaign.id, share)
        elif offer.offer_id not in named:
            offers.append(offer)
            assigned[offer.offer_id] = (default_campaign_id, default_control_share)
    budgets = (*catalog.budgets, *campaign_budgets(campaigns))
    # model_copy: no re-validation (a catalog budget may name an offer left out today).
    return catalog.model_copy(update={"offers": tuple(offers), "budgets": budgets}), assigned


def campaign_budgets(campaigns: Sequence[CampaignConfig]) -> tuple[Budget, ...]:
    """Each campaign budget as a catalog budget on the campaign's offers over its dates."""
    return tuple(
        Budget(name=campaign_budget_name(c.id), amount=c.budget, start=c.start, end=c.end, offers=c.offers)
        for c in campaigns
        if c.budget is not None
    )


# ---------------------------------------------------------------------------- audience
def _in(value: Column, allowed: tuple[str, ...] | None) -> Column | None:
    # A null value (no segment row) is in no list: fail closed.
    return None if allowed is None else F.coalesce(value.isin(list(allowed)), F.lit(False))


def _at_least(value: Column, low: float | None) -> Column | None:
    return None if low is None else F.coalesce(value >= F.lit(low), F.lit(False))


def _at_most(value: Column, high: float | None) -> Column | None:
    return None if high is None else F.coalesce(value <= F.lit(high), F.lit(False))


def audience_condition(rule: Eligibility) -> Column:
    """True for the profiles `rule` admits (the catalog's eligibility semantics).

    Needs value_tier, persona_name (a split persona 'Digital Active 2' counts as its base
    name), lifecycle, payment_type, arpu_3m and length_of_stay_days. A null value fails
    a restriction on it; an omitted key does not restrict.
    """
    arpu, tenure = F.col("arpu_3m"), F.col("length_of_stay_days")
    parts = [
        _in(F.col("value_tier"), rule.value_tiers),
        _in(base_persona(F.col("persona_name")), rule.personas),
        _in(F.col("lifecycle"), rule.lifecycle),
        _in(F.col("payment_type"), rule.payment_types),
        _at_least(arpu, rule.min_arpu_3m),
        _at_most(arpu, rule.max_arpu_3m),
        _at_least(tenure, rule.min_tenure_days),
        _at_most(tenure, rule.max_tenure_days),
    ]
    condition = F.lit(True)
    for part in parts:
        if part is not None:
            condition = condition & part
    return condition


AUDIENCE_COLUMNS = (
    "subscriber_id",
    "value_tier",
    "persona_name",
    "lifecycle",
    "payment_type",
    "arpu_3m",
    "length_of_stay_days",
)


def audience_sizes(
    profiles: DataFrame,
    campaigns: Sequence[CampaignConfig],
    holdout_share: float,
    holdout_key: str,
) -> dict[str, int]:
    """campaign id -> subscribers its audience rule admits, less the universal holdout
    (they never get its offers, nor count as its control). One aggregate, one row."""
    if not campaigns:
        return {}
    require_columns(profiles, AUDIENCE_COLUMNS, "audience_sizes")
    reachable = ~is_holdout(F.col("subscriber_id"), holdout_share, holdout_key)
    row = first_row(
        profiles.agg(
            *[
                F.sum((audience_condition(c.audience) & reachable).cast("long")).alias(f"n{i}")
                for i, c in enumerate(campaigns)
            ]
        ),
        "audience_sizes (aggregate of the subscriber profiles)",
    )
    return {c.id: int(row[f"n{i}"] or 0) for i, c in enumerate(campaigns)}


# ---------------------------------------------------------------------------- baseline
def control_accepts_by_offer(history: DataFrame, as_of: date, days: int) -> dict[str, tuple[int, int]]:
    """offer_id -> (control contacts, of them accepted by as_of) over the last `days` days to
    as_of: the accept rate without contact. One tiny aggregate (a row per offer)."""
    require_columns(history, ("offer_id", "contacted_ts", "group", "accepted", "accepted_ts"), "baseline")
    end = F.lit(as_of + timedelta(days=1)).cast("timestamp")
    start = F.lit(as_of - timedelta(days=days - 1)).cast("timestamp")
    accepted = F.coalesce(F.col("accepted"), F.lit(False)) & (
        F.col("accepted_ts").isNull() | (F.col("accepted_ts") < end)
    )
    rows = (
        history.where(
            (F.col("group") == "control") & (F.col("contacted_ts") >= start) & (F.col("contacted_ts") < end)
        )
        .groupBy("offer_id")
        .agg(F.count(F.lit(1)).alias("n"), F.sum(accepted.cast("long")).alias("k"))
        .collect()
    )
    return {r["offer_id"]: (int(r["n"]), int(r["k"] or 0)) for r in rows}


def baseline_accept_rate(
    offers: Sequence[str], by_offer: Mapping[str, tuple[int, int]], min_contacts: int, default: float
) -> tuple[float, str]:
    """(rate, source): the control accept rate over `offers` ('campaign_offers'), else over
    every offer ('all_offers'), when there are at least `min_contacts`; else `default`
    ('default'). Kept strictly inside (0, 1), where the power formula is defined."""
    for source, keys in (("campaign_offers", list(offers)), ("all_offers", list(by_offer))):
        n = sum(by_offer.get(o, (0, 0))[0] for o in keys)
        k = sum(by_offer.get(o, (0, 0))[1] for o in keys)
        if n >= min_contacts:
            return min(max(k / n, 1.0 / (2 * n)), 1.0 - 1.0 / (2 * n)), source
    return default, "default"


# ---------------------------------------------------------------------------- power
CAMPAIGN_POWER_SCHEMA = StructType(
    [
        StructField("as_of", DateType()),
        StructField("campaign_id", StringType()),
        StructField("start", DateType()),
        StructField("end", DateType()),
        StructField("audience_subscribers", LongType()),
        StructField("control_share", DoubleType()),
        StructField("baseline_accept_rate", DoubleType()),
        StructField("baseline_source", StringType()),
        StructField("goal_uplift", DoubleType()),
        StructField("minimum_detectable_uplift", DoubleType()),
        StructField("required_subscribers", LongType()),
        StructField("underpowered", BooleanType()),
        StructField("message", StringType()),
        StructField("run_id", StringType()),
    ]
)


@dataclass(frozen=True)
class PowerSettings:
    """Plain values of config ``offers.power`` (and the default control share)."""

    alpha: float = PowerConfig().alpha
    power: float = PowerConfig().power
    icc: float = PowerConfig().icc
    contacts_per_subscriber: float = PowerConfig().contacts_per_subscriber
    min_baseline_contacts: int = PowerConfig().min_baseline_contacts
    default_accept_rate: float = PowerConfig().default_accept_rate
    default_control_share: float = OffersConfig.model_fields["control_share"].default


def power_row(
    campaign: CampaignConfig,
    audience: int,
    baseline: tuple[float, str],
    s: PowerSettings,
    as_of: date,
    run_id: str,
) -> tuple:
    """One `CAMPAIGN_POWER_SCHEMA` row for a campaign with a goal (``goal.min_uplift``).

    An audience of 0, or a goal no rate can reach (>= 1 - baseline), is underpowered with a
    message saying so; the smallest detectable uplift is null when none is detectable.
    """
    goal = campaign.goal.min_uplift
    if goal is None:
        raise ValueError(f"campaign {campaign.id} has no goal.min_uplift to check power against")
    share = s.default_control_share if campaign.control_share is None else campaign.control_share
    rate, source = baseline
    mde: float | None = None
    needed: int | None = None
    if audience <= 0:
        flagged, message = True, f"campaign {campaign.id}: empty audience, nothing to detect"
    elif share <= 0:
        flagged, message = (
            True,
            f"campaign {campaign.id}: no control group (control_share 0), nothing to detect",
        )
    elif goal >= 1.0 - rate:
        flagged = True
        message = (
            f"campaign {campaign.id}: goal {goal * 100:.1f} pp is not reachable from a baseline "
            f"accept rate of {rate:.1%}"
        )
    else:
        check = check_campaign_power(
            campaign.id,
            audience,
            goal,
            share,
            rate,
            alpha=s.alpha,
            power=s.power,
            contacts_per_subscriber=s.contacts_per_subscriber,
            icc=s.icc,
        )
        flagged, message, needed = check.underpowered, check.message, check.required_subscribers
        mde = None if math.isinf(check.minimum_detectable_uplift) else check.minimum_detectable_uplift
    message += f" (baseline accept rate {rate:.2%} from {source.replace('_', ' ')})"
    return (
        as_of,
        campaign.id,
        campaign.start,
        campaign.end,
        audience,
        float(share),
        float(rate),
        source,
        float(goal),
        mde,
        needed,
        flagged,
        message,
        run_id,
    )


def power_checks(
    profiles: DataFrame,
    history: DataFrame,
    campaigns: Sequence[CampaignConfig],
    as_of: date,
    run_id: str,
    s: PowerSettings,
    *,
    holdout_share: float,
    holdout_key: str,
    baseline_days: int,
) -> list[tuple]:
    """`power_row` of every campaign running on `as_of` with a goal (see the module docstring)."""
    goals = [c for c in campaigns if c.active(as_of) and c.goal.min_uplift is not None]
    if not goals:
        return []
    sizes = audience_sizes(profiles, goals, holdout_share, holdout_key)
    by_offer = control_accepts_by_offer(history, as_of, baseline_days)
    return [
        power_row(
            c,
            sizes[c.id],
            baseline_accept_rate(c.offers, by_offer, s.min_baseline_contacts, s.default_accept_rate),
            s,
            as_of,
            run_id,
        )
        for c in goals
    ]
