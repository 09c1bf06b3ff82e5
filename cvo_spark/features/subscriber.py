"""Subscriber behavioural features as of a date (the gold `features` table).

`build_subscriber_features` turns the silver tables into one row per subscriber active
at the end of `as_of`: ARPU, length of stay, revenue mix, recharge and purchase
behaviour, RFM, trends and volatility, quota events, offer response and preferred
channel. The columns and their meaning are fixed by ``docs/tables.md``.

Point in time (invariant 1)
    Every event table is first cut at the end of the as-of day (dates ``<= as_of``,
    timestamps ``< as_of + 1 day`` in the session time zone). An acceptance counts only
    when ``accepted_ts`` is inside that cut too, and the subscriber base is decided by
    ``activation_date`` and ``churn_date`` - never by the current ``status`` column - so
    appending later events (or a later churn) never changes the features as of D.
    Windows of N days end at as_of inclusive: dates in ``[as_of - N + 1, as_of]``.

Missing data: zero or null
    * amounts, counts and usage over a window with no events are **0**: the subscriber
      was active and did nothing, which is information;
    * ratios whose denominator is 0 (trends, accept rate, recharge mean/std, volatility)
      are **null**, except the revenue shares, which are **0.0** when ``revenue_3m = 0``
      (K-Means needs numbers; ``revenue_3m = 0`` tells those rows apart);
    * "days since" with no event ever is **null**;
    * a null value inside an event row (e.g. a null ``voice_revenue``) counts as 0 in
      sums; recharge mean/std ignore recharges with a null amount.

Scale
    Each event table is read once and aggregated in a single hash ``groupBy`` with
    conditional sums (``sum(when(in_window, x).otherwise(0))``) for every window
    (recharges and purchases are stacked into one); the per-table aggregates are
    left-joined to the subscriber base and the zero rule is applied there with
    ``coalesce``. Volatility comes from the sum and sum of squares of daily revenue, with
    the window length as ``n`` (a day without a row is a 0 day), and the preferred
    channel from one conditional count per channel, so no window function and no sort
    is needed. Recency and "days since" look at all history up to as_of, so usage,
    recharges, purchases and offer history are read without a lower date bound.
    `usage_daily` is assumed to hold one row per subscriber and day (two distinct rows
    for one day would count as two days in active_days_3m and the volatility).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, timedelta

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructField, StructType

from cvo_spark.core.config import FeatureWindows
from cvo_spark.core.schemas import DT, INT, SUBSCRIBER_CHANNELS, B, D, L, S
from cvo_spark.core.util import require_columns

SUBSCRIBER_KEY = "subscriber_id"
#: Days per month when a window is turned into a monthly ARPU.
DAYS_PER_MONTH = 30.0
#: Services whose revenue columns make up a subscriber's revenue, in share order.
SERVICES: tuple[str, ...] = ("voice", "sms", "data", "digital")

FEATURES_SCHEMA: StructType = StructType(
    [
        StructField(name, dtype)
        for name, dtype in (
            ("subscriber_id", S),
            ("as_of", DT),
            ("payment_type", S),
            ("region", S),
            ("device_tier", S),
            ("activation_date", DT),
            ("length_of_stay_days", INT),
            ("is_new", B),
            ("revenue_1m", D),
            ("revenue_3m", D),
            ("arpu_1m", D),
            ("arpu_3m", D),
            ("voice_revenue_3m", D),
            ("sms_revenue_3m", D),
            ("data_revenue_3m", D),
            ("digital_revenue_3m", D),
            ("voice_share", D),
            ("sms_share", D),
            ("data_share", D),
            ("digital_share", D),
            ("voice_minutes_3m", D),
            ("sms_count_3m", L),
            ("data_mb_3m", D),
            ("active_days_3m", INT),
            ("recharge_count_3m", L),
            ("recharge_amount_3m", D),
            ("recharge_mean_amount", D),
            ("recharge_std_amount", D),
            ("days_since_last_recharge", INT),
            ("purchase_count_3m", L),
            ("purchase_amount_3m", D),
            ("recency_days", INT),
            ("frequency_3m", L),
            ("monetary_3m", D),
            ("revenue_trend_pct", D),
            ("data_trend_pct", D),
            ("voice_trend_pct", D),
            ("revenue_volatility", D),
            ("quota_low_count", L),
            ("quota_expiring_count", L),
            ("package_expired_count", L),
            ("offers_contacted", L),
            ("offers_accepted", L),
            ("offer_accept_rate", D),
            ("days_since_last_contact", INT),
            ("preferred_channel", S),
        )
    ]
)

#: Aggregate columns that are 0 (not null) for a subscriber with no events (zero rule).
_ZERO_WHEN_ABSENT: dict[str, str] = {
    **{
        c: "double"
        for c in (
            "revenue_1m",
            "revenue_3m",
            "voice_revenue_3m",
            "sms_revenue_3m",
            "data_revenue_3m",
            "digital_revenue_3m",
            "voice_minutes_3m",
            "data_mb_3m",
            "revenue_sq_3m",
            "revenue_recent",
            "revenue_prior",
            "data_mb_recent",
            "data_mb_prior",
            "voice_minutes_recent",
            "voice_minutes_prior",
            "recharge_amount_3m",
            "purchase_amount_3m",
        )
    },
    **{
        c: "bigint"
        for c in (
            "sms_count_3m",
            "recharge_count_3m",
            "purchase_count_3m",
            "quota_low_count",
            "quota_expiring_count",
            "package_expired_count",
            "offers_contacted",
            "offers_accepted",
        )
    },
    "active_days_3m": "int",
}


# --------------------------------------------------------------------------- helpers
def window_start(as_of: date, days: int) -> date:
    """First day of the `days`-day window that ends at `as_of` inclusive."""
    return as_of - timedelta(days=days - 1)


def day_start(day: date) -> Column:
    """Midnight at the start of `day` as a timestamp literal (session time zone).

    A literal, not ``to_date(ts)``, so the comparison is pushed down to the Delta scan.
    """
    return F.lit(day).cast("timestamp")


def in_days(ts_col: str, as_of: date, days: int) -> Column:
    """True when timestamp `ts_col` lies in the `days`-day window ending at as_of inclusive."""
    return (F.col(ts_col) >= day_start(window_start(as_of, days))) & (
        F.col(ts_col) < day_start(as_of + timedelta(days=1))
    )


def days_since(day: Column, as_of: date) -> Column:
    """Whole days from `day` (date or timestamp) to `as_of`; null stays null."""
    return F.datediff(F.lit(as_of), F.to_date(day)).cast("int")


def ratio_or_null(numerator: Column, denominator: Column) -> Column:
    """numerator / denominator, null when the denominator is 0 or null (missing-data rule)."""
    return F.when(denominator != 0, numerator / denominator)


def filter_as_of(events: DataFrame, time_col: str, as_of: date, where: str) -> DataFrame:
    """Keep event rows at or before the end of `as_of` (invariant 1: point in time).

    Needs `time_col` (a DATE: kept when ``<= as_of``; a TIMESTAMP: kept when
    ``< as_of + 1 day``). Rows with a null event time cannot be placed in time and are
    left out.
    """
    require_columns(events, [time_col], where)
    if events.schema[time_col].dataType == DT:
        return events.where(F.col(time_col) <= F.lit(as_of))
    return events.where(F.col(time_col) < day_start(as_of + timedelta(days=1)))


def filter_active_subscribers(subscribers: DataFrame, as_of: date) -> DataFrame:
    """Subscribers active at the end of `as_of`: activated by then and not yet churned.

    Needs subscriber_id, activation_date, churn_date. Uses `churn_date`, not `status`,
    so a churn recorded after as_of leaves the subscriber in (invariant 1).
    """
    require_columns(
        subscribers, [SUBSCRIBER_KEY, "activation_date", "churn_date"], "filter_active_subscribers"
    )
    return subscribers.where(
        (F.col("activation_date") <= F.lit(as_of))
        & (F.col("churn_date").isNull() | (F.col("churn_date") > F.lit(as_of)))
    )


def select_schema(df: DataFrame, schema: StructType) -> DataFrame:
    """Select exactly the columns of `schema`, in order, cast to its types."""
    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])


# --------------------------------------------------------------------------- usage
def sum_if(condition: Column, value: Column) -> Column:
    """Aggregate: sum of `value` over rows where `condition` holds; 0 (not null) when none do."""
    return F.sum(F.when(condition, value).otherwise(F.lit(0)))


def _agg_usage(usage: DataFrame, as_of: date, w: FeatureWindows) -> DataFrame:
    """One pass over usage_daily: every window's sums, trend halves and volatility moments.

    Needs subscriber_id, usage_date and the usage/revenue columns. Adds, per subscriber,
    the 1- and 3-month sums, the recent/prior sums of the trend windows, the sum of
    squared daily revenue over the long window and the last day with revenue (all
    history up to as_of, for recency).
    """
    cols = [
        "usage_date",
        "voice_minutes",
        "voice_revenue",
        "sms_count",
        "sms_revenue",
        "data_mb",
        "data_revenue",
        "digital_revenue",
    ]
    require_columns(usage, [SUBSCRIBER_KEY, *cols], "features usage_daily")
    day = F.col("usage_date")
    z = {c: F.coalesce(F.col(c), F.lit(0)) for c in cols[1:]}
    revenue = z["voice_revenue"] + z["sms_revenue"] + z["data_revenue"] + z["digital_revenue"]
    is_used = (
        (z["voice_minutes"] > 0) | (z["sms_count"] > 0) | (z["data_mb"] > 0) | (z["digital_revenue"] > 0)
    )
    in_short = day >= F.lit(window_start(as_of, w.arpu_short_days))
    in_long = day >= F.lit(window_start(as_of, w.arpu_long_days))
    recent_start = F.lit(window_start(as_of, w.trend_recent_days))
    in_recent = day >= recent_start
    in_prior = (day >= F.lit(window_start(as_of, w.trend_recent_days + w.trend_prior_days))) & (
        day < recent_start
    )
    return (
        filter_as_of(usage, "usage_date", as_of, "features usage_daily")
        .groupBy(SUBSCRIBER_KEY)
        .agg(
            sum_if(in_short, revenue).alias("revenue_1m"),
            sum_if(in_long, revenue).alias("revenue_3m"),
            *[sum_if(in_long, z[f"{s}_revenue"]).alias(f"{s}_revenue_3m") for s in SERVICES],
            sum_if(in_long, z["voice_minutes"]).alias("voice_minutes_3m"),
            sum_if(in_long, z["sms_count"]).alias("sms_count_3m"),
            sum_if(in_long, z["data_mb"]).alias("data_mb_3m"),
            sum_if(in_long & is_used, F.lit(1)).alias("active_days_3m"),
            sum_if(in_long, revenue * revenue).alias("revenue_sq_3m"),
            sum_if(in_recent, revenue).alias("revenue_recent"),
            sum_if(in_prior, revenue).alias("revenue_prior"),
            sum_if(in_recent, z["data_mb"]).alias("data_mb_recent"),
            sum_if(in_prior, z["data_mb"]).alias("data_mb_prior"),
            sum_if(in_recent, z["voice_minutes"]).alias("voice_minutes_recent"),
            sum_if(in_prior, z["voice_minutes"]).alias("voice_minutes_prior"),
            F.max(F.when(revenue > 0, day)).alias("last_revenue_usage_date"),
        )
    )


def with_revenue_features(df: DataFrame, w: FeatureWindows) -> DataFrame:
    """Add arpu_1m, arpu_3m (monthly averages) and the four revenue shares.

    Needs revenue_1m, revenue_3m and <service>_revenue_3m. Shares are 0.0 when
    revenue_3m is 0 (missing-data rule: K-Means needs numbers).
    """
    require_columns(
        df, ["revenue_1m", "revenue_3m", *[f"{s}_revenue_3m" for s in SERVICES]], "with_revenue_features"
    )
    shares = {
        f"{s}_share": F.coalesce(ratio_or_null(F.col(f"{s}_revenue_3m"), F.col("revenue_3m")), F.lit(0.0))
        for s in SERVICES
    }
    return df.withColumns(
        {
            "arpu_1m": F.col("revenue_1m") / F.lit(w.arpu_short_days / DAYS_PER_MONTH),
            "arpu_3m": F.col("revenue_3m") / F.lit(w.arpu_long_days / DAYS_PER_MONTH),
            **shares,
        }
    )


def with_trend_features(df: DataFrame, w: FeatureWindows) -> DataFrame:
    """Add revenue/data/voice trend_pct and revenue_volatility.

    A trend is (daily average of the recent window - daily average of the prior window)
    / the prior average, as a fraction (0.25 = +25 %); null when the prior average is 0.
    Volatility is the coefficient of variation (population std / mean) of daily revenue
    over the long window, days without a row counting as 0; null when the mean is 0.
    Needs the ``*_recent``/``*_prior`` sums, revenue_3m and revenue_sq_3m.
    """
    needed = ["revenue_3m", "revenue_sq_3m"] + [
        f"{m}_{p}" for m in ("revenue", "data_mb", "voice_minutes") for p in ("recent", "prior")
    ]
    require_columns(df, needed, "with_trend_features")
    trends = {}
    for metric, name in (("revenue", "revenue"), ("data_mb", "data"), ("voice_minutes", "voice")):
        recent = F.col(f"{metric}_recent") / F.lit(float(w.trend_recent_days))
        prior = F.col(f"{metric}_prior") / F.lit(float(w.trend_prior_days))
        trends[f"{name}_trend_pct"] = ratio_or_null(recent - prior, prior)
    n = F.lit(float(w.arpu_long_days))
    mean = F.col("revenue_3m") / n
    # Clamped at 0: rounding can make sum(x^2)/n - mean^2 a hair negative.
    std = F.sqrt(F.greatest(F.col("revenue_sq_3m") / n - mean * mean, F.lit(0.0)))
    return df.withColumns({**trends, "revenue_volatility": ratio_or_null(std, mean)})


# --------------------------------------------------------------------------- recharges + purchases
def _preferred_channel(counts: dict[str, Column]) -> Column:
    """The channel with the highest positive count; ties go to the alphabetically first.

    A row-wise ``greatest`` over (count, -alphabetical rank, channel) structs: no window
    function and no second aggregation. Null when every count is 0.
    """
    ranked = [
        F.when(n > 0, F.struct(n.alias("n"), F.lit(-i).alias("rank"), F.lit(c).alias("channel")))
        for i, (c, n) in enumerate(sorted(counts.items()))
    ]
    best = ranked[0] if len(ranked) == 1 else F.greatest(*ranked)
    return best.getField("channel")


def _agg_spend(
    recharges: DataFrame, purchases: DataFrame, as_of: date, long_days: int, channels: Sequence[str]
) -> DataFrame:
    """One pass over recharges and purchases: counts, amounts, last times, preferred channel.

    Needs recharges(subscriber_id, recharge_ts, amount, channel) and
    purchases(subscriber_id, purchase_ts, price, channel). Both are stacked and
    aggregated in one hash aggregation per subscriber, with a conditional count per
    channel of `channels` from which the preferred channel (most recharges + purchases
    in the long window, ties alphabetical) is picked row-wise. Channels outside
    `channels` never win; silver guarantees there are none (ingest quarantines them).
    """
    require_columns(recharges, [SUBSCRIBER_KEY, "recharge_ts", "amount", "channel"], "features recharges")
    require_columns(purchases, [SUBSCRIBER_KEY, "purchase_ts", "price", "channel"], "features purchases")
    events = (
        filter_as_of(recharges, "recharge_ts", as_of, "features recharges")
        .select(
            SUBSCRIBER_KEY,
            "channel",
            F.col("recharge_ts").alias("ts"),
            F.lit(True).alias("is_recharge"),
            F.col("amount").cast("double").alias("amount"),
        )
        .unionByName(
            filter_as_of(purchases, "purchase_ts", as_of, "features purchases").select(
                SUBSCRIBER_KEY,
                "channel",
                F.col("purchase_ts").alias("ts"),
                F.lit(False).alias("is_recharge"),
                F.col("price").cast("double").alias("amount"),
            )
        )
    )
    in_long = in_days("ts", as_of, long_days)
    is_rc = F.col("is_recharge")
    is_rc_long, is_pu_long = in_long & is_rc, in_long & ~is_rc
    known = is_rc_long & F.col("amount").isNotNull()
    amount = F.coalesce(F.col("amount"), F.lit(0.0))
    per_channel = {c: f"_spend_n_{i}" for i, c in enumerate(channels)}
    return (
        events.groupBy(SUBSCRIBER_KEY)
        .agg(
            sum_if(is_rc_long, F.lit(1)).alias("recharge_count_3m"),
            sum_if(is_rc_long, amount).alias("recharge_amount_3m"),
            sum_if(known, F.lit(1)).alias("recharge_known_n"),
            # Spark's merge of (n, mean, M2) moments, not sum-of-squares minus squared mean:
            # the latter cancels catastrophically for many near-equal fractional amounts.
            F.stddev_pop(F.when(known, F.col("amount"))).alias("recharge_amount_std"),
            F.max(F.when(is_rc, F.col("ts"))).alias("last_recharge_ts"),
            sum_if(is_pu_long, F.lit(1)).alias("purchase_count_3m"),
            sum_if(is_pu_long, amount).alias("purchase_amount_3m"),
            F.max(F.when(~is_rc, F.col("ts"))).alias("last_purchase_ts"),
            *[
                sum_if(in_long & (F.col("channel") == c), F.lit(1)).alias(col)
                for c, col in per_channel.items()
            ],
        )
        .withColumn(
            "preferred_channel", _preferred_channel({c: F.col(col) for c, col in per_channel.items()})
        )
        .drop(*per_channel.values())
    )


def with_recharge_features(df: DataFrame, as_of: date) -> DataFrame:
    """Add recharge_mean_amount, recharge_std_amount (population) and days_since_last_recharge.

    Needs recharge_known_n, recharge_amount_3m, recharge_amount_std, last_recharge_ts.
    Mean is null with no recharge in the window, std with fewer than 2, days-since when
    there was never one.
    """
    require_columns(
        df,
        ["recharge_known_n", "recharge_amount_3m", "recharge_amount_std", "last_recharge_ts"],
        "with_recharge_features",
    )
    n = F.col("recharge_known_n")
    mean = ratio_or_null(F.col("recharge_amount_3m"), n)
    return df.withColumns(
        {
            "recharge_mean_amount": mean,
            "recharge_std_amount": F.when(n >= 2, F.col("recharge_amount_std")),
            "days_since_last_recharge": days_since(F.col("last_recharge_ts"), as_of),
        }
    )


def with_rfm_features(df: DataFrame, as_of: date) -> DataFrame:
    """Add recency_days, frequency_3m and monetary_3m.

    Recency is days since the last revenue event - a usage day with revenue > 0, a
    recharge or a purchase, over all history up to as_of - null when there is none.
    Needs last_revenue_usage_date, last_recharge_ts, last_purchase_ts, the 3m counts and
    revenue_3m (zero rule already applied).
    """
    require_columns(
        df,
        [
            "last_revenue_usage_date",
            "last_recharge_ts",
            "last_purchase_ts",
            "recharge_count_3m",
            "purchase_count_3m",
            "revenue_3m",
        ],
        "with_rfm_features",
    )
    # greatest() skips nulls, so one known event is enough.
    last_day = F.greatest(
        F.col("last_revenue_usage_date"), F.to_date("last_recharge_ts"), F.to_date("last_purchase_ts")
    )
    return df.withColumns(
        {
            "recency_days": days_since(last_day, as_of),
            "frequency_3m": F.col("recharge_count_3m") + F.col("purchase_count_3m"),
            "monetary_3m": F.col("revenue_3m"),
        }
    )


# --------------------------------------------------------------------------- quota + offers
def _agg_quota(quota_events: DataFrame, as_of: date, days: int) -> DataFrame:
    """Counts of quota_low, quota_expiring and package_expired events in the last `days` days."""
    require_columns(quota_events, [SUBSCRIBER_KEY, "event_ts", "event_type"], "features quota_events")
    kind = F.col("event_type")
    return (
        quota_events.where(in_days("event_ts", as_of, days))
        .groupBy(SUBSCRIBER_KEY)
        .agg(
            *[
                sum_if(kind == k, F.lit(1)).alias(f"{k}_count")
                for k in ("quota_low", "quota_expiring", "package_expired")
            ]
        )
    )


def _agg_offers(offer_history: DataFrame, as_of: date, days: int) -> DataFrame:
    """Offer contacts and acceptances in the last `days` days, and the last contact ever.

    Needs subscriber_id, contacted_ts, accepted, accepted_ts. Treatment and control
    contacts both count. An acceptance counts only with accepted_ts at or before the end
    of as_of (invariant 1: an acceptance recorded later is not known as of D).
    """
    require_columns(
        offer_history, [SUBSCRIBER_KEY, "contacted_ts", "accepted", "accepted_ts"], "features offer_history"
    )
    in_window = in_days("contacted_ts", as_of, days)
    accepted = (F.col("accepted") == F.lit(True)) & (
        F.col("accepted_ts") < day_start(as_of + timedelta(days=1))
    )
    return (
        filter_as_of(offer_history, "contacted_ts", as_of, "features offer_history")
        .groupBy(SUBSCRIBER_KEY)
        .agg(
            sum_if(in_window, F.lit(1)).alias("offers_contacted"),
            sum_if(in_window & F.coalesce(accepted, F.lit(False)), F.lit(1)).alias("offers_accepted"),
            F.max("contacted_ts").alias("last_contact_ts"),
        )
    )


def with_offer_features(df: DataFrame, as_of: date) -> DataFrame:
    """Add offer_accept_rate (null with no contacts) and days_since_last_contact (null if never).

    Needs offers_contacted, offers_accepted (zero rule applied) and last_contact_ts.
    """
    require_columns(df, ["offers_contacted", "offers_accepted", "last_contact_ts"], "with_offer_features")
    return df.withColumns(
        {
            "offer_accept_rate": ratio_or_null(F.col("offers_accepted"), F.col("offers_contacted")),
            "days_since_last_contact": days_since(F.col("last_contact_ts"), as_of),
        }
    )


# --------------------------------------------------------------------------- assembly
def build_subscriber_features(
    subscribers: DataFrame,
    usage: DataFrame,
    recharges: DataFrame,
    purchases: DataFrame,
    quota_events: DataFrame,
    offer_history: DataFrame,
    as_of: date,
    windows: FeatureWindows | None = None,
    new_max_days: int = 90,
    channels: Sequence[str] = SUBSCRIBER_CHANNELS,
) -> DataFrame:
    """The `features` table as of `as_of`: one row per subscriber active at its end.

    Parameters
    ----------
    subscribers, usage, recharges, purchases, quota_events, offer_history :
        silver tables with the input-contract columns (cvo_spark.core.schemas).
    as_of : the feature date; every window ends there inclusive.
    windows : window lengths in days (a plain frozen value; stages pass
        ``config.features.windows``); None means the defaults (30/90/30+60/30/90).
    new_max_days : length of stay under which `is_new` is true (lifecycle rule).
    channels : the channels `preferred_channel` can take (silver's allowed values).

    Returns
    -------
    DataFrame with exactly the columns of `FEATURES_SCHEMA`. Keeps invariant 1 (point
    in time): see the module docstring.
    """
    require_columns(
        subscribers,
        [SUBSCRIBER_KEY, "activation_date", "churn_date", "payment_type", "region", "device_tier"],
        "features subscribers",
    )
    windows = windows or FeatureWindows()
    base = filter_active_subscribers(subscribers, as_of).select(
        SUBSCRIBER_KEY, "payment_type", "region", "device_tier", "activation_date"
    )
    parts = (
        _agg_usage(usage, as_of, windows),
        _agg_spend(recharges, purchases, as_of, windows.arpu_long_days, channels),
        _agg_quota(quota_events, as_of, windows.quota_days),
        _agg_offers(offer_history, as_of, windows.offer_history_days),
    )
    joined = base
    for part in parts:
        joined = joined.join(part, on=SUBSCRIBER_KEY, how="left")
    # Zero rule: a subscriber with no rows in an event table did nothing (0, not null).
    zeroed = joined.select(
        *[
            F.coalesce(F.col(c), F.lit(0).cast(_ZERO_WHEN_ABSENT[c])).alias(c)
            if c in _ZERO_WHEN_ABSENT
            else F.col(c)
            for c in joined.columns
        ]
    )
    los = F.datediff(F.lit(as_of), F.col("activation_date"))
    out = (
        zeroed.withColumns(
            {
                "as_of": F.lit(as_of),
                "length_of_stay_days": los.cast("int"),
                "is_new": los < F.lit(new_max_days),
            }
        )
        .transform(with_revenue_features, windows)
        .transform(with_trend_features, windows)
        .transform(with_recharge_features, as_of)
        .transform(with_rfm_features, as_of)
        .transform(with_offer_features, as_of)
    )
    return select_schema(out, FEATURES_SCHEMA)


#: The silver tables `build_subscriber_features` reads, in its argument order.
SUBSCRIBER_FEATURE_INPUTS: tuple[str, ...] = (
    "subscribers",
    "usage_daily",
    "recharges",
    "purchases",
    "quota_events",
    "offer_history",
)


def subscriber_features_from(
    silver: Mapping[str, DataFrame],
    as_of: date,
    windows: FeatureWindows | None = None,
    new_max_days: int = 90,
) -> DataFrame:
    """`build_subscriber_features` on a mapping of silver tables by name (`SUBSCRIBER_FEATURE_INPUTS`)."""
    subscribers, usage, recharges, purchases, quota_events, offer_history = (
        silver[name] for name in SUBSCRIBER_FEATURE_INPUTS
    )
    return build_subscriber_features(
        subscribers,
        usage,
        recharges,
        purchases,
        quota_events,
        offer_history,
        as_of,
        windows,
        new_max_days=new_max_days,
    )
