"""`cvo explain SUBSCRIBER_ID --as-of D`: why this subscriber got these offers, and why not others.

Reads the subscriber's gold rows of as_of (features, segments, scores), the published
`offers`, and re-runs the offer engine on that one subscriber with every excluded
(offer, channel) kept, so each offer not given is listed with the first rule that
excluded it. All Spark work is filtered to one subscriber first, so `collect()` here only
ever sees that subscriber's few dozen rows.

With ``ingest.privacy.pseudonymize`` on, stored ids are HMAC pseudonyms: a raw id is
hashed with the same key before the lookup (an id that already is a pseudonym works
too), and the raw id is never echoed back.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

from pyspark.sql import DataFrame, Row
from pyspark.sql import functions as F

from cvo_spark.core.catalog import offer_channels_frame, offers_frame
from cvo_spark.core.errors import CvoError
from cvo_spark.core.stage import StageContext
from cvo_spark.core.util import first_row
from cvo_spark.offers.allocation import (
    BELOW_THRESHOLD,
    CHOSEN,
    OFFER_CAP,
    OFFER_ON_OTHER_CHANNEL,
    PUSH_CAP,
    SLOTS,
    Constraint,
    binding_constraint,
    decide_with_prices,
)
from cvo_spark.offers.engine import (
    OfferParams,
    allocate_offers,
    allocation_actions,
    candidate_offers,
    consent_by_channel,
    contact_history,
    contact_load,
    control_bucket,
    is_holdout,
    select_offers,
    subscriber_profiles,
)
from cvo_spark.offers.stage import allocation_params, offer_params, run_catalog_of


def _gold(ctx: StageContext, name: str, subscriber_id: str) -> DataFrame:
    return ctx.store.read_as_of(name, ctx.as_of).where(F.col("subscriber_id") == F.lit(subscriber_id))


def _published_for(ctx: StageContext) -> bool:
    """Whether gold `offers` has a partition for as_of (a refused run leaves none)."""
    if not ctx.store.has("offers"):
        return False
    return ctx.store.read_as_of("offers", ctx.as_of).limit(1).count() > 0


def resolve_subscriber_id(ctx: StageContext, given: str) -> str:
    """The stored id of `given`: itself if it has a features row as of D, else (privacy on)
    its HMAC pseudonym; an unknown subscriber is one `CvoError` line."""
    privacy = ctx.config.ingest.privacy
    candidates = [given]
    if privacy.pseudonymize:
        from cvo_spark.core.privacy import load_pseudonym_key

        key = load_pseudonym_key(privacy.key_env)
        candidates.append(hmac.new(key, given.encode("utf-8"), hashlib.sha256).hexdigest())
    found = {
        r["subscriber_id"]
        for r in ctx.store.read_as_of("features", ctx.as_of)
        .where(F.col("subscriber_id").isin(candidates))
        .select("subscriber_id")
        .collect()
    }
    for c in candidates:
        if c in found:
            return c
    shown = "(id withheld: pseudonymisation is on)" if privacy.pseudonymize else repr(given)
    raise CvoError(f"unknown subscriber {shown}: no features row as of {ctx.as_of}")


def _rp(x: float | None) -> str:
    return "n/a" if x is None else f"Rp {x:,.0f}"


def _p(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _offer_lines(rows: list) -> list[str]:
    lines = []
    for r in sorted(rows, key=lambda r: (r["channel"], r["rank"])):
        net = (
            f" · adds {_rp(r['net_value'])} net (uplift {r['uplift'] * 100:+.1f} pts, {r['uplift_source']})"
            if "net_value" in r and r["net_value"] is not None
            else ""
        )
        lines.append(
            f"  {r['channel']:<9} #{r['rank']} {r['offer_id']} ({r['offer_type']}, {_rp(r['price'])}) "
            f"expected value {_rp(r['expected_value'])} · propensity {_p(r['propensity'])}{net}"
        )
        lines += [f"      - {reason}" for reason in (r["reason_codes"] or [])]
    return lines


def _exclusion_lines(rows: list, channels_per_offer: dict[str, int]) -> list[str]:
    """One line per offer when it is out on every channel for the same reason, else one
    line per channel it is out on (it may be shown on the others)."""
    by_offer: dict[str, list] = {}
    for r in rows:
        by_offer.setdefault(r["offer_id"], []).append(r)
    lines = []
    for offer_id in sorted(by_offer):
        out = by_offer[offer_id]
        reasons = {r["exclusion_reason"] for r in out}
        if len(reasons) == 1 and len(out) == channels_per_offer.get(offer_id, len(out)):
            lines.append(f"  {offer_id}: {reasons.pop()}")
        else:
            for r in sorted(out, key=lambda r: r["channel"]):
                lines.append(f"  {offer_id} on {r['channel']}: {r['exclusion_reason']}")
    return lines


def explain(ctx: StageContext, subscriber_id: str) -> str:
    """A readable account of one subscriber's offers as of `ctx.as_of` (see module docstring)."""
    sid = resolve_subscriber_id(ctx, subscriber_id)
    config = ctx.config
    catalog, campaigns = run_catalog_of(config, ctx.as_of)
    params = offer_params(config, catalog)
    features, segments, scores = (_gold(ctx, n, sid) for n in ("features", "segments", "scores"))
    history = ctx.store.table("offer_history").where(F.col("subscriber_id") == F.lit(sid))

    profile_df = (
        subscriber_profiles(features, segments, scores)
        .withColumn("control_bucket", control_bucket(F.col("subscriber_id"), params.campaign_id))
        .withColumn(
            "in_holdout",
            is_holdout(F.col("subscriber_id"), params.universal_holdout_share, params.universal_holdout_key),
        )
    )
    profile = first_row(profile_df, f"explain: profile (gold features, segments, scores) of subscriber {sid}")
    contacts, rejects = contact_history(
        history, ctx.as_of, params.contact_window_days, params.cooldown_days_after_reject
    )
    extra = {}
    if params.allocate:
        consents = (
            ctx.store.table("consents").where(F.col("subscriber_id") == F.lit(sid))
            if ctx.store.has("consents")
            else None
        )
        triggers = (
            ctx.store.table("trigger_offers").where(F.col("subscriber_id") == F.lit(sid))
            if ctx.store.has("trigger_offers")
            else None
        )
        scores_of = _gold(ctx, "offer_scores", sid) if ctx.store.has("offer_scores") else None
        extra = {
            "load": contact_load(
                history,
                triggers,
                ctx.as_of,
                params.push_channels,
                params.contact_window_days,
                params.fatigue_window_days,
            ),
            "consents": consent_by_channel(consents, ctx.as_of),
            "offer_scores": scores_of,
        }
    candidates = candidate_offers(
        profile_df.drop("control_bucket", "in_holdout"),
        offers_frame(ctx.spark, catalog, config.offers.validity_days, campaigns),
        offer_channels_frame(ctx.spark, catalog),
        contacts,
        rejects,
        params,
        keep_excluded=True,
        **extra,
    ).cache()
    excluded: list[Row | dict[str, Any]] = list(
        candidates.where(F.col("exclusion_reason").isNotNull())
        .select("offer_id", "channel", "exclusion_reason")
        .collect()
    )
    allocation_lines: list[str] = []
    if params.allocate:
        excluded += _allocation_exclusions(ctx, candidates, params, sid)
        allocation_lines = _constraint_lines(ctx)

    if _published_for(ctx):
        source, offers = "published", _gold(ctx, "offers", sid).collect()
    else:
        source = "computed now - nothing published for this date (refused or not run)"
        kept = candidates.where(F.col("exclusion_reason").isNull())
        if params.allocate:
            chosen, result = allocate_offers(
                kept, _stored_constraints(ctx)[0], params, allocation_params(config), as_of=ctx.as_of
            )
            offers = select_offers(chosen, ctx.as_of, ctx.run_id, params).collect()
            result.actions.unpersist()
        else:
            offers = select_offers(kept, ctx.as_of, ctx.run_id, params).collect()
    candidates.unpersist()

    # The group the offers were written with, when there are any: the config's control
    # share or campaign id may have changed since they were published.
    # With campaigns a subscriber can be control in one and treatment in another.
    written = {o["group"] for o in offers}
    if profile["in_holdout"]:
        group = "holdout"
    elif written:
        group = ", ".join(sorted(written))
    else:
        group = "control" if profile["control_bucket"] < params.control_share else "treatment"
    persona = profile["persona_name"]
    tier = profile["value_tier"] or "n/a"
    shown_id = sid if sid == subscriber_id else f"{sid[:12]}… (pseudonym)"
    lines = [
        f"subscriber {shown_id} as of {ctx.as_of}",
        f"group: {group}"
        + (
            " (universal holdout: decided and logged, never sent anything by any campaign or trigger)"
            if group == "holdout"
            else " (held out: offers recorded, never sent)"
            if group == "control"
            else ""
        ),
        (
            f"value tier: {tier}{' (High Value)' if profile['is_high_value'] else ''} · "
            f"lifecycle: {profile['lifecycle'] or 'n/a'} · persona: {persona or 'n/a'}"
            + (
                f" (as {base_persona_text(persona)})"
                if persona and base_persona_text(persona) != persona
                else ""
            )
        ),
        (
            f"profile: {profile['payment_type']} · tenure {profile['length_of_stay_days']} days · "
            f"arpu_3m {_rp(profile['arpu_3m'])}"
        ),
        (
            f"scores: p_upsell {_p(profile['p_upsell'])} · p_cross_sell {_p(profile['p_cross_sell'])} · "
            f"p_churn {_p(profile['p_churn'])} · clv_12m {_rp(profile['clv_12m'])}"
        ),
    ]
    for target in ("upsell", "cross_sell", "churn"):
        drivers = profile[f"reasons_{target}"]
        if drivers:
            lines.append(f"  {target} drivers: {', '.join(drivers)}")
    lines.append(f"offers ({source}):")
    lines += _offer_lines(offers) or ["  none"]
    lines.append("excluded:")
    lines += _exclusion_lines(excluded, {o.offer_id: len(o.channels) for o in catalog.offers}) or ["  none"]
    lines += allocation_lines
    lines += _uplift_lines(ctx, sid)
    return "\n".join(lines)


def _stored_constraints(ctx: StageContext) -> tuple[tuple[Constraint, ...], dict[str, float]]:
    """The constraints and shadow prices the batch of as_of solved (gold allocation_constraints).

    A budget's offers are not stored: they come from the catalog's budget of that name.
    """
    if not ctx.store.has("allocation_constraints"):
        return (), {}
    rows = ctx.store.read_as_of("allocation_constraints", ctx.as_of).collect()
    catalog = run_catalog_of(ctx.config, ctx.as_of)[0]  # campaign budgets included
    budgets = {b.name: catalog.budget_offers(b) for b in catalog.budgets}
    constraints = []
    for r in rows:
        key = r["constraint"].split(":", 1)[1]
        offers = budgets.get(key, ()) if r["kind"] == "budget" else ()
        constraints.append(Constraint(r["constraint"], r["kind"], key, r["limit"], offers=offers))
    return tuple(constraints), {r["constraint"]: r["shadow_price"] for r in rows}


def _allocation_exclusions(
    ctx: StageContext, candidates: DataFrame, params: OfferParams, sid: str
) -> list[dict]:
    """Why each kept (offer, channel) of this subscriber was not chosen, re-deciding it
    with the shadow prices the batch found (one subscriber: a few dozen rows)."""
    constraints, prices = _stored_constraints(ctx)
    alloc = allocation_params(ctx.config)
    actions = allocation_actions(candidates, params, ctx.as_of)
    if actions.limit(1).count() == 0:
        return []
    decided = decide_with_prices(actions, constraints, prices, alloc).collect()
    published = set()
    if _published_for(ctx):
        published = {(r["offer_id"], r["channel"]) for r in _gold(ctx, "offers", sid).collect()}
    chosen_on = {r["offer_id"]: r["channel"] for r in decided if r["status"] == CHOSEN}
    push_contacts = first_row(actions.select("push_contacts"), "explain: push contacts of the allocation")[
        "push_contacts"
    ]
    out = []
    for r in decided:
        status, net = r["status"], r["net_value"]
        if status == CHOSEN:
            if published and (r["offer_id"], r["channel"]) not in published:
                reason = "chosen, then cut when a channel capacity or budget was full (lowest value first)"
            else:
                continue
        elif status == OFFER_ON_OTHER_CHANNEL:
            reason = f"one channel per offer: goes out on {chosen_on.get(r['offer_id'], 'another channel')}"
        elif status == OFFER_CAP:
            reason = f"contact cap: {alloc.max_offers} offer(s) worth more chosen (max {alloc.max_offers})"
        elif status == PUSH_CAP:
            reason = (
                f"push contact cap: {push_contacts} push contact(s) in the last "
                f"{params.contact_window_days} days, max {params.max_push_contacts}"
            )
        elif status == SLOTS:
            reason = f"{r['channel']} slots taken by offers worth more"
        elif status == BELOW_THRESHOLD:
            reason = (
                f"do nothing: adds Rp {net:,.0f} net before a contact cost of Rp "
                f"{r['contact_cost']:,.0f}, not over the threshold Rp {alloc.min_net_value:,.0f}"
            )
        else:
            bind = binding_constraint(constraints, prices, r["offer_id"], r["channel"], r["expected_cost"])
            reason = (
                f"cut by {bind[0].name}: shadow price Rp {prices[bind[0].name]:,.0f} per {bind[0].unit} "
                f"outweighs its Rp {net:,.0f}"
                if bind
                else f"not worth a contact (adds Rp {net:,.0f})"
            )
        out.append({"offer_id": r["offer_id"], "channel": r["channel"], "exclusion_reason": reason})
    return out


def _constraint_lines(ctx: StageContext) -> list[str]:
    constraints, prices = _stored_constraints(ctx)
    if not constraints:
        return []
    rows = {r["constraint"]: r for r in ctx.store.read_as_of("allocation_constraints", ctx.as_of).collect()}
    lines = ["constraints of the batch (use / limit, shadow price):"]
    for c in constraints:
        r = rows[c.name]
        lines.append(
            f"  {c.name}: {r['use']:,.0f} / {r['limit']:,.0f} ({c.sense}), "
            f"shadow price Rp {prices.get(c.name, 0.0):,.0f} per {c.unit}"
        )
    return lines


#: How many (offer, channel) pairs the uplift section lists at each end.
UPLIFT_LINES = 5


def _uplift_lines(ctx: StageContext, sid: str) -> list[str]:
    """What contact adds, per (offer, channel), from gold `offer_scores`: the best and the worst."""
    if not ctx.store.has("offer_scores"):
        return ["what contact adds (offer_scores): none for this date (no uplift champion yet)"]
    rows = _gold(ctx, "offer_scores", sid).collect()  # one subscriber: a few dozen rows
    if not rows:
        return ["what contact adds (offer_scores): none for this subscriber and date"]
    ranked = sorted(rows, key=lambda r: (-r["uplift"], r["offer_id"], r["channel"]))
    lines = [
        f"what contact adds (offer_scores, uplift model v{ranked[0]['model_version']}; uplift = accept "
        "probability if contacted minus if not):"
    ]
    shown = ranked if len(ranked) <= 2 * UPLIFT_LINES else ranked[:UPLIFT_LINES] + ranked[-UPLIFT_LINES:]
    for i, r in enumerate(shown):
        if len(ranked) > 2 * UPLIFT_LINES and i == UPLIFT_LINES:
            lines.append(f"  ... {len(ranked) - 2 * UPLIFT_LINES} more pairs ...")
        lines.append(
            f"  {r['offer_id']} on {r['channel']}: uplift {r['uplift'] * 100:+.1f} pts, incremental margin "
            f"{_rp(r['expected_incremental_margin'])} - {'; '.join(r['uplift_reasons'] or [])}"
        )
    return lines


def base_persona_text(name: str) -> str:
    """Python twin of `cvo_spark.offers.engine.base_persona` for one name (display only)."""
    return re.sub(r"\s+\d+$", "", name)
