"""Campaign measurement: counts and rates by hand, segments at the contact, clustered intervals by
hand and in a seeded simulation, interval coverage on planted data, SRM."""

from __future__ import annotations

import importlib.util
import math
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pytest
from chispa import assert_approx_df_equality
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType
from scipy import special, stats

from cvo_spark.core.errors import MissingColumnsError
from cvo_spark.core.schemas import INPUT_SCHEMAS, REQUIRED_INPUT_SCHEMAS
from cvo_spark.measure.campaigns import (
    CAMPAIGN_RESULTS_SCHEMA,
    campaign_results,
    chi2_1df_p_value,
    erfc,
    z_value,
)
from cvo_spark.measure.intervals import clustered_ratio_variance, wald_variance

AS_OF = date(2026, 6, 30)
HISTORY = REQUIRED_INPUT_SCHEMAS["offer_history"]
SEGMENTS = StructType(
    [
        StructField("subscriber_id", StringType()),
        StructField("as_of", INPUT_SCHEMAS["subscribers"]["activation_date"].dataType),
        StructField("value_tier", StringType()),
        StructField("persona_name", StringType()),
    ]
)


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


# ----------------------------------------------------------------------------- hand-computed
@pytest.fixture(scope="module")
def tiny_results(spark):
    history = spark.createDataFrame(
        [
            ("A", "O1", "sms", ts("2026-05-03 10:00"), "treatment", True, ts("2026-05-04 09:00"), 100.0),
            ("B", "O1", "sms", ts("2026-05-10 10:00"), "treatment", False, None, 0.0),
            # accepted after as_of: not an acceptance yet, its revenue does not count
            ("C", "O1", "sms", ts("2026-05-11 10:00"), "treatment", True, ts("2026-07-02 09:00"), 50.0),
            ("D", "O1", "sms", ts("2026-05-12 10:00"), "control", True, ts("2026-05-12 11:00"), 40.0),
            # accepted unknown (null), revenue null: a contact that did not accept
            ("E", "O1", "sms", ts("2026-05-13 10:00"), "control", None, None, None),
            # contacted after as_of: not counted at all
            ("F", "O1", "sms", ts("2026-07-01 00:00"), "treatment", True, ts("2026-07-01 01:00"), 999.0),
            # last second of the as_of day counts
            ("G", "O1", "app", ts("2026-06-30 23:00"), "treatment", True, ts("2026-06-30 23:30"), 10.0),
        ],
        HISTORY,
    )
    segments = spark.createDataFrame(
        [
            ("A", date(2026, 5, 1), "Gold", "Digital Active"),
            ("A", date(2026, 5, 20), "Mass", "Legacy Active"),  # after A's contact: ignored
            ("A", date(2026, 7, 31), "Mass", "Legacy Active"),  # after as_of: ignored
            ("D", date(2026, 5, 12), "Mass", None),  # the contact's own day counts
        ],
        SEGMENTS,
    )
    return campaign_results(history, segments, AS_OF, expected_control_share=0.1).cache()


def test_counts_rates_and_uplift_by_hand(spark, tiny_results):
    schema = StructType(
        [
            StructField("offer_id", StringType()),
            StructField("channel", StringType()),
            StructField("period", StringType()),
            StructField("segment", StringType()),
            StructField("contacted_treatment", LongType()),
            StructField("contacted_control", LongType()),
            StructField("accept_rate_treatment", DoubleType()),
            StructField("accept_rate_control", DoubleType()),
            StructField("uplift", DoubleType()),
            StructField("incremental_revenue", DoubleType()),
        ]
    )
    expected = spark.createDataFrame(
        [
            # 3 treatment (1 accepted by as_of: A, revenue 100), 2 control (D accepted, 40)
            ("O1", "sms", "2026-05", "ALL", 3, 2, 1 / 3, 1 / 2, 1 / 3 - 1 / 2, (100 / 3 - 40 / 2) * 3),
            ("O1", "sms", "2026-05", "value_tier:Gold", 1, 0, 1.0, None, None, None),
            ("O1", "sms", "2026-05", "persona:Digital Active", 1, 0, 1.0, None, None, None),
            ("O1", "sms", "2026-05", "value_tier:Mass", 0, 1, None, 1.0, None, None),
            ("O1", "app", "2026-06", "ALL", 1, 0, 1.0, None, None, None),
        ],
        schema,
    )
    actual = tiny_results.select(*schema.fieldNames())
    assert_approx_df_equality(actual, expected, 1e-9, ignore_row_order=True, ignore_nullable=True)


def test_output_schema_and_srm_p_value(tiny_results):
    assert tiny_results.schema.fieldNames() == CAMPAIGN_RESULTS_SCHEMA.fieldNames()
    row = tiny_results.where((F.col("channel") == "sms") & (F.col("segment") == "ALL")).first()
    # 5 contacts, expected 0.5 control / 4.5 treatment: chi2 = 1.5^2/0.5 + 1.5^2/4.5 = 5.0
    assert row["srm_p_value"] == pytest.approx(stats.chi2.sf(5.0, 1), rel=1e-6)
    assert row["srm_flag"] is False
    assert row["as_of"] == AS_OF


def test_stage_writes_partition_idempotently(spark, tmp_path):
    from cvo_spark.core.config import parse_config
    from cvo_spark.core.io import TableStore
    from cvo_spark.core.stage import StageContext
    from cvo_spark.measure import stage as measure

    config = parse_config({"lake": str(tmp_path / "lake")})
    store = TableStore(spark, config)
    history = spark.createDataFrame(
        [
            ("A", "O1", "sms", ts("2026-05-03 10:00"), "treatment", True, ts("2026-05-04 09:00"), 100.0),
            ("B", "O1", "sms", ts("2026-05-10 10:00"), "control", False, None, 0.0),
            ("C", "O2", "app", ts("2026-06-11 10:00"), "treatment", None, None, None),
        ],
        HISTORY,
    )
    store.overwrite(history, "silver", "offer_history")
    ctx = StageContext(spark, config, store, AS_OF, "run-1")
    first = measure.run(ctx)
    second = measure.run(ctx)
    table = store.read("gold", "campaign_results")
    assert first.row_counts == second.row_counts == {"campaign_results": 2}
    assert table.count() == 2  # replaced, not appended
    assert sorted(r["offer_id"] for r in table.collect()) == ["O1", "O2"]
    assert "0 row(s) with sample-ratio mismatch" in second.message


def test_erfc_matches_scipy(spark):
    xs = [-2.0, -0.3, 0.0, 0.1, 0.7, 1.5, 3.0, 5.0]
    df = spark.createDataFrame([(x,) for x in xs], "x double")
    got = df.select("x", erfc(F.col("x")).alias("e"), chi2_1df_p_value(F.col("x") ** 2).alias("p")).collect()
    for r in got:
        assert r["e"] == pytest.approx(special.erfc(r["x"]), rel=2e-7)
        assert r["p"] == pytest.approx(stats.chi2.sf(r["x"] ** 2, 1), rel=2e-7)
    assert z_value(0.95) == pytest.approx(1.959964, abs=1e-6)


def test_missing_column_is_named(spark):
    df = spark.createDataFrame([("A", "O1")], "subscriber_id string, offer_id string")
    with pytest.raises(MissingColumnsError, match="channel"):
        campaign_results(df, None, AS_OF, expected_control_share=0.1)


def test_unknown_interval_method_is_named(spark):
    df = spark.createDataFrame([], HISTORY)
    with pytest.raises(ValueError, match="clustered, newcombe, wald"):
        campaign_results(df, None, AS_OF, expected_control_share=0.1, method="bootstrap")


# ----------------------------------------------------------------------------- segment at the contact
def test_segments_are_taken_as_of_the_contact(spark):
    history = spark.createDataFrame(
        [
            # X is Mass when contacted on 05-10; the upgrade to Gold (05-15) comes after it
            ("X", "O1", "sms", ts("2026-05-10 10:00"), "treatment", True, ts("2026-05-10 11:00"), 10.0),
            # X's next contact, after the upgrade: Gold
            ("X", "O1", "sms", ts("2026-05-20 10:00"), "treatment", False, None, 0.0),
            # Y: the segments row of the contact's own day counts
            ("Y", "O1", "sms", ts("2026-05-15 09:00"), "control", False, None, 0.0),
            # Z: contacted before its first segments row: 'ALL' only
            ("Z", "O1", "sms", ts("2026-05-02 10:00"), "control", True, ts("2026-05-02 11:00"), 5.0),
        ],
        HISTORY,
    )
    segments = spark.createDataFrame(
        [
            ("X", date(2026, 5, 1), "Mass", "Value Seeker"),
            ("X", date(2026, 5, 15), "Gold", "Digital Active"),
            ("X", date(2026, 7, 31), "Platinum", "Roamer"),  # after as_of
            ("Y", date(2026, 5, 1), "Mass", "Legacy Active"),
            # Y's newest row has no persona: the older row's persona must not fill it in
            ("Y", date(2026, 5, 15), "Gold", None),
            ("Z", date(2026, 5, 3), "Mass", "Value Seeker"),
        ],
        SEGMENTS,
    )
    rows = campaign_results(history, segments, AS_OF, expected_control_share=0.5).collect()
    got = {r["segment"]: (r["contacted_treatment"], r["contacted_control"]) for r in rows}
    assert got == {
        "ALL": (2, 2),
        "value_tier:Mass": (1, 0),  # X's first contact (the latest tier would say Gold)
        "persona:Value Seeker": (1, 0),
        "value_tier:Gold": (1, 1),  # X's second contact and Y
        "persona:Digital Active": (1, 0),
    }
    # the acceptance stays with the tier the decision was made in
    mass = next(r for r in rows if r["segment"] == "value_tier:Mass")
    assert mass["accept_rate_treatment"] == 1.0


# ----------------------------------------------------------------------------- clustered by hand
def test_clustered_interval_by_hand(spark):
    def contact(sub, offer, day, group, revenue):
        accepted = revenue is not None
        at = ts(f"2026-06-{day:02d} 10:00")
        return (sub, offer, "sms", at, group, accepted, at if accepted else None, revenue or 0.0)

    history = spark.createDataFrame(
        [
            # O1 treatment: A 3 contacts (2 accepted, 150), B 1 (0), C 2 (1 accepted, 30)
            contact("A", "O1", 1, "treatment", 100.0),
            contact("A", "O1", 2, "treatment", 50.0),
            contact("A", "O1", 3, "treatment", None),
            contact("B", "O1", 1, "treatment", None),
            contact("C", "O1", 1, "treatment", 30.0),
            contact("C", "O1", 2, "treatment", None),
            # O1 control: D 2 contacts (1 accepted, 40), E 1 (0), F 1 (1 accepted, 20)
            contact("D", "O1", 1, "control", 40.0),
            contact("D", "O1", 2, "control", None),
            contact("E", "O1", 1, "control", None),
            contact("F", "O1", 1, "control", 20.0),
            # O2: a single control subscriber (2 contacts): no variance, no interval
            contact("G", "O2", 1, "treatment", 10.0),
            contact("H", "O2", 1, "treatment", None),
            contact("I", "O2", 1, "control", None),
            contact("I", "O2", 2, "control", 10.0),
        ],
        HISTORY,
    )
    rows = {
        r["offer_id"]: r for r in campaign_results(history, None, AS_OF, expected_control_share=0.5).collect()
    }
    z = z_value(0.95)
    o1 = rows["O1"]
    # Treatment: n = (3, 1, 2), k = (2, 0, 1): p = 3/6 = 0.5; residuals k - p n = (0.5, -0.5, 0),
    # sum of squares 0.5; Var = 0.5 / 6^2 * 3/2 = 1/48.
    # Control: n = (2, 1, 1), k = (1, 0, 1): p = 2/4 = 0.5; residuals (0, -0.5, 0.5), sum 0.5;
    # Var = 0.5 / 4^2 * 3/2 = 3/64.  Uplift 0 +/- z sqrt(1/48 + 3/64).
    assert (o1["contacted_treatment"], o1["contacted_control"]) == (6, 4)
    assert (o1["subscribers_treatment"], o1["subscribers_control"]) == (3, 3)
    assert o1["uplift"] == pytest.approx(0.0, abs=1e-12)
    half = z * math.sqrt(1 / 48 + 3 / 64)
    assert o1["uplift_ci_low"] == pytest.approx(-half, rel=1e-9)
    assert o1["uplift_ci_high"] == pytest.approx(half, rel=1e-9)
    # Revenue per contact: treatment r = (150, 0, 30) / 6 = 30, residuals r - 30 n = (60, -30, -30),
    # sum of squares 5400, Var = 5400 / 36 * 3/2 = 225; control r = (40, 0, 20) / 4 = 15,
    # residuals (10, -15, 5), sum 350, Var = 350 / 16 * 3/2 = 32.8125.
    # Incremental = (30 - 15) * 6 = 90 +/- 6 z sqrt(225 + 32.8125).
    rev_half = 6 * z * math.sqrt(225 + 32.8125)
    assert o1["incremental_revenue"] == pytest.approx(90.0, rel=1e-12)
    assert o1["incremental_revenue_ci_low"] == pytest.approx(90.0 - rev_half, rel=1e-9)
    assert o1["incremental_revenue_ci_high"] == pytest.approx(90.0 + rev_half, rel=1e-9)
    # The contact-level Wald interval of the same data is another number: z sqrt(.25/6 + .25/4).
    wald = campaign_results(history, None, AS_OF, expected_control_share=0.5, method="wald")
    wald_o1 = wald.where(F.col("offer_id") == "O1").first()
    assert wald_o1["uplift_ci_high"] == pytest.approx(z * math.sqrt(0.25 / 6 + 0.25 / 4), rel=1e-9)

    o2 = rows["O2"]
    assert o2["uplift"] == pytest.approx(0.5 - 0.5)
    assert o2["subscribers_control"] == 1
    assert o2["uplift_ci_low"] is None and o2["incremental_revenue_ci_high"] is None


def test_clustered_variance_formula_equals_its_definition():
    # The moment form the Spark aggregation uses against the residual form of the definition.
    rng = np.random.default_rng(3)
    n = rng.integers(1, 9, 50).astype(float)
    k = rng.binomial(n.astype(int), 0.3).astype(float)
    p = k.sum() / n.sum()
    direct = ((k - p * n) ** 2).sum() / n.sum() ** 2 * 50 / 49
    moments = clustered_ratio_variance(
        50.0, n.sum(), np.var(k, ddof=1), np.cov(k, n, ddof=1)[0, 1], np.var(n, ddof=1), p
    )
    assert moments == pytest.approx(direct, rel=1e-12)
    # one contact per subscriber: the clustered variance is the Wald one times m / (m - 1)
    ones = np.ones(40)
    k1 = (rng.random(40) < 0.2).astype(float)
    p1 = k1.mean()
    clustered = clustered_ratio_variance(40.0, 40.0, np.var(k1, ddof=1), 0.0, 0.0, p1)
    assert clustered == pytest.approx(wald_variance(k1.sum(), ones.sum()) * 40 / 39, rel=1e-12)


def _coverage_benchmark():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_clustered_ci.py"
    spec = importlib.util.spec_from_file_location("bench_clustered_ci", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_clustered_coverage_in_seeded_simulation():
    # 300 seeded campaigns with 1..8 contacts per subscriber and subscriber-level accept
    # probabilities (benchmarks/bench_clustered_ci.py): the contact-level intervals are too
    # narrow, the clustered ones keep close to the nominal 95%.
    result = _coverage_benchmark().run(replications=300, seed=7)
    cov = {name: s["coverage"] for name, s in result["intervals"].items()}
    assert cov["uplift_clustered"] >= 0.92, cov
    assert cov["revenue_clustered"] >= 0.92, cov
    assert cov["uplift_clustered"] > max(cov["uplift_wald"], cov["uplift_newcombe"]), cov
    assert cov["revenue_clustered"] > cov["revenue_naive"], cov
    # not bought by an absurdly wide interval: its implied standard error is the estimate's spread
    for name in ("uplift_clustered", "revenue_clustered"):
        assert 0.9 < result["intervals"][name]["implied_se_over_sd"] < 1.1, result["intervals"][name]


# ----------------------------------------------------------------------------- simulated
PRICE_MEAN = 20_000.0


def _uniform(seed: int, salt: int):
    # Deterministic uniform in [0, 1) from a hash of (seed, salt, id): no Python UDF, no RNG state.
    return F.pmod(F.xxhash64(F.lit(seed), F.lit(salt), F.col("id")), F.lit(1_000_000_007)) / 1_000_000_007.0


def simulate(
    spark,
    contacts: int,
    control_share: float,
    p_control: float,
    p_treatment: float,
    replicates: int = 1,
    seed: int = 11,
):
    """offer_history with a planted uplift: `replicates` independent offers 'SIM<i>'.

    Revenue of an acceptance ~ Uniform(10k, 30k) (mean PRICE_MEAN), so the planted
    incremental revenue is (p_t - p_c) * PRICE_MEAN * treatment contacts.
    """
    is_control = _uniform(seed, 1) < control_share
    accepted = _uniform(seed, 2) < F.when(is_control, p_control).otherwise(p_treatment)
    price = 10_000.0 + 20_000.0 * _uniform(seed, 3)
    return spark.range(contacts * replicates).select(
        F.concat(F.lit("S"), F.col("id").cast("string")).alias("subscriber_id"),
        F.concat(F.lit("SIM"), (F.col("id") % replicates).cast("string")).alias("offer_id"),
        F.lit("sms").alias("channel"),
        F.lit(ts("2026-06-10 12:00")).alias("contacted_ts"),
        F.when(is_control, "control").otherwise("treatment").alias("group"),
        accepted.alias("accepted"),
        F.when(accepted, F.lit(ts("2026-06-11 12:00"))).alias("accepted_ts"),
        F.when(accepted, price).otherwise(0.0).alias("revenue"),
    )


@pytest.mark.parametrize("method", ["clustered", "newcombe", "wald"])
def test_planted_uplift_is_covered_and_significant(spark, method):
    history = simulate(spark, 20_000, 0.10, 0.10, 0.15)
    row = campaign_results(history, None, AS_OF, expected_control_share=0.1, method=method).first()
    assert row["uplift_ci_low"] <= 0.05 <= row["uplift_ci_high"]
    assert row["uplift_ci_low"] > 0.0  # ~7 standard errors away from zero with 20k contacts
    planted_revenue = 0.05 * PRICE_MEAN * row["contacted_treatment"]
    assert row["incremental_revenue_ci_low"] <= planted_revenue <= row["incremental_revenue_ci_high"]
    assert row["incremental_revenue_ci_low"] > 0.0
    assert row["srm_flag"] is False


def test_no_uplift_interval_covers_zero(spark):
    history = simulate(spark, 20_000, 0.10, 0.10, 0.10)
    row = campaign_results(history, None, AS_OF, expected_control_share=0.1).first()
    assert row["uplift_ci_low"] < 0.0 < row["uplift_ci_high"]
    assert row["incremental_revenue_ci_low"] < 0.0 < row["incremental_revenue_ci_high"]


def test_interval_coverage_over_replicates(spark):
    # 40 independent experiments of 2,000 contacts: a 95% interval should miss ~2 of them.
    history = simulate(spark, 2_000, 0.10, 0.10, 0.15, replicates=40, seed=5)
    rows = campaign_results(history, None, AS_OF, expected_control_share=0.1).collect()
    assert len(rows) == 40
    covered = sum(r["uplift_ci_low"] <= 0.05 <= r["uplift_ci_high"] for r in rows)
    revenue_covered = sum(
        r["incremental_revenue_ci_low"]
        <= 0.05 * PRICE_MEAN * r["contacted_treatment"]
        <= r["incremental_revenue_ci_high"]
        for r in rows
    )
    assert covered >= 34, covered
    assert revenue_covered >= 34, revenue_covered


def test_sample_ratio_mismatch_flagged_only_when_skewed(spark):
    skewed = simulate(spark, 20_000, 0.30, 0.10, 0.15)
    fair = simulate(spark, 20_000, 0.10, 0.10, 0.15)
    bad = campaign_results(skewed, None, AS_OF, expected_control_share=0.1, srm_alpha=0.001).first()
    good = campaign_results(fair, None, AS_OF, expected_control_share=0.1, srm_alpha=0.001).first()
    assert bad["srm_flag"] is True and bad["srm_p_value"] < 1e-12
    assert good["srm_flag"] is False and good["srm_p_value"] > 0.001
    n_t, n_c = good["contacted_treatment"], good["contacted_control"]
    expected_p = stats.chisquare([n_c, n_t], [0.1 * (n_t + n_c), 0.9 * (n_t + n_c)]).pvalue
    assert good["srm_p_value"] == pytest.approx(expected_p, rel=1e-5)


def test_no_control_planned_means_no_srm_test(spark):
    history = simulate(spark, 1_000, 0.10, 0.10, 0.15)
    row = campaign_results(history, None, AS_OF, expected_control_share=0.0).first()
    assert row["srm_p_value"] is None and row["srm_flag"] is False
    assert not math.isnan(row["uplift"])


# ----------------------------------------------------------------------------- stage + generator
@pytest.mark.slow
def test_generated_data_intervals_cover_planted_uplift(spark, tmp_path):
    from cvo_spark.core.config import parse_config
    from cvo_spark.core.io import TableStore
    from cvo_spark.core.stage import StageContext
    from cvo_spark.measure import stage as measure
    from cvo_spark.synth.generate import DEFAULT_END_DATE, generate_bronze

    lake = tmp_path / "lake"
    # Only the tables this stage reads: the generator's frames are lazy and deterministic,
    # so these are the rows write_bronze would write (and ingest keep: they are clean).
    generated = generate_bronze(spark, 2_000, 120, 7)
    config = parse_config({"lake": str(lake), "measure": {"period": "all"}})
    store = TableStore(spark, config)
    store.overwrite(generated["offer_history"], "silver", "offer_history")
    # The planted effect differs by subscriber, channel and recent contacts: the truth of an
    # (offer, channel) cell is the mean planted effect over its contacts.
    truth = (
        generated["_contact_truth"]
        .groupBy("offer_id", "channel")
        .agg(F.avg("true_uplift").alias("true_uplift"))
    )
    ctx = StageContext(spark, config, store, DEFAULT_END_DATE, "test-run")
    result = measure.run(ctx)
    again = measure.run(ctx)  # idempotent: same partition, same rows
    assert again.row_counts == result.row_counts

    by_channel = (
        store.read("gold", "campaign_results")
        .where((F.col("segment") == "ALL") & (F.col("contacted_control") >= 30))
        .join(truth, on=["offer_id", "channel"], how="inner")
        .select("uplift_ci_low", "uplift_ci_high", "true_uplift", "srm_flag")
        .collect()
    )
    assert len(by_channel) >= 20
    covered = sum(r["uplift_ci_low"] <= r["true_uplift"] <= r["uplift_ci_high"] for r in by_channel)
    coverage = covered / len(by_channel)
    print(
        f"\ngenerated data: {covered}/{len(by_channel)} offer x channel intervals cover the planted uplift "
        f"({coverage:.0%}); {sum(r['srm_flag'] for r in by_channel)} SRM flags"
    )
    assert coverage >= 0.8
    assert not any(r["srm_flag"] for r in by_channel)

    # The same cells with the interval clustered by subscriber (the generator contacts a
    # subscriber repeatedly): it should cover at least as well.
    clustered = (
        campaign_results(
            generated["offer_history"],
            None,
            DEFAULT_END_DATE,
            expected_control_share=config.offers.control_share,
            period="all",
            method="clustered",
        )
        .where(F.col("contacted_control") >= 30)
        .join(truth, on=["offer_id", "channel"], how="inner")
        .select("uplift_ci_low", "uplift_ci_high", "true_uplift")
        .collect()
    )
    assert len(clustered) == len(by_channel)
    covered_clustered = sum(r["uplift_ci_low"] <= r["true_uplift"] <= r["uplift_ci_high"] for r in clustered)
    print(f"clustered by subscriber: {covered_clustered}/{len(clustered)} cover the planted uplift")
    assert covered_clustered / len(clustered) >= 0.8
