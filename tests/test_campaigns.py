"""Campaigns as data, the universal holdout, power before launch, and trigger decisions in the log.

Hand-built inputs: a few subscribers whose holdout membership is read from the hash itself
(so the tests do not depend on which ids happen to fall in it), a catalog of three offers,
and a stream sink called directly with a static micro-batch (replayed on purpose).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from cvo_spark.core.catalog import load_checked_catalog, offer_channels_frame, offers_frame, parse_catalog
from cvo_spark.core.config import CampaignConfig, parse_config
from cvo_spark.core.errors import ConfigError
from cvo_spark.core.io import TableStore
from cvo_spark.core.power import minimum_detectable_uplift
from cvo_spark.core.schemas import REQUIRED_INPUT_SCHEMAS
from cvo_spark.core.stage import StageContext
from cvo_spark.offers.campaigns import PowerSettings, power_checks, run_catalog
from cvo_spark.offers.engine import OfferParams, build_offers, is_holdout, with_group
from cvo_spark.offers.publish import DECISIONS_COLUMNS, decision_rows, export_channels
from cvo_spark.pipeline import run_stage
from cvo_spark.stream.job import TriggerOfferSink
from cvo_spark.stream.triggers import TriggerRules, select_trigger_decisions

AS_OF = date(2026, 6, 30)
KEY = "test-holdout-key"


def ids(spark, n: int):
    return spark.range(n).select(F.format_string("m%05d", F.col("id")).alias("subscriber_id"))


def holdout_flags(spark, sids: list[str], share: float, key: str = KEY) -> dict[str, bool]:
    df = spark.createDataFrame([(s,) for s in sids], "subscriber_id string")
    rows = df.select("subscriber_id", is_holdout(F.col("subscriber_id"), share, key).alias("h")).collect()
    return {r["subscriber_id"]: r["h"] for r in rows}


def pick(spark, held: int, free: int, share: float = 0.5) -> tuple[list[str], list[str]]:
    """`held` subscriber ids in the holdout at `share` and `free` ids not in it."""
    flags = holdout_flags(spark, [f"m{i:05d}" for i in range(64)], share)
    yes = sorted(s for s, h in flags.items() if h)[:held]
    no = sorted(s for s, h in flags.items() if not h)[:free]
    assert len(yes) == held and len(no) == free
    return yes, no


# ----------------------------------------------------------------------------- holdout hash
def test_holdout_is_stable_across_runs_and_independent_of_campaign(spark):
    n = 4000
    a = OfferParams(
        campaign_id="camp_a", control_share=0.2, universal_holdout_share=0.05, universal_holdout_key=KEY
    )
    b = replace(a, campaign_id="camp_b")
    subs = ids(spark, n)
    ga = with_group(subs, a).select("subscriber_id", F.col("group").alias("ga"))
    gb = with_group(subs, b).select("subscriber_id", F.col("group").alias("gb"))
    again = with_group(ids(spark, n).repartition(3), a).select("subscriber_id", F.col("group").alias("ga2"))
    other_key = with_group(subs, replace(a, universal_holdout_key="another-key")).select(
        "subscriber_id", F.col("group").alias("gk")
    )
    raw_control_a = F.pmod(F.xxhash64(F.lit("camp_a"), F.col("subscriber_id")), F.lit(1_000_000)) < 200_000
    row = (
        ga.join(gb, "subscriber_id", how="inner")
        .join(again, "subscriber_id", how="inner")
        .join(other_key, "subscriber_id", how="inner")
        .agg(
            F.sum(((F.col("ga") == "holdout") != (F.col("gb") == "holdout")).cast("int")).alias(
                "campaign_moves"
            ),
            F.sum((F.col("ga") != F.col("ga2")).cast("int")).alias("rerun_moves"),
            F.sum((F.col("ga") == "holdout").cast("int")).alias("holdout"),
            F.sum((F.col("ga") == "control").cast("int")).alias("control_a"),
            F.sum(((F.col("ga") == "control") & (F.col("gb") == "control")).cast("int")).alias(
                "both_controls"
            ),
            F.sum(((F.col("ga") == "holdout") & raw_control_a).cast("int")).alias("holdout_in_raw_control"),
            F.sum(((F.col("ga") == "holdout") & (F.col("gk") == "holdout")).cast("int")).alias(
                "same_other_key"
            ),
        )
        .first()
    )
    # The same subscribers whatever the campaign, and on a re-run (another partitioning).
    assert row["campaign_moves"] == 0
    assert row["rerun_moves"] == 0
    # 5% +- 3 sd of 4000 draws; control: 20% of the other 95%.
    assert 0.04 <= row["holdout"] / n <= 0.06
    assert 0.175 <= row["control_a"] / (n - row["holdout"]) <= 0.225
    # Independent of the campaign hashes: about 20% of the holdout would have been camp_a's
    # control (40 of 200; 3 sd ~ 17), and camp_a / camp_b controls overlap by about 4%.
    assert 0.12 <= row["holdout_in_raw_control"] / row["holdout"] <= 0.28
    assert 0.025 <= row["both_controls"] / (n - row["holdout"]) <= 0.06
    # Another key draws another holdout (overlap about 5% of it, not all of it).
    assert row["same_other_key"] <= 0.2 * row["holdout"]


# ----------------------------------------------------------------------------- batch: campaigns + holdout
FEATURES_DDL = (
    "subscriber_id string, payment_type string, length_of_stay_days int, arpu_3m double, "
    "data_trend_pct double, voice_trend_pct double, revenue_trend_pct double, quota_low_count long, "
    "voice_share double, digital_share double"
)
SEGMENTS_DDL = (
    "subscriber_id string, value_tier string, is_high_value boolean, lifecycle string, persona_name string"
)
SCORES_DDL = (
    "subscriber_id string, p_upsell double, p_cross_sell double, p_churn double, clv_12m double, "
    "reasons_upsell array<string>, reasons_cross_sell array<string>, reasons_churn array<string>"
)
CATALOG = {
    "channels": {"sms": {"slots": 1}, "app": {"slots": 3}},
    "offers": [
        {
            "offer_id": o,
            "offer_type": "upsell",
            "category": "data",
            "price": 20000,
            "unit_cost": 5000,
            "channels": ch,
        }
        for o, ch in (("OFF_A", ["app"]), ("OFF_B", ["app"]), ("OFF_C", ["sms", "app"]))
    ],
}


def campaign(**kw) -> CampaignConfig:
    base = {"id": "camp_a", "start": date(2026, 6, 1), "end": date(2026, 7, 31), "offers": ["OFF_A"]}
    return CampaignConfig.model_validate({**base, **kw})


def batch_frames(spark, tiers: dict[str, str]):
    feats = [(s, "prepaid", 400, 60_000.0, None, None, None, 0, 0.2, 0.0) for s in tiers]
    segs = [(s, t, False, "base", "Digital Active") for s, t in tiers.items()]
    scores = [(s, 0.4, 0.2, 0.1, 1_000_000.0, [], [], []) for s in tiers]
    return (
        spark.createDataFrame(feats, FEATURES_DDL),
        spark.createDataFrame(segs, SEGMENTS_DDL),
        spark.createDataFrame(scores, SCORES_DDL),
    )


def test_campaign_fold_narrows_audience_tags_rows_and_drops_offers_of_campaigns_not_running():
    cat = parse_catalog(CATALOG)
    running = campaign(audience={"value_tiers": ["Gold"]}, control_share=0.3, budget=1_000_000)
    later = campaign(id="camp_b", start=date(2026, 8, 1), end=date(2026, 8, 31), offers=["OFF_B"])
    folded, assigned = run_catalog(cat, [running, later], AS_OF, "cvo", 0.1)
    assert folded.offer_ids == ("OFF_A", "OFF_C")  # OFF_B: its campaign starts in August
    assert assigned == {"OFF_A": ("camp_a", 0.3), "OFF_C": ("cvo", 0.1)}
    assert folded.offer("OFF_A").eligibility.value_tiers == ("Gold",)
    assert [(b.name, b.amount, b.offers) for b in folded.budgets] == [
        ("campaign_camp_a", 1_000_000, ("OFF_A",))
    ]
    # No campaign: the catalog as it was, everything in the default campaign.
    same, default = run_catalog(cat, [], AS_OF, "cvo", 0.1)
    assert same.offer_ids == cat.offer_ids and set(default.values()) == {("cvo", 0.1)}


def test_holdout_gets_no_exported_offer_but_is_logged_and_campaign_rows_carry_their_campaign(spark, tmp_path):
    held, free = pick(spark, held=2, free=2)
    tiers = {held[0]: "Gold", held[1]: "Mass", free[0]: "Gold", free[1]: "Mass"}
    features, segments, scores = batch_frames(spark, tiers)
    cat = parse_catalog(CATALOG)
    folded, assigned = run_catalog(cat, [campaign(audience={"value_tiers": ["Gold"]})], AS_OF, "cvo", 0.0)
    params = OfferParams(control_share=0.0, universal_holdout_share=0.5, universal_holdout_key=KEY)
    history = spark.createDataFrame([], REQUIRED_INPUT_SCHEMAS["offer_history"])
    batch = build_offers(
        features,
        segments,
        scores,
        history,
        offers_frame(spark, folded, 7, assigned),
        offer_channels_frame(spark, folded),
        AS_OF,
        "run-1",
        params,
        consents=None,
    )
    offers = batch.offers.cache()
    rows = {(r["subscriber_id"], r["offer_id"]): (r["group"], r["campaign_id"]) for r in offers.collect()}
    batch.release()
    # OFF_A (camp_a, Gold only) for the Gold ones; OFF_B and OFF_C (no campaign: the default) for all.
    gold, everyone = (held[0], free[0]), (*held, *free)
    assert set(rows) == {(s, "OFF_A") for s in gold} | {(s, o) for s in everyone for o in ("OFF_B", "OFF_C")}
    for (sid, offer_id), (group, campaign_id) in rows.items():
        assert group == ("holdout" if sid in held else "treatment"), (sid, offer_id)
        assert campaign_id == ("camp_a" if offer_id == "OFF_A" else "cvo")

    paths = export_channels(offers, str(tmp_path / "exports"), AS_OF, ["sms", "app"], "jsonl")
    exported = [json.loads(line) for p in paths.values() for line in Path(p).read_text().splitlines()]
    assert {e["subscriber_id"] for e in exported} == set(free)
    assert not {e["subscriber_id"] for e in exported} & set(held)

    log = decision_rows(offers, scores, "cvo", None).collect()
    assert sorted(
        (r["subscriber_id"], r["offer_id"], r["group"]) for r in log if r["group"] == "holdout"
    ) == sorted((s, o, "holdout") for s, o in rows if s in held)
    assert {r["campaign_id"] for r in log if r["offer_id"] == "OFF_A"} == {"camp_a"}
    assert all(r["source"] == "batch" and r["event_ts"] is None for r in log)
    offers.unpersist()


# ----------------------------------------------------------------------------- power before launch
def power_inputs(spark, n: int, priority: int):
    profiles = ids(spark, n).select(
        "subscriber_id",
        F.lit("prepaid").alias("payment_type"),
        F.lit(60_000.0).alias("arpu_3m"),
        F.lit(400).alias("length_of_stay_days"),
        F.when(F.substring("subscriber_id", 2, 5).cast("int") < priority, F.lit("Priority"))
        .otherwise(F.lit("Mass"))
        .alias("value_tier"),
        F.lit("Digital Active 2").alias("persona_name"),
        F.lit("base").alias("lifecycle"),
    )
    t0 = datetime(2026, 6, 10, 9)
    # 200 control contacts of OFF_A in the window, 20 accepted: a 10% baseline.
    history = spark.createDataFrame(
        [
            (
                f"h{i:03d}",
                "OFF_A",
                "app",
                t0 + timedelta(minutes=i),
                "control",
                i < 20,
                t0 + timedelta(days=1),
                0.0,
            )
            for i in range(200)
        ]
        + [("h999", "OFF_A", "app", t0 - timedelta(days=200), "control", True, t0, 0.0)],  # outside 90 days
        REQUIRED_INPUT_SCHEMAS["offer_history"],
    )
    return profiles, history


def test_power_check_flags_a_campaign_too_small_for_its_goal_and_not_a_big_enough_one(spark):
    profiles, history = power_inputs(spark, n=3000, priority=60)
    small = campaign(
        id="small", audience={"value_tiers": ["Priority"]}, goal={"min_uplift": 0.05}, control_share=0.5
    )
    big = campaign(id="big", offers=["OFF_B"], goal={"min_uplift": 0.05}, control_share=0.5)
    no_goal = campaign(id="no_goal", offers=["OFF_C"])
    s = PowerSettings(icc=0.0, min_baseline_contacts=100, default_accept_rate=0.2)
    rows = power_checks(
        profiles,
        history,
        [small, big, no_goal],
        AS_OF,
        "run",
        s,
        holdout_share=0.0,
        holdout_key=KEY,
        baseline_days=90,
    )
    by_id = {
        r[1]: dict(
            zip(
                ("audience", "share", "rate", "source", "goal", "mde", "needed", "flag", "msg"),
                r[4:13],
                strict=True,
            )
        )
        for r in rows
    }
    assert set(by_id) == {"small", "big"}  # no goal: no power check
    # small: 60 Priority subscribers, baseline 20/200 = 10% from its own offer's control contacts.
    assert (by_id["small"]["audience"], by_id["small"]["rate"], by_id["small"]["source"]) == (
        60,
        0.1,
        "campaign_offers",
    )
    assert by_id["small"]["flag"] is True
    assert by_id["small"]["mde"] > 0.05
    assert by_id["small"]["needed"] > 60
    assert "campaign small" in by_id["small"]["msg"] and "> goal 5.0 pp" in by_id["small"]["msg"]
    # big: all 3000; OFF_B has no control contacts, so every offer's (the same 10%). By hand:
    # 1500 per arm, sd of the difference sqrt(2 x 0.09 / 1500) = 1.1 pp, x (1.96 + 0.84) ~ 3.1 pp.
    assert (by_id["big"]["audience"], by_id["big"]["source"]) == (3000, "all_offers")
    assert by_id["big"]["flag"] is False
    assert 0.028 <= by_id["big"]["mde"] <= 0.034
    assert by_id["big"]["mde"] == pytest.approx(minimum_detectable_uplift(3000, 0.5, 0.1, icc=0.0))
    # No history at all: the stated default rate; the holdout leaves the audience.
    empty = history.limit(0)
    rows = power_checks(
        profiles, empty, [big], AS_OF, "run", s, holdout_share=0.05, holdout_key=KEY, baseline_days=90
    )
    assert rows[0][6:8] == (0.2, "default")
    assert 2800 <= rows[0][4] <= 2900


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("campaigns", "named"),
    [
        (
            [{"id": "a", "start": "2026-06-01", "end": "2026-06-30", "offers": ["X"], "gaol": {}}],
            "offers.campaigns.0.gaol: unknown key",
        ),
        (
            [
                {
                    "id": "a",
                    "start": "2026-06-01",
                    "end": "2026-06-30",
                    "offers": ["X"],
                    "audience": {"tier": ["Gold"]},
                }
            ],
            "offers.campaigns.0.audience.tier: unknown key",
        ),
        (
            [{"id": "a", "start": "2026-06-30", "end": "2026-06-01", "offers": ["X"]}],
            "end 2026-06-01 is before start",
        ),
        (
            [
                {"id": "a", "start": "2026-06-01", "end": "2026-06-30", "offers": ["X"]},
                {"id": "b", "start": "2026-06-15", "end": "2026-07-30", "offers": ["X"]},
            ],
            "campaigns[1] (b).offers: X is also in campaign a on overlapping dates",
        ),
        (
            [{"id": "cvo", "start": "2026-06-01", "end": "2026-06-30", "offers": ["X"]}],
            "duplicate campaign id 'cvo'",
        ),
        (
            [
                {
                    "id": "a",
                    "start": "2026-06-01",
                    "end": "2026-06-30",
                    "offers": ["X"],
                    "goal": {"min_uplift": 0},
                }
            ],
            "goal.min_uplift",
        ),
    ],
)
def test_bad_campaign_config_fails_with_one_line_naming_the_key(campaigns, named):
    with pytest.raises(ConfigError) as err:
        parse_config({"offers": {"campaigns": campaigns}}, "test.yaml")
    assert named in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("campaign_kw", "named"),
    [
        ({"offers": ["NO_SUCH_OFFER"]}, "offers.campaigns[0] (a).offers: unknown offer_id 'NO_SUCH_OFFER'"),
        (
            {"audience": {"value_tiers": ["Platinum"]}},
            "offers.campaigns[0] (a).audience.value_tiers: unknown name 'Platinum'",
        ),
    ],
)
def test_campaign_naming_what_the_catalog_or_segments_lack_fails_clearly(campaign_kw, named):
    c = {"id": "a", "start": "2026-06-01", "end": "2026-06-30", "offers": ["DATA_BOOST_5GB"], **campaign_kw}
    config = parse_config({"offers": {"campaigns": [c]}})
    with pytest.raises(
        ConfigError,
        match=named.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]"),
    ):
        load_checked_catalog(config)


def test_no_campaigns_configured_keeps_the_single_default_campaign():
    config = parse_config({})
    assert config.offers.campaigns == () and config.offers.campaign_id == "cvo"
    catalog = load_checked_catalog(config)
    folded, assigned = run_catalog(catalog, config.offers.campaigns, AS_OF, "cvo", 0.1)
    assert folded.offer_ids == catalog.offer_ids
    assert set(assigned.values()) == {("cvo", 0.1)}


# ----------------------------------------------------------------------------- triggers
SNAPSHOT_DDL = (
    "subscriber_id string, channel string, rank int, as_of date, offer_id string, expected_value double, "
    "`group` string, valid_from date, valid_to date, campaign_id string, net_value double, "
    "expected_cost double, decision_id string"
)


def snapshot(spark, rows):
    return spark.createDataFrame(
        [
            (s, ch, 1, AS_OF, o, 100.0, g, AS_OF, date(2026, 7, 7), "camp_a", 50.0, 5.0, f"d-{s}")
            for s, ch, o, g in rows
        ],
        SNAPSHOT_DDL,
    )


def trigger_rules(share: float = 0.0) -> TriggerRules:
    return TriggerRules(
        channel_by_event={"quota_low": "app"},
        suppress_minutes=720,
        contact_window_days=7,
        max_contacts_per_channel=3,
        holdout_share=share,
        holdout_key=KEY,
    )


def events(spark, rows):
    return spark.createDataFrame(
        [(s, kind, datetime.fromisoformat(t)) for s, kind, t in rows],
        "subscriber_id string, event_type string, event_ts timestamp",
    )


def test_trigger_holdout_by_hash_or_snapshot_is_decided_but_not_emitted(spark):
    held, free = pick(spark, held=1, free=3)
    snap = snapshot(
        spark,
        [
            (free[0], "app", "OFF_A", "treatment"),
            (free[1], "app", "OFF_A", "holdout"),  # published as holdout (e.g. an earlier share)
            (held[0], "app", "OFF_A", "treatment"),  # the hash holds it out even so
            (free[2], "app", "OFF_A", "control"),  # control: nothing at all
        ],
    )
    ev = events(spark, [(s, "quota_low", "2026-07-01 10:00") for s in (*free, *held)])
    empty_contacts = spark.createDataFrame([], "subscriber_id string, channel string, contact_ts timestamp")
    empty_emitted = spark.createDataFrame(
        [], "subscriber_id string, event_type string, event_ts timestamp, channel string"
    )
    out = select_trigger_decisions(ev, snap, empty_contacts, empty_emitted, trigger_rules(share=0.5))
    got = {(r["subscriber_id"], r["group"], r["campaign_id"], r["net_value"]) for r in out.collect()}
    assert got == {
        (free[0], "treatment", "camp_a", 50.0),
        (free[1], "holdout", "camp_a", 50.0),
        (held[0], "holdout", "camp_a", 50.0),
    }


def trigger_ctx(spark, tmp_path) -> StageContext:
    config = parse_config({"lake": str(tmp_path / "lake"), "offers": {"universal_holdout_share": 0.0}})
    return StageContext(spark, config, TableStore(spark, config), AS_OF, "test")


def test_trigger_decisions_land_in_decisions_once_even_when_the_micro_batch_is_replayed(spark, tmp_path):
    ctx = trigger_ctx(spark, tmp_path)
    store = ctx.store
    store.overwrite_partition(
        snapshot(spark, [("T1", "app", "OFF_A", "treatment"), ("H1", "app", "OFF_A", "holdout")]),
        "gold",
        "offers",
        AS_OF,
    )
    store.overwrite(
        spark.createDataFrame([], REQUIRED_INPUT_SCHEMAS["offer_history"]), "silver", "offer_history"
    )
    sink = TriggerOfferSink(store, trigger_rules(), "unused-checkpoint", AS_OF, "cvo")
    sink._app_id = "cvo_trigger_offers-test"  # the checkpoint's query id, in a real stream
    first = events(spark, [("T1", "quota_low", "2026-07-01 10:00"), ("H1", "quota_low", "2026-07-01 10:00")])

    def state():
        log = store.read("gold", "decisions").collect()
        sent = store.read("gold", "trigger_offers").collect()
        return (
            sorted((r["subscriber_id"], r["group"], r["source"], r["as_of"], r["event_type"]) for r in log),
            sorted(r["subscriber_id"] for r in sent),
            len({r["decision_id"] for r in log}),
        )

    sink(first, 0)
    expected_log = [
        ("H1", "holdout", "trigger", date(2026, 7, 1), "quota_low"),
        ("T1", "treatment", "trigger", date(2026, 7, 1), "quota_low"),
    ]
    assert state() == (expected_log, ["T1"], 2)  # the holdout is logged, never emitted
    sink(first, 0)  # replayed after a crash before the checkpoint commit
    assert state() == (expected_log, ["T1"], 2)
    sink(first, 1)  # the same events again under a new batch id (a lost checkpoint)
    assert state() == (expected_log, ["T1"], 2)
    # A later event of H1 inside the suppression window: its earlier holdout decision counts.
    sink(events(spark, [("H1", "quota_low", "2026-07-01 11:00")]), 2)
    assert state() == (expected_log, ["T1"], 2)
    log = store.read("gold", "decisions").where(F.col("subscriber_id") == "T1").first()
    assert log["probability"] == 1.0 and log["campaign_id"] == "camp_a" and log["run_id"].endswith("-0")
    assert tuple(store.read("gold", "decisions").columns) == DECISIONS_COLUMNS


# ----------------------------------------------------------------------------- the offers stage
def test_offers_stage_logs_holdout_flags_underpowered_campaign_and_keeps_trigger_decisions(
    spark, tmp_path, caplog
):
    import test_publish as tp  # the tiny gold lake of the publish tests

    config = parse_config(
        {
            "lake": str(tmp_path / "lake"),
            "offers": {
                "checks": {"max_psi": 0.5},
                "allocation": {"consent_when_missing": {"push": "allow", "pull": "allow"}},
                "universal_holdout_share": 0.3,
                "universal_holdout_key": KEY,
                "campaigns": [
                    {
                        "id": "gold_data",
                        "start": "2026-06-01",
                        "end": "2026-07-31",
                        "audience": {"value_tiers": ["Gold"]},
                        "offers": ["DATA_BOOST_5GB"],
                        "goal": {"min_uplift": 0.01},
                    }
                ],
            },
        }
    )
    ctx = StageContext(spark, config, TableStore(spark, config), tp.D1, "run-1")
    tp.write_lake(ctx)
    with caplog.at_level(logging.WARNING):
        result = run_stage(ctx, "offers")
    assert result.checks["holdout"].startswith("ok")
    assert "underpowered: campaign gold_data" in result.message
    assert any("campaign gold_data" in r.getMessage() for r in caplog.records)
    power = ctx.store.read("gold", "campaign_power").collect()
    assert [(r["campaign_id"], r["underpowered"], r["audience_subscribers"] > 0) for r in power] == [
        ("gold_data", True, True)
    ]

    offers = ctx.store.read("gold", "offers").where(F.col("as_of") == tp.D1)
    segs = (
        ctx.store.read("gold", "segments")
        .where(F.col("as_of") == tp.D1)
        .select("subscriber_id", "value_tier")
    )
    campaign_rows = offers.where(F.col("offer_id") == "DATA_BOOST_5GB").join(
        segs, "subscriber_id", how="inner"
    )
    assert {(r["campaign_id"], r["value_tier"]) for r in campaign_rows.collect()} <= {("gold_data", "Gold")}
    held = {
        r["subscriber_id"]
        for r in offers.where(F.col("group") == "holdout").select("subscriber_id").collect()
    }
    assert held and result.row_counts["holdout"] > 0
    exported = {
        json.loads(line)["subscriber_id"]
        for p in (tmp_path / "lake" / "exports" / tp.D1.isoformat()).glob("*.jsonl")
        for line in p.read_text().splitlines()
    }
    assert exported and not exported & held
    log = ctx.store.read("gold", "decisions").where(F.col("as_of") == tp.D1)
    assert {r["subscriber_id"] for r in log.where(F.col("group") == "holdout").collect()} == held
    assert log.count() == offers.count()

    # A trigger decision of that day survives a re-run of the batch; the batch rows are replaced.
    trigger = log.limit(1).withColumn("source", F.lit("trigger")).withColumn("decision_id", F.lit("t" * 32))
    ctx.store.insert_new(trigger, "gold", "decisions", keys=["decision_id"])
    run_stage(ctx, "offers")
    log = ctx.store.read("gold", "decisions").where(F.col("as_of") == tp.D1)
    assert log.where(F.col("source") == "trigger").count() == 1
    assert log.where(F.col("source") == "batch").count() == offers.count()
