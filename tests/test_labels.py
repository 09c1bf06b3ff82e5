"""Labels come from the window (T, T+horizon] only: hand-built cases for every rule and boundary."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from cvo_spark.core.errors import MissingColumnsError
from cvo_spark.core.schemas import INPUT_SCHEMAS
from cvo_spark.models.labels import LabelWindowError, build_labels, training_snapshot_dates

T = date(2026, 3, 31)
END = date(2026, 4, 30)  # T + 30 days


def _usage(sub, day, revenue=0.0, voice=0.0, data=0.0, digital=0.0):
    # voice_minutes, voice_revenue, sms_count, sms_revenue, data_mb, data_revenue, digital_revenue
    return (sub, day, voice, revenue, 0, 0.0, data, 0.0, digital)


@pytest.fixture(scope="module")
def label_inputs(spark):
    subscribers = spark.createDataFrame(
        [
            ("s1", date(2025, 1, 1), "prepaid", "r", "mid", "active", None),
            ("s2", date(2025, 1, 1), "prepaid", "r", "mid", "active", None),
            ("s3", date(2025, 1, 1), "prepaid", "r", "mid", "active", None),
            ("s4", date(2025, 1, 1), "prepaid", "r", "mid", "active", None),
            ("s5", date(2025, 1, 1), "prepaid", "r", "mid", "active", None),
            ("s6", date(2025, 1, 1), "prepaid", "r", "mid", "churned", END),  # churn on T+h: in window
            ("s7", date(2025, 1, 1), "prepaid", "r", "mid", "churned", T),  # churned on T: not active at T
            ("s8", date(2025, 1, 1), "prepaid", "r", "mid", "churned", date(2026, 5, 1)),  # after the window
            ("s9", date(2025, 1, 1), "prepaid", "r", "mid", "active", None),
            ("s10", date(2026, 4, 2), "prepaid", "r", "mid", "active", None),  # activated after T
            ("s11", date(2025, 1, 1), "prepaid", "r", "mid", "active", None),
            ("s12", date(2025, 1, 1), None, None, None, "active", None),
            ("s13", date(2025, 1, 1), "prepaid", "r", "mid", "active", None),
        ],
        INPUT_SCHEMAS["subscribers"],
    )
    usage = spark.createDataFrame(
        [
            _usage("s1", date(2026, 3, 20), revenue=1000.0, data=100.0),
            _usage("s1", date(2026, 4, 10), revenue=1000.0, data=100.0),
            _usage("s2", date(2026, 4, 10), revenue=10.0),
            _usage("s3", date(2026, 3, 15), revenue=30_000.0, voice=10.0),  # prior 30 d: 1,000 a day
            _usage("s3", date(2026, 4, 15), revenue=40_000.0, voice=10.0),  # window: 1,333 a day (+33%)
            _usage("s4", date(2026, 3, 15), revenue=30_000.0, voice=10.0),
            _usage("s4", date(2026, 4, 15), revenue=33_000.0, voice=10.0),  # +10%: not an upsell
            _usage("s5", date(2026, 3, 15), revenue=500.0, voice=10.0),
            _usage("s5", date(2026, 4, 15), revenue=500.0, voice=10.0),
            _usage("s8", date(2026, 4, 20), revenue=500.0, voice=10.0),
            _usage("s9", date(2026, 3, 30), revenue=500.0, voice=10.0),
            _usage("s9", date(2026, 5, 5), revenue=500.0, voice=10.0),  # after the window: ignored
            _usage("s11", T, revenue=500.0, voice=10.0),  # on T itself: features, not label window
            _usage("s12", date(2026, 3, 1), revenue=None, voice=None),
        ],
        INPUT_SCHEMAS["usage_daily"],
    )
    recharges = spark.createDataFrame(
        [
            ("s12", datetime(2026, 4, 29, 10), 10_000.0, "app"),
            ("s11", datetime(2026, 3, 31, 23, 59), 5_000.0, "app"),
        ],
        INPUT_SCHEMAS["recharges"],
    )
    purchases = spark.createDataFrame(
        [
            ("s1", datetime(2026, 3, 10, 9), "data_small", 50_000.0, "app"),
            (
                "s1",
                datetime(2026, 4, 30, 23),
                "data_big",
                100_000.0,
                "app",
            ),  # on T+h: in window, higher price
            ("s2", datetime(2026, 3, 10, 9), "data_small", 50_000.0, "app"),
            ("s2", datetime(2026, 3, 31, 23), "data_huge", 200_000.0, "app"),  # on T: counts as "before"
            ("s2", datetime(2026, 4, 5, 9), "data_big", 100_000.0, "app"),
            ("s5", datetime(2026, 4, 5, 9), "digital_music", 20_000.0, "app"),  # new category
            ("s5", datetime(2026, 4, 6, 9), "voice_pack", 10_000.0, "app"),  # voice is used: not new
            ("s5", datetime(2026, 2, 1, 9), "bundle_a", 90_000.0, "app"),
            ("s9", datetime(2026, 5, 2, 9), "sms_pack", 1_000.0, "app"),  # after the window
            ("s13", datetime(2026, 4, 2, 9), "data_small", 10_000.0, "app"),  # first purchase ever
        ],
        INPUT_SCHEMAS["purchases"],
    )
    return subscribers, usage, recharges, purchases


@pytest.fixture(scope="module")
def labels(label_inputs):
    out = build_labels(*label_inputs, T, 30, END, arpu_increase=0.2)
    return {r["subscriber_id"]: r for r in out.collect()}


def test_only_subscribers_active_at_T_get_a_row(labels):
    assert sorted(labels) == sorted(["s1", "s2", "s3", "s4", "s5", "s6", "s8", "s9", "s11", "s12", "s13"])
    assert all(r["snapshot_date"] == T for r in labels.values())


def test_upsell_by_price_counts_purchase_on_T_plus_h(labels):
    assert labels["s1"]["label_upsell"] == 1.0


def test_upsell_purchase_on_T_is_before_not_in_window(labels):
    # Max price before (incl. T) is 200k; the 100k window purchase is not higher.
    assert labels["s2"]["label_upsell"] == 0.0


def test_upsell_by_arpu_increase(labels):
    assert labels["s3"]["label_upsell"] == 1.0  # +33% >= 20%
    assert labels["s4"]["label_upsell"] == 0.0  # +10%


def test_upsell_needs_a_price_above_the_previous_maximum(labels):
    # s5 bought a 90k bundle before T; its 20k/10k window purchases are lower: no upsell.
    assert labels["s5"]["label_upsell"] == 0.0
    # s13 had never bought a package: its first one is an upsell from nothing.
    assert labels["s13"]["label_upsell"] == 1.0


def test_cross_sell_new_category_only(labels):
    assert labels["s5"]["label_cross_sell"] == 1.0  # digital never used/bought
    assert labels["s13"]["label_cross_sell"] == 1.0  # data neither used nor bought in the 90 days
    assert labels["s1"]["label_cross_sell"] == 0.0  # data used and bought before
    assert labels["s2"]["label_cross_sell"] == 0.0
    assert labels["s9"]["label_cross_sell"] == 0.0  # its purchase is after the window


def test_churn_rules_and_boundaries(labels):
    assert labels["s6"]["label_churn"] == 1.0  # churn_date == T + h
    assert labels["s8"]["label_churn"] == 0.0  # churns after the window, active in it
    assert labels["s9"]["label_churn"] == 1.0  # inactive in the window (later usage ignored)
    assert labels["s11"]["label_churn"] == 1.0  # usage and recharge on T only: inactive after
    assert labels["s12"]["label_churn"] == 0.0  # a recharge in the window is activity
    assert labels["s13"]["label_churn"] == 0.0  # so is a purchase
    assert labels["s3"]["label_churn"] == 0.0


def test_inactivity_is_looked_for_in_the_last_inactive_days_of_the_window(label_inputs):
    out = build_labels(*label_inputs, T, 30, END, arpu_increase=0.2, inactive_days=10)
    churn = {r["subscriber_id"]: r["label_churn"] for r in out.collect()}
    # Activity in (04-20, 04-30] keeps a subscriber: a purchase on 04-30, a recharge on 04-29.
    assert churn["s1"] == 0.0 and churn["s12"] == 0.0
    # Active only earlier in the window: churned by this definition (not by the default).
    assert churn["s2"] == 1.0 and churn["s3"] == 1.0 and churn["s13"] == 1.0
    assert churn["s8"] == 1.0  # usage on 04-20 itself is outside (04-20, 04-30]
    assert churn["s6"] == 1.0  # churn_date in the window
    with pytest.raises(ValueError, match="inactive_days"):
        build_labels(*label_inputs, T, 30, END, arpu_increase=0.2, inactive_days=31)


def test_future_revenue_is_window_usage_revenue(labels):
    assert labels["s3"]["future_revenue"] == pytest.approx(40_000.0)
    assert labels["s9"]["future_revenue"] == pytest.approx(0.0)
    assert labels["s12"]["future_revenue"] == pytest.approx(0.0)


def test_window_past_data_end_is_refused(spark):
    empty = {
        n: spark.createDataFrame([], INPUT_SCHEMAS[n])
        for n in ("subscribers", "usage_daily", "recharges", "purchases")
    }
    with pytest.raises(LabelWindowError, match="2026-04-30"):
        build_labels(
            empty["subscribers"],
            empty["usage_daily"],
            empty["recharges"],
            empty["purchases"],
            T,
            30,
            date(2026, 4, 29),
            arpu_increase=0.2,
        )


def test_missing_column_is_named(spark):
    subs = spark.createDataFrame([], INPUT_SCHEMAS["subscribers"])
    usage = spark.createDataFrame([], INPUT_SCHEMAS["usage_daily"]).drop("data_mb")
    rech = spark.createDataFrame([], INPUT_SCHEMAS["recharges"])
    purch = spark.createDataFrame([], INPUT_SCHEMAS["purchases"])
    with pytest.raises(MissingColumnsError, match="data_mb"):
        build_labels(subs, usage, rech, purch, T, 30, END, arpu_increase=0.2)


def test_training_snapshot_dates_end_one_horizon_before_as_of():
    assert training_snapshot_dates(date(2026, 6, 30), 30, 3, 30) == [
        date(2026, 4, 1),
        date(2026, 5, 1),
        date(2026, 5, 31),
    ]


def test_snapshots_need_a_full_feature_window_of_history():
    from cvo_spark.models.labels import TrainingHistoryError, snapshots_with_history

    planned = training_snapshot_dates(date(2026, 6, 30), 30, 3, 30)  # 04-01, 05-01, 05-31
    # 150 days of data (from 02-01): 05-01 has exactly 90 days on or before it, 04-01 only 60.
    assert snapshots_with_history(planned, date(2026, 2, 1), 90) == [date(2026, 5, 1), date(2026, 5, 31)]
    assert snapshots_with_history(planned, date(2026, 2, 2), 60) == planned[1:]
    assert snapshots_with_history(planned, date(2026, 1, 2), 90) == planned
    with pytest.raises(TrainingHistoryError, match=r"1 of the 3 training snapshots .*data starts 2026-03-03"):
        snapshots_with_history(planned, date(2026, 3, 3), 90)
    with pytest.raises(TrainingHistoryError, match="usage_daily is empty"):
        snapshots_with_history(planned, None, 90)
