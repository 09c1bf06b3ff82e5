"""Off-policy evaluation: the estimators by hand on a four-row log, the candidate policies,
unsupported actions, and (slow) `cvo evaluate-policy` on the shared pipeline lake."""

from __future__ import annotations

import math

import pytest
from pyspark.sql import functions as F

from cvo_spark.core.errors import MissingColumnsError
from cvo_spark.policy.ope import ESTIMATORS, evaluate_policies, policy_contributions
from cvo_spark.policy.policies import (
    candidate_policies,
    greedy_policy,
    tier_rule_policy,
    uniform_policy,
    with_high_value,
)

LOGGED_SCHEMA = (
    "decision_key string, subscriber_id string, offer_id string, channel string, treated int, "
    "propensity double, reward double, q_contacted double, q_not double"
)
POLICY_SCHEMA = (
    "policy string, decision_key string, offer_id string, channel string, pi double, "
    "q_contacted double, q_not double"
)


@pytest.fixture(scope="module")
def logged(spark):
    # The logging policy drew action A = (o1, sms) or B = (o2, app) with probability 1/2 and
    # sent it with probability 1/2: every propensity is 1/4. q_* are the reward model's
    # figures for the logged action.
    rows = [
        ("d1", "s1", "o1", "sms", 1, 0.25, 10.0, 4.0, 1.0),
        ("d2", "s2", "o1", "sms", 0, 0.25, 2.0, 4.0, 1.0),
        ("d3", "s3", "o2", "app", 1, 0.25, 5.0, 3.0, 3.0),
        ("d4", "s4", "o1", "sms", 1, 0.25, 0.0, 4.0, 1.0),
    ]
    return spark.createDataFrame(rows, LOGGED_SCHEMA)


def _always(spark, name, offer, channel, q1, q0):
    rows = [(name, d, offer, channel, 1.0, q1, q0) for d in ("d1", "d2", "d3", "d4")]
    return spark.createDataFrame(rows, POLICY_SCHEMA)


def test_estimators_match_the_hand_computation(spark, logged):
    policy = _always(spark, "always_a", "o1", "sms", 4.0, 1.0)
    (a, none) = evaluate_policies(
        logged, policy, ["always_a", "no_contact"], replicates=20, seed=3, min_effective_sample=2.0
    )
    # w = 1/0.25 = 4 on the three rows that logged A, 0 on d3.
    # IPS = (4*10 - 4*2 + 4*0) / 4 = 8.
    assert a.estimates["ips"] == pytest.approx(8.0)
    # SNIPS = mass 1 x (treated 40/8 - control 8/4) = 3.
    assert a.estimates["snips"] == pytest.approx(3.0)
    # DM = q1 - q0 = 3 everywhere; DR = (4*3 + 4*(10-4) - 4*(2-1) + 4*(0-4)) / 4 = 4.
    assert a.estimates["dm"] == pytest.approx(3.0)
    assert a.estimates["dr"] == pytest.approx(4.0)
    assert a.decision_points == 4 and a.subscribers == 4 and a.matched == 3
    assert a.effective_sample_size == pytest.approx(12.0**2 / 48.0)
    assert a.largest_weights == [4.0, 4.0, 4.0]
    assert a.contact_mass == 1.0 and a.unsupported_mass == 0.0 and a.unsupported_actions == []
    for e in ESTIMATORS:
        low, high = a.intervals[e]
        assert low <= high
    # Never contacting is worth exactly nothing, with no uncertainty.
    assert none.estimates == {e: 0.0 for e in ESTIMATORS}
    assert none.intervals == {e: (0.0, 0.0) for e in ESTIMATORS}
    assert none.contact_mass == 0.0 and none.matched == 0
    # Support: ESS 3 overall, but the control arm is one row (d2): 1 effective decision, under
    # the minimum of 2, so the interval is flagged. Never contacting needs no support.
    assert a.control_effective_sample_size == pytest.approx(1.0) and a.matched_control == 1
    assert a.effective_decisions == pytest.approx(1.0) and a.low_support
    assert not none.low_support


def test_pooled_control_arm_matches_the_hand_computation(spark):
    # Offer o1 can go out on sms or app (K = 2 channels on which it can be held back); every
    # propensity is 1/4. d3 held o1 back on app: nobody held back sees the channel, so it
    # tells the policy "always (o1, sms)" about μ₀ as much as d2 does. The reward model
    # reads the channel (q̂₀ 1 on sms, 3 on app); the policy's q̂₀ of o1 is its own, 1.
    rows = [
        ("d1", "s1", "o1", "sms", 1, 0.25, 10.0, 4.0, 1.0, 2),
        ("d2", "s2", "o1", "sms", 0, 0.25, 2.0, 4.0, 1.0, 2),
        ("d3", "s3", "o1", "app", 0, 0.25, 6.0, 5.0, 3.0, 2),
        ("d4", "s4", "o1", "sms", 1, 0.25, 0.0, 4.0, 1.0, 2),
    ]
    log = spark.createDataFrame(rows, LOGGED_SCHEMA + ", control_channels int")
    policy = _always(spark, "always_a", "o1", "sms", 4.0, 1.0)
    (a,) = evaluate_policies(log, policy, ["always_a"], replicates=20, seed=3, pool_control_channels=True)
    # Treated weights 1/0.25 = 4 (d1, d4); pooled control weights π_o/(K p) = 1/(2 x 0.25) = 2 (d2, d3).
    # IPS = (4*10 - 2*2 - 2*6 + 4*0) / 4 = 6.
    assert a.estimates["ips"] == pytest.approx(6.0)
    # SNIPS = 1 x (40/8 - (2*2 + 2*6)/(2 + 2)) = 5 - 4 = 1.
    assert a.estimates["snips"] == pytest.approx(1.0)
    # DR = (1/4) [ (3 + 4*(10-4)) + (3 - 2*(2-1)) + (3 - 2*(6-1)) + (3 + 4*(0-4)) ] = 8/4 = 2:
    # d3's residual is taken against q̂₀ of the offer under the policy (1), not of app (3).
    assert a.estimates["dm"] == pytest.approx(3.0)
    assert a.estimates["dr"] == pytest.approx(2.0)
    assert a.matched == 4 and a.matched_control == 2
    assert a.effective_sample_size == pytest.approx(12.0**2 / 40.0)
    assert a.control_effective_sample_size == pytest.approx(4.0**2 / 8.0)
    assert a.unsupported_actions == []
    # Unpooled, d3 is off the policy's action: IPS (40 - 8) / 4 = 8, one control row.
    (u,) = evaluate_policies(log, policy, ["always_a"], replicates=0)
    assert u.estimates["ips"] == pytest.approx(8.0)
    assert u.matched_control == 1 and u.control_effective_sample_size == pytest.approx(1.0)
    # (o1, app) was held back but never sent: no treated arm, pooled or not.
    (b,) = evaluate_policies(
        log, _always(spark, "b", "o1", "app", 5.0, 3.0), ["b"], replicates=0, pool_control_channels=True
    )
    assert b.unsupported_actions == ["o1/app"]
    # Pooling needs K_o per row: a log without it is refused, not guessed at.
    with pytest.raises(MissingColumnsError, match="control_channels"):
        evaluate_policies(log.drop("control_channels"), policy, ["always_a"], pool_control_channels=True)


def test_logged_rows_count_the_channels_the_logger_used_not_the_catalogs(spark):
    from cvo_spark.policy.stage import logged_rows

    # The catalog allows o1 on sms and app only, but the logger also sent it on banking:
    # K_o1 = 3 (the pooled control weight divides by the channels the *logger* spreads over).
    points = spark.createDataFrame(
        [
            ("d1", "s1", "o1", "sms", 1, 0.1, 1, 30.0, 10.0),
            ("d2", "s2", "o1", "app", 0, 0.1, 0, 30.0, 10.0),
            ("d3", "s3", "o1", "banking", 1, 0.1, 0, 30.0, 10.0),
            ("d4", "s4", "o2", "app", 0, 0.1, 1, 20.0, 5.0),
        ],
        "decision_key string, subscriber_id string, offer_id string, channel string, treated int, "
        "propensity double, label int, price double, unit_cost double",
    )
    scored = spark.createDataFrame(
        [
            (d, o, c, 2.0, 1.0)
            for d in ("d1", "d2", "d3", "d4")
            for o, c in (("o1", "sms"), ("o1", "app"), ("o2", "app"))
        ],
        "decision_key string, offer_id string, channel string, q_contacted double, q_not double",
    )
    got = {r["decision_key"]: r for r in logged_rows(points, scored).collect()}
    assert {d: r["control_channels"] for d, r in got.items()} == {"d1": 3, "d2": 3, "d3": 3, "d4": 1}
    assert got["d1"]["reward"] == 20.0 and got["d4"]["reward"] == 15.0
    assert got["d3"]["q_contacted"] == 0.0  # off the catalog: no score, and no policy can take it


def test_an_action_the_log_never_held_back_is_reported_unsupported(spark, logged):
    # B = (o2, app) was only ever sent, never held back: its incremental value has no control arm.
    policy = _always(spark, "always_b", "o2", "app", 3.0, 3.0)
    (b,) = evaluate_policies(logged, policy, ["always_b"], replicates=0)
    assert b.unsupported_actions == ["o2/app"]
    assert b.unsupported_mass == pytest.approx(1.0)


def test_contributions_keep_every_decision_point_per_policy(spark, logged):
    policy = _always(spark, "always_a", "o1", "sms", 4.0, 1.0)
    rows = policy_contributions(logged, policy, ["always_a", "no_contact"])
    counts = {r["policy"]: r["count"] for r in rows.groupBy("policy").count().collect()}
    assert counts == {"always_a": 4, "no_contact": 4}


def test_candidate_policies(spark):
    schema = (
        "decision_key string, offer_id string, channel string, q_contacted double, q_not double, "
        "contact_cost double"
    )
    scored = spark.createDataFrame(
        [
            # d1: o1 has the best margin if contacted, but o2 adds more over doing nothing.
            ("d1", "o1", "sms", 9.0, 8.5, 0.1),
            ("d1", "o2", "app", 5.0, 1.0, 0.0),
            # d2: a sleeping dog: contact loses what they would have bought anyway.
            ("d2", "o1", "sms", 2.0, 3.0, 0.1),
            ("d2", "o2", "app", 1.0, 1.5, 0.0),
        ],
        schema,
    )
    uplift = {(r["decision_key"], r["offer_id"]) for r in greedy_policy(scored, "u", F.lit(0.0)).collect()}
    assert len(uplift) == 2  # no threshold: one action per point
    got = candidate_policies(scored, ("uplift", "response_model", "random", "no_contact"))
    by = {}
    for r in got.collect():
        by.setdefault(r["policy"], []).append((r["decision_key"], r["offer_id"], r["pi"]))
    assert sorted(by["uplift"]) == [("d1", "o2", 1.0)]  # d2: nothing is worth a contact
    assert sorted(by["response_model"]) == [("d1", "o1", 1.0), ("d2", "o1", 1.0)]
    assert sorted(by["random"]) == [
        ("d1", "o1", 0.5),
        ("d1", "o2", 0.5),
        ("d2", "o1", 0.5),
        ("d2", "o2", 0.5),
    ]
    assert "no_contact" not in by
    assert uniform_policy(scored).count() == 4
    with pytest.raises(ValueError, match="unknown policy bogus"):
        candidate_policies(scored, ("bogus",))


def test_tier_rule_gives_high_value_the_dearest_offer_and_the_rest_the_cheapest(spark):
    from cvo_spark.core.config import ValueTiersConfig

    # High Value as the segments stage defines it (defaults: LOS > 180 days and arpu_3m >
    # 100,000, both strict): h1 is; n1 misses by one day, n2 by one rupiah, n3 has no arpu.
    points = spark.createDataFrame(
        [("h1", 181, 100_001.0), ("n1", 180, 500_000.0), ("n2", 400, 100_000.0), ("n3", 400, None)],
        "decision_key string, length_of_stay_days int, arpu_3m double",
    )
    high = {
        r["decision_key"]: r["is_high_value"] for r in with_high_value(points, ValueTiersConfig()).collect()
    }
    assert high == {"h1": True, "n1": False, "n2": False, "n3": False}
    # Two offers: cheap (price 10, on sms at cost 0.2 or app at cost 0.1) and dear (price 50,
    # on sms 0.2 or app 0.3). The rule sends the dear one to h1 on its cheaper channel (sms)
    # and the cheap one to everyone else on its cheaper channel (app), whatever the model says.
    actions = [
        ("cheap", "sms", 0.2, 10.0),
        ("cheap", "app", 0.1, 10.0),
        ("dear", "sms", 0.2, 50.0),
        ("dear", "app", 0.3, 50.0),
    ]
    rows = [(d, o, c, 1.0, 0.0, cost, price, d == "h1") for d in high for (o, c, cost, price) in actions]
    scored = spark.createDataFrame(
        rows,
        "decision_key string, offer_id string, channel string, q_contacted double, q_not double, "
        "contact_cost double, price double, is_high_value boolean",
    )
    got = sorted(
        (r["decision_key"], r["offer_id"], r["channel"], r["pi"]) for r in tier_rule_policy(scored).collect()
    )
    assert got == [
        ("h1", "dear", "sms", 1.0),
        ("n1", "cheap", "app", 1.0),
        ("n2", "cheap", "app", 1.0),
        ("n3", "cheap", "app", 1.0),
    ]
    stacked = candidate_policies(scored, ("tier_rule", "no_contact"))
    assert stacked.where(F.col("policy") == "tier_rule").count() == 4
    # Without the columns it needs, the rule says so instead of guessing.
    with pytest.raises(MissingColumnsError, match="is_high_value"):
        tier_rule_policy(scored.drop("is_high_value"))


def test_report_shows_policies_best_net_value_first(spark):
    from datetime import date

    from cvo_spark.report.data import Unavailable, policy_overview
    from cvo_spark.report.html import _policy_table

    schema = (
        "policy string, estimator string, value double, ci_low double, ci_high double, net_value double, "
        "effective_sample_size double, control_effective_sample_size double, low_support boolean"
    )
    rows = [
        ("random", "dr", 10.0, 5.0, 15.0, -30.0, 2000.0, 580.0, False),
        ("random", "ips", 11.0, 4.0, 16.0, -29.0, 2000.0, 580.0, False),
        ("random", "snips", 9.0, 4.0, 14.0, -31.0, 2000.0, 580.0, False),
        ("uplift", "dr", 50.0, 20.0, 80.0, 49.0, 40.0, 17.0, True),
        ("uplift", "ips", 55.0, 10.0, 90.0, 54.0, 40.0, 17.0, True),
        ("uplift", "snips", 45.0, 15.0, 75.0, 44.0, 40.0, 17.0, True),
    ]
    overview = [r.asDict() for r in policy_overview(spark.createDataFrame(rows, schema)).collect()]
    assert [(r["policy"], r["value"], r["ips"], r["snips"]) for r in overview] == [
        ("uplift", 50.0, 55.0, 45.0),
        ("random", 10.0, 11.0, 9.0),
    ]
    html = _policy_table(overview, date(2026, 6, 30))
    assert "Policies judged offline" in html and "uplift" in html and "random" in html
    # The thin one says so, once: the smaller of the two effective samples.
    assert html.count("interval unreliable") == 1 and "rests on 17 effective decisions" in html
    missing = _policy_table(Unavailable("policy_evaluations", "evaluate-policy"), date(2026, 6, 30))
    assert "cvo evaluate-policy --as-of 2026-06-30" in missing


def test_engine_code_never_imports_the_simulation():
    # `benchmarks/ope_simulation.py` reads the generator's planted truth: a judging tool for
    # tests and benchmarks only, kept outside the package (only `synth` may read the truth,
    # `test_decision_loop`). An engine module importing it could peek at the answer.
    import ast
    from pathlib import Path

    import cvo_spark

    root = Path(cvo_spark.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n.split(".")[-1] == "ope_simulation" or ".ope_simulation" in n for n in names):
                offenders.append(str(path.relative_to(root)))
    assert offenders == []


def binomial_lower_bound(n: int, p: float, alpha: float) -> int:
    """The smallest count k such that a Binomial(n, p) falls below k with probability <= alpha:
    a procedure whose true coverage is p passes `covered >= k` with probability >= 1 - alpha."""
    cdf, k = 0.0, 0
    while k <= n:
        step = math.comb(n, k) * p**k * (1 - p) ** (n - k)
        if cdf + step > alpha:
            return k
        cdf += step
        k += 1
    return n


def test_binomial_lower_bound():
    # Binomial(30, 0.9): P(X <= 22) = 0.0078, P(X <= 23) = 0.0258.
    assert binomial_lower_bound(30, 0.9, 0.01) == 23
    assert binomial_lower_bound(30, 0.9, 0.05) == 24


# --------------------------------------------------------------------------- end to end
def _reward_model_champion(lake) -> None:
    """The reward model is the uplift champion. On this small lake the gate may leave v1 a
    challenger; an operator may promote it (as test_uplift does)."""
    from cvo_spark.models import mlflow_store

    mlflow_store.configure_mlflow(str(lake.lake), lake.ctx.config.mlflow.experiment)
    name = mlflow_store.registered_name(lake.ctx.config.mlflow.model_prefix, "uplift")
    if mlflow_store.version_by_alias(name, mlflow_store.CHAMPION) is None:
        mlflow_store.client().set_registered_model_alias(name, mlflow_store.CHAMPION, "1")


@pytest.mark.slow
def test_evaluate_policy_on_the_pipeline_lake(pipeline_lake, spark, capsys):
    from cvo_spark.cli import main

    lake = pipeline_lake
    _reward_model_champion(lake)
    args = ["--conf", str(lake.conf_file), "--lake", str(lake.lake), "--as-of", lake.as_of.isoformat()]
    assert main(["evaluate-policy", *args]) == 0
    out = capsys.readouterr().out
    assert "doubly robust" in out and "uplift" in out
    rows = (
        spark.read.format("delta")
        .load(str(lake.lake / "gold" / "policy_evaluations"))
        .where(F.col("as_of") == F.lit(lake.as_of))
        .collect()
    )
    by = {(r["policy"], r["estimator"]): r for r in rows}
    assert set(by) == {
        (p, e) for p in ("uplift", "response_model", "tier_rule", "random", "no_contact") for e in ESTIMATORS
    }
    for (policy, estimator), r in by.items():
        assert r["decision_points"] > 100 and r["subscribers"] > 50, (policy, r["decision_points"])
        assert r["ci_low"] <= r["ci_high"], (policy, estimator)
        assert r["reward_model_version"]
    assert by[("no_contact", "dr")]["value"] == 0.0 and by[("no_contact", "dr")]["contact_share"] == 0.0
    assert by[("random", "dr")]["contact_share"] == pytest.approx(1.0)
    # Weights are finite and positive where the policy matched the log; a deterministic
    # policy rests on far fewer rows than the log holds.
    uplift = by[("uplift", "dr")]
    assert uplift["effective_sample_size"] < uplift["decision_points"]
    assert all(w > 0 for w in uplift["largest_weights"])
    # A second run replaces the partition rather than adding to it.
    assert main(["evaluate-policy", *args, "--policy", "random"]) == 0
    again = (
        spark.read.format("delta")
        .load(str(lake.lake / "gold" / "policy_evaluations"))
        .where(F.col("as_of") == F.lit(lake.as_of))
    )
    assert {r["policy"] for r in again.select("policy").distinct().collect()} == {"random"}
    # An unknown policy: one line naming it, non-zero exit.
    assert main(["evaluate-policy", *args, "--policy", "bogus"]) != 0
    assert "unknown policy bogus" in capsys.readouterr().err


COVERAGE_REPLICATIONS = 30
COVERAGE_TARGET = 0.90


@pytest.mark.slow
def test_dr_interval_covers_the_planted_value_on_simulated_logs(pipeline_lake, spark):
    """The issue's coverage check, small: 30 seeded logs of a known uniform logger (10% control)
    on the shared lake's decision points, outcomes from the planted truth (bench_ope, 200
    replications on a larger lake, is the full version). The random policy spreads its mass,
    so its DR interval should cover at its nominal 95%; the test asks for the issue's 90%
    target, less binomial noise: a procedure that truly covers 90% of the time passes with
    probability >= 99% (`binomial_lower_bound`: 23 of 30). The seeds are fixed, so the test is
    deterministic; the bound is what keeps it honest if they change."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from ope_simulation import coverage_summary, judged_actions, simulated_logs, true_values

    lake = pipeline_lake
    _reward_model_champion(lake)
    names = ("random", "uplift")
    points, judged = judged_actions(lake.ctx, lake.lake / "bronze")
    try:
        n_points = points.count()
        policy = candidate_policies(judged, names).persist()
        truth = true_values(policy, judged, n_points)
        logs = simulated_logs(judged, COVERAGE_REPLICATIONS, seed=5, control_share=0.1)
        results = evaluate_policies(
            logs, policy, names, replicates=40, seed=5, pool_control_channels=True, min_effective_sample=100
        )
        policy.unpersist()
    finally:
        points.unpersist()
        judged.unpersist()
    summary = coverage_summary(results, truth, names)
    random = summary["random"]
    assert random["replications"] == COVERAGE_REPLICATIONS
    need = binomial_lower_bound(COVERAGE_REPLICATIONS, COVERAGE_TARGET, 0.01)
    assert random["dr"]["covered"] >= need, (random["dr"], truth, n_points)
    # The effective sample size is reported with every estimate, and a deterministic policy
    # rests on far fewer decisions than one that spreads its contacts (and is flagged).
    assert all(r.effective_sample_size > 0 and r.control_effective_sample_size > 0 for r in results)
    assert summary["uplift"]["mean_effective_sample_size"] < random["mean_effective_sample_size"]
    assert all(r.low_support for r in results if r.policy == "uplift" and r.contact_mass > 0)
