"""The champion gate: pure decisions on hand-built metrics, and one paired comparison in Spark."""

from __future__ import annotations

import numpy as np
import pytest

from cvo_spark.models import evaluation as ev
from cvo_spark.models import mlflow_store
from cvo_spark.models.champion_gate import (
    ChampionComparison,
    fallback_note,
    promotion_decision,
    qualification_failure,
)

GOOD = {"roc_auc": 0.74, "auc_ci_low": 0.70, "auc_ci_high": 0.78, "pr_auc": 0.30}
BASELINE = {"roc_auc": 0.67, "auc_ci_low": 0.63, "auc_ci_high": 0.71, "pr_auc": 0.25}


def _champion(diff: float, low: float, high: float, **kw) -> ChampionComparison:
    return ChampionComparison("1", {"roc_auc": GOOD["roc_auc"] - diff, "pr_auc": 0.29}, ev.AucDifference(
        GOOD["roc_auc"], GOOD["roc_auc"] - diff, diff, low, high
    ), **kw)  # fmt: skip


def test_first_version_is_champion_only_when_the_report_would_let_it_rank_and_it_beats_the_baseline():
    assert promotion_decision(GOOD, BASELINE).promote
    # AUC 0.58 >= 0.55 (the old gate promoted it) but the interval reaches 0.50: the report's
    # verdict for these numbers is "do not use to rank", so the gate refuses it too.
    shaky = {**GOOD, "roc_auc": 0.58, "auc_ci_low": 0.49, "auc_ci_high": 0.67}
    assert "NO BETTER THAN CHANCE" in ev.binary_readings("upsell", shaky)["roc_auc"]
    promote, reason = promotion_decision(shaky, {**BASELINE, "roc_auc": 0.52})
    assert not promote
    assert reason.startswith("not promoted: no better than chance") and "0.490-0.670" in reason
    # Better than chance but below the logistic baseline on the same rows: adds nothing.
    promote, reason = promotion_decision(GOOD, {**BASELINE, "roc_auc": 0.75})
    assert not promote and "does not beat the logistic-regression baseline" in reason and "0.750" in reason
    assert qualification_failure(GOOD, {**BASELINE, "roc_auc": 0.74}) is not None  # a tie does not beat it


def test_challenger_winning_on_the_point_estimate_only_is_not_promoted():
    promote, reason = promotion_decision(GOOD, BASELINE, _champion(0.01, -0.005, 0.025))
    assert not promote
    assert "+0.010 (paired 95% CI -0.005 to +0.025) includes 0" in reason
    assert reason.endswith("champion v1 stays")
    promote, reason = promotion_decision(GOOD, BASELINE, _champion(0.03, 0.01, 0.05))
    assert promote and reason == (
        "champion: ROC-AUC gain over champion v1 +0.030 (paired 95% CI +0.010 to +0.050) excludes 0"
    )
    # An unmeasurable interval is not a significant gain.
    assert not promotion_decision(GOOD, BASELINE, _champion(0.03, float("nan"), float("nan"))).promote


def test_back_fill_and_pr_auc_promotion_metric_keep_the_champion():
    promote, reason = promotion_decision(
        GOOD, BASELINE, _champion(0.03, 0.01, 0.05, trained_later="2026-07-31")
    )
    assert not promote and "later date (2026-07-31)" in reason
    # promote_metric pr_auc: the ROC-AUC gain must be significant and the PR-AUC higher too.
    worse_pr = ChampionComparison("1", {"pr_auc": 0.31}, ev.AucDifference(0.74, 0.71, 0.03, 0.01, 0.05))
    promote, reason = promotion_decision(GOOD, BASELINE, worse_pr, promote_metric="pr_auc")
    assert not promote and "pr_auc 0.300 is not above the champion's 0.310" in reason
    assert promotion_decision(GOOD, BASELINE, _champion(0.03, 0.01, 0.05), promote_metric="pr_auc").promote


def test_fallback_note_says_baseline_and_why():
    note = fallback_note("v2 not promoted: no better than chance", "2", baseline_better_than_chance=False)
    assert note.startswith("baseline v2 (itself NOT shown better than chance")
    assert note.endswith("no champion (v2 not promoted: no better than chance)")
    assert (
        fallback_note(None, "1", True)
        == "baseline v1: no champion (no version of the model was ever promoted)"
    )


def _brute_force_paired_delong(y, a, b):
    """DeLong's paired variance by every positive-negative pair (numpy, independent of Spark)."""
    y, a, b = map(np.asarray, (y, a, b))

    def placements(s):
        pos, neg = s[y == 1], s[y == 0]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        return psi.mean(axis=1), psi.mean(axis=0)

    (a10, a01), (b10, b01) = placements(a), placements(b)
    var = np.var(a10 - b10, ddof=1) / len(a10) + np.var(a01 - b01, ddof=1) / len(a01)
    return a10.mean() - b10.mean(), var


@pytest.fixture(scope="module")
def paired(spark):
    # 120 subscribers; the champion's score is a noisy signal, the challenger the same
    # signal with a little less noise (and coarse rounding, so both have ties, as
    # isotonic-calibrated probabilities do).
    rng = np.random.default_rng(3)
    y = (rng.random(120) < 0.3).astype(float)
    signal = y * 0.6 + rng.normal(0, 0.5, 120)
    champion = np.round(signal + rng.normal(0, 0.35, 120), 1)
    challenger = np.round(signal + rng.normal(0, 0.30, 120), 1)
    rows = [(f"s{i:03d}", *map(float, t)) for i, t in enumerate(zip(y, challenger, champion, strict=True))]
    df = spark.createDataFrame(rows, "subscriber_id string, label double, p_new double, p_champion double")
    return df, y, challenger, champion


def test_paired_delong_matches_brute_force_and_a_model_against_itself_is_zero(paired):
    df, y, new, old = paired
    got = ev.delong_paired_difference(df, "label", "p_new", "p_champion")
    diff, var = _brute_force_paired_delong(y, new, old)
    assert got.diff == pytest.approx(diff, abs=1e-12)
    assert got.high - got.diff == pytest.approx(1.96 * np.sqrt(var), rel=1e-9)
    assert got.auc_a == pytest.approx(ev.binary_metrics(df, "label", "p_new")["roc_auc"], abs=1e-9)
    same = ev.delong_paired_difference(df, "label", "p_new", "p_new")
    assert same.diff == 0.0 and same.low == same.high == 0.0 and not same.excludes_zero()


def test_challenger_better_on_point_estimate_not_significant_is_not_promoted_in_the_registry(
    paired, tmp_path
):
    df, *_ = paired
    new, old = ev.binary_metrics(df, "label", "p_new"), ev.binary_metrics(df, "label", "p_champion")
    gain = ev.delong_paired_difference(df, "label", "p_new", "p_champion")
    assert new["roc_auc"] > old["roc_auc"] and gain.diff > 0 and gain.low < 0  # the case under test
    baseline = {"roc_auc": 0.6}
    assert qualification_failure(new, baseline) is None  # the challenger itself qualifies
    decision = promotion_decision(new, baseline, ChampionComparison("1", old, gain))
    assert not decision.promote and "includes 0" in decision.reason

    mlflow_store.configure_mlflow(str(tmp_path / "lake"), "exp")
    c, name = mlflow_store.client(), "cvo_gate_churn"
    c.create_registered_model(name)
    v1 = str(c.create_model_version(name, source="file:///nowhere/model").version)
    assert mlflow_store.assign_aliases(name, v1, None, None, better=True) == "champion"
    v2 = str(c.create_model_version(name, source="file:///nowhere/model").version)
    status = mlflow_store.assign_aliases(name, v2, new["roc_auc"], old["roc_auc"], better=decision.promote)
    assert status == "challenger"  # a bare point-estimate comparison would have promoted it
    assert str(mlflow_store.version_by_alias(name, "champion").version) == v1
