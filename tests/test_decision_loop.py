"""Close the loop: the engine's own published decisions, answered by simulated subscribers drawn
from the planted truth, fed back through ingest and measure; the measured uplift of the
engine's campaign must cover the planted one. And the Done-when's coverage figure of the
clustered interval over 1,000 seeded replications (benchmarks/bench_clustered_ci.py)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from pyspark.sql import functions as F

REPO = Path(__file__).resolve().parents[1]
RESPONSE_SEED = 20


def test_clustered_interval_covers_the_truth_in_1000_replications():
    # The Done-when, on the benchmark's own simulation (not a copy of it): 1,000
    # seeded campaigns, 2,000 subscribers each contacted 1..8 times, 10% control drawn per
    # subscriber, accept probability per subscriber. Pure NumPy: about a second.
    spec = importlib.util.spec_from_file_location(
        "bench_clustered_ci", REPO / "benchmarks" / "bench_clustered_ci.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.run(replications=1_000, seed=2026)
    coverage = {name: s["coverage"] for name, s in result["intervals"].items()}
    assert coverage["uplift_clustered"] >= 0.93, coverage
    assert coverage["revenue_clustered"] >= 0.93, coverage
    assert coverage["uplift_wald"] < 0.93, coverage  # the naive interval is the one that fails


def test_engine_code_never_reads_the_ground_truth():
    # The planted truth judges the engine; only the generator and its response model (and
    # the CLI that calls the generator) may touch it, never a stage such as measure.
    allowed = {"synth", "cli.py"}
    readers = [
        str(path.relative_to(REPO))
        for path in (REPO / "cvo_spark").rglob("*.py")
        if path.relative_to(REPO / "cvo_spark").parts[0] not in allowed
        and any(word in path.read_text(encoding="utf-8") for word in ("_ground_truth", "cvo_spark.synth"))
    ]
    assert readers == []


def test_simulated_answers_follow_the_groups_and_the_windows(spark):
    from datetime import date

    from cvo_spark.synth.channel_responses import simulate_responses
    from cvo_spark.synth.generate import ACTIVITY_FLOOR, generate_bronze

    bronze = generate_bronze(spark, subscribers=40, days=20, seed=5)
    subs = bronze["_ground_truth"].orderBy("subscriber_id").limit(6).collect()
    d0, start, end = date(2026, 6, 30), date(2026, 7, 1), date(2026, 7, 7)
    groups = ["treatment", "treatment", "treatment", "control", "control", "holdout"]
    decisions = spark.createDataFrame(
        [
            (f"d{i}", s["subscriber_id"], "DATA_BOOST_5GB", "sms", g, start, end, d0)
            for i, (s, g) in enumerate(zip(subs, groups, strict=True))
        ],
        "decision_id string, subscriber_id string, offer_id string, channel string, `group` string, "
        "valid_from date, valid_to date, as_of date",
    )

    def draw(seed):
        return simulate_responses(
            decisions,
            bronze["_ground_truth"],
            bronze["_offer_truth"],
            seed=seed,
            activity_floor=ACTIVITY_FLOOR,
        )

    sim = draw(1)
    truth = {r["decision_id"]: r for r in sim.truth.collect()}
    assert all(0 <= r["p_if_not"] <= 1 and r["p_if_contacted"] is not None for r in truth.values())
    for r in truth.values():
        expected = r["p_if_contacted"] if r["group"] == "treatment" else r["p_if_not"]
        assert r["p_accept"] == expected
    responses = sim.channel_responses.collect()
    # Only the treatment was sent anything; each of it was delivered on the decision's day.
    assert {r["decision_id"] for r in responses} == {"d0", "d1", "d2"}
    delivered = [r for r in responses if r["event"] == "delivered"]
    assert len(delivered) == 3 and all(r["event_ts"].date() == d0 for r in delivered)
    for r in responses:
        if r["event"] in ("accepted", "declined"):
            assert start <= r["event_ts"].date() <= end
    accepted = {r["decision_id"] for r in responses if r["event"] == "accepted"}
    assert accepted == {d for d, r in truth.items() if r["accepted"] and r["group"] == "treatment"}
    # Every acceptance, sent or not, is a purchase of the offer's product in the window.
    purchases = sim.purchases.collect()
    assert len(purchases) == sum(r["accepted"] for r in truth.values())
    assert all(
        p["product_id"] == "data_boost_5gb" and start <= p["purchase_ts"].date() <= end for p in purchases
    )
    # Seeded: the same seed draws the same answers.
    assert sorted(map(tuple, draw(1).channel_responses.collect())) == sorted(map(tuple, responses))


def _with_recent_contacts(decisions, offer_history, days: int):
    """Treatment contacts of each subscriber in the `days` before the decision's day (fatigue)."""
    contacts = offer_history.where(F.col("group") == "treatment").select(
        "subscriber_id", F.to_date("contacted_ts").alias("_day")
    )
    days_before = F.datediff(F.col("as_of"), F.col("_day"))
    counted = (
        decisions.select("decision_id", "subscriber_id", "as_of")
        .join(contacts, on="subscriber_id", how="inner")
        .where((days_before > 0) & (days_before <= days))
        .groupBy("decision_id")
        .agg(F.count(F.lit(1)).alias("recent_contacts"))
    )
    return decisions.join(counted, on="decision_id", how="left").fillna(0, subset=["recent_contacts"])


@pytest.mark.slow
def test_measured_uplift_of_the_engines_campaign_covers_the_planted_uplift(spark, pipeline_lake, tmp_path):
    from cvo_spark.core.config import load_config
    from cvo_spark.core.io import TableStore
    from cvo_spark.core.stage import StageContext
    from cvo_spark.ingest import stage as ingest_stage
    from cvo_spark.measure import stage as measure_stage
    from cvo_spark.synth.channel_responses import (
        planted_uplift,
        simulate_responses,
        write_simulated_responses,
    )
    from cvo_spark.synth.generate import ACTIVITY_FLOOR
    from cvo_spark.synth.response import FATIGUE_DAYS

    # A copy: the shared lake stays as the other tests expect it.
    lake = tmp_path / "lake"
    shutil.copytree(pipeline_lake.lake, lake)
    config = load_config(pipeline_lake.conf_file).with_lake(str(lake))
    store = TableStore(spark, config)
    bronze = lake / "bronze"
    decisions = store.read("gold", "decisions").where(F.col("as_of") == F.lit(pipeline_lake.as_of))

    truth_tables = {
        name: spark.read.format("delta").load(str(bronze / "_ground_truth" / name))
        for name in ("subscribers", "offers")
    }
    simulated = simulate_responses(
        _with_recent_contacts(decisions, store.read("bronze", "offer_history"), FATIGUE_DAYS),
        truth_tables["subscribers"],
        truth_tables["offers"],
        seed=RESPONSE_SEED,
        activity_floor=ACTIVITY_FLOOR,
        recent_contacts_col="recent_contacts",
    )
    truth = simulated.truth.cache()
    written = write_simulated_responses(simulated, str(bronze))
    planted = planted_uplift(truth)
    drawn = {
        r["group"]: (r["n"], r["k"])
        for r in truth.groupBy("group")
        .agg(F.count(F.lit(1)).alias("n"), F.sum(F.col("accepted").cast("long")).alias("k"))
        .collect()
    }
    assert drawn["treatment"][0] > 100 and drawn["control"][0] > 20, drawn  # something to measure
    assert written["purchases"] == sum(k for _, k in drawn.values()) and written["channel_responses"] > 0

    # Measure once every window has closed: ingest the answers, then the measure stage.
    measure_day = decisions.agg(F.max("valid_to")).first()[0]
    assert measure_day > pipeline_lake.as_of
    ctx = StageContext(spark, config, store, measure_day, "loop-measure")
    ingested = ingest_stage.run(ctx)
    assert ingested.row_counts["channel_responses.quarantined"] == 0
    assert ingested.row_counts["channel_responses.silver"] == written["channel_responses"]
    result = measure_stage.run(ctx)
    assert result.checks["responses_outside_treatment"] == "0"

    rows = (
        store.read("gold", "decision_results")
        .where(
            (F.col("as_of") == F.lit(measure_day))
            & (F.col("offer_id") == "ALL")
            & (F.col("channel") == "ALL")
            & (F.col("segment") == "ALL")
            & (F.col("baseline") == "control")
        )
        .collect()
    )
    assert len(rows) == 1, rows  # one campaign, one decision day: one period
    row = rows[0]
    # Attribution lost nothing and invented nothing: the measured rates are the drawn ones.
    assert (row["decisions_treatment"], row["decisions_baseline"]) == (
        drawn["treatment"][0],
        drawn["control"][0],
    )
    assert row["accept_rate_treatment"] == pytest.approx(drawn["treatment"][1] / drawn["treatment"][0])
    assert row["accept_rate_baseline"] == pytest.approx(drawn["control"][1] / drawn["control"][0])
    assert row["open_decisions"] == 0
    # The measured uplift's clustered interval covers the planted one, and is narrow enough to say something.
    print(
        f"\nplanted uplift {planted['uplift']:.4f} over {planted['treatment']:.0f} treatment decisions; "
        f"measured {row['uplift']:.4f} [{row['uplift_ci_low']:.4f}, {row['uplift_ci_high']:.4f}] "
        f"vs {planted['control']:.0f} control decisions; incremental margin {row['incremental_margin']:,.0f} "
        f"[{row['incremental_margin_ci_low']:,.0f}, {row['incremental_margin_ci_high']:,.0f}]"
    )
    assert row["uplift_ci_low"] <= planted["uplift"] <= row["uplift_ci_high"]
    assert row["uplift_ci_high"] - row["uplift_ci_low"] < 0.25
    assert row["srm_flag"] is False
    truth.unpersist()
