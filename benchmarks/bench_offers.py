"""Benchmark (not a test): the offer engine at scale, and its value against a tier rule.

1. Throughput: offers for N subscribers x the catalog x all channels. The gold inputs are
   read from a lake (``--lake`` with features/segments/scores at ``--as-of``) or, by
   default, synthesised directly as DataFrames; the result is written to Spark's `noop`
   sink so the figure is the engine, not the disk. Reports wall time and rows/s
   (subscriber x offer pairs scored per second, and offer rows produced).
2. Value: expected value per contacted treatment subscriber of the engine's choice vs a
   "same offer for everyone in the tier" rule (`compare_with_tier_rule`). The tier rule
   ranks, per channel and value tier, the offers by their total expected value over the
   tier (the best a tier-level rule can do, knowing the model) and gives each subscriber
   the first of them they are eligible for; eligibility and the contact policy apply to
   both. Both are judged by the engine's own expected
   value model, so this measures the gain from personalising under that model, not a
   field result - campaign measurement (treatment vs control) is what proves it.

    .venv/bin/python benchmarks/bench_offers.py --subscribers 1000000 --compare-subscribers 100000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cvo_spark.core.catalog import load_catalog, offer_channels_frame, offers_frame
from cvo_spark.core.session import get_spark
from cvo_spark.offers.engine import (
    OfferParams,
    build_offers,
    candidate_offers,
    contact_history,
    control_bucket,
    subscriber_profiles,
)
from cvo_spark.offers.stage import allocation_constraints

AS_OF = date(2026, 6, 30)
CATALOG = Path(__file__).resolve().parents[1] / "conf" / "offers.yaml"
PERSONAS = ("Legacy Active", "Digital Active", "Socially Active", "Traditional Active")
CHANNELS = ("sms", "ussd", "app", "ecommerce", "banking")


# ---------------------------------------------------------------------------- synthetic inputs
def _u(key: Column, stream: int) -> Column:
    """Deterministic uniform [0, 1) per (row key, stream)."""
    return F.pmod(F.xxhash64(key, F.lit(stream)), F.lit(1_000_003)).cast("double") / 1_000_003.0


def _pick(values: tuple[str, ...], u: Column) -> Column:
    return F.element_at(F.array(*[F.lit(v) for v in values]), (F.floor(u * len(values)) + 1).cast("int"))


def synth_inputs(
    spark: SparkSession, n: int, partitions: int
) -> tuple[DataFrame, DataFrame, DataFrame, DataFrame]:
    """features, segments, scores (docs/tables.md columns used by the engine) and offer_history."""
    base = spark.range(0, n, numPartitions=partitions).select(
        F.col("id"), F.format_string("62%010d", F.col("id")).alias("subscriber_id")
    )
    k = F.col("id")
    los = F.floor(_u(k, 1) * 2000).cast("int")
    arpu = 5_000.0 + 195_000.0 * _u(k, 2) * _u(k, 2)
    people = base.select(
        "subscriber_id",
        los.alias("length_of_stay_days"),
        arpu.alias("arpu_3m"),
        F.when(_u(k, 3) < 0.8, "prepaid").otherwise("postpaid").alias("payment_type"),
        (_u(k, 4) * 1.2 - 0.4).alias("data_trend_pct"),
        (_u(k, 5) * 0.8 - 0.4).alias("voice_trend_pct"),
        (_u(k, 6) * 0.8 - 0.4).alias("revenue_trend_pct"),
        F.floor(_u(k, 7) * 5).cast("long").alias("quota_low_count"),
        _u(k, 8).alias("voice_share"),
        (_u(k, 9) * 0.4).alias("digital_share"),
        _pick(PERSONAS, _u(k, 10)).alias("persona_name"),
        (_u(k, 11) * 0.5).alias("p_upsell"),
        (_u(k, 12) * 0.4).alias("p_cross_sell"),
        (F.pow(_u(k, 13), 4) * 0.5).alias("p_churn"),  # ~16% at churn risk (>= 0.25)
    ).cache()
    features = people.select(
        "subscriber_id",
        "payment_type",
        "length_of_stay_days",
        "arpu_3m",
        "data_trend_pct",
        "voice_trend_pct",
        "revenue_trend_pct",
        "quota_low_count",
        "voice_share",
        "digital_share",
    )
    tier = (
        F.when((F.col("arpu_3m") >= 150_000) & (F.col("length_of_stay_days") >= 180), "Priority")
        .when((F.col("arpu_3m") >= 50_000) & (F.col("length_of_stay_days") >= 90), "Gold")
        .otherwise("Mass")
    )
    segments = people.select(
        "subscriber_id",
        tier.alias("value_tier"),
        ((F.col("length_of_stay_days") > 180) & (F.col("arpu_3m") > 100_000)).alias("is_high_value"),
        F.when(F.col("length_of_stay_days") < 90, "new").otherwise("base").alias("lifecycle"),
        "persona_name",
    )
    scores = people.select(
        "subscriber_id",
        "p_upsell",
        "p_cross_sell",
        "p_churn",
        (F.col("arpu_3m") * 12 * (1 - F.col("p_churn"))).alias("clv_12m"),
        F.array(F.lit("arpu_3m"), F.lit("data_trend_pct")).alias("reasons_upsell"),
        F.array(F.lit("digital_share")).alias("reasons_cross_sell"),
        F.array(F.lit("recency_days"), F.lit("revenue_trend_pct")).alias("reasons_churn"),
    )
    offer_ids = tuple(o.offer_id for o in load_catalog(CATALOG).offers)
    contacts = (
        spark.range(0, int(n * 0.6), numPartitions=partitions)
        .select(
            F.format_string("62%010d", F.floor(_u(F.col("id"), 20) * n).cast("long")).alias("subscriber_id"),
            _pick(offer_ids, _u(F.col("id"), 21)).alias("offer_id"),
            _pick(CHANNELS, _u(F.col("id"), 22)).alias("channel"),
            (
                F.lit(AS_OF + timedelta(days=1)).cast("timestamp")
                - F.make_interval(secs=F.floor(_u(F.col("id"), 23) * 14 * 86400).cast("int"))
            ).alias("contacted_ts"),
            F.when(_u(F.col("id"), 24) < 0.1, "control").otherwise("treatment").alias("group"),
            (_u(F.col("id"), 25) < 0.15).alias("accepted"),
        )
        .withColumn(
            "accepted_ts", F.when(F.col("accepted"), F.col("contacted_ts") + F.expr("INTERVAL 2 HOURS"))
        )
    )
    return features, segments, scores, contacts


def read_inputs(spark: SparkSession, lake: str, as_of: date):
    from cvo_spark.core.config import parse_config
    from cvo_spark.core.io import TableStore

    store = TableStore(spark, parse_config({"lake": lake}))
    gold = [
        store.read("gold", t).where(F.col("as_of") == F.lit(as_of))
        for t in ("features", "segments", "scores")
    ]
    return (*gold, store.read("silver", "offer_history"))


# ---------------------------------------------------------------------------- comparison
def compare_with_tier_rule(candidates: DataFrame, p: OfferParams) -> dict[str, float]:
    """Expected value per contacted treatment subscriber: engine vs same-offer-per-tier.

    Needs `candidate_offers(..., keep_excluded=True)` rows. A row is *eligible* on its
    channel when nothing but the slot count excluded it. Engine: the rank-1 offer of each
    (subscriber, channel). Tier rule: per (channel, value_tier) the offers ranked by their
    total expected value over the tier's eligible subscribers; every subscriber of the tier
    gets the best-ranked of them they are eligible for (the same offer for everyone in the
    tier, falling back to the tier's next offer only where eligibility rules the first out).
    Both are averaged over the same contacts: treatment (subscriber, channel) pairs the
    engine contacts, and both are judged by the same expected-value model, so the gap is
    what personalisation gains under the model, not a field result.
    """
    eligible = (
        candidates.where(F.col("exclusion_reason").isNull() | F.col("exclusion_reason").startswith("ranked "))
        .withColumn("is_treatment", control_bucket(F.col("subscriber_id"), p.campaign_id) >= p.control_share)
        .select(
            "subscriber_id", "channel", "value_tier", "offer_id", "rank", "expected_value", "is_treatment"
        )
        .cache()
    )
    contacts = eligible.where((F.col("rank") == 1) & F.col("is_treatment")).select(
        "subscriber_id", "channel", "value_tier", F.col("expected_value").alias("engine_ev")
    )
    tier_totals = eligible.groupBy("channel", "value_tier", "offer_id").agg(
        F.sum("expected_value").alias("total")
    )
    best = Window.partitionBy("channel", "value_tier").orderBy(F.col("total").desc(), F.col("offer_id"))
    tier_rank = tier_totals.withColumn("tier_rank", F.row_number().over(best)).select(
        "channel", "value_tier", "offer_id", "tier_rank"
    )
    first_eligible = Window.partitionBy("subscriber_id", "channel").orderBy("tier_rank")
    rule_ev = (
        eligible.join(tier_rank, on=["channel", "value_tier", "offer_id"], how="inner")
        .withColumn("n", F.row_number().over(first_eligible))
        .where(F.col("n") == 1)
        .select("subscriber_id", "channel", F.col("expected_value").alias("rule_ev"))
    )
    row = (
        contacts.join(rule_ev, on=["subscriber_id", "channel"], how="left")
        .agg(
            F.count(F.lit(1)).alias("contacts"),
            F.countDistinct("subscriber_id").alias("subscribers"),
            F.sum("engine_ev").alias("engine"),
            F.sum(F.coalesce(F.col("rule_ev"), F.lit(0.0))).alias("rule"),
        )
        .first()
    )
    eligible.unpersist()
    subs = max(row["subscribers"], 1)
    return {
        "contacted_treatment_subscribers": row["subscribers"],
        "contacts": row["contacts"],
        "engine_ev_per_subscriber": row["engine"] / subs,
        "tier_rule_ev_per_subscriber": row["rule"] / subs,
        "lift_pct": 100.0 * (row["engine"] - row["rule"]) / row["rule"] if row["rule"] else float("nan"),
    }


# ---------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subscribers", type=int, default=1_000_000)
    ap.add_argument("--compare-subscribers", type=int, default=100_000)
    ap.add_argument("--lake", default=None, help="read gold inputs from this lake instead of synthesising")
    ap.add_argument("--as-of", type=date.fromisoformat, default=AS_OF)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--out", default=None, help="also write the figures as JSON here")
    ap.add_argument(
        "--engine",
        choices=("allocation", "ranking"),
        default="allocation",
        help="allocation: today's default (the shipped catalog's limits); ranking: per-channel slots",
    )
    args = ap.parse_args()

    spark = get_spark(
        "bench_offers",
        "local[*]",
        args.partitions,
        "ERROR",
        {"spark.ui.enabled": "false"},
        show_progress=False,
    )
    catalog = load_catalog(CATALOG)
    p = OfferParams(allocate=args.engine == "allocation")
    constraints = allocation_constraints(catalog, {}, args.as_of)
    cat_offers, cat_channels = offers_frame(spark, catalog, 7), offer_channels_frame(spark, catalog)
    figures: dict[str, object] = {"catalog_offers": len(catalog.offers), "channels": len(catalog.channels)}

    def inputs(n: int):
        return (
            read_inputs(spark, args.lake, args.as_of)
            if args.lake
            else synth_inputs(spark, n, args.partitions)
        )

    f, s, sc, hist = inputs(args.subscribers)
    n = f.count()  # materialises the cached synthetic population outside the timed part
    started = time.perf_counter()
    batch = build_offers(
        f, s, sc, hist, cat_offers, cat_channels, args.as_of, "bench", p, constraints=constraints
    )
    offer_rows = batch.offers.count()
    if batch.allocation is not None:
        figures["allocation"] = {
            "solver_passes": batch.allocation.iterations,
            "use": batch.allocation.usage,
            "shadow_prices": batch.allocation.prices,
        }
    batch.release()
    wall = time.perf_counter() - started
    figures.update(
        {
            "subscribers": n,
            "pairs_scored": n * len(catalog.offers),
            "offer_rows": offer_rows,
            "wall_seconds": round(wall, 1),
            "pairs_per_second": round(n * len(catalog.offers) / wall),
            "offer_rows_per_second": round(offer_rows / wall),
        }
    )
    print(
        f"offers: {n:,} subscribers x {len(catalog.offers)} offers x {len(catalog.channels)} channels -> "
        f"{offer_rows:,} rows in {wall:.1f}s ({figures['pairs_per_second']:,} pairs/s, "
        f"{figures['offer_rows_per_second']:,} rows/s)",
        flush=True,
    )

    m = args.compare_subscribers if not args.lake else None
    if m != n and not args.lake:
        f, s, sc, hist = inputs(m)
    contacts, rejects = contact_history(hist, args.as_of, p.contact_window_days, p.cooldown_days_after_reject)
    # The tier-rule comparison is of today's per-channel ranking (its own expected value model).
    cands = candidate_offers(
        subscriber_profiles(f, s, sc),
        cat_offers,
        cat_channels,
        contacts,
        rejects,
        OfferParams(allocate=False),
        keep_excluded=True,
    )
    started = time.perf_counter()
    cmp = compare_with_tier_rule(cands, OfferParams(allocate=False))
    figures["comparison"] = {
        **cmp,
        "seconds": round(time.perf_counter() - started, 1),
        "population": "lake" if args.lake else f"synthetic {m:,}",
    }
    print(
        f"value: engine Rp {cmp['engine_ev_per_subscriber']:,.0f} vs tier rule Rp "
        f"{cmp['tier_rule_ev_per_subscriber']:,.0f} expected value per contacted treatment subscriber "
        f"({cmp['lift_pct']:+.1f}%, {cmp['contacted_treatment_subscribers']:,} subscribers)",
        flush=True,
    )
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2, default=str))
    print(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
