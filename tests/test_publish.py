"""Fail-closed publish: checks by hand, and the offers stage on a tiny Delta lake - a stuck
feed, a collapsed model and a run killed after staging all leave the published snapshot
untouched; an override publishes and is recorded; exports carry treatment rows only."""

from __future__ import annotations

import json
import math
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from cvo_spark.core.config import parse_config
from cvo_spark.core.errors import ConfigError, PublishRefused
from cvo_spark.core.io import TableStore
from cvo_spark.core.schemas import INPUT_SCHEMAS, REQUIRED_INPUT_SCHEMAS
from cvo_spark.core.stage import StageContext
from cvo_spark.offers.engine import OFFERS_SCHEMA
from cvo_spark.offers.publish import (
    CHECK_NAMES,
    CheckResult,
    check_coverage,
    check_freshness,
    check_propensity,
    decide,
    export_channels,
    psi,
    run_checks,
    summarize_offers,
    validate_overrides,
)
from cvo_spark.pipeline import run_stage

D1, D2 = date(2026, 6, 23), date(2026, 6, 30)
TIERS = ("Priority", "Gold", "Mass")
PERSONAS = ("Legacy Active", "Digital Active", "Socially Active 2", "Traditional Active")


def offer_rows(rows):
    """The 14 columns these tests set, then the decision-core columns (net_value, uplift,
    uplift_source, expected_cost, contact_cost unset; probability 1; a decision id; the
    default campaign)."""
    return [(*r, None, None, None, None, None, 1.0, f"d-{r[0]}-{r[4]}-{r[1]}", "cvo") for r in rows]


# ------------------------------------------------------------------------ pure checks
def test_psi_by_hand():
    # (0.6 - 0.5) ln(0.6 / 0.5) + (0.4 - 0.5) ln(0.4 / 0.5) = 0.018232 + 0.022314
    assert psi({"A": 50, "B": 50}, {"A": 60, "B": 40}) == pytest.approx(0.0405465, abs=1e-6)
    assert psi({"A": 1, "B": 3}, {"A": 10, "B": 30}) == pytest.approx(0.0)  # counts become shares
    # A bin only in the new mix counts as share 0.0001 in the old one.
    expected = (0.5 - 1.0) * math.log(0.5 / 1.0) + (0.5 - 1e-4) * math.log(0.5 / 1e-4)
    assert psi({"A": 10}, {"A": 5, "B": 5}) == pytest.approx(expected)
    with pytest.raises(ValueError):
        psi({}, {"A": 1})


def test_freshness_names_the_stalest_table_and_by_how_much():
    fresh = {"usage_daily": date(2026, 6, 20), "recharges": date(2026, 6, 30)}
    r = check_freshness(fresh, D2, 2)
    assert not r.passed
    assert r.detail == "newest usage_daily event 2026-06-20 is 10 days before as_of 2026-06-30 (limit 2)"
    assert check_freshness({"usage_daily": date(2026, 6, 28)}, D2, 2).passed
    assert (
        check_freshness({"usage_daily": None}, D2, 2).detail
        == "no usage_daily event at or before as_of 2026-06-30"
    )


def test_other_pure_checks():
    assert not check_propensity({"p_upsell": (0.0, 0.2)}, 1e-4).passed
    assert (
        check_propensity({"p_churn": (0.0, 0.0)}, 1e-4).detail
        == "p_churn is zero everywhere (collapsed model)"
    )
    assert check_propensity({"p_churn": (0.05, 0.9)}, 1e-4).passed
    assert check_coverage(50, 100, 0.05, 1.0).passed
    r = check_coverage(2, 100, 0.05, 1.0)
    assert not r.passed and r.detail == "2.0% of 100 active subscribers have an offer (allowed 5.0%..100.0%)"


def test_decide_refuses_on_one_line_and_records_overrides():
    results = [
        CheckResult("freshness", False, "stale by 10 days"),
        CheckResult("coverage", False, "3%"),
        CheckResult("non_empty", True, "5 rows"),
    ]
    with pytest.raises(PublishRefused) as err:
        decide(results)
    assert str(err.value) == "publish refused: freshness: stale by 10 days (+1 more: coverage)"
    assert err.value.checks == {
        "freshness": "failed: stale by 10 days",
        "coverage": "failed: 3%",
        "non_empty": "ok: 5 rows",
    }
    checks = decide(results, overrides={"freshness", "coverage"})
    assert checks["freshness"] == "overridden: stale by 10 days" and checks["coverage"] == "overridden: 3%"


def test_unknown_override_name_is_refused_not_ignored():
    # `--override psi` used to override nothing while the operator believed PSI was waived.
    with pytest.raises(ConfigError) as err:
        decide([CheckResult("psi_offer_id", False, "PSI 0.4")], overrides={"psi"})
    assert str(err.value).startswith("--override: unknown publish check 'psi' (checks: freshness, ")
    assert validate_overrides(["psi_offer_id"]) == {"psi_offer_id"}
    assert set(CHECK_NAMES) >= {"freshness", "psi_price_band", "propensity"}


def test_run_checks_counts_duplicates_and_prices_under_the_floor(spark):
    rows = [
        ("a", "sms", 1, D2, "X", "upsell", 20000.0, 100.0, 0.2, ["r"], "treatment", D2, D2, "r"),
        (
            "a",
            "sms",
            1,
            D2,
            "Y",
            "upsell",
            20000.0,
            90.0,
            0.3,
            ["r"],
            "treatment",
            D2,
            D2,
            "r",
        ),  # duplicate key
        ("b", "app", 1, D2, "Z", "upsell", 4000.0, 10.0, 0.1, ["r"], "control", D2, D2, "r"),  # under 5,000
        (
            "c",
            "app",
            1,
            D2,
            "Z",
            "upsell",
            8000.0,
            10.0,
            0.4,
            ["r"],
            "treatment",
            D2,
            D2,
            "r",
        ),  # c's HV floor 9,000
        ("c", "app", 2, D2, "R", "retention", 6000.0, 10.0, 0.4, ["r"], "treatment", D2, D2, "r"),  # spared
    ]
    staged = spark.createDataFrame(offer_rows(rows), OFFERS_SCHEMA)
    scores = spark.createDataFrame(
        [(0.1, 0.2, 0.3), (0.2, 0.3, 0.4)], "p_upsell double, p_cross_sell double, p_churn double"
    )
    floors = spark.createDataFrame([("c", 9000.0)], "subscriber_id string, min_price double")
    summary = summarize_offers(staged, floors, 5000.0)
    assert (
        summary["rows"],
        summary["subscribers"],
        summary["duplicates"],
        summary["under_floor"],
        summary["treatment"],
        summary["control"],
    ) == (5, 3, 1, 2, 4, 1)
    results = {
        r.name: r
        for r in run_checks(
            staged,
            summary,
            4,
            scores,
            {"usage_daily": D2},
            staged,
            D1,
            D2,
            freshness_max_days=2,
            min_coverage=0.5,
            max_coverage=1.0,
            price_floor=5000.0,
            min_propensity_std=1e-4,
            max_psi=0.25,
        )
    }
    # Every check can be overridden by the name it reports (the decision audit's come after).
    assert tuple(results) == CHECK_NAMES[: len(results)]
    assert results["duplicate_keys"].detail == "1 duplicate (subscriber, channel, rank) keys"
    assert not results["duplicate_keys"].passed
    assert (
        results["price_floor"].detail.startswith("2 rows under the price floor")
        and not results["price_floor"].passed
    )
    assert results["coverage"].passed and results["coverage"].detail.startswith("75.0% of 4")
    assert results["psi_offer_id"].detail == "PSI 0.000 vs snapshot 2026-06-23 (limit 0.25)"
    assert results["freshness"].passed and results["non_empty"].passed and results["propensity"].passed


def test_csv_export_has_treatment_rows_only_and_a_file_per_channel(spark, tmp_path):
    rows = [
        (
            "a",
            "sms",
            1,
            D2,
            "X",
            "upsell",
            20000.0,
            1.0,
            0.2,
            ["up 42%", "Gold tier"],
            "treatment",
            D2,
            D2,
            "r",
        ),
        ("b", "sms", 1, D2, "Y", "upsell", 20000.0, 1.0, 0.2, ["r"], "control", D2, D2, "r"),
        ("a", "app", 2, D2, "Y", "upsell", 20000.0, 1.0, 0.2, ["r"], "treatment", D2, D2, "r"),
        ("a", "app", 1, D2, "X", "upsell", 20000.0, 1.0, 0.2, ["r"], "treatment", D2, D2, "r"),
    ]
    paths = export_channels(
        spark.createDataFrame(offer_rows(rows), OFFERS_SCHEMA),
        str(tmp_path / "exports"),
        D2,
        ["sms", "app", "banking"],
        "csv",
    )
    base = tmp_path / "exports" / "2026-06-30"
    assert paths == {c: str(base / f"{c}.csv") for c in ("app", "banking", "sms")}
    assert sorted(p.name for p in base.iterdir()) == [
        "app.csv",
        "banking.csv",
        "sms.csv",
    ]  # no Spark leftovers
    header = (
        "decision_id,subscriber_id,channel,rank,offer_id,offer_type,price,valid_from,valid_to,reason_codes,"
        "as_of,run_id"
    )
    sms = (base / "sms.csv").read_text().splitlines()
    assert sms == [
        header,
        "d-a-X-sms,a,sms,1,X,upsell,20000.0,2026-06-30,2026-06-30,up 42% | Gold tier,2026-06-30,r",
    ]
    app = (base / "app.csv").read_text().splitlines()
    assert [line.split(",")[3] for line in app[1:]] == ["1", "2"]  # ordered by rank
    assert (base / "banking.csv").read_text().splitlines() == [header]  # empty, not stale


# ------------------------------------------------------------------------ the stage on a tiny lake
def make_ctx(spark, lake, as_of, overrides=()):
    # No consents input in this lake: the config says push is allowed without a row.
    config = parse_config(
        {
            "lake": str(lake),
            "offers": {
                "checks": {"max_psi": 0.5},
                "allocation": {"consent_when_missing": {"push": "allow", "pull": "allow"}},
            },
        }
    )
    return StageContext(spark, config, TableStore(spark, config), as_of, f"run-{as_of}", frozenset(overrides))


def gold_inputs(spark, as_of: date, collapsed: bool = False, n: int = 30):
    """Rows of gold features/segments/scores of `as_of` for n varied subscribers."""
    feats, segs, scores = [], [], []
    for i in range(n):
        sid = f"s{i:03d}"
        new = i % 5 == 0
        los, arpu = (30 if new else 200 + 10 * i), 20_000.0 + 5_000.0 * i
        feats.append(
            (
                sid,
                as_of,
                "prepaid" if i % 2 else "postpaid",
                los,
                arpu,
                0.1 * (i % 7) - 0.2,
                0.05 * (i % 3),
                0.1 * (i % 4) - 0.15,
                i % 4,
                0.1 * (i % 5),
                0.05 * (i % 6),
            )
        )
        segs.append(
            (
                sid,
                as_of,
                TIERS[i % 3],
                los > 180 and arpu > 100_000,
                "new" if new else "base",
                PERSONAS[i % 4],
            )
        )
        p = (
            (0.2, 0.2, 0.2)
            if collapsed
            else (0.05 + 0.03 * (i % 9), 0.04 + 0.02 * (i % 7), 0.02 + 0.04 * (i % 8))
        )
        scores.append(
            (sid, as_of, *p, 500_000.0 + 20_000.0 * i, ["arpu_3m"], ["digital_share"], ["recency_days"])
        )
    return feats, segs, scores


FEATURES_DDL = (
    "subscriber_id string, as_of date, payment_type string, length_of_stay_days int, arpu_3m double, "
    "data_trend_pct double, voice_trend_pct double, revenue_trend_pct double, quota_low_count long, "
    "voice_share double, digital_share double"
)
SEGMENTS_DDL = (
    "subscriber_id string, as_of date, value_tier string, is_high_value boolean, lifecycle string, "
    "persona_name string"
)
SCORES_DDL = (
    "subscriber_id string, as_of date, p_upsell double, p_cross_sell double, p_churn double, "
    "clv_12m double, reasons_upsell array<string>, reasons_cross_sell array<string>, "
    "reasons_churn array<string>"
)


def write_usage(ctx, newest: date):
    """usage_daily whose newest day is `newest` (with a row on D1 too when that is not later)."""
    days = sorted({newest - timedelta(days=3), newest} | ({D1} if newest >= D1 else set()))
    ctx.store.overwrite(
        ctx.spark.createDataFrame(
            [(f"s{i:03d}", d) for i, d in enumerate(days)], "subscriber_id string, usage_date date"
        ),
        "silver",
        "usage_daily",
    )


def write_scores(ctx, as_of: date, collapsed: bool):
    ctx.store.overwrite_partition(
        ctx.spark.createDataFrame(gold_inputs(ctx.spark, as_of, collapsed)[2], SCORES_DDL),
        "gold",
        "scores",
        as_of,
    )


def write_lake(ctx):
    """Gold inputs for D1 and D2 (one write per table) and silver inputs fresh for both dates."""
    spark, store = ctx.spark, ctx.store
    both = [gold_inputs(spark, d) for d in (D1, D2)]
    for k, (name, ddl) in enumerate(
        (("features", FEATURES_DDL), ("segments", SEGMENTS_DDL), ("scores", SCORES_DDL))
    ):
        store.overwrite(
            spark.createDataFrame(both[0][k] + both[1][k], ddl), "gold", name, partition_by=["as_of"]
        )
    write_usage(ctx, D2)

    def ts(d, h=9):
        return datetime.combine(d, datetime.min.time()) + timedelta(hours=h)

    store.overwrite(
        spark.createDataFrame(
            [("s001", ts(D1), 10_000.0, "app"), ("s001", ts(D2), 10_000.0, "app")], INPUT_SCHEMAS["recharges"]
        ),
        "silver",
        "recharges",
    )
    store.overwrite(
        spark.createDataFrame(
            [("s002", ts(D1), "quota_low", 5.0, None), ("s002", ts(D2), "quota_low", 5.0, None)],
            INPUT_SCHEMAS["quota_events"],
        ),
        "silver",
        "quota_events",
    )
    store.overwrite(
        spark.createDataFrame(
            [("s003", "DATA_BOOST_5GB", "sms", ts(D1) - timedelta(days=2), "treatment", False, None, 0.0)],
            REQUIRED_INPUT_SCHEMAS["offer_history"],
        ),
        "silver",
        "offer_history",
    )


def offers_version(store):
    return store.history("gold", "offers", 1).first()["version"]


def snapshot(store, as_of):
    rows = store.read("gold", "offers").where(F.col("as_of") == F.lit(as_of)).collect()
    return sorted((r["subscriber_id"], r["channel"], r["rank"], r["offer_id"], r["run_id"]) for r in rows)


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    """A lake with inputs for D1 and D2 and the D1 snapshot published (module-scoped: writing
    and publishing are the slow part). Tests that change an input restore it."""
    root = tmp_path_factory.mktemp("offers_lake")
    ctx = make_ctx(spark, root, D1)
    write_lake(ctx)
    result = run_stage(ctx, "offers")
    assert all(v.startswith("ok") for v in result.checks.values()), result.checks
    assert result.checks["psi_offer_id"] == "ok: no previous published snapshot to compare with"
    assert (
        result.row_counts["offers"] > 0
        and result.row_counts["control"] + result.row_counts["treatment"] + result.row_counts["holdout"]
        == result.row_counts["offers"]
    )
    return root


def assert_refused_and_untouched(spark, lake, ctx, check: str, message_part: str):
    store = ctx.store
    before_version, before_rows = offers_version(store), snapshot(store, D1)
    with pytest.raises(PublishRefused) as err:
        run_stage(ctx, "offers")
    assert str(err.value).startswith(f"publish refused: {check}: ") and message_part in str(err.value)
    assert "\n" not in str(err.value)
    assert err.value.checks[check].startswith("failed: ")
    assert offers_version(store) == before_version  # no commit at all on `offers`
    assert snapshot(store, D1) == before_rows  # the last good snapshot is still readable and the same
    assert store.read("gold", "offers").where(F.col("as_of") == F.lit(D2)).count() == 0
    runs = (
        store.read("gold", "runs")
        .where((F.col("run_id") == ctx.run_id) & (F.col("stage") == "offers"))
        .collect()
    )
    assert runs[-1]["status"] == "refused" and runs[-1]["checks"][check].startswith("failed")
    assert not (lake / "exports" / D2.isoformat()).exists()  # channels keep the last good exports


def test_stuck_feed_refuses_and_keeps_the_published_snapshot(spark, lake):
    ctx = make_ctx(spark, lake, D2)
    write_usage(ctx, D2 - timedelta(days=10))
    try:
        assert_refused_and_untouched(
            spark,
            lake,
            ctx,
            "freshness",
            "newest usage_daily event 2026-06-20 is 10 days before as_of 2026-06-30 (limit 2)",
        )
    finally:
        write_usage(ctx, D2)


def test_an_infeasible_minimum_volume_refuses_and_keeps_the_published_snapshot(spark, lake, tmp_path):
    import yaml

    catalog = yaml.safe_load((Path(__file__).resolve().parents[1] / "conf" / "offers.yaml").read_text())
    catalog["offers"][0]["min_daily_volume"] = 1_000_000  # more than the lake has subscribers
    path = tmp_path / "offers.yaml"
    path.write_text(yaml.safe_dump(catalog))
    base = make_ctx(spark, lake, D2)
    config = base.config.model_copy(
        update={"offers": base.config.offers.model_copy(update={"catalog_file": str(path)})}
    )
    ctx = StageContext(spark, config, TableStore(spark, config), D2, "run-infeasible")
    offer_id = catalog["offers"][0]["offer_id"]
    assert_refused_and_untouched(spark, lake, ctx, "allocation", f"infeasible: min_volume:{offer_id}: only ")


def test_cli_refusal_prints_where_things_stand_then_one_error_line(spark, lake, tmp_path, capsys):
    import yaml

    from cvo_spark.cli import main

    repo = Path(__file__).resolve().parents[1]
    conf = tmp_path / "conf.yaml"
    conf.write_text(
        yaml.safe_dump(
            {"offers": {"catalog_file": str(repo / "conf" / "offers.yaml"), "checks": {"max_psi": 0.5}}}
        )
    )
    ctx = make_ctx(spark, lake, D2)
    write_usage(ctx, D2 - timedelta(days=10))
    try:
        code = main(
            ["run", "--as-of", D2.isoformat(), "--stages", "offers", "--conf", str(conf), "--lake", str(lake)]
        )
    finally:
        write_usage(ctx, D2)
    out, err = capsys.readouterr()
    assert code != 0
    assert (
        "publish status: refused: publish refused: freshness: newest usage_daily event 2026-06-20" in out
    ), err
    assert err.strip().splitlines()[-1].startswith("cvo: error: publish refused: freshness: ")


def test_collapsed_model_refuses_and_keeps_the_published_snapshot(spark, lake):
    ctx = make_ctx(spark, lake, D2)
    write_scores(ctx, D2, collapsed=True)
    try:
        assert_refused_and_untouched(
            spark, lake, ctx, "propensity", "p_upsell std 0.000000 < 0.0001 (collapsed model)"
        )
    finally:
        write_scores(ctx, D2, collapsed=False)


def test_run_killed_between_staging_and_publish_leaves_the_snapshot(spark, lake, monkeypatch):
    import cvo_spark.offers.stage as stage

    ctx = make_ctx(spark, lake, D2)
    before_version, before_rows = offers_version(ctx.store), snapshot(ctx.store, D1)

    def killed(*args, **kwargs):
        raise RuntimeError("executor lost")

    monkeypatch.setattr(stage, "publish_snapshot", killed)
    with pytest.raises(RuntimeError, match="executor lost"):
        stage.run(ctx)
    staged = ctx.store.read("gold", "offers_staging").where(F.col("as_of") == F.lit(D2)).count()
    assert staged > 0  # it died after staging ...
    assert (
        offers_version(ctx.store) == before_version and snapshot(ctx.store, D1) == before_rows
    )  # ... published intact


def test_override_publishes_records_it_and_exports_treatment_only(spark, lake):
    ctx = make_ctx(spark, lake, D2, overrides={"freshness"})
    write_usage(ctx, D2 - timedelta(days=10))
    before = offers_version(ctx.store)
    try:
        result = run_stage(ctx, "offers")
    finally:
        write_usage(ctx, D2)
    assert result.checks["freshness"].startswith("overridden: newest usage_daily event 2026-06-20 is 10 days")
    assert offers_version(ctx.store) == before + 1  # ONE commit publishes the partition
    published = ctx.store.read("gold", "offers").where(F.col("as_of") == F.lit(D2))
    assert published.count() == result.row_counts["offers"]
    assert snapshot(ctx.store, D1)  # the previous as_of stays
    control = {r["subscriber_id"] for r in published.where(F.col("group") == "control").collect()}
    exported_rows = 0
    for channel in ("sms", "ussd", "app", "ecommerce", "banking"):
        path = lake / "exports" / D2.isoformat() / f"{channel}.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        expected = {
            (r["subscriber_id"], r["offer_id"])
            for r in published.where(
                (F.col("channel") == channel) & (F.col("group") == "treatment")
            ).collect()
        }
        assert {(r["subscriber_id"], r["offer_id"]) for r in rows} == expected, channel
        assert not control & {r["subscriber_id"] for r in rows}
        assert all(r["channel"] == channel for r in rows)
        if channel == "sms":
            assert all(r["rank"] == 1 for r in rows)  # sms shows one offer
        exported_rows += len(rows)
    assert exported_rows == published.where(F.col("group") == "treatment").count() > 0
    # The decision log holds every published row (treatment and control) under the same ids.
    decisions = ctx.store.read("gold", "decisions").where(F.col("as_of") == F.lit(D2))
    assert sorted(r["decision_id"] for r in decisions.collect()) == sorted(
        r["decision_id"] for r in published.collect()
    )
    assert decisions.where((F.col("probability") != 1.0) | (F.col("source") != "batch")).count() == 0
    assert {p.name for p in (lake / "exports" / D2.isoformat()).iterdir()} == {
        "sms.jsonl",
        "ussd.jsonl",
        "app.jsonl",
        "ecommerce.jsonl",
        "banking.jsonl",
    }
    runs = ctx.store.read("gold", "runs").where(F.col("run_id") == ctx.run_id).collect()
    assert runs[-1]["status"] == "succeeded" and runs[-1]["checks"]["freshness"].startswith("overridden")


def test_decision_audit_catches_each_broken_rule_independently_of_the_engine(spark):
    from cvo_spark.core.catalog import parse_catalog
    from cvo_spark.offers.allocation import Constraint
    from cvo_spark.offers.publish import audit_decisions

    cat = parse_catalog(
        {
            "channels": {"sms": {"slots": 1}, "ussd": {"slots": 3}, "app": {"slots": 2}},
            "offers": [
                {
                    "offer_id": o,
                    "offer_type": "upsell",
                    "category": "data",
                    "price": 20000,
                    "unit_cost": 5000,
                    "channels": ["sms", "ussd", "app"],
                }
                for o in ("A", "B", "C", "D")
            ],
        }
    )

    def row(sid, ch, rank, offer, cost=0.0, group="treatment"):
        return (
            sid,
            ch,
            rank,
            D2,
            offer,
            "upsell",
            20000.0,
            1.0,
            0.2,
            ["r"],
            group,
            D2,
            D2,
            "r",
            10.0,
            0.01,
            "model",
            cost,
            0.0,
            1.0,
            f"d-{sid}-{offer}-{ch}",
            "cvo",
        )

    good = [row("g", "sms", 1, "A", 100.0), row("g", "app", 1, "B")]
    bad = [
        row("many", "app", 1, "A"),
        row("many", "app", 2, "B"),
        row("many", "ussd", 1, "C"),
        row("many", "ussd", 2, "D"),
        row("twice", "sms", 1, "A"),
        row("twice", "app", 1, "A"),
        row("pushy", "sms", 1, "A"),
        row("pushy", "ussd", 1, "B"),
        row("slots", "sms", 2, "B"),
        row("optout", "sms", 1, "C", 900.0),
        row("ctrl", "sms", 1, "A", 1e9, group="control"),  # control rows are never sent: not audited
    ]
    history = spark.createDataFrame([], REQUIRED_INPUT_SCHEMAS["offer_history"])
    consents = spark.createDataFrame(
        [("optout", "sms", False, datetime(2026, 6, 1))],
        "subscriber_id string, channel string, allowed boolean, updated_ts timestamp",
    )
    constraints = [
        Constraint("capacity:sms", "channel_capacity", "sms", 3),
        Constraint("budget:b", "budget", "b", 500.0, offers=("A", "C")),
        Constraint("max_volume:B", "offer_max", "B", 2),
        Constraint("min_volume:D", "offer_min", "D", 2),
    ]
    kwargs = dict(
        max_offers=3,
        max_push_contacts=1,
        contact_window_days=7,
        consent_allowed={"sms": True, "ussd": True, "app": True},
    )
    ok = audit_decisions(
        spark.createDataFrame(good, OFFERS_SCHEMA), history, consents, D2, constraints[:1], cat, **kwargs
    )
    assert all(r.passed for r in ok), ok
    results = {
        r.name: r
        for r in audit_decisions(
            spark.createDataFrame(good + bad, OFFERS_SCHEMA),
            history,
            consents,
            D2,
            constraints,
            cat,
            **kwargs,
        )
    }
    assert results["offer_cap"].detail == "1 subscriber(s) with more than 3 offers"
    assert results["one_channel_per_offer"].detail == "1 (subscriber, offer) pairs on several channels"
    assert (
        results["push_contacts"].detail == "1 subscriber(s) over 1 push contacts in 7 days"
    )  # pushy: sms + ussd
    assert results["slots"].detail == "1 rows ranked past their channel's slots"
    assert results["capacity"].detail == "sms 5 > 3"
    assert results["budget"].detail == "b Rp 1,000 > Rp 500"
    assert results["volume"].detail == "B 4 > max 2; D 1 < min 2"
    assert results["consent"].detail == "1 rows to a channel without consent"
    assert not any(r.passed for r in results.values())
    assert tuple(results) == CHECK_NAMES[-len(results) :]


# ------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_end_to_end_on_generated_data(spark, pipeline_lake):
    """Generated data through ingest..offers: published, consistent, idempotent, explainable."""
    from cvo_spark.offers.explain import explain
    from cvo_spark.pipeline import new_run_id

    ctx, as_of, lake, config = (
        pipeline_lake.ctx,
        pipeline_lake.as_of,
        pipeline_lake.lake,
        pipeline_lake.ctx.config,
    )
    result = pipeline_lake.results["offers"]
    assert all(v.startswith("ok") for v in result.checks.values()), result.checks

    offers = ctx.store.read("gold", "offers").where(F.col("as_of") == F.lit(as_of)).cache()
    rows = offers.count()
    assert rows == result.row_counts["offers"] > 0
    assert offers.select("subscriber_id", "channel", "rank").distinct().count() == rows  # unique keys
    slots = {"sms": 1, "ussd": 3, "ecommerce": 4, "app": 6, "banking": 3}
    worst = {r["channel"]: r["m"] for r in offers.groupBy("channel").agg(F.max("rank").alias("m")).collect()}
    assert all(worst[c] <= slots[c] for c in worst)
    assert offers.where((F.size("reason_codes") < 2) | (F.size("reason_codes") > 3)).count() == 0
    groups = offers.groupBy("subscriber_id").agg(
        F.countDistinct("group").alias("g"), F.first("group").alias("group")
    )
    assert groups.where(F.col("g") > 1).count() == 0  # a subscriber is wholly treatment or control
    share = groups.where(F.col("group") == "control").count() / groups.count()
    assert abs(share - 0.1) < 0.04
    assert offers.where(F.col("valid_from") != F.lit(as_of + timedelta(days=1))).count() == 0

    # Exports: treatment only.
    control = {
        r["subscriber_id"]
        for r in offers.where(F.col("group") == "control").select("subscriber_id").collect()
    }
    app = [
        json.loads(x) for x in (lake / "exports" / as_of.isoformat() / "app.jsonl").read_text().splitlines()
    ]
    assert app and not control & {r["subscriber_id"] for r in app}

    # Idempotent: re-running the stage leaves the same offers (new run_id only).
    key = ["subscriber_id", "channel", "rank", "offer_id", "group", "expected_value"]
    before = sorted(tuple(r) for r in offers.select(*key).collect())
    offers.unpersist()
    run_stage(StageContext(spark, config, ctx.store, as_of, new_run_id(as_of)), "offers")
    again = ctx.store.read("gold", "offers").where(F.col("as_of") == F.lit(as_of)).select(*key).collect()
    assert sorted(tuple(r) for r in again) == before

    someone = before[0][0]
    text = explain(ctx, someone)
    assert "offers (published):" in text and "excluded:" in text and f"subscriber {someone}" in text
