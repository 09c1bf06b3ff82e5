"""B2B account features as of a date (the gold `b2b_features` table).

One row per account whose contract started at or before as_of (accounts signed later,
or with no contract_start, are not known as of D: invariant 1). Message features cover
the long window (`window_days`, 90 by default) ending at as_of inclusive; messages
after the end of the as-of day are never read.

Missing data follows the rule of `cvo_spark.features.subscriber`: counts and revenue with no
messages are 0; channel shares (usage shares) are 0.0 when there were no messages;
aov, delivery/failure rates and the revenue trend are null when their denominator is 0.
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructField, StructType

from cvo_spark.core.schemas import DT, INT, D, L, S
from cvo_spark.core.util import require_columns
from cvo_spark.features.subscriber import (
    day_start,
    in_days,
    ratio_or_null,
    select_schema,
    sum_if,
    window_start,
)

ACCOUNT_KEY = "account_id"
#: Message channels whose share of messages is a feature, in column order.
B2B_CHANNELS: tuple[str, ...] = ("whatsapp", "sms", "email", "voice")
#: Message statuses that are final; `pending` is not, so it is left out of the rates.
FINAL_STATUSES: tuple[str, ...] = ("delivered", "failed")

B2B_FEATURES_SCHEMA: StructType = StructType(
    [
        StructField(name, dtype)
        for name, dtype in (
            ("account_id", S),
            ("as_of", DT),
            ("account_name", S),
            ("industry", S),
            ("monthly_revenue", D),
            ("bandwidth_mbps", D),
            ("contract_months", INT),
            ("message_count_3m", L),
            ("message_revenue_3m", D),
            ("aov", D),
            ("delivery_rate", D),
            ("failure_rate", D),
            ("whatsapp_share", D),
            ("sms_share", D),
            ("email_share", D),
            ("voice_share", D),
            ("revenue_trend_pct", D),
            ("products_count", INT),
        )
    ]
)

_ZERO_WHEN_ABSENT: tuple[str, ...] = (
    "message_count_3m",
    "message_revenue_3m",
    "charged_count",
    "delivered_count",
    "failed_count",
    "revenue_recent",
    "revenue_prior",
    *[f"{c}_count" for c in B2B_CHANNELS],
)


def _agg_messages(
    messages: DataFrame, as_of: date, window_days: int, recent_days: int, prior_days: int
) -> DataFrame:
    """One pass over b2b_messages: counts, charged revenue, statuses, channels, trend halves.

    Needs account_id, message_ts, channel, status, charged, price. Revenue is the price
    of charged messages (a null price counts as 0).
    """
    require_columns(
        messages,
        [ACCOUNT_KEY, "message_ts", "channel", "status", "charged", "price"],
        "b2b_features b2b_messages",
    )
    span = max(window_days, recent_days + prior_days)
    ts = F.col("message_ts")
    in_long = ts >= day_start(window_start(as_of, window_days))
    recent_start = day_start(window_start(as_of, recent_days))
    in_recent = ts >= recent_start
    in_prior = (ts >= day_start(window_start(as_of, recent_days + prior_days))) & (ts < recent_start)
    charged = F.coalesce(F.col("charged"), F.lit(False))
    revenue = F.when(charged, F.coalesce(F.col("price"), F.lit(0.0))).otherwise(F.lit(0.0))
    status = F.col("status")
    return (
        messages.where(in_days("message_ts", as_of, span))
        .groupBy(ACCOUNT_KEY)
        .agg(
            sum_if(in_long, F.lit(1)).alias("message_count_3m"),
            sum_if(in_long, revenue).alias("message_revenue_3m"),
            sum_if(in_long & charged, F.lit(1)).alias("charged_count"),
            sum_if(in_long & (status == "delivered"), F.lit(1)).alias("delivered_count"),
            sum_if(in_long & (status == "failed"), F.lit(1)).alias("failed_count"),
            *[sum_if(in_long & (F.col("channel") == c), F.lit(1)).alias(f"{c}_count") for c in B2B_CHANNELS],
            sum_if(in_recent, revenue).alias("revenue_recent"),
            sum_if(in_prior, revenue).alias("revenue_prior"),
        )
    )


def build_b2b_features(
    accounts: DataFrame,
    messages: DataFrame,
    as_of: date,
    window_days: int = 90,
    trend_recent_days: int = 30,
    trend_prior_days: int = 60,
) -> DataFrame:
    """The `b2b_features` table as of `as_of`: one row per account under contract by then.

    Parameters
    ----------
    accounts : b2b_accounts (account_id, account_name, industry, monthly_revenue,
        bandwidth_mbps, products, contract_start).
    messages : b2b_messages (account_id, message_ts, channel, status, charged, price).
    window_days : the "3m" window of the message features.
    trend_recent_days, trend_prior_days : revenue_trend_pct compares the daily charged
        revenue of the recent window with the prior window before it (a fraction; null
        when the prior average is 0).

    Returns
    -------
    DataFrame with exactly the columns of `B2B_FEATURES_SCHEMA` (invariant 1 kept).
    """
    require_columns(
        accounts,
        [
            ACCOUNT_KEY,
            "account_name",
            "industry",
            "monthly_revenue",
            "bandwidth_mbps",
            "products",
            "contract_start",
        ],
        "b2b_features b2b_accounts",
    )
    base = accounts.where(F.col("contract_start") <= F.lit(as_of))
    joined = base.join(
        _agg_messages(messages, as_of, window_days, trend_recent_days, trend_prior_days),
        on=ACCOUNT_KEY,
        how="left",
    )
    zeroed = joined.select(
        *[
            F.coalesce(F.col(c), F.lit(0)).alias(c) if c in _ZERO_WHEN_ABSENT else F.col(c)
            for c in joined.columns
        ]
    )
    n = F.col("message_count_3m")
    final_n = F.col("delivered_count") + F.col("failed_count")
    recent = F.col("revenue_recent") / F.lit(float(trend_recent_days))
    prior = F.col("revenue_prior") / F.lit(float(trend_prior_days))
    out = zeroed.withColumns(
        {
            "as_of": F.lit(as_of),
            "contract_months": F.floor(F.months_between(F.lit(as_of), F.col("contract_start"))),
            "aov": ratio_or_null(F.col("message_revenue_3m"), F.col("charged_count")),
            "delivery_rate": ratio_or_null(F.col("delivered_count"), final_n),
            "failure_rate": ratio_or_null(F.col("failed_count"), final_n),
            "revenue_trend_pct": ratio_or_null(recent - prior, prior),
            # A null product list is an account with no listed products.
            "products_count": F.when(F.col("products").isNull(), F.lit(0)).otherwise(F.size("products")),
            # Channel shares are usage shares: 0.0, not null, when there were no messages.
            **{
                f"{c}_share": F.coalesce(ratio_or_null(F.col(f"{c}_count"), n), F.lit(0.0))
                for c in B2B_CHANNELS
            },
        }
    )
    return select_schema(out, B2B_FEATURES_SCHEMA)
