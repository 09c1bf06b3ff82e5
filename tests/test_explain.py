"""`cvo explain`: profile, scores, offers with reasons, exclusions with their rule, the group;
raw ids under pseudonymisation; unknown subscribers; the CLI path."""

from __future__ import annotations

import hashlib
import hmac
from datetime import date, datetime

import pytest
from pyspark.sql import functions as F

from cvo_spark.cli import main
from cvo_spark.core.catalog import load_checked_catalog, offer_channels_frame, offers_frame
from cvo_spark.core.config import parse_config
from cvo_spark.core.errors import CvoError
from cvo_spark.core.io import TableStore
from cvo_spark.core.schemas import REQUIRED_INPUT_SCHEMAS
from cvo_spark.core.stage import StageContext
from cvo_spark.offers.engine import build_offers, control_bucket
from cvo_spark.offers.explain import explain
from cvo_spark.offers.stage import offer_params

D, D_UNPUBLISHED = date(2026, 6, 30), date(2026, 6, 29)
KEY = "test-key-not-a-secret"
SUBSCRIBERS = [
    # id, payment, los, arpu_3m, data_trend, quota_low, tier, high value, lifecycle, persona,
    # p_up, p_cs, p_churn
    (
        "6281100001",
        "prepaid",
        400,
        120_000.0,
        0.42,
        3,
        "Gold",
        True,
        "base",
        "Digital Active 2",
        0.3,
        0.2,
        0.1,
    ),
    ("6281100002", "postpaid", 40, 15_000.0, None, 0, "Mass", False, "new", "Legacy Active", 0.1, 0.05, 0.4),
    (
        "6281100003",
        "prepaid",
        900,
        200_000.0,
        -0.2,
        1,
        "Priority",
        True,
        "base",
        "Socially Active",
        0.2,
        0.3,
        0.5,
    ),
]


#: One more subscriber stored under its pseudonym, as ingest writes it with pseudonymisation on.
PSEUDONYMISED_RAW = "6281100009"
PSEUDONYM = hmac.new(KEY.encode(), PSEUDONYMISED_RAW.encode(), hashlib.sha256).hexdigest()


def make_lake(spark, root, allocation=None) -> dict:
    """Gold inputs for two dates, silver offer_history, and published offers for D only."""
    # Without `allocation`: today's per-channel ranking (what the first tests read line by line).
    allow = {"consent_when_missing": {"push": "allow", "pull": "allow"}}  # no consents input in this lake
    config = parse_config(
        {"lake": str(root), "offers": {"allocation": {**allow, **(allocation or {"enabled": False})}}}
    )
    store = TableStore(spark, config)
    feats, segs, scores = [], [], []
    pseudonymised = (PSEUDONYM, *SUBSCRIBERS[1][1:])
    for d in (D, D_UNPUBLISHED):
        for s, pay, los, arpu, trend, quota, tier, hv, life, persona, pu, pc, pch in (
            *SUBSCRIBERS,
            pseudonymised,
        ):
            feats.append((s, d, pay, los, arpu, trend, None, None, quota, 0.2, 0.1))
            segs.append((s, d, tier, hv, life, persona))
            scores.append(
                (
                    s,
                    d,
                    pu,
                    pc,
                    pch,
                    1_000_000.0,
                    ["data_trend_pct", "arpu_3m"],
                    ["digital_share"],
                    ["recency_days"],
                )
            )
    frames = {
        "features": spark.createDataFrame(
            feats,
            (
                "subscriber_id string, as_of date, payment_type string, length_of_stay_days int, "
                "arpu_3m double, data_trend_pct double, voice_trend_pct double, revenue_trend_pct double, "
                "quota_low_count long, "
                "voice_share double, digital_share double"
            ),
        ),
        "segments": spark.createDataFrame(
            segs,
            (
                "subscriber_id string, as_of date, value_tier string, is_high_value boolean, "
                "lifecycle string, "
                "persona_name string"
            ),
        ),
        "scores": spark.createDataFrame(
            scores,
            (
                "subscriber_id string, as_of date, p_upsell double, p_cross_sell double, p_churn double, "
                "clv_12m double, "
                "reasons_upsell array<string>, reasons_cross_sell array<string>, reasons_churn array<string>"
            ),
        ),
    }
    for name, df in frames.items():
        store.overwrite(df, "gold", name, partition_by=["as_of"])
    first = SUBSCRIBERS[0][0]
    history = spark.createDataFrame(
        [(first, "DATA_NIGHT_10GB", "app", datetime(2026, 6, 27, 10), "treatment", False, None, 0.0)],
        REQUIRED_INPUT_SCHEMAS["offer_history"],
    )
    store.overwrite(history, "silver", "offer_history")
    catalog, params = load_checked_catalog(config), offer_params(config)
    from cvo_spark.offers.stage import allocation_params

    on_d = {n: df.where(F.col("as_of") == F.lit(D)) for n, df in frames.items()}
    offers = build_offers(
        on_d["features"],
        on_d["segments"],
        on_d["scores"],
        history,
        offers_frame(spark, catalog, 7),
        offer_channels_frame(spark, catalog),
        D,
        "run-x",
        params,
        alloc=allocation_params(config),
    )
    store.overwrite_partition(offers.offers, "gold", "offers", D)
    offers.release()
    return {"config": config, "store": store}


@pytest.fixture(scope="module")
def plain(spark, tmp_path_factory):
    return make_lake(spark, tmp_path_factory.mktemp("explain_lake"))


@pytest.fixture(scope="module")
def allocating(spark, tmp_path_factory):
    return make_lake(spark, tmp_path_factory.mktemp("explain_alloc_lake"), {"max_offers_per_subscriber": 2})


def ctx_for(spark, lake, as_of=D):
    return StageContext(spark, lake["config"], lake["store"], as_of, "run-explain")


def test_explain_lists_profile_scores_offers_exclusions_and_group(spark, plain):
    text = explain(ctx_for(spark, plain), "6281100001")
    print(text)  # shown when the test fails
    lines = text.splitlines()
    bucket = spark.range(1).select(control_bucket(F.lit("6281100001"), "cvo").alias("b")).first()["b"]
    group = "control" if bucket < 0.1 else "treatment"
    assert lines[0] == "subscriber 6281100001 as of 2026-06-30"
    assert lines[1].startswith(f"group: {group}")
    assert lines[2] == (
        "value tier: Gold (High Value) · lifecycle: base · persona: Digital Active 2 (as Digital Active)"
    )
    assert lines[3] == "profile: prepaid · tenure 400 days · arpu_3m Rp 120,000"
    assert lines[4] == "scores: p_upsell 0.300 · p_cross_sell 0.200 · p_churn 0.100 · clv_12m Rp 1,000,000"
    assert "  upsell drivers: data_trend_pct, arpu_3m" in lines
    assert "offers (published):" in lines
    # One sms slot: the best offer, with its expected value and reasons.
    sms = [ln for ln in lines if ln.startswith("  sms ")]
    assert len(sms) == 1 and "expected value Rp " in sms[0] and "· propensity 0." in sms[0]
    assert "      - data usage up 42% in the last 30 days" in lines
    assert "      - Digital Active, High Value" in lines
    # Exclusions with their rule.
    assert "  COMBO_PREMIUM: not eligible: value tier Gold not in [Priority]" in lines
    assert "  NEWBIE_WELCOME_1GB: not eligible: lifecycle base not in [new]" in lines
    assert "  DATA_NIGHT_10GB: cool-down: not accepted when offered on 2026-06-27 (14-day cool-down)" in lines
    assert "  COMBO_STARTER: not eligible: arpu_3m 120,000 above 80,000" in lines
    assert (
        "  RETENTION_BONUS_DATA: not eligible: churn risk 0.10 below 0.25 "
        "(retention offers are for churn risks)" in lines
    )
    assert any(ln.startswith("  DATA_WEEKLY_2GB on sms: ranked ") for ln in lines)
    # Every published offer row of this subscriber is in the text.
    published = plain["store"].read("gold", "offers").where(F.col("subscriber_id") == "6281100001").count()
    assert len([ln for ln in lines if "expected value Rp" in ln]) == published


def test_unknown_subscriber_is_one_clear_line(spark, plain):
    with pytest.raises(CvoError) as err:
        explain(ctx_for(spark, plain), "999")
    assert str(err.value) == "unknown subscriber '999': no features row as of 2026-06-30"


def test_unpublished_date_shows_the_computed_offers(spark, plain):
    text = explain(ctx_for(spark, plain, D_UNPUBLISHED), "6281100003")
    assert "offers (computed now - nothing published for this date (refused or not run)):" in text
    assert "value tier: Priority (High Value)" in text and "      - churn risk 50%" in text


def test_raw_id_is_hashed_when_pseudonymisation_is_on(spark, plain, monkeypatch):
    monkeypatch.setenv("CVO_PSEUDONYM_KEY", KEY)
    config = plain["config"].model_copy(
        update={"ingest": parse_config({"ingest": {"privacy": {"pseudonymize": True}}}).ingest}
    )
    lake = {"config": config, "store": TableStore(spark, config)}
    text = explain(ctx_for(spark, lake), PSEUDONYMISED_RAW)
    assert text.splitlines()[0] == f"subscriber {PSEUDONYM[:12]}… (pseudonym) as of 2026-06-30"
    assert PSEUDONYMISED_RAW not in text
    assert "value tier: Mass · lifecycle: new · persona: Legacy Active" in text
    assert (
        explain(ctx_for(spark, lake), PSEUDONYM).splitlines()[0] == f"subscriber {PSEUDONYM} as of 2026-06-30"
    )
    with pytest.raises(CvoError, match=r"^unknown subscriber \(id withheld: pseudonymisation is on\)"):
        explain(ctx_for(spark, lake), "6281199999")


def test_cli_explain(spark, plain, capsys):
    lake = plain["config"].lake
    assert main(["explain", "6281100002", "--as-of", "2026-06-30", "--lake", lake]) == 0
    out = capsys.readouterr().out
    assert out.startswith("subscriber 6281100002 as of 2026-06-30\n") and "excluded:" in out
    assert main(["explain", "nobody", "--as-of", "2026-06-30", "--lake", lake]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "cvo: error: unknown subscriber 'nobody': no features row as of 2026-06-30"


def test_explain_names_the_allocation_rule_that_cut_each_offer(spark, allocating):
    text = explain(ctx_for(spark, allocating), "6281100001")
    print(text)
    lines = text.splitlines()
    published = (
        allocating["store"].read("gold", "offers").where(F.col("subscriber_id") == "6281100001").collect()
    )
    assert len(published) == 2 == len({r["offer_id"] for r in published})  # two offers, one channel each
    chosen = {(r["offer_id"], r["channel"]) for r in published}
    # Every other channel of a chosen offer is explained by the one-channel rule ...
    others = [ln for ln in lines if ": one channel per offer: goes out on " in ln]
    assert others and all(any(f"goes out on {ch}" in ln for _, ch in chosen) for ln in others)
    # ... and the rest of the kept offers by the cap of two offers.
    assert any("contact cap: 2 offer(s) worth more chosen (max 2)" in ln for ln in lines)
    offer_lines = [ln for ln in lines if "expected value Rp" in ln]
    assert len(offer_lines) == 2 and all(" net (uplift +" in ln and "assumed)" in ln for ln in offer_lines)
