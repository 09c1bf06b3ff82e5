"""Measurement of the engine's own decisions: attribution within validity by hand, the
results against control and holdout by hand, point in time, idempotent stage."""

from __future__ import annotations

from datetime import date, datetime

import numpy as np
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from cvo_spark.core.schemas import INPUT_SCHEMAS
from cvo_spark.measure.attribution import ATTRIBUTED_COLUMNS, attribute_decisions
from cvo_spark.measure.campaigns import z_value
from cvo_spark.measure.decisions import DECISION_RESULTS_SCHEMA, decision_results
from cvo_spark.measure.intervals import clustered_ratio_variance

AS_OF = date(2026, 6, 10)
D0, D3, D10 = date(2026, 6, 1), date(2026, 6, 3), date(2026, 6, 10)
DECISIONS = (
    "decision_id string, subscriber_id string, offer_id string, channel string, `group` string, "
    "campaign_id string, valid_from date, valid_to date, as_of date"
)


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def decided(
    decision_id, subscriber, offer, group, as_of=D0, valid_from=date(2026, 6, 2), valid_to=date(2026, 6, 8)
):
    return (decision_id, subscriber, offer, "sms", group, "c1", valid_from, valid_to, as_of)


@pytest.fixture(scope="module")
def inputs(spark):
    decisions = spark.createDataFrame(
        [
            decided("d1", "A", "O1", "treatment"),
            decided("d2", "A", "O2", "treatment"),  # same message as d1: the sms cost is shared
            decided("d3", "B", "O1", "treatment"),
            decided("d4", "C", "O1", "treatment"),
            decided("d5", "D", "O1", "control"),
            decided("d6", "E", "O1", "control"),
            decided("d7", "F", "O1", "control"),
            # published on as_of: its window opens tomorrow, so it is not measured yet
            decided(
                "d8",
                "G",
                "O1",
                "treatment",
                as_of=D10,
                valid_from=date(2026, 6, 11),
                valid_to=date(2026, 6, 17),
            ),
            decided("d9", "H", "O1", "holdout"),
            # D decided again for O1 two days later: its window still open on as_of
            decided(
                "d11", "D", "O1", "control", as_of=D3, valid_from=date(2026, 6, 4), valid_to=date(2026, 6, 12)
            ),
        ],
        DECISIONS,
    )
    responses = spark.createDataFrame(
        [
            ("d1", "accepted", ts("2026-06-03 09:00")),
            ("d3", "delivered", ts("2026-06-02 10:00")),
            ("d3", "accepted", ts("2026-06-04 10:00")),  # accepted, no purchase row: catalog price
            ("d4", "delivered", ts("2026-06-02 10:00")),
            ("d4", "accepted", ts("2026-06-09 10:00")),  # after valid_to: not an acceptance
            ("zz", "accepted", ts("2026-06-04 10:00")),  # no such decision: ignored here
        ],
        INPUT_SCHEMAS["channel_responses"],
    )
    purchases = spark.createDataFrame(
        [
            ("A", ts("2026-06-03 09:05"), "o1", 10_000.0, "ussd"),  # d1's acceptance, as a purchase too
            ("D", ts("2026-06-05 12:00"), " O1 ", 10_000.0, "app"),  # in d5's and d11's windows: d11's
            ("E", ts("2026-06-01 12:00"), "O1", 10_000.0, "app"),  # before the window
            ("E", ts("2026-06-05 12:00"), "data_1gb", 10_000.0, "app"),  # another product
            ("F", ts("2026-06-11 12:00"), "O1", 10_000.0, "app"),  # after as_of
            ("H", ts("2026-06-06 12:00"), "O1", 10_000.0, "app"),
        ],
        INPUT_SCHEMAS["purchases"],
    )
    terms = spark.createDataFrame(
        [("O1", 10_000.0, 4_000.0, 1_000.0), ("O2", 5_000.0, 1_000.0, 0.0)],
        "offer_id string, price double, unit_cost double, incentive double",
    )
    costs = spark.createDataFrame([("sms", 150.0), ("app", 0.0)], "channel string, contact_cost double")
    return decisions, responses, purchases, terms, costs


@pytest.fixture(scope="module")
def attributed(inputs):
    decisions, responses, purchases, terms, costs = inputs
    return attribute_decisions(decisions, responses, purchases, terms, costs, AS_OF).cache()


def test_attribution_by_hand(attributed):
    cols = ("is_accepted", "accepted_by_response", "purchases", "is_delivered", "responses", "revenue")
    money = ("incentive_cost", "contact_cost", "margin", "is_window_open")
    got = {r["decision_id"]: tuple(r[c] for c in (*cols, *money)) for r in attributed.collect()}
    assert got == {
        # accepted, by response, purchases, delivered, responses, revenue, incentive, contact, margin, open
        "d1": (True, True, 1, True, 1, 10_000.0, 1_000.0, 75.0, 10_000 - 4_000 - 1_000 - 75.0, False),
        "d2": (False, False, 0, False, 0, 0.0, 0.0, 75.0, -75.0, False),
        "d3": (True, True, 0, True, 2, 10_000.0, 1_000.0, 150.0, 10_000 - 4_000 - 1_000 - 150.0, False),
        "d4": (False, False, 0, True, 2, 0.0, 0.0, 150.0, -150.0, False),
        "d5": (False, False, 0, False, 0, 0.0, 0.0, 0.0, 0.0, False),  # its purchase went to d11
        "d6": (False, False, 0, False, 0, 0.0, 0.0, 0.0, 0.0, False),
        "d7": (False, False, 0, False, 0, 0.0, 0.0, 0.0, 0.0, False),
        "d9": (True, False, 1, False, 0, 10_000.0, 0.0, 0.0, 6_000.0, False),
        "d11": (True, False, 1, False, 0, 10_000.0, 0.0, 0.0, 6_000.0, True),
    }
    assert tuple(attributed.columns) == ATTRIBUTED_COLUMNS


def test_attribution_is_point_in_time(spark, inputs, attributed):
    decisions, responses, purchases, terms, costs = inputs
    later_decision = spark.createDataFrame(
        [decided("d20", "A", "O1", "treatment", as_of=date(2026, 6, 11), valid_from=date(2026, 6, 12))],
        DECISIONS,
    )
    later_purchase = spark.createDataFrame(
        [("B", ts("2026-06-11 00:00"), "O1", 10_000.0, "app")], INPUT_SCHEMAS["purchases"]
    )
    later_response = spark.createDataFrame(
        [("d4", "accepted", ts("2026-06-11 00:00"))], INPUT_SCHEMAS["channel_responses"]
    )
    grown = attribute_decisions(
        decisions.unionByName(later_decision),
        responses.unionByName(later_response),
        purchases.unionByName(later_purchase),
        terms,
        costs,
        AS_OF,
    )
    assert_df_equality(grown, attributed, ignore_row_order=True)


def test_without_responses_purchases_alone_decide(inputs):
    decisions, _, purchases, terms, costs = inputs
    rows = attribute_decisions(decisions, None, purchases, terms, costs, AS_OF).collect()
    accepted = sorted(r["decision_id"] for r in rows if r["is_accepted"])
    assert accepted == ["d1", "d11", "d9"]  # d3 was accepted only by the channel's word


@pytest.fixture(scope="module")
def results(spark, attributed):
    segments = spark.createDataFrame(
        [("A", D0, "Gold", "Digital Active"), ("A", date(2026, 6, 5), "Mass", "Digital Active")],
        "subscriber_id string, as_of date, value_tier string, persona_name string",
    )
    return decision_results(attributed, segments, AS_OF, expected_baseline_shares={"control": 0.5}).cache()


def _row(results, offer="ALL", channel="ALL", segment="ALL", baseline="control"):
    rows = results.where(
        (F.col("offer_id") == offer)
        & (F.col("channel") == channel)
        & (F.col("segment") == segment)
        & (F.col("baseline") == baseline)
    ).collect()
    assert len(rows) == 1, rows
    return rows[0]


def test_campaign_row_by_hand(results):
    row = _row(results)
    assert (row["campaign_id"], row["period"]) == ("c1", "2026-06")
    assert (row["decisions_treatment"], row["decisions_baseline"]) == (4, 4)  # d1-d4 vs d5, d6, d7, d11
    assert (row["subscribers_treatment"], row["subscribers_baseline"]) == (3, 3)
    assert (row["accept_rate_treatment"], row["accept_rate_baseline"]) == (0.5, 0.25)
    assert row["uplift"] == pytest.approx(0.25)
    assert row["incremental_revenue"] == pytest.approx((20_000 / 4 - 10_000 / 4) * 4)
    margin_t = 4_925.0 - 75.0 + 4_850.0 - 150.0
    assert row["incremental_margin"] == pytest.approx((margin_t / 4 - 6_000 / 4) * 4)
    assert (row["contact_cost"], row["incentive_cost"]) == (450.0, 2_000.0)
    assert (row["responded_treatment"], row["responded_baseline"], row["open_decisions"]) == (3, 0, 1)
    assert row["srm_p_value"] == pytest.approx(1.0) and row["srm_flag"] is False

    # The interval is clustered by subscriber: A's two decisions are one unit, as are D's.
    def var(n, k):
        n, k = np.array(n, float), np.array(k, float)
        ratio = k.sum() / n.sum()
        cov = np.cov(k, n, ddof=1)
        return clustered_ratio_variance(len(n), n.sum(), cov[0, 0], cov[0, 1], cov[1, 1], ratio)

    half = z_value(0.95) * np.sqrt(var([2, 1, 1], [1, 1, 0]) + var([2, 1, 1], [1, 0, 0]))
    assert (row["uplift_ci_low"], row["uplift_ci_high"]) == pytest.approx((0.25 - half, 0.25 + half))


def test_offer_rows_holdout_and_segments(results):
    o1 = _row(results, "O1", "sms")
    assert (o1["decisions_treatment"], o1["decisions_baseline"]) == (3, 4)
    assert o1["uplift"] == pytest.approx(2 / 3 - 1 / 4)
    o2 = _row(results, "O2", "sms")  # no control decision for O2: nothing to compare
    assert (o2["decisions_treatment"], o2["decisions_baseline"], o2["uplift"]) == (1, 0, None)
    holdout = _row(results, baseline="holdout")
    assert (holdout["decisions_baseline"], holdout["accept_rate_baseline"], holdout["uplift"]) == (
        1,
        1.0,
        -0.5,
    )
    assert holdout["srm_p_value"] is None  # no planned holdout share given
    # No holdout row where the holdout has no decision (O2).
    assert results.where((F.col("baseline") == "holdout") & (F.col("offer_id") == "O2")).count() == 0
    # A was Gold when decided for; the later Mass snapshot does not relabel the decision.
    gold = _row(results, segment="value_tier:Gold")
    assert (gold["decisions_treatment"], gold["subscribers_treatment"]) == (2, 1)
    assert results.where(F.col("segment") == "value_tier:Mass").count() == 0
    assert [(f.name, f.dataType) for f in results.schema.fields] == [
        (f.name, f.dataType) for f in DECISION_RESULTS_SCHEMA.fields
    ]


def test_stage_writes_decision_results_idempotently(spark, tmp_path):
    from cvo_spark.core.config import parse_config
    from cvo_spark.core.io import TableStore
    from cvo_spark.core.schemas import REQUIRED_INPUT_SCHEMAS
    from cvo_spark.core.stage import StageContext
    from cvo_spark.measure import stage as measure

    config = parse_config({"lake": str(tmp_path / "lake")})
    store = TableStore(spark, config)
    store.overwrite(
        spark.createDataFrame([], REQUIRED_INPUT_SCHEMAS["offer_history"]), "silver", "offer_history"
    )
    ctx = StageContext(spark, config, store, AS_OF, "run-1")
    before = measure.run(ctx)  # no decision log yet: campaign_results only, and it says so
    assert before.row_counts == {"campaign_results": 0} and "gold decisions absent" in before.message

    decisions = spark.createDataFrame(
        [
            decided("d1", "A", "DATA_BOOST_5GB", "treatment"),
            decided("d2", "B", "DATA_BOOST_5GB", "treatment"),
            decided("d3", "C", "DATA_BOOST_5GB", "control"),
            decided("d4", "D", "NOT_IN_CATALOG", "treatment"),
        ],
        DECISIONS,
    )
    store.overwrite(decisions, "gold", "decisions")
    purchases = [("A", ts("2026-06-03 09:00"), "data_boost_5gb", 35_000.0, "sms")]
    store.overwrite(spark.createDataFrame(purchases, INPUT_SCHEMAS["purchases"]), "silver", "purchases")
    first = measure.run(ctx)
    second = measure.run(ctx)
    table = store.read("gold", "decision_results")
    # DATA_BOOST_5GB/sms and NOT_IN_CATALOG/sms and the campaign ('ALL'), against control only.
    assert first.row_counts == second.row_counts == {"campaign_results": 0, "decision_results": 3}
    assert table.count() == 3  # replaced, not appended
    assert first.checks["offers_without_terms"] == "NOT_IN_CATALOG"
    assert first.checks["responses_outside_treatment"] == "0"
    boost = table.where(F.col("offer_id") == "DATA_BOOST_5GB").first()
    # Catalog: price 35,000, unit cost 9,000, incentive 2,000; sms costs 150 a contact.
    assert boost["accept_rate_treatment"] == 0.5 and boost["accept_rate_baseline"] == 0.0
    assert boost["incremental_margin"] == pytest.approx((35_000 - 9_000 - 2_000) - 2 * 150.0)
