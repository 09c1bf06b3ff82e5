"""Training labels from the window *after* a snapshot date, never from inside it.

For a snapshot date T and a horizon of h days the label window is (T, T+h]: an event on
the day T itself belongs to the features (which use events <= T) and is excluded; an
event on T+h is included. Days are calendar days of the event timestamp (UTC session).

Labels (one row per subscriber active at the end of T):

- ``label_upsell``: in the window the subscriber bought a package priced above the most
  expensive one they bought on or before T (any purchase counts when they had never
  bought one), or their usage revenue per day in the window rose by at least
  `arpu_increase` over their per-day revenue in the `prior_days` up to T (only when that
  prior revenue was positive, so a dormant line waking up is not an "upsell").
- ``label_cross_sell``: in the window they bought a product of a category (the product_id
  prefix before '_', see `PRODUCT_CATEGORIES`) that they neither bought nor used in the
  `lookback_days` up to T. Using voice/SMS/data/digital services counts as owning that
  category; bundles are owned only by buying one.
- ``label_churn``: churn_date in (T, T+h], or no usage, recharge or purchase at all in the
  last `inactive_days` of the window, (T+h-inactive_days, T+h] (inactive; the whole
  window by default).

`future_revenue` (usage revenue in the window) is carried along for the CLV regressor.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cvo_spark.core.config import FeatureWindows
from cvo_spark.core.errors import CvoError
from cvo_spark.core.schemas import PRODUCT_CATEGORIES
from cvo_spark.core.util import require_columns
from cvo_spark.features.subscriber import subscriber_features_from
from cvo_spark.models.propensity import with_model_inputs

LABEL_COLUMNS = ("label_upsell", "label_cross_sell", "label_churn")
TARGETS = ("upsell", "cross_sell", "churn")
#: Values of `split` in the training frame (see `with_split`).
TRAIN, CALIBRATION, EVALUATION = "train", "calibration", "evaluation"

#: Usage columns whose activity means the subscriber "uses" a product category.
_USAGE_CATEGORY: dict[str, str] = {
    "voice": "voice_minutes",
    "sms": "sms_count",
    "data": "data_mb",
    "digital": "digital_revenue",
}
_REVENUE_COLUMNS = ("voice_revenue", "sms_revenue", "data_revenue", "digital_revenue")


class LabelWindowError(CvoError):
    """A label window reaches past the data's as-of date (its outcome is not known yet)."""


def training_snapshot_dates(as_of: date, horizon_days: int, snapshots: int, spacing_days: int) -> list[date]:
    """Snapshot dates, oldest first, the last one at ``as_of - horizon`` so its window is complete."""
    latest = as_of - timedelta(days=horizon_days)
    return [latest - timedelta(days=spacing_days * k) for k in range(snapshots - 1, -1, -1)]


class TrainingHistoryError(CvoError):
    """Too few training snapshots have a full feature window of history behind them."""


def snapshots_with_history(
    snapshots: Sequence[date], data_start: date | None, min_history_days: int
) -> list[date]:
    """The snapshots with at least `min_history_days` of data on or before them.

    A snapshot with less sees truncated 3-month features (a 3-month ARPU over 29 days of
    data) while the out-of-time snapshot it is judged on sees full ones: the model learns
    one distribution and is used on another (on a 120-day lake the GBT fell to ROC-AUC
    0.54 against a 0.69 baseline). Raises `TrainingHistoryError` when fewer than two
    remain: one to learn from, the latest to judge on.
    """
    if data_start is None:
        raise TrainingHistoryError("train: silver usage_daily is empty: no history to learn from")
    kept = [s for s in snapshots if (s - data_start).days + 1 >= min_history_days]
    if len(kept) < 2:
        raise TrainingHistoryError(
            f"train: {len(kept)} of the {len(snapshots)} training snapshots "
            f"({', '.join(d.isoformat() for d in snapshots)}) have {min_history_days} days of usage history "
            f"behind them (data starts {data_start}); at least 2 are needed: load older data, or lower "
            f"models.min_history_days or models.snapshot_spacing_days"
        )
    return kept


def _between(day: Column, start_exclusive: date, end_inclusive: date) -> Column:
    return (day > F.lit(start_exclusive)) & (day <= F.lit(end_inclusive))


def active_at(subscribers: DataFrame, snapshot: date) -> DataFrame:
    """Subscribers active at the end of `snapshot`: activated on/before it, not churned by it."""
    require_columns(subscribers, ["subscriber_id", "activation_date", "churn_date"], "active_at")
    return subscribers.where(
        (F.col("activation_date") <= F.lit(snapshot))
        & (F.col("churn_date").isNull() | (F.col("churn_date") > F.lit(snapshot)))
    ).select("subscriber_id", "churn_date")


def _category(product_id: Column) -> Column:
    return F.lower(F.split(product_id, "_").getItem(0))


def build_labels(
    subscribers: DataFrame,
    usage_daily: DataFrame,
    recharges: DataFrame,
    purchases: DataFrame,
    snapshot: date,
    horizon_days: int,
    data_as_of: date,
    arpu_increase: float,
    prior_days: int = 30,
    lookback_days: int = 90,
    inactive_days: int | None = None,
) -> DataFrame:
    """Labels for one snapshot T: ``subscriber_id, snapshot_date, label_*, future_revenue``.

    Needs the silver input tables (columns of `cvo_spark.core.schemas.INPUT_SCHEMAS`). Only
    subscribers active at T get a row. Point in time: every event after `data_as_of` is
    ignored, and T + horizon must not pass `data_as_of` (`LabelWindowError` otherwise), so
    an appended late event can never change a label already computed.
    """
    window_end = snapshot + timedelta(days=horizon_days)
    if inactive_days is not None and not 0 < inactive_days <= horizon_days:
        raise ValueError(f"inactive_days must be in 1..horizon_days ({horizon_days}), got {inactive_days}")
    # Activity that keeps a subscriber from counting as churned: the tail of the window.
    active_from = window_end - timedelta(days=inactive_days or horizon_days)
    if window_end > data_as_of:
        raise LabelWindowError(
            f"labels for snapshot {snapshot} need data to {window_end}, but the data ends at {data_as_of}"
        )
    require_columns(
        usage_daily,
        ["subscriber_id", "usage_date", *_REVENUE_COLUMNS, *_USAGE_CATEGORY.values()],
        "build_labels(usage_daily)",
    )
    require_columns(recharges, ["subscriber_id", "recharge_ts"], "build_labels(recharges)")
    require_columns(
        purchases, ["subscriber_id", "purchase_ts", "product_id", "price"], "build_labels(purchases)"
    )

    base = active_at(subscribers, snapshot)
    revenue = sum((F.coalesce(F.col(c), F.lit(0.0)) for c in _REVENUE_COLUMNS), F.lit(0.0))
    usage = usage_daily.where(F.col("usage_date") <= F.lit(data_as_of))
    is_used = (
        sum(
            (F.when(F.coalesce(F.col(c), F.lit(0)) > 0, 1).otherwise(0) for c in _USAGE_CATEGORY.values()),
            F.lit(0),
        )
        > 0
    )

    in_window = _between(F.col("usage_date"), snapshot, window_end)
    in_prior = _between(F.col("usage_date"), snapshot - timedelta(days=prior_days), snapshot)
    in_lookback = _between(F.col("usage_date"), snapshot - timedelta(days=lookback_days), snapshot)
    usage_agg = usage.groupBy("subscriber_id").agg(
        F.sum(F.when(in_window, revenue).otherwise(0.0)).alias("future_revenue"),
        F.sum(F.when(in_prior, revenue).otherwise(0.0)).alias("prior_revenue"),
        F.max(F.when(_between(F.col("usage_date"), active_from, window_end) & is_used, 1).otherwise(0)).alias(
            "used_late_in_window"
        ),
        *[
            F.max(F.when(in_lookback & (F.coalesce(F.col(col), F.lit(0)) > 0), 1).otherwise(0)).alias(
                f"uses_{cat}"
            )
            for cat, col in _USAGE_CATEGORY.items()
        ],
    )

    recharge_agg = (
        recharges.where(_between(F.to_date("recharge_ts"), active_from, window_end))
        .groupBy("subscriber_id")
        .agg(F.lit(1).alias("recharged_in_window"))
    )

    p_day = F.to_date("purchase_ts")
    purchase_agg = (
        purchases.where(p_day <= F.lit(window_end))
        .groupBy("subscriber_id")
        .agg(
            F.max(F.when(p_day <= F.lit(snapshot), F.col("price"))).alias("max_price_before"),
            F.max(F.when(_between(p_day, snapshot, window_end), F.col("price"))).alias("max_price_window"),
            F.max(F.when(_between(p_day, active_from, window_end), F.lit(1))).alias(
                "purchased_late_in_window"
            ),
            F.collect_set(
                F.when(
                    _between(p_day, snapshot - timedelta(days=lookback_days), snapshot),
                    _category(F.col("product_id")),
                )
            ).alias("bought_before"),
            F.collect_set(
                F.when(_between(p_day, snapshot, window_end), _category(F.col("product_id")))
            ).alias("bought_window"),
        )
    )

    joined = (
        base.join(usage_agg, on="subscriber_id", how="left")
        .join(recharge_agg, on="subscriber_id", how="left")
        .join(purchase_agg, on="subscriber_id", how="left")
    )
    owned = F.array_compact(
        F.array_union(
            F.coalesce(F.col("bought_before"), F.array().cast("array<string>")),
            F.array(*[F.when(F.col(f"uses_{cat}") == 1, F.lit(cat)) for cat in _USAGE_CATEGORY]),
        )
    )
    new_categories = F.array_except(
        F.filter(
            F.coalesce(F.col("bought_window"), F.array().cast("array<string>")),
            lambda c: c.isin(*PRODUCT_CATEGORIES),
        ),
        owned,
    )
    future_rev = F.coalesce(F.col("future_revenue"), F.lit(0.0))
    prior_rev = F.coalesce(F.col("prior_revenue"), F.lit(0.0))
    bought_higher = F.col("max_price_window").isNotNull() & (
        F.col("max_price_window") > F.coalesce(F.col("max_price_before"), F.lit(0.0))
    )
    arpu_up = (prior_rev > 0) & (
        future_rev / F.lit(float(horizon_days))
        >= F.lit(1.0 + arpu_increase) * prior_rev / F.lit(float(prior_days))
    )
    churned = F.col("churn_date").isNotNull() & _between(F.col("churn_date"), snapshot, window_end)
    # Buying a package is activity too, even with no usage row yet.
    inactive = (
        (F.coalesce(F.col("used_late_in_window"), F.lit(0)) == 0)
        & F.col("recharged_in_window").isNull()
        & F.col("purchased_late_in_window").isNull()
    )
    return joined.select(
        "subscriber_id",
        F.lit(snapshot).alias("snapshot_date"),
        (bought_higher | arpu_up).cast("double").alias("label_upsell"),
        (F.size(new_categories) > 0).cast("double").alias("label_cross_sell"),
        (churned | inactive).cast("double").alias("label_churn"),
        future_rev.alias("future_revenue"),
    )


# --------------------------------------------------------------------------- training set
def with_split(frame: DataFrame, latest: date, seed: int) -> DataFrame:
    """Add `split`: 'train' before the latest snapshot, else 'calibration'/'evaluation' by a seeded hash."""
    half = F.pmod(F.xxhash64(F.col("subscriber_id"), F.lit(seed)), F.lit(2))
    return frame.withColumn(
        "split",
        F.when(F.col("snapshot_date") < F.lit(latest), F.lit(TRAIN))
        .when(half == 0, F.lit(CALIBRATION))
        .otherwise(F.lit(EVALUATION)),
    )


def build_training_frame(
    silver: dict[str, DataFrame],
    snapshots: Sequence[date],
    as_of: date,
    horizon_days: int,
    windows: FeatureWindows,
    new_max_days: int,
    arpu_increase: float,
    lookback_days: int,
    seed: int,
    inactive_days: int | None = None,
) -> DataFrame:
    """Features as of each snapshot joined to that snapshot's labels, stacked, with `split`.

    One row per (subscriber active at T, T). Model input columns (`MODEL_FEATURES`) are
    doubles; labels are ``label_upsell, label_cross_sell, label_churn``.
    """
    frames = []
    for snapshot in snapshots:
        feats = subscriber_features_from(
            silver,
            snapshot,
            windows,
            new_max_days=new_max_days,
        )
        labels = build_labels(
            silver["subscribers"],
            silver["usage_daily"],
            silver["recharges"],
            silver["purchases"],
            snapshot,
            horizon_days,
            as_of,
            arpu_increase,
            lookback_days=lookback_days,
            inactive_days=inactive_days,
        )
        frames.append(feats.join(labels, on="subscriber_id", how="inner"))
    stacked = frames[0]
    for f in frames[1:]:
        stacked = stacked.unionByName(f)
    return with_split(with_model_inputs(stacked), snapshots[-1], seed)
