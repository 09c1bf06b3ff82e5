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

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cvo_spark.core.catalog import load_checked_catalog, offer_channels_frame, offers_frame
from cvo_spark.core.errors import CvoError
from cvo_spark.core.stage import StageContext
from cvo_spark.offers.engine import (
    candidate_offers,
    contact_history,
    control_bucket,
    select_offers,
    subscriber_profiles,
)
from cvo_spark.offers.stage import offer_params


def _gold(ctx: StageContext, name: str, subscriber_id: str) -> DataFrame:
    return ctx.store.read("gold", name).where(
        (F.col("as_of") == F.lit(ctx.as_of)) & (F.col("subscriber_id") == F.lit(subscriber_id))
    )


def _published_for(ctx: StageContext) -> bool:
    """Whether gold `offers` has a partition for as_of (a refused run leaves none)."""
    if not ctx.store.exists("gold", "offers"):
        return False
    return ctx.store.read("gold", "offers").where(F.col("as_of") == F.lit(ctx.as_of)).limit(1).count() > 0


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
        for r in ctx.store.read("gold", "features")
        .where((F.col("as_of") == F.lit(ctx.as_of)) & F.col("subscriber_id").isin(candidates))
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
        lines.append(
            f"  {r['channel']:<9} #{r['rank']} {r['offer_id']} ({r['offer_type']}, {_rp(r['price'])}) "
            f"expected value {_rp(r['expected_value'])} · propensity {_p(r['propensity'])}"
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
    catalog = load_checked_catalog(config)
    params = offer_params(config)
    features, segments, scores = (_gold(ctx, n, sid) for n in ("features", "segments", "scores"))
    history = ctx.store.read("silver", "offer_history").where(F.col("subscriber_id") == F.lit(sid))

    profile_df = subscriber_profiles(features, segments, scores).withColumn(
        "control_bucket", control_bucket(F.col("subscriber_id"), params.campaign_id)
    )
    profile = profile_df.first()
    contacts, rejects = contact_history(history, ctx.as_of, params.contact_window_days,
                                        params.cooldown_days_after_reject)
    candidates = candidate_offers(
        profile_df.drop("control_bucket"), offers_frame(ctx.spark, catalog, config.offers.validity_days),
        offer_channels_frame(ctx.spark, catalog), contacts, rejects, params, keep_excluded=True,
    ).cache()
    excluded = candidates.where(F.col("exclusion_reason").isNotNull()).select(
        "offer_id", "channel", "exclusion_reason").collect()

    if _published_for(ctx):
        source, offers = "published", _gold(ctx, "offers", sid).collect()
    else:
        source = "computed now - nothing published for this date (refused or not run)"
        offers = select_offers(candidates, ctx.as_of, ctx.run_id, params).collect()
    candidates.unpersist()

    # The group the offers were written with, when there are any: the config's control
    # share or campaign id may have changed since they were published.
    written = {o["group"] for o in offers}
    if len(written) == 1:
        group = written.pop()
    else:
        group = "control" if profile["control_bucket"] < params.control_share else "treatment"
    persona = profile["persona_name"]
    tier = profile["value_tier"] or "n/a"
    shown_id = sid if sid == subscriber_id else f"{sid[:12]}… (pseudonym)"
    lines = [
        f"subscriber {shown_id} as of {ctx.as_of}",
        f"group: {group}" + (" (held out: offers recorded, never sent)" if group == "control" else ""),
        (
            f"value tier: {tier}{' (High Value)' if profile['is_high_value'] else ''} · "
            f"lifecycle: {profile['lifecycle'] or 'n/a'} · persona: {persona or 'n/a'}"
            + (f" (as {base_persona_text(persona)})" if persona and base_persona_text(persona) != persona else "")
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
    lines += _uplift_lines(ctx, sid)
    return "\n".join(lines)


#: How many (offer, channel) pairs the uplift section lists at each end.
UPLIFT_LINES = 5


def _uplift_lines(ctx: StageContext, sid: str) -> list[str]:
    """What contact adds, per (offer, channel), from gold `offer_scores`: the best and the worst."""
    if not ctx.store.exists("gold", "offer_scores"):
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
