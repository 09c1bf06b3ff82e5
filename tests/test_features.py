"""Hand-computed features on tiny inputs, one test per feature family.

As of 2026-06-30 with small windows so the arithmetic fits in a comment:
short (1m) = 2 days [06-29, 06-30], long (3m) = 6 days [06-25, 06-30], trend recent =
2 days [06-29, 06-30] vs prior = 4 days [06-25, 06-28], quota = 3 days [06-28, 06-30],
offers = 5 days [06-26, 06-30]; new_max_days = 10.

Subscribers: s1 (busy), s2 (activated 06-25, no events at all), s3 (status 'churned'
but churn_date 07-10 is after as_of, so still in; rows with None values), s4 (activated
07-02: out), s5 (churned 06-15: out). Every table also holds rows after as_of that must
be ignored.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.sql.types import DoubleType, IntegerType, LongType, StringType, StructField, StructType

from cvo_spark.core.config import FeatureWindows
from cvo_spark.core.errors import MissingColumnsError
from cvo_spark.core.schemas import REQUIRED_INPUT_SCHEMAS
from cvo_spark.features.b2b import B2B_FEATURES_SCHEMA, build_b2b_features
from cvo_spark.features.subscriber import FEATURES_SCHEMA, build_subscriber_features

AS_OF = date(2026, 6, 30)
SMALL = FeatureWindows(
    arpu_short_days=2,
    arpu_long_days=6,
    trend_recent_days=2,
    trend_prior_days=4,
    quota_days=3,
    offer_history_days=5,
)
EPS = 1e-9


def ts(month: int, day: int, hour: int = 12, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def d(month: int, day: int, year: int = 2026) -> date:
    return date(year, month, day)


def names_and_types(schema):
    return [(f.name, f.dataType) for f in schema.fields]


def frame(spark, table, rows):
    return spark.createDataFrame(rows, REQUIRED_INPUT_SCHEMAS[table])


# --------------------------------------------------------------------------- inputs
def small_inputs(spark) -> dict:
    subscribers = frame(
        spark,
        "subscribers",
        [
            ("s1", d(1, 1), "prepaid", "north", "high", "active", None),
            ("s2", d(6, 25), "postpaid", "south", "mid", "active", None),
            ("s3", d(12, 1, 2025), "prepaid", "east", "low", "churned", d(7, 10)),
            ("s4", d(7, 2), "prepaid", "west", "low", "active", None),
            ("s5", d(1, 1, 2025), "prepaid", "west", "low", "churned", d(6, 15)),
        ],
    )
    # voice_minutes, voice_revenue, sms_count, sms_revenue, data_mb, data_revenue, digital_revenue
    usage = frame(
        spark,
        "usage_daily",
        [
            ("s1", d(6, 20), 10.0, 100.0, 1, 10.0, 0.0, 0.0, 0.0),  # history: recency only
            ("s1", d(6, 25), 5.0, 50.0, 2, 20.0, 100.0, 30.0, 0.0),  # rev 100, prior
            ("s1", d(6, 27), 0.0, 0.0, 0, 0.0, 200.0, 60.0, 40.0),  # rev 100, prior
            ("s1", d(6, 29), 20.0, 200.0, 0, 0.0, 0.0, 0.0, 0.0),  # rev 200, recent
            ("s1", d(6, 30), 0.0, 0.0, 0, 0.0, 0.0, 0.0, 0.0),  # a row with no usage
            ("s1", d(7, 1), 100.0, 1000.0, 9, 90.0, 900.0, 900.0, 900.0),  # after as_of
            ("s3", d(6, 26), None, None, 3, 30.0, 50.0, 20.0, None),  # rev 50, prior
            ("s3", d(6, 29), 4.0, 40.0, None, None, None, None, 10.0),  # rev 50, recent
            ("s4", d(7, 2), 1.0, 10.0, 1, 1.0, 1.0, 1.0, 1.0),
            ("s5", d(6, 10), 1.0, 10.0, 1, 1.0, 1.0, 1.0, 1.0),
        ],
    )
    recharges = frame(
        spark,
        "recharges",
        [
            ("s1", ts(5, 1), 50.0, "ussd"),  # before the long window
            ("s1", ts(6, 25, 0, 0), 100.0, "app"),  # first instant of the long window
            ("s1", ts(6, 28), 100.0, "ussd"),
            ("s1", ts(6, 30, 23, 30), 40.0, "app"),  # last half hour of as_of
            ("s1", ts(7, 1, 0, 0), 999.0, "sms"),  # first instant after as_of
            ("s3", ts(6, 24, 23, 59), 30.0, "retail"),  # just before the long window
            ("s3", ts(6, 27, 8), None, "ussd"),  # amount unknown
            ("s3", ts(6, 29, 9), 60.0, "ussd"),
            ("s5", ts(6, 1), 10.0, "app"),
        ],
    )
    purchases = frame(
        spark,
        "purchases",
        [
            ("s1", ts(6, 26), "data_1gb", 25.0, "app"),
            ("s1", ts(7, 5), "data_1gb", 25.0, "ussd"),
            ("s3", ts(6, 28), "sms_50", None, "app"),
            ("s3", ts(6, 29), "voice_100", 20.0, "app"),
        ],
    )
    quota = frame(
        spark,
        "quota_events",
        [
            ("s1", ts(6, 27, 23, 59), "quota_low", 10.0, None),  # before the quota window
            ("s1", ts(6, 28, 0, 0), "quota_low", 9.0, None),
            ("s1", ts(6, 29), "quota_expiring", None, ts(7, 1)),
            ("s1", ts(6, 30), "package_expired", 0.0, None),
            ("s1", ts(6, 30, 13), "recharge", 100.0, None),
            ("s1", ts(7, 1, 0, 0), "quota_low", 5.0, None),
            ("s3", ts(6, 29), "quota_low", 8.0, None),
            ("s3", ts(6, 30), "quota_low", None, None),
        ],
    )
    offers = frame(
        spark,
        "offer_history",
        [
            ("s1", "o1", "sms", ts(6, 20), "treatment", True, ts(6, 21), 10.0),  # before the window
            ("s1", "o2", "app", ts(6, 27), "treatment", True, ts(6, 28), 10.0),
            ("s1", "o3", "app", ts(6, 29), "control", True, ts(7, 2), 10.0),  # accepted after as_of
            ("s1", "o4", "sms", ts(6, 30, 18), "treatment", False, None, 0.0),
            ("s1", "o5", "sms", ts(7, 1), "treatment", True, ts(7, 1, 13), 10.0),
            ("s3", "o1", "ussd", ts(6, 10), "treatment", False, None, 0.0),
        ],
    )
    return {
        "subscribers": subscribers,
        "usage": usage,
        "recharges": recharges,
        "purchases": purchases,
        "quota_events": quota,
        "offer_history": offers,
    }


@pytest.fixture(scope="module")
def small_features(spark):
    df = build_subscriber_features(**small_inputs(spark), as_of=AS_OF, windows=SMALL, new_max_days=10)
    return df.cache()


def expected(spark, fields, rows):
    """A DataFrame of `rows` whose columns take their types from FEATURES_SCHEMA."""
    types = {f.name: f.dataType for f in FEATURES_SCHEMA.fields}
    return spark.createDataFrame(rows, StructType([StructField(c, types[c]) for c in fields]))


def check(spark, actual, fields, rows):
    assert_approx_df_equality(
        actual.select(*fields),
        expected(spark, fields, rows),
        EPS,
        ignore_nullable=True,
        ignore_row_order=True,
    )


# --------------------------------------------------------------------------- families
def test_schema_and_base_population(small_features):
    # s4 (activated after as_of) and s5 (churned before) are out; s3 is in although its
    # status column already says 'churned' (churn_date 07-10 is after as_of).
    assert names_and_types(small_features.schema) == names_and_types(FEATURES_SCHEMA)
    assert sorted(r.subscriber_id for r in small_features.collect()) == ["s1", "s2", "s3"]


def test_profile_and_length_of_stay(spark, small_features):
    fields = [
        "subscriber_id",
        "as_of",
        "payment_type",
        "region",
        "device_tier",
        "activation_date",
        "length_of_stay_days",
        "is_new",
    ]
    assert_df_equality(
        small_features.select(*fields),
        expected(
            spark,
            fields,
            [
                ("s1", AS_OF, "prepaid", "north", "high", d(1, 1), 180, False),
                ("s2", AS_OF, "postpaid", "south", "mid", d(6, 25), 5, True),
                ("s3", AS_OF, "prepaid", "east", "low", d(12, 1, 2025), 211, False),
            ],
        ),
        ignore_nullable=True,
        ignore_row_order=True,
    )


def test_revenue_arpu_and_mix(spark, small_features):
    # s1: 1m = 200 (06-29) + 0 (06-30); 3m = 100 + 100 + 200 + 0 = 400, of which voice 250,
    # sms 20, data 90, digital 40. arpu_1m = 200 / (2/30); arpu_3m = 400 / (6/30).
    # s3: None values count as 0: 3m = 50 + 50 (voice 40, sms 30, data 20, digital 10).
    # s2: no usage -> 0 amounts and 0.0 shares.
    fields = [
        "subscriber_id",
        "revenue_1m",
        "revenue_3m",
        "arpu_1m",
        "arpu_3m",
        "voice_revenue_3m",
        "sms_revenue_3m",
        "data_revenue_3m",
        "digital_revenue_3m",
        "voice_share",
        "sms_share",
        "data_share",
        "digital_share",
        "monetary_3m",
    ]
    check(
        spark,
        small_features,
        fields,
        [
            ("s1", 200.0, 400.0, 3000.0, 2000.0, 250.0, 20.0, 90.0, 40.0, 0.625, 0.05, 0.225, 0.1, 400.0),
            ("s2", 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
            ("s3", 50.0, 100.0, 750.0, 500.0, 40.0, 30.0, 20.0, 10.0, 0.4, 0.3, 0.2, 0.1, 100.0),
        ],
    )


def test_usage_volumes_and_active_days(spark, small_features):
    # s1: 06-30 has a row but no usage, so 3 active days; the 06-20 and 07-01 rows are outside.
    fields = ["subscriber_id", "voice_minutes_3m", "sms_count_3m", "data_mb_3m", "active_days_3m"]
    check(
        spark,
        small_features,
        fields,
        [
            ("s1", 25.0, 2, 300.0, 3),
            ("s2", 0.0, 0, 0.0, 0),
            ("s3", 4.0, 3, 50.0, 2),
        ],
    )


def test_trends_and_volatility(spark, small_features):
    # s1 revenue: recent 200/2 = 100 per day vs prior 200/4 = 50 -> +1.0; data 0 vs 300/4 -> -1.0;
    # voice 20/2 = 10 vs 5/4 = 1.25 -> +7.0. Daily revenue over 6 days [100,0,100,0,200,0]:
    # cv = sqrt(60000/6 - (400/6)^2) / (400/6) = sqrt(5)/2.
    # s3: voice prior is 0 -> null trend; daily revenue [0,50,0,0,50,0]: cv = sqrt(2).
    # s2: every denominator is 0 -> null.
    fields = ["subscriber_id", "revenue_trend_pct", "data_trend_pct", "voice_trend_pct", "revenue_volatility"]
    check(
        spark,
        small_features,
        fields,
        [
            ("s1", 1.0, -1.0, 7.0, math.sqrt(5) / 2),
            ("s2", None, None, None, None),
            ("s3", 1.0, -1.0, None, math.sqrt(2)),
        ],
    )


def test_recharge_features(spark, small_features):
    # s1 in window: 100 (06-25 00:00), 100, 40 (06-30 23:30); 07-01 00:00 is after as_of.
    # mean 80, population std sqrt((400 + 400 + 1600) / 3).
    # s3: the None-amount recharge counts but not in mean/std; one known amount -> std null;
    # the 06-24 23:59 recharge is outside the window but is the last-but-one ever.
    fields = [
        "subscriber_id",
        "recharge_count_3m",
        "recharge_amount_3m",
        "recharge_mean_amount",
        "recharge_std_amount",
        "days_since_last_recharge",
    ]
    check(
        spark,
        small_features,
        fields,
        [
            ("s1", 3, 240.0, 80.0, math.sqrt(800.0), 0),
            ("s2", 0, 0.0, None, None, None),
            ("s3", 2, 60.0, 60.0, None, 1),
        ],
    )


def test_purchases_and_rfm(spark, small_features):
    # s1: the 07-05 purchase is after as_of. Recency 0 from the 06-30 recharge (last
    # revenue usage day is 06-29). s3: last usage, recharge and purchase all on 06-29.
    fields = ["subscriber_id", "purchase_count_3m", "purchase_amount_3m", "recency_days", "frequency_3m"]
    check(
        spark,
        small_features,
        fields,
        [
            ("s1", 1, 25.0, 0, 4),
            ("s2", 0, 0.0, None, 0),
            ("s3", 2, 20.0, 1, 4),
        ],
    )


def test_quota_events(spark, small_features):
    # Window [06-28 00:00, 07-01 00:00): s1's 06-27 23:59 and 07-01 00:00 events are outside;
    # 'recharge' quota events are not counted.
    fields = ["subscriber_id", "quota_low_count", "quota_expiring_count", "package_expired_count"]
    check(
        spark,
        small_features,
        fields,
        [
            ("s1", 1, 1, 1),
            ("s2", 0, 0, 0),
            ("s3", 2, 0, 0),
        ],
    )


def test_offer_response(spark, small_features):
    # s1 contacts in [06-26, 06-30]: o2 (accepted 06-28), o3 (accepted 07-02: not yet known),
    # o4 (not accepted) -> 1 of 3; o5 (07-01) does not exist yet. s3: last contact 06-10,
    # outside the window -> 0 contacts, null rate, 20 days since.
    fields = [
        "subscriber_id",
        "offers_contacted",
        "offers_accepted",
        "offer_accept_rate",
        "days_since_last_contact",
    ]
    check(
        spark,
        small_features,
        fields,
        [
            ("s1", 3, 1, 1 / 3, 0),
            ("s2", 0, 0, None, None),
            ("s3", 0, 0, None, 20),
        ],
    )


def test_preferred_channel(spark, small_features):
    # s1: app 3 (2 recharges + 1 purchase) vs ussd 1 -> app (the 'sms' recharge is after as_of).
    # s3: ussd 2 recharges vs app 2 purchases -> tie, alphabetical -> app (retail is outside).
    fields = ["subscriber_id", "preferred_channel"]
    assert_df_equality(
        small_features.select(*fields),
        expected(
            spark,
            fields,
            [
                ("s1", "app"),
                ("s2", None),
                ("s3", "app"),
            ],
        ),
        ignore_nullable=True,
        ignore_row_order=True,
    )


def test_default_windows_boundaries(spark):
    # Default windows as of 06-30: 1m = [06-01, 06-30], 3m = [04-02, 06-30], trend prior =
    # [04-02, 05-31], quota = [06-01, 06-30], offers = [04-02, 06-30].
    subscribers = frame(
        spark,
        "subscribers",
        [
            ("a", d(4, 1), "prepaid", "north", "mid", "active", None),  # LOS 90 -> not new
            ("b", d(4, 2), "prepaid", "north", "mid", "active", None),  # LOS 89 -> new
        ],
    )
    usage = frame(
        spark,
        "usage_daily",
        [
            ("a", d(4, 1), 0.0, 1000.0, 0, 0.0, 0.0, 0.0, 0.0),
            ("a", d(4, 2), 0.0, 90.0, 0, 0.0, 0.0, 0.0, 0.0),
            ("a", d(5, 31), 0.0, 60.0, 0, 0.0, 0.0, 0.0, 0.0),
            ("a", d(6, 1), 0.0, 30.0, 0, 0.0, 0.0, 0.0, 0.0),
        ],
    )
    recharges = frame(
        spark, "recharges", [("a", ts(4, 1, 23, 59), 5.0, "app"), ("a", ts(4, 2, 0, 0), 7.0, "app")]
    )
    purchases = frame(spark, "purchases", [])
    quota = frame(
        spark,
        "quota_events",
        [("a", ts(5, 31, 23), "quota_low", 1.0, None), ("a", ts(6, 1, 0, 0), "quota_low", 1.0, None)],
    )
    offers = frame(
        spark,
        "offer_history",
        [
            ("a", "o1", "sms", ts(4, 1), "treatment", True, ts(4, 1), 1.0),
            ("a", "o2", "sms", ts(4, 2), "treatment", True, ts(4, 3), 1.0),
        ],
    )
    out = build_subscriber_features(subscribers, usage, recharges, purchases, quota, offers, AS_OF)
    # revenue_3m = 90 + 60 + 30; trend: 30/30 = 1 per day vs 150/60 = 2.5 -> -0.6;
    # cv over 90 days: mean 2, E[x^2] = 12600/90 = 140 -> sqrt(136)/2.
    fields = [
        "subscriber_id",
        "is_new",
        "revenue_1m",
        "revenue_3m",
        "arpu_1m",
        "arpu_3m",
        "revenue_trend_pct",
        "revenue_volatility",
        "recharge_count_3m",
        "days_since_last_recharge",
        "quota_low_count",
        "offers_contacted",
        "offers_accepted",
        "days_since_last_contact",
        "recency_days",
    ]
    check(
        spark,
        out,
        fields,
        [
            ("a", False, 30.0, 180.0, 30.0, 60.0, -0.6, math.sqrt(136) / 2, 1, 89, 1, 1, 1, 89, 29),
            ("b", True, 0.0, 0.0, 0.0, 0.0, None, None, 0, None, 0, 0, 0, None, None),
        ],
    )


def test_missing_column_is_named(spark):
    inputs = small_inputs(spark)
    inputs["usage"] = inputs["usage"].drop("data_mb")
    with pytest.raises(MissingColumnsError, match="data_mb"):
        build_subscriber_features(**inputs, as_of=AS_OF, windows=SMALL)


# --------------------------------------------------------------------------- b2b
def test_b2b_features(spark):
    # Window 6 days [06-25, 06-30]; trend recent [06-29, 06-30] vs prior [06-25, 06-28].
    accounts = frame(
        spark,
        "b2b_accounts",
        [
            ("A", "Acme", "retail", 5_000_000.0, 100.0, ["sms_api", "whatsapp_api"], d(1, 15, 2025)),
            ("B", "Bolt", "logistics", 1_000_000.0, 50.0, None, d(6, 1)),  # no messages at all
            ("C", "Late", "bank", 2_000_000.0, 10.0, ["sms_api"], d(7, 1)),  # signed after as_of: out
        ],
    )
    messages = frame(
        spark,
        "b2b_messages",
        [
            ("A", ts(6, 20), "sms", "delivered", True, 999.0),  # before the window
            ("A", ts(6, 25, 0, 0), "whatsapp", "delivered", True, 100.0),  # prior
            ("A", ts(6, 26), "whatsapp", "failed", False, 100.0),  # not charged
            ("A", ts(6, 27), "sms", "pending", True, None),  # charged, price unknown -> 0
            ("A", ts(6, 29), "email", "delivered", True, 200.0),  # recent
            ("A", ts(6, 30, 23, 59), "whatsapp", "delivered", True, 100.0),  # recent
            ("A", ts(7, 1, 0, 0), "voice", "delivered", True, 5000.0),  # after as_of
        ],
    )
    out = build_b2b_features(
        accounts, messages, AS_OF, window_days=6, trend_recent_days=2, trend_prior_days=4
    )
    assert names_and_types(out.schema) == names_and_types(B2B_FEATURES_SCHEMA)
    # A: 5 messages; revenue 100 + 0 + 200 + 100 = 400 over 4 charged -> aov 100;
    # final statuses 4 (3 delivered, 1 failed); whatsapp 3/5, sms 1/5, email 1/5;
    # trend: recent 300/2 = 150 vs prior 100/4 = 25 -> +5.0; contract 2025-01-15 -> 17 months.
    fields = [f.name for f in B2B_FEATURES_SCHEMA.fields]
    exp = spark.createDataFrame(
        [
            (
                "A",
                AS_OF,
                "Acme",
                "retail",
                5_000_000.0,
                100.0,
                17,
                5,
                400.0,
                100.0,
                0.75,
                0.25,
                0.6,
                0.2,
                0.2,
                0.0,
                5.0,
                2,
            ),
            (
                "B",
                AS_OF,
                "Bolt",
                "logistics",
                1_000_000.0,
                50.0,
                0,
                0,
                0.0,
                None,
                None,
                None,
                0.0,
                0.0,
                0.0,
                0.0,
                None,
                0,
            ),
        ],
        B2B_FEATURES_SCHEMA,
    )
    assert_approx_df_equality(out.select(*fields), exp, EPS, ignore_nullable=True, ignore_row_order=True)


def test_b2b_types_match_contract():
    types = {f.name: f.dataType for f in B2B_FEATURES_SCHEMA.fields}
    assert types["contract_months"] == IntegerType() and types["products_count"] == IntegerType()
    assert types["message_count_3m"] == LongType() and types["aov"] == DoubleType()
    assert types["account_id"] == StringType()


def test_recharge_std_of_equal_fractional_amounts_is_zero(spark):
    # 10,000.1 recharged 1,000 times: sum of squares / n - mean^2 leaves a rounding residue
    # (std 0.0016 when summed in order); Spark's moment merge gives 0.
    from cvo_spark.features.subscriber import _agg_spend, with_recharge_features

    ts = datetime(2026, 6, 20, 10, 0)
    recharges = spark.createDataFrame(
        [("s1", ts, 10_000.1, "app")] * 1000,
        "subscriber_id string, recharge_ts timestamp, amount double, channel string",
    )
    purchases = spark.createDataFrame(
        [], "subscriber_id string, purchase_ts timestamp, price double, channel string"
    )
    row = with_recharge_features(_agg_spend(recharges, purchases, AS_OF, 90, ["app"]), AS_OF).first()
    assert row["recharge_count_3m"] == 1000
    assert row["recharge_mean_amount"] == pytest.approx(10_000.1)
    assert row["recharge_std_amount"] == pytest.approx(0.0, abs=1e-9)
