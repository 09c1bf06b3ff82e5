"""Offer engine on hand-built subscribers: one case per eligibility and contact rule,
hand-computed propensity and expected value, ranking, control group and reasons."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from cvo_spark.core.catalog import offer_channels_frame, offers_frame, parse_catalog
from cvo_spark.core.errors import MissingColumnsError
from cvo_spark.core.schemas import REQUIRED_INPUT_SCHEMAS
from cvo_spark.offers.engine import (
    OFFERS_SCHEMA,
    OfferParams,
    build_offers,
    candidate_offers,
    contact_history,
    control_bucket,
    subscriber_profiles,
)

AS_OF = date(2026, 6, 30)
S, D, INT, L, B = StringType(), DoubleType(), IntegerType(), LongType(), BooleanType()
FEATURES = StructType(
    [
        StructField(n, t)
        for n, t in (
            ("subscriber_id", S),
            ("payment_type", S),
            ("length_of_stay_days", INT),
            ("arpu_3m", D),
            ("data_trend_pct", D),
            ("voice_trend_pct", D),
            ("revenue_trend_pct", D),
            ("quota_low_count", L),
            ("voice_share", D),
            ("digital_share", D),
        )
    ]
)
SEGMENTS = StructType(
    [
        StructField(n, t)
        for n, t in (
            ("subscriber_id", S),
            ("value_tier", S),
            ("is_high_value", B),
            ("lifecycle", S),
            ("persona_name", S),
        )
    ]
)
SCORES = StructType(
    [
        StructField(n, t)
        for n, t in (
            ("subscriber_id", S),
            ("p_upsell", D),
            ("p_cross_sell", D),
            ("p_churn", D),
            ("clv_12m", D),
            ("reasons_upsell", ArrayType(S)),
            ("reasons_cross_sell", ArrayType(S)),
            ("reasons_churn", ArrayType(S)),
        )
    ]
)

FEATURE_DEFAULTS = {
    "payment_type": "prepaid",
    "length_of_stay_days": 400,
    "arpu_3m": 60_000.0,
    "data_trend_pct": None,
    "voice_trend_pct": None,
    "revenue_trend_pct": None,
    "quota_low_count": 0,
    "voice_share": 0.2,
    "digital_share": 0.0,
}
SEGMENT_DEFAULTS = {
    "value_tier": "Gold",
    "is_high_value": False,
    "lifecycle": "base",
    "persona_name": "Digital Active",
}
SCORE_DEFAULTS = {
    "p_upsell": 0.4,
    "p_cross_sell": 0.2,
    "p_churn": 0.1,
    "clv_12m": 1_000_000.0,
    "reasons_upsell": ["arpu_3m"],
    "reasons_cross_sell": [],
    "reasons_churn": ["recency_days"],
}
DEFAULT_PARAMS = OfferParams(allocate=False)  # today's per-channel ranking; the allocation has its own tests


def frames(spark, subs: list[dict]):
    """features, segments, scores frames; a key set to the string 'MISSING_SEGMENT' / 'MISSING_SCORES'
    leaves that subscriber without the row."""

    def rows(schema, defaults, skip):
        out = []
        for s in subs:
            if s.get(skip):
                continue
            values = {**defaults, **{k: v for k, v in s.items() if k in schema.fieldNames()}}
            out.append(tuple(values.get(f.name) for f in schema.fields))
        return spark.createDataFrame(out, schema)

    return (
        rows(FEATURES, FEATURE_DEFAULTS, "no_features"),
        rows(SEGMENTS, SEGMENT_DEFAULTS, "no_segment"),
        rows(SCORES, SCORE_DEFAULTS, "no_scores"),
    )


def history(spark, contacts: list[tuple]):
    """offer_history rows: (subscriber_id, offer_id, channel, contacted_ts, group, accepted, accepted_ts)."""
    return spark.createDataFrame([(*c, 0.0) for c in contacts], REQUIRED_INPUT_SCHEMAS["offer_history"])


def catalog(offers: list[dict], channels=None):
    base = {
        "offer_type": "upsell",
        "category": "data",
        "price": 20000,
        "unit_cost": 5000,
        "channels": ["sms"],
    }
    return parse_catalog(
        {
            "channels": channels or {"sms": {"slots": 1}, "app": {"slots": 3}},
            "offers": [{**base, **o} for o in offers],
        }
    )


def candidates(spark, subs, offers, contacts=(), params=DEFAULT_PARAMS, channels=None):
    cat = catalog(offers, channels)
    f, s, sc = frames(spark, subs)
    c, r = contact_history(
        history(spark, list(contacts)), AS_OF, params.contact_window_days, params.cooldown_days_after_reject
    )
    rows = candidate_offers(
        subscriber_profiles(f, s, sc),
        offers_frame(spark, cat, 7),
        offer_channels_frame(spark, cat),
        c,
        r,
        params,
        keep_excluded=True,
    )
    return {(x["subscriber_id"], x["offer_id"], x["channel"]): x for x in rows.collect()}


def reason(rows, sid, offer, channel="sms"):
    return rows[(sid, offer, channel)]["exclusion_reason"]


# ------------------------------------------------------------------------ eligibility
def test_eligibility_rules_one_case_each(spark):
    offers = [
        {"offer_id": "TIER", "eligibility": {"value_tiers": ["Priority", "Gold"]}},
        {"offer_id": "PERSONA", "eligibility": {"personas": ["Digital Active"]}},
        {"offer_id": "LIFE", "eligibility": {"lifecycle": ["new"]}},
        {"offer_id": "PAY", "eligibility": {"payment_types": ["postpaid"]}},
        {"offer_id": "ARPU", "eligibility": {"min_arpu_3m": 50000, "max_arpu_3m": 100000}},
        {"offer_id": "TENURE", "eligibility": {"min_tenure_days": 90, "max_tenure_days": 365}},
        {"offer_id": "RET", "offer_type": "retention", "price": 10000, "unit_cost": 8000},
    ]
    subs = [
        {
            "subscriber_id": "ok",
            "length_of_stay_days": 200,
            "lifecycle": "new",
            "payment_type": "postpaid",
            "persona_name": "Digital Active 2",
            "p_churn": 0.3,
        },  # numbered persona counts as its base name
        {
            "subscriber_id": "mass",
            "value_tier": "Mass",
            "persona_name": "Legacy Active",
            "arpu_3m": 12_345.0,
            "length_of_stay_days": 30,
        },
        {"subscriber_id": "noseg", "no_segment": True, "arpu_3m": None, "length_of_stay_days": 500},
        {"subscriber_id": "noscore", "no_scores": True},
    ]
    rows = candidates(spark, subs, offers, channels={"sms": {"slots": 10}})
    assert all(
        reason(rows, "ok", o) is None for o in ("TIER", "PERSONA", "LIFE", "PAY", "ARPU", "TENURE", "RET")
    )
    assert reason(rows, "mass", "TIER") == "not eligible: value tier Mass not in [Priority, Gold]"
    assert reason(rows, "mass", "PERSONA") == "not eligible: persona Legacy Active not in [Digital Active]"
    assert reason(rows, "mass", "LIFE") == "not eligible: lifecycle base not in [new]"
    assert reason(rows, "mass", "PAY") == "not eligible: payment type prepaid not in [postpaid]"
    assert reason(rows, "mass", "ARPU") == "not eligible: arpu_3m 12,345 below 50,000"
    assert reason(rows, "mass", "TENURE") == "not eligible: tenure 30 days below 90"
    assert reason(rows, "mass", "RET") == (
        "not eligible: churn risk 0.10 below 0.25 (retention offers are for churn risks)"
    )
    # No segment row and no arpu: fail closed, with 'unknown' in the reason.
    assert reason(rows, "noseg", "TIER") == "not eligible: value tier unknown not in [Priority, Gold]"
    assert reason(rows, "noseg", "ARPU") == "not eligible: arpu_3m unknown below 50,000"
    assert reason(rows, "noseg", "TENURE") == "not eligible: tenure 500 days above 365"
    assert reason(rows, "noscore", "TIER") == "not scored: no upsell score for this subscriber"


# ------------------------------------------------------------------------ contact policy
def test_contact_policy_rules_one_case_each(spark):
    """Price floor, cool-down and contact cap on one small population (one query: fast)."""
    offers = [
        {"offer_id": "CHEAP", "price": 5000, "unit_cost": 1000},
        {"offer_id": "FAIR", "price": 10000, "unit_cost": 1000},  # exactly at the floor: allowed
        {"offer_id": "CHEAP_RET", "offer_type": "retention", "price": 5000, "unit_cost": 4000},
        {"offer_id": "X", "channels": ["sms", "app"]},
    ]
    subs = [
        {"subscriber_id": "hv", "is_high_value": True, "arpu_3m": 200_000.0, "p_churn": 0.5},
        {"subscriber_id": "gold", "is_high_value": False, "arpu_3m": 200_000.0, "p_churn": 0.5},
    ]
    subs += [
        {"subscriber_id": s}
        for s in ("recent", "old", "took", "control", "late_accept", "future", "busy", "calm", "one_slate")
    ]

    def x(sid, ts, group="treatment", acc=False, acc_ts=None):
        return (sid, "X", "app", ts, group, acc, acc_ts)

    def sms(sid, day):
        return (
            sid,
            "OTHER",
            "sms",
            datetime(2026, 6, day, 10),
            "treatment",
            True,
            datetime(2026, 6, day, 11),
        )

    contacts = [
        x("recent", datetime(2026, 6, 20, 9)),
        x("old", datetime(2026, 6, 16, 9)),  # 15 days before as_of: outside the 14-day cool-down
        x("took", datetime(2026, 6, 25, 9), acc=True, acc_ts=datetime(2026, 6, 25, 12)),
        x("control", datetime(2026, 6, 25, 9), group="control"),  # a control contact was never sent
        # accepted only after as_of: as of 2026-06-30 it was not accepted (point in time)
        x("late_accept", datetime(2026, 6, 30, 20), acc=True, acc_ts=datetime(2026, 7, 1, 8)),
        x("future", datetime(2026, 7, 1, 9)),  # after as_of: not known yet
        sms("busy", 24),
        sms("busy", 27),
        sms("busy", 30),
        sms("calm", 23),
        sms("calm", 27),
        sms("calm", 30),  # the 23rd is 8 days back: outside the 7-day window
        sms("one_slate", 29),
        sms("one_slate", 29),
        sms("one_slate", 29),  # one message showing three offers
    ]
    rows = candidates(spark, subs, offers, contacts, channels={"sms": {"slots": 5}, "app": {"slots": 5}})
    # High Value floor: 5% of arpu_3m 200,000 = 10,000; retention offers are spared.
    assert reason(rows, "hv", "CHEAP") == (
        "price floor: 5,000 is under 5% of this High Value subscriber's arpu_3m 200,000"
    )
    assert reason(rows, "hv", "FAIR") is None
    assert reason(rows, "hv", "CHEAP_RET") is None
    assert reason(rows, "gold", "CHEAP") is None
    # Cool-down after a treatment contact not accepted (on any channel: here app, and sms is blocked too).
    cooled = "cool-down: not accepted when offered on {} (14-day cool-down)"
    assert reason(rows, "recent", "X") == cooled.format("2026-06-20")
    assert reason(rows, "recent", "X", "app") == cooled.format("2026-06-20")
    assert reason(rows, "late_accept", "X") == cooled.format("2026-06-30")
    for sid in ("old", "took", "control", "future"):
        assert reason(rows, sid, "X") is None, sid
    # Contact cap: 3 treatment contacts on sms in the last 7 days close sms, not app.
    assert reason(rows, "busy", "X", "sms") == "contact cap: 3 contact(s) on sms in the last 7 days (max 3)"
    assert reason(rows, "busy", "X", "app") is None
    assert reason(rows, "calm", "X", "sms") is None
    assert reason(rows, "one_slate", "X", "sms") is None  # one contact, not three


# ------------------------------------------------------------------------ scoring and ranking
def test_propensity_and_expected_value_by_hand(spark):
    offers = [
        {"offer_id": "UP", "price": 20000, "unit_cost": 5000},
        {"offer_id": "CROSS", "offer_type": "cross_sell", "price": 20000, "unit_cost": 5000},
        {"offer_id": "RET", "offer_type": "retention", "price": 10000, "unit_cost": 8000},
        {"offer_id": "LOY", "offer_type": "loyalty", "price": 10000, "unit_cost": 2000},
    ]
    subs = [
        {
            "subscriber_id": "s",
            "arpu_3m": 40_000.0,
            "p_upsell": 0.4,
            "p_cross_sell": 0.2,
            "p_churn": 0.5,
            "clv_12m": 1_000_000.0,
        },
        {"subscriber_id": "poor", "arpu_3m": 0.0, "p_upsell": 0.4},
    ]
    rows = candidates(spark, subs, offers, channels={"sms": {"slots": 4}})
    up = rows[("s", "UP", "sms")]
    # price factor 1 / (1 + 0.5 x 20,000 / 40,000) = 0.8
    assert up["propensity"] == pytest.approx(0.32)
    assert up["expected_value"] == pytest.approx(0.32 * 15000)
    assert rows[("s", "CROSS", "sms")]["propensity"] == pytest.approx(0.16)
    ret = rows[("s", "RET", "sms")]  # factor 1 / (1 + 0.5 x 0.25) = 0.888..
    assert ret["propensity"] == pytest.approx(0.5 / 1.125)
    assert ret["expected_value"] == pytest.approx(0.5 / 1.125 * 2000 + 0.5 * 1_000_000 * 0.2)
    loy = rows[("s", "LOY", "sms")]
    assert loy["propensity"] == pytest.approx((0.4 + 0.2) / 2 * 0.5 / 1.125)
    assert [rows[("s", o, "sms")]["rank"] for o in ("RET", "UP", "CROSS", "LOY")] == [1, 2, 3, 4]
    # arpu_3m 0 uses the arpu floor 10,000: factor 1 / (1 + 0.5 x 2) = 0.5
    assert rows[("poor", "UP", "sms")]["propensity"] == pytest.approx(0.2)


def test_slots_cut_and_type_weights_reorder(spark):
    offers = [
        {"offer_id": "BIG", "price": 40000, "unit_cost": 10000, "channels": ["sms", "app"]},
        {
            "offer_id": "SMALL",
            "offer_type": "cross_sell",
            "price": 10000,
            "unit_cost": 5000,
            "channels": ["sms", "app"],
        },
    ]
    subs = [{"subscriber_id": "s", "arpu_3m": 100_000.0, "p_upsell": 0.3, "p_cross_sell": 0.3}]
    rows = candidates(spark, subs, offers)
    assert rows[("s", "BIG", "sms")]["rank"] == 1
    assert reason(rows, "s", "SMALL", "sms") == "ranked 2 on sms, which shows 1 offer(s)"
    assert rows[("s", "SMALL", "app")]["rank"] == 2  # app has 3 slots
    weighted = candidates(
        spark, subs, offers, params=OfferParams(allocate=False, type_weights={"cross_sell": 10.0})
    )
    assert weighted[("s", "SMALL", "sms")]["rank"] == 1
    assert reason(weighted, "s", "BIG", "sms") == "ranked 2 on sms, which shows 1 offer(s)"


# ------------------------------------------------------------------------ control group
def test_control_share_within_tolerance_and_stable(spark):
    ids = spark.range(10_000).select(F.format_string("62812%07d", F.col("id")).alias("subscriber_id"))

    def control_ids(campaign: str):
        flagged = ids.where(control_bucket(F.col("subscriber_id"), campaign) < 0.1)
        return {r["subscriber_id"] for r in flagged.collect()}

    first, again, other = control_ids("cvo"), control_ids("cvo"), control_ids("summer")
    assert abs(len(first) / 10_000 - 0.1) < 0.01
    assert first == again  # same subscriber, same campaign: same group on every run
    assert abs(len(other) / 10_000 - 0.1) < 0.01
    assert len(first & other) < 0.2 * len(first)  # another campaign draws another control group


# ------------------------------------------------------------------------ output rows
def test_build_offers_rows_reasons_and_validity(spark):
    offers = [
        {"offer_id": "DATA", "validity_days": 30, "channels": ["sms", "app"]},
        {"offer_id": "DIG", "offer_type": "cross_sell", "category": "digital", "channels": ["app"]},
    ]
    subs = [
        {
            "subscriber_id": "s",
            "data_trend_pct": 0.42,
            "quota_low_count": 3,
            "is_high_value": True,
            "arpu_3m": 150_000.0,
            "digital_share": 0.23,
            "reasons_cross_sell": ["digital_share", "arpu_3m", "x"],
        },
        {"subscriber_id": "quiet", "p_upsell": 0.1},
    ]
    f, s, sc = frames(spark, subs)
    cat = catalog(offers)
    out = build_offers(
        f,
        s,
        sc,
        history(spark, []),
        offers_frame(spark, cat, 7),
        offer_channels_frame(spark, cat),
        AS_OF,
        "run-1",
        OfferParams(allocate=False, control_share=0.5),
    ).offers
    assert [(f.name, f.dataType) for f in out.schema] == [(f.name, f.dataType) for f in OFFERS_SCHEMA]
    got = {(r["subscriber_id"], r["channel"], r["offer_id"]): r for r in out.collect()}
    assert set(got) == {
        ("s", "sms", "DATA"),
        ("s", "app", "DATA"),
        ("s", "app", "DIG"),
        ("quiet", "sms", "DATA"),
        ("quiet", "app", "DATA"),
        ("quiet", "app", "DIG"),
    }
    data = got[("s", "sms", "DATA")]
    # Two reasons from the subscriber's own data at most, then the model's drivers, then the segment.
    assert data["reason_codes"] == [
        "data usage up 42% in the last 30 days",
        "quota ran low 3 time(s) in the last 30 days",
        "upsell model drivers: arpu_3m",
    ]
    assert got[("s", "app", "DIG")]["reason_codes"] == [
        "digital services are 23% of spend",
        "cross-sell model drivers: digital_share, arpu_3m",
        "Digital Active, High Value",
    ]
    quiet = got[("quiet", "sms", "DATA")]["reason_codes"]
    # p_upsell 0.1 x 1 / (1 + 0.5 x 20,000 / 60,000) = 8.6%
    assert quiet == ["upsell model drivers: arpu_3m", "Digital Active, Gold tier", "9% likely to accept"]
    assert all(2 <= len(r["reason_codes"]) <= 3 for r in got.values())
    # Both ends inclusive: a 30-day offer runs 07-01..07-30, a 7-day one 07-01..07-07.
    assert (data["valid_from"], data["valid_to"]) == (date(2026, 7, 1), date(2026, 7, 30))
    assert got[("s", "app", "DIG")]["valid_to"] == date(2026, 7, 7)  # catalog default validity 7
    buckets = {
        r["subscriber_id"]: r["b"]
        for r in f.select("subscriber_id", control_bucket(F.col("subscriber_id"), "cvo").alias("b")).collect()
    }
    for (sid, _, _), row in got.items():  # one group per subscriber, from its hash bucket
        assert row["group"] == ("control" if buckets[sid] < 0.5 else "treatment")
    assert data["run_id"] == "run-1"
    assert data["as_of"] == AS_OF and data["rank"] == 1


def test_missing_columns_are_named(spark):
    f, s, sc = frames(spark, [{"subscriber_id": "a"}])
    with pytest.raises(
        MissingColumnsError, match=r"subscriber_profiles\(segments\): missing column\(s\) lifecycle"
    ):
        subscriber_profiles(f, s.drop("lifecycle"), sc)
    with pytest.raises(MissingColumnsError, match="contact_history: missing column"):
        contact_history(history(spark, []).drop("accepted"), AS_OF, 7, 14)


# ---------------------------------------------------------------- decision core: per-row rules and value
ALLOCATING = OfferParams(
    consent_when_missing={"sms": False, "app": True},
    fatigue_ignored_contacts=3,
    fatigue_window_days=14,
    max_push_contacts=2,
    uplift_fallback_share=0.5,
)


def decision_rows(
    spark, subs, offers, contacts=(), consents=(), triggers=(), offer_scores=None, p=ALLOCATING
):
    from cvo_spark.offers.engine import consent_by_channel, contact_load

    cat = catalog(offers)
    f, s, sc = frames(spark, subs)
    hist = history(spark, list(contacts))
    c, r = contact_history(hist, AS_OF, p.contact_window_days, p.cooldown_days_after_reject)
    consent_df = spark.createDataFrame(
        list(consents), "subscriber_id string, channel string, allowed boolean, updated_ts timestamp"
    )
    trig = spark.createDataFrame(list(triggers), "subscriber_id string, channel string, emitted_at timestamp")
    load = contact_load(hist, trig, AS_OF, p.push_channels, p.contact_window_days, p.fatigue_window_days)
    rows = candidate_offers(
        subscriber_profiles(f, s, sc),
        offers_frame(spark, cat, 7),
        offer_channels_frame(spark, cat),
        c,
        r,
        p,
        keep_excluded=True,
        load=load,
        consents=consent_by_channel(consent_df, AS_OF),
        offer_scores=offer_scores,
    )
    return {(x["subscriber_id"], x["offer_id"], x["channel"]): x for x in rows.collect()}


def test_consent_rest_and_trigger_contacts(spark):
    offers = [{"offer_id": "X", "channels": ["sms", "app"]}]
    subs = [{"subscriber_id": s} for s in ("optout", "unknown", "optin", "tired", "later_optout", "pinged")]

    def ignored(sid, day):
        return (sid, "OTHER", "sms", datetime(2026, 6, day, 10), "treatment", False, None)

    rows = decision_rows(
        spark,
        subs,
        offers,
        contacts=[
            ignored("tired", 18),
            ignored("tired", 22),
            ignored("tired", 28),
            ("pinged", "OTHER", "sms", datetime(2026, 6, 28, 9), "treatment", False, None),
        ],
        consents=[
            ("optout", "sms", True, datetime(2026, 1, 1)),
            ("optout", "sms", False, datetime(2026, 6, 1)),
            ("optin", "sms", True, datetime(2026, 5, 1)),
            ("tired", "sms", True, datetime(2026, 5, 1)),
            ("pinged", "sms", True, datetime(2026, 5, 1)),
            # opted out only after as_of: as of D the consent stands (point in time)
            ("later_optout", "sms", True, datetime(2026, 5, 1)),
            ("later_optout", "sms", False, datetime(2026, 7, 2)),
        ],
        triggers=[
            ("pinged", "sms", datetime(2026, 6, 29, 20)),
            ("pinged", "app", datetime(2026, 6, 29, 21)),
            ("pinged", "sms", datetime(2026, 6, 1, 20)),
        ],  # outside the 7-day window
    )

    def why(sid, ch):
        return rows[(sid, "X", ch)]["exclusion_reason"]

    assert why("optout", "sms") == "no consent for sms"
    assert why("unknown", "sms") == "no consent for sms (none on record; the config denies it when missing)"
    assert why("unknown", "app") is None  # the config allows app when nothing is on record
    assert why("optin", "sms") is None and why("later_optout", "sms") is None
    assert why("tired", "sms") == "rested: ignored 3 contacts in 14 days"
    assert why("tired", "app") is None  # rest is from push contacts only
    # One logged push contact plus one push trigger in the window; the app trigger is not a push.
    assert rows[("pinged", "X", "sms")]["push_contacts"] == 2
    assert rows[("optin", "X", "sms")]["push_contacts"] == 0


def test_net_value_by_hand_with_and_without_an_uplift_score(spark):
    offers = [
        {
            "offer_id": "X",
            "price": 20000,
            "unit_cost": 5000,
            "incentive": 2000,
            "regular_price": 25000,
            "channels": ["app"],
        }
    ]
    subs = [{"subscriber_id": "modelled"}, {"subscriber_id": "assumed", "p_upsell": 0.3, "arpu_3m": 1e12}]
    scores = spark.createDataFrame(
        [("modelled", "X", "app", 0.1, 0.3, 0.2)],
        "subscriber_id string, offer_id string, channel string, uplift double, "
        "p_accept_if_contacted double, p_accept_if_not double",
    )
    rows = decision_rows(spark, subs, offers, consents=[], offer_scores=scores)
    m, a = rows[("modelled", "X", "app")], rows[("assumed", "X", "app")]
    # 0.1 x 15,000 margin - 0.3 x 2,000 incentive - 0.3 x 0.2 x (25,000 - 20,000) displaced = 600
    assert m["net_value"] == pytest.approx(600.0) and m["uplift_source"] == "model"
    assert m["expected_cost"] == pytest.approx(600.0)
    # No score: propensity ~0.3 (huge arpu: no price damping); half assumed incremental:
    # 0.15 x 15,000 - 0.3 x 2,000 - 0.3 x 0.15 x 5,000 = 2,250 - 600 - 225 = 1,425
    assert a["uplift_source"] == "assumed" and a["uplift"] == pytest.approx(0.15, rel=1e-6)
    assert a["net_value"] == pytest.approx(1425.0, rel=1e-6)


def test_build_offers_with_allocation_one_decision_per_offer_and_cap(spark):
    offers = [{"offer_id": f"O{i}", "price": 20000 + 1000 * i, "channels": ["sms", "app"]} for i in range(5)]
    subs = [{"subscriber_id": "s", "p_upsell": 0.5}]
    f, s, sc = frames(spark, subs)
    # Equal values on both channels (no uplift model: assumed); app shows two, so the third goes by sms.
    cat = catalog(offers, channels={"sms": {"slots": 1}, "app": {"slots": 2}})
    p = OfferParams(control_share=0.0)
    from cvo_spark.offers.allocation import AllocationParams

    batch = build_offers(
        f,
        s,
        sc,
        history(spark, []),
        offers_frame(spark, cat, 7),
        offer_channels_frame(spark, cat),
        AS_OF,
        "run-1",
        p,
        alloc=AllocationParams(max_offers=3, sample_share=1.0),
    )
    out = batch.offers.collect()
    batch.release()
    assert len(out) == 3 and len({r["offer_id"] for r in out}) == 3  # three offers, one channel each
    assert {r["offer_id"] for r in out} == {"O2", "O3", "O4"}  # the most valuable (highest margin)
    assert sum(r["channel"] == "sms" for r in out) == 1  # sms shows one
    assert all(r["probability"] == 1.0 and r["net_value"] > 0 for r in out)
    assert all(
        r["reason_codes"][-1].startswith("adds Rp") or any(c.startswith("adds Rp") for c in r["reason_codes"])
        for r in out
    )


# ---------------------------------------------------------------------------- exploration (DESIGN 9)
def exploration_actions(spark, subscribers: int = 300):
    """Every subscriber x 5 offers x (sms, app); a third have no push contact left."""
    rows = [
        (f"s{i:03d}", f"O{o}", ch, "push" if ch == "sms" else "pull", 0 if i % 3 == 0 else 2)
        for i in range(subscribers)
        for o in range(5)
        for ch in ("sms", "app")
    ]
    return spark.createDataFrame(
        rows, "subscriber_id string, offer_id string, channel string, channel_kind string, push_left int"
    )


def test_exploration_draws_one_explorable_action_uniformly_and_logs_its_probability(spark):
    from cvo_spark.offers.engine import with_exploration

    acts = exploration_actions(spark)
    off = with_exploration(acts, OfferParams(), AS_OF).collect()
    assert len(off) == 3000 and all(not r["explored"] and r["probability"] == 1.0 for r in off)

    p = OfferParams(exploration_share=0.3)
    got = with_exploration(acts, p, AS_OF).collect()
    explored = [r for r in got if r["explored"]]
    by_sub: dict[str, list] = {}
    for r in got:
        by_sub.setdefault(r["subscriber_id"], []).append(r)
    # ~30% of 300 subscribers (expected 90, sd 7.9; the bounds are 3.8 sd apart from it).
    assert 60 <= len(explored) <= 120
    for r in explored:
        rows = by_sub[r["subscriber_id"]]
        assert len(rows) == 1  # the explored action replaces the engine's choice
        no_push_left = int(r["subscriber_id"][1:]) % 3 == 0
        # n = explorable actions: 10, or the 5 app ones when no push contact is left.
        assert r["probability"] == pytest.approx(1 / 5 if no_push_left else 1 / 10)
        assert not (no_push_left and r["channel"] == "sms")
    for rows in by_sub.values():
        if not rows[0]["explored"]:
            assert len(rows) == 10 and all(x["probability"] == 1.0 for x in rows)
    # Uniform: every offer drawn, none more than twice its fair share.
    per_offer = {o: sum(r["offer_id"] == o for r in explored) for o in {r["offer_id"] for r in explored}}
    assert len(per_offer) == 5 and max(per_offer.values()) <= 2 * len(explored) / 5
    # A re-run of the day draws the same; the next day draws afresh.
    again = {r["subscriber_id"] for r in with_exploration(acts, p, AS_OF).collect() if r["explored"]}
    tomorrow = {
        r["subscriber_id"] for r in with_exploration(acts, p, date(2026, 7, 1)).collect() if r["explored"]
    }
    today = {r["subscriber_id"] for r in explored}
    assert again == today and tomorrow != today and 60 <= len(tomorrow) <= 120


def test_an_explored_action_is_taken_whatever_its_value_and_cut_last(spark):
    from cvo_spark.offers.allocation import (
        CHOSEN,
        PRICED_OUT,
        REPAIRED,
        AllocationParams,
        Constraint,
        allocate,
    )

    schema = (
        "subscriber_id string, offer_id string, channel string, channel_kind string, slots int, "
        "net_value double, contact_cost double, expected_cost double, group string, push_left int, "
        "explored boolean"
    )
    rows = [
        (
            "e",
            "A",
            "sms",
            "push",
            1,
            -100.0,
            0.0,
            0.0,
            "treatment",
            2,
            True,
        ),  # explored, worth less than nothing
        ("t", "A", "sms", "push", 1, 500.0, 0.0, 0.0, "treatment", 2, False),
        ("u", "A", "sms", "push", 1, -50.0, 0.0, 0.0, "treatment", 2, False),  # not explored: do nothing
    ]
    cap = Constraint("capacity:sms", "channel_capacity", "sms", 1)
    p = AllocationParams(sample_share=1.0, max_iterations=10, tolerance=0.0)
    for greedy in (True, False):
        result = allocate(spark.createDataFrame(rows, schema), [cap], p, greedy=greedy)
        got = {r["subscriber_id"]: r for r in result.actions.collect()}
        result.actions.unpersist()
        assert got["e"]["allocation_status"] == CHOSEN  # exempt from the value threshold ...
        assert got["u"]["allocation_status"] != CHOSEN
        # ... not from capacity: it keeps its contact first (greedy: the repair cuts t; with
        # prices: the capacity's price already turns t away).
        assert got["t"]["allocation_status"] == (REPAIRED if greedy else PRICED_OUT)
        assert result.usage["capacity:sms"] == 1


def test_build_offers_with_exploration_says_so_and_keeps_the_caps(spark):
    from cvo_spark.offers.allocation import AllocationParams

    offers = [{"offer_id": f"O{i}", "price": 20000 + 1000 * i, "channels": ["sms", "app"]} for i in range(4)]
    subs = [{"subscriber_id": f"s{i:02d}", "p_upsell": 0.5} for i in range(40)]
    f, s, sc = frames(spark, subs)
    cat = catalog(offers, channels={"sms": {"slots": 1}, "app": {"slots": 2}})
    p = OfferParams(control_share=0.0, exploration_share=0.5)
    batch = build_offers(
        f,
        s,
        sc,
        history(spark, []),
        offers_frame(spark, cat, 7),
        offer_channels_frame(spark, cat),
        AS_OF,
        "run-1",
        p,
        alloc=AllocationParams(max_offers=3, sample_share=1.0, min_net_value=1e12),  # nothing worth it
    )
    out = batch.offers.collect()
    batch.release()
    # With a threshold nothing clears, only explored subscribers get anything: one action each,
    # its probability 1/8 (4 offers x 2 channels) and the exploration as its first reason.
    assert 10 <= len(out) <= 30
    assert len({r["subscriber_id"] for r in out}) == len(out)
    assert all(r["probability"] == pytest.approx(1 / 8) for r in out)
    assert all(r["reason_codes"][0].startswith("Drawn at random among 8 eligible offers") for r in out)
    assert all(len(r["reason_codes"]) <= 3 for r in out)
