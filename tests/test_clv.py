"""BG/NBD + Gamma-Gamma: published CDNOW estimates, a simulated population, and the Spark side."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cvo_spark.core.schemas import INPUT_SCHEMAS
from cvo_spark.models import clv

CDNOW = Path(__file__).parent / "data" / "cdnow_customers_summary_with_transactions.csv"
# Fader, Hardie & Lee (2005), CDNOW 1/10th sample, 39-week calibration period.
PUBLISHED_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
# Fader & Hardie (2013), "The Gamma-Gamma Model of Monetary Value", same sample.
PUBLISHED_GG = {"p": 6.25, "q": 3.74, "gamma": 15.44}


@pytest.fixture(scope="module")
def cdnow() -> pd.DataFrame:
    return pd.read_csv(CDNOW)


def test_cdnow_bgnbd_mle_recovers_published_parameters(cdnow):
    # Fitted on the distinct (x, t_x, T) tuples with counts, as the pipeline does.
    tuples = cdnow.groupby(["x", "t_x", "T"]).size().reset_index(name="n")
    assert len(tuples) < len(cdnow)
    fit = clv.fit_bgnbd(tuples["x"], tuples["t_x"], tuples["T"], tuples["n"])
    for name, published in PUBLISHED_BGNBD.items():
        assert getattr(fit, name) == pytest.approx(published, rel=0.02), name
    # Published log-likelihood -9582.4.
    assert clv.bgnbd_log_likelihood(fit, cdnow["x"], cdnow["t_x"], cdnow["T"]) == pytest.approx(
        -9582.4, abs=0.5
    )


def test_cdnow_conditional_expectation_matches_the_paper():
    # Paper, section 5: a customer with x=2, t_x=30.43, T=38.86 expects 1.226 purchases in the next 39 weeks.
    p = clv.BgNbdParams(**PUBLISHED_BGNBD)
    assert clv.bgnbd_conditional_expected(p, 39, [2], [30.43], [38.86])[0] == pytest.approx(1.226, abs=0.002)


def test_cdnow_gamma_gamma_mle_recovers_published_parameters(cdnow):
    fit = clv.fit_gamma_gamma(cdnow["x"], cdnow["zbar"])
    for name, published in PUBLISHED_GG.items():
        assert getattr(fit, name) == pytest.approx(published, rel=0.02), name


def _simulate(
    n: int, params: clv.BgNbdParams, T: float, horizon: float, seed: int, events: list | None = None
):
    """BG/NBD population: Poisson purchases at rate lam, drop-out with prob p after each purchase.

    Each customer's first purchase is at time 0 (not counted in x). Repeat purchases in
    (0, T] are appended to `events` as (customer, time) when a list is given.
    """
    rng = np.random.default_rng(seed)
    lam = rng.gamma(params.r, 1.0 / params.alpha, n)
    p = rng.beta(params.a, params.b, n)
    x, t_x, future = np.zeros(n), np.zeros(n), np.zeros(n)
    # BG/NBD: drop-out can happen only after a repeat purchase (x = 0 means alive).
    t, alive = np.zeros(n), np.ones(n, dtype=bool)
    while alive.any():
        nxt = t + rng.exponential(1.0 / np.maximum(lam, 1e-12))
        in_cal = alive & (nxt <= T)
        in_hold = alive & (nxt > T) & (nxt <= T + horizon)
        x[in_cal] += 1
        t_x[in_cal] = nxt[in_cal]
        future[in_hold] += 1
        if events is not None:
            events.extend(zip(np.flatnonzero(in_cal), nxt[in_cal], strict=True))
        alive &= nxt <= T + horizon
        t = np.where(alive, nxt, t)
        alive &= rng.random(n) >= p  # drop out after this purchase
    return x, t_x, future


def test_simulated_population_parameters_and_holdout_are_recovered():
    true = clv.BgNbdParams(r=0.6, alpha=3.0, a=0.9, b=3.0)
    T, horizon = 40.0, 20.0
    x, t_x, future = _simulate(20_000, true, T, horizon, seed=3)
    # Whole-day resolution (the pipeline's rounding), then fit on distinct tuples.
    t_x_days = np.round(t_x * 7) / 7
    df = pd.DataFrame({"x": x, "t_x": t_x_days}).groupby(["x", "t_x"]).size().reset_index(name="n")
    fit = clv.fit_bgnbd(df["x"], df["t_x"], np.full(len(df), T), df["n"])
    assert fit.r == pytest.approx(true.r, rel=0.10)
    assert fit.alpha == pytest.approx(true.alpha, rel=0.15)
    assert fit.a == pytest.approx(true.a, rel=0.25)
    assert fit.b == pytest.approx(true.b, rel=0.25)
    # The conditional expectation predicts the simulated hold-out purchases on average and by group.
    expected = clv.bgnbd_conditional_expected(fit, horizon, x, t_x, np.full_like(x, T))
    assert expected.mean() == pytest.approx(future.mean(), rel=0.05)
    for lo, hi in ((0, 0), (1, 2), (3, 100)):
        sel = (x >= lo) & (x <= hi)
        assert expected[sel].mean() == pytest.approx(future[sel].mean(), rel=0.12), (lo, hi)


def test_probability_alive_is_one_without_repeat_and_falls_with_silence():
    p = clv.BgNbdParams(**PUBLISHED_BGNBD)
    assert clv.bgnbd_probability_alive(p, [0], [0.0], [30.0])[0] == pytest.approx(1.0)
    recent, stale = clv.bgnbd_probability_alive(p, [5, 5], [29.0, 5.0], [30.0, 30.0])
    assert recent > stale


def test_pfaff_form_equals_the_paper_formula_where_both_are_finite():
    from scipy.special import hyp2f1

    p = clv.BgNbdParams(0.5, 4.0, 1.3, 2.5)
    x, t_x, T, t = np.array([0.0, 1, 4, 10]), np.array([0.0, 5, 20, 30]), np.full(4, 35.0), 26.0
    a, b, r, alpha = p.a, p.b, p.r, p.alpha
    z = t / (alpha + T + t)
    head = (
        (a + b + x - 1)
        / (a - 1)
        * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp2f1(r + x, b + x, a + b + x - 1, z))
    )
    odds = np.where(x > 0, a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x), 0.0)
    np.testing.assert_allclose(clv.bgnbd_conditional_expected(p, t, x, t_x, T), head / (1 + odds), rtol=1e-8)


def test_long_horizon_with_near_zero_dropout_is_finite_and_matches_the_nbd_limit():
    # A fit on data where hardly anyone drops out ends near a -> 0, b -> inf (seen on the
    # generator's data). A 12-month horizon is then longer than alpha + T, the case where
    # the earlier Pfaff form returned NaN and every CLV became 0. With p ~ 0 the model is
    # a plain NBD: E = (r + x) t / (alpha + T), whatever the recency.
    p = clv.BgNbdParams(r=5.705, alpha=4.012, a=6.3e-11, b=9.9e7)
    x, t_x = np.array([0.0, 2, 26, 66]), np.array([0.0, 30.43, 17.4, 21.0])
    T, t = np.array([1 / 7, 38.86, 18.7, 21.3]), 52.18
    expected = clv.bgnbd_conditional_expected(p, t, x, t_x, T)
    # Even x = 2 with a long silence (t_x = 30.43 of T = 38.86) is alive: a / (b + x - 1) ~ 6e-19.
    np.testing.assert_allclose(expected, (p.r + x) * t / (p.alpha + T), rtol=1e-6)


def test_moderate_parameters_beyond_unit_argument_match_a_high_precision_reference():
    # Reference values from mpmath (50 digits) of the paper's own formula, a = 1.5, b = 1e5:
    # horizon 52.18 weeks, x = 26, t_x = 17.4, T = 18.7 -> 67.288159 (the Pfaff form gave NaN).
    p = clv.BgNbdParams(r=2.0, alpha=3.0, a=1.5, b=1e5)
    assert clv.bgnbd_conditional_expected(p, 52.18, [26], [17.4], [18.7])[0] == pytest.approx(
        67.288159, rel=1e-7
    )


def test_a_non_finite_expectation_is_an_error_not_a_zero_clv():
    from cvo_spark.core.errors import ModelQualityError

    p = clv.BgNbdParams(**PUBLISHED_BGNBD)
    with pytest.raises(ModelQualityError, match="not finite for 1"):
        clv.bgnbd_conditional_expected(p, 52.0, [1.0, 2.0], [5.0, 30.43], [np.nan, 38.86])


# --------------------------------------------------------------------------- Spark side
def _tx(spark):
    recharges = spark.createDataFrame(
        [
            ("a", datetime(2026, 1, 1, 9), 10_000.0, "app"),
            ("a", datetime(2026, 1, 1, 18), 5_000.0, "app"),  # same day: one transaction of 15k
            ("a", datetime(2026, 1, 11, 9), 20_000.0, "app"),
            ("a", datetime(2026, 1, 31, 9), 40_000.0, "app"),
            ("a", datetime(2026, 2, 15, 9), 99_000.0, "app"),  # after as_of: ignored
            ("b", datetime(2026, 1, 21, 9), 10_000.0, "app"),
            ("c", datetime(2026, 1, 5, 9), None, "app"),
        ],
        INPUT_SCHEMAS["recharges"],
    )
    purchases = spark.createDataFrame(
        [
            ("a", datetime(2026, 1, 11, 20), "data_x", 10_000.0, "app"),
            ("c", datetime(2026, 1, 25, 9), "data_x", 30_000.0, "app"),
        ],
        INPUT_SCHEMAS["purchases"],
    )
    return recharges, purchases


def test_rfm_summary_by_hand(spark):
    recharges, purchases = _tx(spark)
    rows = {r["subscriber_id"]: r for r in clv.rfm_summary(recharges, purchases, date(2026, 1, 31)).collect()}
    # a: days 01-01 (15k), 01-11 (30k), 01-31 (40k): 2 repeats, recency 30, T 30, mean repeat (30k+40k)/2.
    assert (rows["a"]["frequency"], rows["a"]["recency_days"], rows["a"]["t_days"]) == (2, 30, 30)
    assert rows["a"]["monetary_value"] == pytest.approx(35_000.0)
    assert (
        rows["b"]["frequency"],
        rows["b"]["recency_days"],
        rows["b"]["t_days"],
        rows["b"]["monetary_value"],
    ) == (0, 0, 10, 0.0)
    # c: a null recharge amount counts 0; repeat day 01-25 is worth 30k.
    assert (rows["c"]["frequency"], rows["c"]["t_days"], rows["c"]["monetary_value"]) == (1, 26, 30_000.0)


def test_with_clv_joins_driver_expectation_and_gamma_gamma_column(spark):
    recharges, purchases = _tx(spark)
    summary = clv.rfm_summary(recharges, purchases, date(2026, 1, 31))
    model = clv.ClvModel(clv.BgNbdParams(**PUBLISHED_BGNBD), clv.GammaGammaParams(6.25, 3.74, 15_000.0), 7.0)
    out = {r["subscriber_id"]: r for r in clv.with_clv(summary, model, 84.0, "clv").collect()}
    assert len(out) == 3
    exp_a = clv.bgnbd_conditional_expected(model.bgnbd, 12.0, [2], [30 / 7], [30 / 7])[0]
    spend_a = (15_000.0 + 2 * 35_000.0) * 6.25 / (6.25 * 2 + 3.74 - 1)
    assert out["a"]["expected_transactions"] == pytest.approx(exp_a, rel=1e-9)
    assert out["a"]["clv"] == pytest.approx(exp_a * spend_a, rel=1e-9)
    # No repeat purchase: Gamma-Gamma falls back to the population mean p*gamma/(q-1).
    assert out["b"]["clv"] == pytest.approx(
        out["b"]["expected_transactions"] * model.gamma_gamma.population_mean
    )


def test_discount_lowers_clv_and_zero_discount_matches_plain(spark):
    model = clv.ClvModel(clv.BgNbdParams(**PUBLISHED_BGNBD), clv.GammaGammaParams(6.25, 3.74, 15.44), 7.0)
    tuples = pd.DataFrame({"frequency": [3], "recency_days": [60], "t_days": [90]})
    plain = clv.expected_transactions_table(model, tuples, 360.0)["expected_transactions"][0]
    disc = clv.expected_transactions_table(model, tuples, 360.0, monthly_discount=0.01)[
        "expected_transactions"
    ][0]
    assert 0 < disc < plain
    assert disc > plain / 1.01**12  # each month is discounted at most 12 periods


def test_fit_clv_on_spark_aggregates_recovers_simulated_parameters(spark):
    # Slow buyers (about one purchase per 12 weeks on average) so that whole-day rounding
    # rarely merges two purchases into one transaction day.
    true = clv.BgNbdParams(r=0.5, alpha=6.0, a=0.7, b=2.5)  # alpha in weeks
    T_days, n = 364, 6_000
    events: list = []
    x, _, _ = _simulate(n, true, T_days / 7, 0.0, seed=11, events=events)
    start = date(2025, 1, 1)
    rng = np.random.default_rng(5)
    days = {(i, 0) for i in range(n)} | {(int(i), int(np.ceil(t * 7))) for i, t in events}
    rows = [
        (
            f"s{i}",
            datetime.combine(start + timedelta(days=d), datetime.min.time()),
            float(rng.gamma(6.0, 2_000.0)),
            "app",
        )
        for i, d in sorted(days)
    ]
    recharges = spark.createDataFrame(rows, INPUT_SCHEMAS["recharges"])
    purchases = spark.createDataFrame([], INPUT_SCHEMAS["purchases"])
    summary = clv.rfm_summary(recharges, purchases, start + timedelta(days=T_days))
    tuples = clv.bgnbd_tuple_counts(summary)
    assert int(tuples["n"].sum()) == n and len(tuples) < n / 2
    assert int((tuples["frequency"] * tuples["n"]).sum()) == pytest.approx(x.sum(), rel=0.02)
    fit = clv.fit_clv(summary, time_unit_days=7.0)
    assert fit.bgnbd.r == pytest.approx(true.r, rel=0.2)
    assert fit.bgnbd.alpha == pytest.approx(true.alpha, rel=0.25)
    assert fit.bgnbd.a == pytest.approx(true.a, rel=0.35)
    # Spend per transaction ~ Gamma(6, 2000): mean 12,000.
    assert fit.gamma_gamma.population_mean == pytest.approx(12_000.0, rel=0.1)


def test_gbt_clv_method_learns_spend_from_features(spark):
    from pyspark.sql import functions as F

    from cvo_spark.core.config import ModelsConfig
    from cvo_spark.models.labels import with_split
    from cvo_spark.models.training import fit_clv_target

    latest, n = date(2026, 4, 1), 1500
    frame = with_split(
        spark.range(2 * n, numPartitions=2).select(
            F.format_string("s%05d", F.col("id") % n).alias("subscriber_id"),
            F.when(F.col("id") < n, F.lit(date(2026, 3, 1))).otherwise(F.lit(latest)).alias("snapshot_date"),
            F.rand(1).alias("driver"),
            F.rand(2).alias("noise"),
        ),
        latest,
        seed=7,
    ).cache()
    # Each subscriber spends 100k x driver in the 30 days after each snapshot (and nothing else).
    recharges = frame.select(
        "subscriber_id",
        F.to_timestamp(F.date_add("snapshot_date", 5)).alias("recharge_ts"),
        (F.col("driver") * 100_000.0).alias("amount"),
        F.lit("app").alias("channel"),
    )
    silver = {"recharges": recharges, "purchases": spark.createDataFrame([], INPUT_SCHEMAS["purchases"])}
    cfg = ModelsConfig(clv_method="gbt", horizon_days=30, gbt_max_iter=10, gbt_max_depth=3)
    fit = fit_clv_target(silver, frame, latest, cfg, ["driver", "noise"])
    assert fit.kind == "gbt" and fit.features == ["driver", "noise"]
    assert fit.metrics["r2"] > 0.8
    assert fit.metrics["wape"] < fit.baseline_metrics["wape"]  # the naive rate sees no spend before T


def test_runaway_no_dropout_fit_stays_in_the_box_and_scores_as_the_nbd():
    # Seen on a 120-day generated lake: nobody drops out, and the unbounded optimiser
    # walked to a = 3.6e-74, b = 3.5e66; the closed form then gave +-7.9e50 transactions.
    runaway = clv.BgNbdParams(r=6.05, alpha=4.46, a=3.6e-74, b=3.5e66)
    x, t_x, T = (
        np.array([0.0, 5, 8, 46]),
        np.array([0.0, 58 / 7, 52 / 7, 88 / 7]),
        np.array([3, 62, 64, 89]) / 7,
    )
    expected = clv.bgnbd_conditional_expected(runaway, 30 / 7, x, t_x, T)
    np.testing.assert_allclose(expected, (runaway.r + x) * (30 / 7) / (runaway.alpha + T), rtol=1e-9)
    # Regular buyers who never stop: the fit ends at the box edge, not beyond it.
    rng = np.random.default_rng(3)
    T_obs = np.full(400, 12.0)
    x_obs = rng.poisson(8.0, 400).astype(float)
    t_x_obs = np.where(x_obs > 0, T_obs - rng.uniform(0, 0.3, 400), 0.0)
    fit = clv.fit_bgnbd(x_obs, t_x_obs, T_obs)
    lo, hi = np.exp(clv.BGNBD_LOG_BOUNDS[0])
    assert all(lo * 0.999 <= v <= hi * 1.001 for v in (fit.r, fit.alpha, fit.a, fit.b)), fit
    assert fit.a / fit.b < 1e-6  # no dropout learned
    e = clv.bgnbd_conditional_expected(fit, 4.0, x_obs, t_x_obs, T_obs)
    assert np.all(e >= 0) and np.all(e <= (fit.r + x_obs) * 4.0 / (fit.alpha + T_obs) * (1 + 1e-6))


def test_gamma_gamma_keeps_a_finite_mean_spend():
    # A heavy tail pulls q towards 1 (infinite mean); the fit stays at q > 1, so the
    # expected spend of a subscriber without repeat purchases stays positive and finite.
    rng = np.random.default_rng(5)
    x = rng.integers(1, 6, 500).astype(float)
    m = np.exp(rng.normal(9.0, 2.5, 500))
    fit = clv.fit_gamma_gamma(x, m)
    assert fit.q > 1.0
    assert 0 < fit.p * fit.gamma / (fit.q - 1.0) < np.inf
