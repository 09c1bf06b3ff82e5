"""Metrics against sklearn and hand values on tiny data; readings; the honesty guard."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pyspark.sql.types import DoubleType, StringType, StructField, StructType
from sklearn.metrics import brier_score_loss, roc_auc_score

from cvo_spark.core.errors import ModelQualityError
from cvo_spark.models import evaluation as ev

SCHEMA = StructType(
    [
        StructField("subscriber_id", StringType()),
        StructField("label", DoubleType()),
        StructField("p", DoubleType()),
    ]
)

# 20 rows: scores with a tie (0.6 twice, one of each class) and an imperfect ranking.
LABELS = [1, 1, 0, 1, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
SCORES = [
    0.95,
    0.9,
    0.85,
    0.6,
    0.6,
    0.55,
    0.5,
    0.45,
    0.4,
    0.35,
    0.3,
    0.25,
    0.2,
    0.18,
    0.15,
    0.12,
    0.1,
    0.08,
    0.05,
    0.02,
]


@pytest.fixture(scope="module")
def tiny(spark):
    rows = [(f"s{i:02d}", float(y), float(p)) for i, (y, p) in enumerate(zip(LABELS, SCORES, strict=True))]
    return spark.createDataFrame(rows, SCHEMA)


def test_binary_metrics_match_sklearn_and_hand_values(tiny):
    m = ev.binary_metrics(tiny, "label", "p")
    assert m["roc_auc"] == pytest.approx(roc_auc_score(LABELS, SCORES), abs=1e-9)
    assert m["brier"] == pytest.approx(brier_score_loss(LABELS, SCORES), abs=1e-12)
    assert m["base_rate"] == pytest.approx(5 / 20)
    # Top decile = the two highest scores, both positive: rate 1.0 / 0.25 = lift 4, capture 2 of 5.
    assert m["lift_top_decile"] == pytest.approx(4.0)
    assert m["capture_top_decile"] == pytest.approx(0.4)
    # Accuracy at 0.5: predicted 1 for the 7 scores >= 0.5 (4 right), 0 for 13 (12 right) -> 16/20.
    assert m["accuracy"] == pytest.approx(16 / 20)
    assert 0.0 < m["auc_ci_low"] < m["roc_auc"] < m["auc_ci_high"] <= 1.0


def test_pr_auc_is_mllib_trapezoid_of_the_precision_recall_curve(tiny):
    # MLlib: points per distinct threshold (descending), starting at (recall 0, first precision).
    y, s = np.array(LABELS), np.array(SCORES)
    recall, precision = [0.0], []
    for t in sorted(set(SCORES), reverse=True):
        sel = s >= t
        precision.append(y[sel].sum() / sel.sum())
        recall.append(y[sel].sum() / y.sum())
    precision = [precision[0]] + precision
    expected = sum(
        (recall[i] - recall[i - 1]) * (precision[i] + precision[i - 1]) / 2 for i in range(1, len(recall))
    )
    assert ev.binary_metrics(tiny, "label", "p")["pr_auc"] == pytest.approx(expected, abs=1e-9)


def test_lift_curve_is_cumulative_and_ends_at_one(tiny):
    curve = ev.lift_curve(tiny, "label", "p")
    assert [p.bucket for p in curve] == list(range(1, 11))
    assert curve[0].y == pytest.approx(4.0)
    assert curve[-1].x == pytest.approx(1.0) and curve[-1].y == pytest.approx(1.0)
    # Top 30% = 6 rows holding 4 positives: (4/6)/0.25
    assert curve[2].y == pytest.approx((4 / 6) / 0.25)


def test_calibration_table_bins_by_predicted_probability(tiny):
    table = {p.bucket: p for p in ev.calibration_table(tiny, "label", "p")}
    # Bin 10 = [0.9, 1.0]: scores 0.95, 0.9 (both positive).
    assert table[10].n == 2 and table[10].y == pytest.approx(1.0) and table[10].x == pytest.approx(0.925)
    # Bin 1 = [0, 0.1): 0.08, 0.05, 0.02 all negative.
    assert table[1].n == 3 and table[1].y == pytest.approx(0.0)
    assert sum(p.n for p in table.values()) == 20


def test_regression_metrics_by_hand(spark):
    df = spark.createDataFrame(
        [(10.0, 12.0), (0.0, 1.0), (5.0, 5.0), (20.0, 14.0)], "actual double, pred double"
    )
    m = ev.regression_metrics(df, "actual", "pred")
    assert m["mae"] == pytest.approx((2 + 1 + 0 + 6) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt((4 + 1 + 0 + 36) / 4))
    assert m["wape"] == pytest.approx(9 / 35)
    mean = 35 / 4
    var = sum((a - mean) ** 2 for a in (10, 0, 5, 20)) / 4
    assert m["r2"] == pytest.approx(1 - (41 / 4) / var)
    assert "mape" not in m


def test_auc_interval_and_chance_verdict():
    low, high = ev.auc_confidence_interval(0.52, 30, 300)
    assert low < 0.5 < high
    assert ev.is_no_better_than_chance(0.52, low)
    low, high = ev.auc_confidence_interval(0.80, 300, 3000)
    assert low > 0.75 and not ev.is_no_better_than_chance(0.80, low)
    assert ev.is_no_better_than_chance(0.54, 0.53)  # under 0.55 even with a tight interval


def test_readings_say_chance_and_explain_numbers():
    m = {"roc_auc": 0.51, "auc_ci_low": 0.45, "auc_ci_high": 0.57, "base_rate": 0.1, "accuracy": 0.9}
    r = ev.binary_readings("churn", m)
    assert "NO BETTER THAN CHANCE" in r["roc_auc"] and "0.50 is chance" in r["roc_auc"]
    good = ev.binary_readings(
        "churn", {"roc_auc": 0.8, "auc_ci_low": 0.76, "auc_ci_high": 0.84, "base_rate": 0.1}
    )
    assert "better than chance" in good["roc_auc"] and "NO BETTER" not in good["roc_auc"]
    assert "MAPE is not used" in ev.regression_readings({"wape": 0.3})["wape"]


def test_honesty_guard_fires_on_too_good_results():
    with pytest.raises(ModelQualityError, match="leak to investigate"):
        ev.check_honesty("churn", {"roc_auc": 0.995, "accuracy": 0.97}, 0.99)
    with pytest.raises(ModelQualityError, match="100% out-of-time accuracy"):
        ev.check_honesty("churn", {"roc_auc": 0.98, "accuracy": 1.0}, 0.99)
    with pytest.raises(ModelQualityError, match="single class"):
        ev.check_honesty("churn", {"roc_auc": float("nan"), "positives": 0, "n": 10}, 0.99)
    ev.check_honesty("churn", {"roc_auc": 0.8, "accuracy": 0.9}, 0.99)  # a plausible result passes


# --------------------------------------------------------------------------- DeLong
def _numpy_delong(labels, scores):
    """DeLong by its definition: the pairwise kernel (1 above, 1/2 tie), placements, variances."""
    y, s = np.asarray(labels), np.asarray(scores, dtype=float)
    pos, neg = s[y == 1], s[y == 0]
    kernel = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = kernel.mean(axis=1), kernel.mean(axis=0)
    return v10.mean(), np.var(v10, ddof=1) / pos.size + np.var(v01, ddof=1) / neg.size


def test_delong_variance_by_hand(spark):
    # Positives 0.9, 0.6, 0.4; negatives 0.7, 0.6, 0.3, 0.2 (one tie at 0.6).
    # V10 (share of negatives each positive outscores, tie = 1/2) = 1, 2.5/4, 2/4 -> AUC 17/24.
    # V01 (share of positives outscoring each negative) = 1/3, 1.5/3, 1, 1 -> mean 17/24.
    # In 24ths: V10 deviations 7, -2, -5 -> S10 = 78/576 / 2; V01 deviations -9, -5, 7, 7 ->
    # S01 = 204/576 / 3. Var = S10/3 + S01/4 = 13/576 + 17/576 = 5/96.
    df = spark.createDataFrame(
        [(1.0, 0.9), (1.0, 0.6), (1.0, 0.4), (0.0, 0.7), (0.0, 0.6), (0.0, 0.3), (0.0, 0.2), (None, 0.5)],
        "label double, p double",
    )
    auc, var, n_pos, n_neg = ev.delong_auc_variance(df, "label", "p")
    assert (n_pos, n_neg) == (3, 4)  # the null label is left out
    assert auc == pytest.approx(17 / 24, abs=1e-12)
    assert var == pytest.approx(5 / 96, abs=1e-12)
    low, high = ev.delong_auc_interval(df, "label", "p")
    assert low == pytest.approx(max(0.0, 17 / 24 - 1.96 * math.sqrt(5 / 96)), abs=1e-12)
    assert high == 1.0  # 17/24 + 1.96 * 0.228 > 1: clipped


def test_delong_matches_numpy_and_feeds_binary_metrics(tiny):
    auc, var = _numpy_delong(LABELS, SCORES)
    got_auc, got_var, _, _ = ev.delong_auc_variance(tiny, "label", "p")
    assert got_auc == pytest.approx(auc, abs=1e-12)
    assert got_auc == pytest.approx(roc_auc_score(LABELS, SCORES), abs=1e-12)
    assert got_var == pytest.approx(var, rel=1e-9)
    m = ev.binary_metrics(tiny, "label", "p")
    assert m["auc_ci_low"] == pytest.approx(auc - 1.96 * math.sqrt(var), abs=1e-9)
    assert m["auc_ci_high"] == pytest.approx(min(1.0, auc + 1.96 * math.sqrt(var)), abs=1e-9)
    hm = ev.binary_metrics(tiny, "label", "p", auc_interval="hanley_mcneil")
    assert (hm["auc_ci_low"], hm["auc_ci_high"]) == pytest.approx(
        ev.auc_confidence_interval(m["roc_auc"], 5, 15)
    )
    assert hm["auc_ci_low"] != pytest.approx(m["auc_ci_low"], abs=1e-3)
    with pytest.raises(ValueError, match="delong, hanley_mcneil"):
        ev.binary_metrics(tiny, "label", "p", auc_interval="bootstrap")


def test_delong_single_class_or_single_positive_gives_nan(spark):
    one_class = spark.createDataFrame([(0.0, 0.2), (0.0, 0.4)], "label double, p double")
    auc, var, n_pos, n_neg = ev.delong_auc_variance(one_class, "label", "p")
    assert math.isnan(auc) and math.isnan(var) and (n_pos, n_neg) == (0, 2)
    one_positive = spark.createDataFrame([(1.0, 0.9), (0.0, 0.2), (0.0, 0.4)], "label double, p double")
    auc, var, _, _ = ev.delong_auc_variance(one_positive, "label", "p")
    assert auc == pytest.approx(1.0) and math.isnan(var)
    assert all(math.isnan(x) for x in ev.delong_auc_interval(one_positive, "label", "p"))
