"""Allocation on hand-built actions: one case per per-subscriber rule, each kind of
per-run constraint, pacing, infeasibility, and the dual prices against greedy."""

from __future__ import annotations

from datetime import date

import pytest
from pyspark.sql.types import DoubleType, IntegerType, StringType, StructField, StructType

from cvo_spark.offers.allocation import (
    BELOW_THRESHOLD,
    CHOSEN,
    OFFER_CAP,
    OFFER_ON_OTHER_CHANNEL,
    PUSH_CAP,
    SLOTS,
    AllocationParams,
    Constraint,
    allocate,
    paced_allowance,
)

SCHEMA = StructType(
    [
        StructField("subscriber_id", StringType()),
        StructField("offer_id", StringType()),
        StructField("channel", StringType()),
        StructField("channel_kind", StringType()),
        StructField("slots", IntegerType()),
        StructField("net_value", DoubleType()),
        StructField("contact_cost", DoubleType()),
        StructField("expected_cost", DoubleType()),
        StructField("group", StringType()),
        StructField("push_left", IntegerType()),
    ]
)
KIND = {"sms": "push", "ussd": "push", "app": "pull"}
SLOTS_OF = {"sms": 1, "ussd": 3, "app": 6}
CONTACT_COST: dict[str, float] = {}
#: Every test solves on the whole base (no sample) so the figures are checkable by hand.
P = AllocationParams(max_offers=3, sample_share=1.0, max_iterations=40, tolerance=0.0)


def actions(spark, rows, contact_costs=CONTACT_COST):
    """rows: (subscriber, offer, channel, net_value[, expected_cost[, group[, push_left]]])."""
    out = []
    for r in rows:
        sid, offer, channel, value, *rest = r
        cost = rest[0] if len(rest) > 0 else 0.0
        group = rest[1] if len(rest) > 1 else "treatment"
        push_left = rest[2] if len(rest) > 2 else 2
        contact_cost = contact_costs.get(channel, 0.0)
        out.append(
            (
                sid,
                offer,
                channel,
                KIND[channel],
                SLOTS_OF[channel],
                float(value),
                contact_cost,
                float(cost),
                group,
                push_left,
            )
        )
    return spark.createDataFrame(out, SCHEMA)


def decide(spark, rows, constraints=(), p=P, greedy=False, contact_costs=CONTACT_COST):
    result = allocate(actions(spark, rows, contact_costs), constraints, p, greedy=greedy)
    got = {(r["subscriber_id"], r["offer_id"], r["channel"]): r for r in result.actions.collect()}
    result.actions.unpersist()
    return got, result


def status(got, *key):
    return got[key]["allocation_status"]


def test_at_most_n_offers_per_subscriber_best_first(spark):
    rows = [("s", f"O{i}", "app", 100.0 * i) for i in range(1, 6)]
    got, _ = decide(spark, rows)
    assert [status(got, "s", f"O{i}", "app") for i in range(1, 6)] == [
        OFFER_CAP,
        OFFER_CAP,
        CHOSEN,
        CHOSEN,
        CHOSEN,
    ]


def test_one_channel_per_offer_the_better_one(spark):
    got, _ = decide(spark, [("s", "X", "sms", 300.0), ("s", "X", "app", 500.0)])
    assert status(got, "s", "X", "app") == CHOSEN
    assert status(got, "s", "X", "sms") == OFFER_ON_OTHER_CHANNEL


def test_do_nothing_below_the_threshold(spark):
    got, _ = decide(
        spark,
        [("s", "X", "app", 400.0), ("s", "Y", "app", 600.0), ("t", "X", "app", -50.0)],
        p=AllocationParams(sample_share=1.0, min_net_value=500.0),
    )
    assert status(got, "s", "X", "app") == BELOW_THRESHOLD
    assert status(got, "s", "Y", "app") == CHOSEN
    assert status(got, "t", "X", "app") == BELOW_THRESHOLD


def test_push_contacts_capped_but_one_contact_carries_its_slots(spark):
    rows = [
        ("s", "A", "sms", 900.0, 0.0, "treatment", 1),
        ("s", "B", "ussd", 800.0, 0.0, "treatment", 1),  # a second push contact: over the cap
        ("u", "A", "ussd", 900.0, 0.0, "treatment", 1),
        ("u", "B", "ussd", 800.0, 0.0, "treatment", 1),  # same ussd contact: allowed
        ("z", "A", "sms", 900.0, 0.0, "treatment", 0),  # no push contact left at all
        ("z", "B", "app", 100.0, 0.0, "treatment", 0),  # pull is not a contact
    ]
    got, _ = decide(spark, rows)
    assert status(got, "s", "A", "sms") == CHOSEN and status(got, "s", "B", "ussd") == PUSH_CAP
    assert status(got, "u", "A", "ussd") == CHOSEN and status(got, "u", "B", "ussd") == CHOSEN
    assert status(got, "z", "A", "sms") == PUSH_CAP and status(got, "z", "B", "app") == CHOSEN


def test_a_contact_costs_once_however_many_offers_it_carries(spark):
    rows = [("s", "A", "ussd", 300.0), ("s", "B", "ussd", 150.0), ("t", "B", "ussd", 150.0)]
    got, _ = decide(spark, rows, contact_costs={"ussd": 200.0})
    assert got[("s", "A", "ussd")]["adjusted_value"] == pytest.approx(100.0)
    assert got[("s", "B", "ussd")]["adjusted_value"] == pytest.approx(150.0)  # rides on the same contact
    assert status(got, "s", "B", "ussd") == CHOSEN
    assert status(got, "t", "B", "ussd") == BELOW_THRESHOLD  # alone it does not pay for the contact


def test_channel_slots(spark):
    got, _ = decide(spark, [("s", "A", "sms", 900.0), ("s", "B", "sms", 800.0)])
    assert status(got, "s", "A", "sms") == CHOSEN and status(got, "s", "B", "sms") == SLOTS


def test_channel_capacity_keeps_the_most_valuable_contacts_and_prices_them(spark):
    rows = [(f"s{i:02d}", "A", "sms", 100.0 * i) for i in range(1, 11)]
    cap = Constraint("capacity:sms", "channel_capacity", "sms", 4)
    got, result = decide(spark, rows, [cap])
    chosen = sorted(k[0] for k, r in got.items() if r["allocation_status"] == CHOSEN)
    assert chosen == ["s07", "s08", "s09", "s10"]
    assert result.usage["capacity:sms"] == 4
    # The shadow price sits between the last value in (700) and the first out (600).
    assert 600.0 <= result.prices["capacity:sms"] <= 700.0 + 1e-6


def test_control_rows_use_no_capacity_or_budget(spark):
    rows = [
        ("c1", "A", "sms", 900.0, 10.0, "control"),
        ("t1", "A", "sms", 800.0, 10.0),
        ("t2", "A", "sms", 700.0, 10.0),
    ]
    cap = Constraint("capacity:sms", "channel_capacity", "sms", 1)
    got, result = decide(spark, rows, [cap])
    assert status(got, "c1", "A", "sms") == CHOSEN  # decided like treatment, never sent
    assert status(got, "t1", "A", "sms") == CHOSEN and status(got, "t2", "A", "sms") != CHOSEN
    assert result.usage["capacity:sms"] == 1


def test_budget_keeps_the_best_value_per_rupiah(spark):
    # Values and expected incentives: A pays 10 per Rp, B 5, C 2, D 1.
    rows = [
        ("a", "X", "app", 1000.0, 100.0),
        ("b", "X", "app", 1000.0, 200.0),
        ("c", "Y", "app", 1000.0, 500.0),
        ("d", "Y", "app", 1000.0, 1000.0),
    ]
    budget = Constraint("budget:b1", "budget", "b1", 800.0, offers=("X", "Y"))
    for greedy in (False, True):
        got, result = decide(spark, rows, [budget], greedy=greedy)
        chosen = sorted(k[0] for k, r in got.items() if r["allocation_status"] == CHOSEN)
        assert chosen == ["a", "b", "c"]
        assert result.usage["budget:b1"] <= 800.0


def test_offer_maximum_and_minimum_volumes(spark):
    rows = [(f"s{i}", "X", "app", 1000.0 + i) for i in range(5)] + [
        (f"s{i}", "Y", "app", 2000.0) for i in range(5)
    ]
    one_offer = AllocationParams(max_offers=1, sample_share=1.0, max_iterations=40, tolerance=0.0)
    constraints = [Constraint("max:Y", "offer_max", "Y", 3), Constraint("min:X", "offer_min", "X", 3)]
    got, result = decide(spark, rows, constraints, p=one_offer)
    x = sorted(k[0] for k, r in got.items() if r["allocation_status"] == CHOSEN and k[1] == "X")
    y = sorted(k[0] for k, r in got.items() if r["allocation_status"] == CHOSEN and k[1] == "Y")
    assert len(y) <= 3 and len(x) >= 3 and not set(x) & set(y)
    assert result.infeasible == []


def test_a_minimum_no_eligible_set_can_reach_is_infeasible(spark):
    rows = [("a", "X", "app", 10.0), ("b", "X", "app", 10.0)]
    _, result = decide(spark, rows, [Constraint("min:X", "offer_min", "X", 5)])
    assert result.infeasible == ["min:X: only 2 eligible treatment subscribers, minimum 5"]


def test_budget_pacing_spreads_what_is_left_over_the_days_left():
    start, end = date(2026, 6, 1), date(2026, 6, 30)
    assert paced_allowance(3_000_000, 0.0, start, end, date(2026, 6, 1)) == pytest.approx(100_000)
    # Half spent with 10 days left: 150,000 a day, not the whole rest on one day.
    assert paced_allowance(3_000_000, 1_500_000, start, end, date(2026, 6, 21)) == pytest.approx(150_000)
    assert paced_allowance(3_000_000, 0.0, start, end, date(2026, 7, 1)) == 0.0
    assert paced_allowance(3_000_000, 4_000_000, start, end, date(2026, 6, 10)) == 0.0


def test_dual_prices_beat_greedy_when_subscribers_compete_for_capacity(spark):
    # Greedy gives each subscriber their best action (all on sms) and then cuts sms by
    # value; the prices move the subscribers who lose little to the app instead.
    rows = []
    for i in range(6):
        rows.append((f"s{i}", "A", "sms", 1000.0 + 10 * i))
        rows.append((f"s{i}", "A", "app", 900.0 + 10 * i if i < 3 else 100.0))
    cap = Constraint("capacity:sms", "channel_capacity", "sms", 3)
    one = AllocationParams(max_offers=1, sample_share=1.0, max_iterations=60, tolerance=0.0)

    def total(got):
        return sum(r["net_value"] for r in got.values() if r["allocation_status"] == CHOSEN)

    dual, result = decide(spark, rows, [cap], p=one)
    greedy, _ = decide(spark, rows, [cap], p=one, greedy=True)
    assert result.usage["capacity:sms"] <= 3
    # Optimum: s3, s4, s5 on sms (1030+1040+1050), s0..s2 on app (900+910+920).
    assert total(dual) == pytest.approx(5850.0)
    assert total(greedy) < total(dual)
