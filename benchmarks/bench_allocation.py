"""Benchmark: the allocation (dual prices) against greedy, today's ranking, a tier rule and the oracle.

Quality (``--subscribers N``, default 20,000 x 180 days): the generator's lake through
ingest..score (so the uplift model is trained and gold offer_scores written), then the
offer engine's candidate actions for as_of. Each policy chooses among the *same* actions
under the *same* limits (3 offers per subscriber, one channel per offer, 2 push contacts,
an SMS and a USSD daily capacity, an incentive budget); what it chose is then judged with
the generator's planted truth (`cvo_spark.synth.response.true_response`, never read by
the engine):

    true incremental margin = sum over treatment decisions of
        true_uplift x margin - p_if_contacted x incentive - p_if_contacted x p_if_not x price gap
    minus the contact cost of every contact made, where each decision's fatigue counts the
    subscriber's push contacts before the run plus this run's, and an offer sent on several
    channels counts once (its best channel): a subscriber accepts an offer at most once.

Policies: ``optimised`` (net value from the uplift model, dual prices), ``greedy``
(same values, prices at zero, cut by value where a limit is exceeded), ``today's
ranking`` (today's expected value = propensity x margin, greedy under the same limits),
``tier rule`` (High Value gets the dearest eligible offer, everyone else the cheapest,
greedy under the same limits), ``oracle`` (the planted net value, dual prices: what the
best policy could get). Also today's engine *as it publishes* (every channel's slots, no
cross-channel cap): contacts per subscriber and sleeping dogs contacted.

Scale (``--scale-sizes``): synthetic actions (``--actions`` per subscriber, seeded
values) at each size: the solver's passes, seconds per pass, final violation, and the
whole allocation's time; peak memory of the JVM from its MXBean.

Run: ``.venv/bin/python benchmarks/bench_allocation.py [--subscribers 20000] [--scale-sizes 100000,1000000]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_uplift import build_lake

from cvo_spark.core.catalog import load_catalog, offer_channels_frame, offers_frame
from cvo_spark.core.config import load_config
from cvo_spark.core.io import TableStore
from cvo_spark.core.session import get_spark
from cvo_spark.core.stage import StageContext
from cvo_spark.offers.allocation import CHOSEN, AllocationParams, Constraint, allocate
from cvo_spark.offers.engine import (
    OfferParams,
    allocation_actions,
    build_offers,
    candidate_offers,
    consent_by_channel,
    contact_history,
    contact_load,
    subscriber_profiles,
)
from cvo_spark.offers.stage import offer_params
from cvo_spark.synth.generate import ACTIVITY_FLOOR, DEFAULT_END_DATE
from cvo_spark.synth.response import true_response

REPO = Path(__file__).resolve().parents[1]


def _gold(ctx: StageContext, name: str) -> DataFrame:
    return ctx.store.read("gold", name).where(F.col("as_of") == F.lit(ctx.as_of))


def candidate_actions(ctx: StageContext) -> tuple[DataFrame, OfferParams]:
    """The engine's kept actions for as_of with every value column the policies need."""
    spark, as_of = ctx.spark, ctx.as_of
    catalog = load_catalog(ctx.config.offers.catalog_file)
    p = offer_params(ctx.config, catalog)
    history = ctx.store.read("silver", "offer_history")
    consents = ctx.store.read("silver", "consents") if ctx.store.exists("silver", "consents") else None
    profiles = subscriber_profiles(_gold(ctx, "features"), _gold(ctx, "segments"), _gold(ctx, "scores"))
    contacts, rejects = contact_history(history, as_of, p.contact_window_days, p.cooldown_days_after_reject)
    scores = _gold(ctx, "offer_scores") if ctx.store.exists("gold", "offer_scores") else None
    cands = candidate_offers(
        profiles,
        offers_frame(spark, catalog, ctx.config.offers.validity_days),
        offer_channels_frame(spark, catalog),
        contacts,
        rejects,
        p,
        load=contact_load(
            history, None, as_of, p.push_channels, p.contact_window_days, p.fatigue_window_days
        ),
        consents=consent_by_channel(consents, as_of),
        offer_scores=scores,
    )
    return allocation_actions(cands, p), p


def judged_actions(
    actions: DataFrame, bronze: Path, as_of: date, recent_col: str = "push_contacts"
) -> DataFrame:
    """Add the planted truth: ``true_net`` (before the contact cost) and ``response_type``."""
    spark = actions.sparkSession
    subs = spark.read.format("delta").load(str(bronze / "_ground_truth" / "subscribers"))
    offers = spark.read.format("delta").load(str(bronze / "_ground_truth" / "offers"))
    judged = true_response(
        actions.withColumn("decision_date", F.lit(as_of)),
        subs,
        offers,
        ACTIVITY_FLOOR,
        recent_contacts_col="push_contacts",
    )
    gap = F.greatest(F.coalesce(F.col("regular_price") - F.col("price"), F.lit(0.0)), F.lit(0.0))
    return judged.withColumn(
        "true_net",
        F.col("true_uplift") * (F.col("price") - F.col("unit_cost"))
        - F.col("p_if_contacted") * F.col("incentive")
        - F.col("p_if_contacted") * F.col("p_if_not") * gap,
    )


def limits(actions: DataFrame, catalog_path: str) -> tuple[Constraint, ...]:
    """The same limits for every policy, scaled to the base: SMS reaches 10% of the treated
    subscribers a day, USSD 15%; the incentive offers may commit Rp 10 of expected
    incentive per treated subscriber; the partner's video offer at most 2% of them."""
    n = actions.where(F.col("group") == "treatment").select("subscriber_id").distinct().count()
    catalog = load_catalog(catalog_path)
    with_incentive = tuple(o.offer_id for o in catalog.offers if o.incentive > 0)
    return (
        Constraint("capacity:sms", "channel_capacity", "sms", round(0.10 * n)),
        Constraint("capacity:ussd", "channel_capacity", "ussd", round(0.15 * n)),
        Constraint("budget:incentives", "budget", "incentives", 10.0 * n, offers=with_incentive),
        Constraint("max_volume:DIGITAL_VIDEO_30D", "offer_max", "DIGITAL_VIDEO_30D", round(0.02 * n)),
    )


TRUTH_COLUMNS = ("p_if_not", "p_if_contacted", "true_uplift", "response_type", "true_net")


def judge(chosen: DataFrame, base: DataFrame, bronze: Path, as_of: date) -> dict[str, float]:
    """Planted value and contact figures of the chosen treatment decisions.

    Judged as the decisions would land, not action by action: the fatigue of each
    decision counts the subscriber's push contacts before the run *and* this run's push
    contacts, and a subscriber accepts an offer at most once, so an offer sent on several
    channels counts its best channel only. The contact cost is paid per contact.
    """
    keys = ["subscriber_id", "offer_id", "channel"]
    t = (
        chosen.select(*keys)
        .join(base.drop(*TRUTH_COLUMNS), on=keys, how="inner")
        .where(F.col("group") == "treatment")
    )
    per_sub = Window.partitionBy("subscriber_id")
    run_push = F.size(F.collect_set(F.when(F.col("channel_kind") == "push", F.col("channel"))).over(per_sub))
    t = t.withColumn("recent_with_run", F.col("push_contacts") + run_push)
    t = judged_actions(t, bronze, as_of, recent_col="recent_with_run")
    best = Window.partitionBy("subscriber_id", "offer_id").orderBy(F.col("true_net").desc(), "channel")
    once = t.withColumn("_r", F.row_number().over(best)).where(F.col("_r") == 1).cache()
    row = once.agg(
        F.sum("true_net").alias("true_net"),
        F.countDistinct("subscriber_id").alias("subscribers"),
        F.sum((F.col("true_uplift") < 0).cast("int")).alias("negative_effect"),
        F.sum((F.col("response_type") == "sleeping_dog").cast("int")).alias("sleeping_dogs"),
        F.sum("expected_cost").alias("expected_incentive"),
    ).first()
    decisions = t.count()
    contacts = (
        t.select("subscriber_id", "channel", "contact_cost", "channel_kind")
        .distinct()
        .agg(
            F.sum("contact_cost").alias("cost"),
            F.sum((F.col("channel_kind") == "push").cast("int")).alias("push"),
            F.count(F.lit(1)).alias("contacts"),
        )
        .first()
    )
    once.unpersist()
    value = (row["true_net"] or 0.0) - (contacts["cost"] or 0.0)
    subs = row["subscribers"] or 1
    return {
        "true_incremental_margin": round(value),
        "decisions": decisions,
        "subscribers": row["subscribers"],
        "offers_per_subscriber": round(decisions / subs, 2),
        "contacts_per_subscriber": round(contacts["contacts"] / subs, 2),
        "push_contacts_per_subscriber": round((contacts["push"] or 0) / subs, 2),
        "negative_effect_offers": row["negative_effect"],
        "sleeping_dogs_contacted": row["sleeping_dogs"],
        "expected_incentive": round(row["expected_incentive"] or 0.0),
    }


def quality(spark: SparkSession, n: int, days: int, seed: int, keep: Path | None) -> dict:
    root = keep or Path(tempfile.mkdtemp(prefix="bench_allocation_"))
    bronze = root / "lake" / "bronze"
    try:
        if keep and (root / "lake" / "gold" / "offer_scores").exists():
            config = load_config(root / "conf.yaml")  # the lake of an earlier run with --keep-lake
            ctx = StageContext(spark, config, TableStore(spark, config), DEFAULT_END_DATE, "bench")
        else:
            ctx = build_lake(spark, root, n, days, seed)
        actions, p = candidate_actions(ctx)
        judged = judged_actions(actions, bronze, ctx.as_of)
        tier_value = F.when(F.coalesce(F.col("is_high_value"), F.lit(False)), F.col("price")).otherwise(
            100_000.0 - F.col("price")
        )
        base = judged.withColumn("model_net_value", F.col("net_value")).persist()
        base.count()
        constraints = limits(base, ctx.config.offers.catalog_file)
        alloc = AllocationParams(
            max_offers=3, sample_share=0.25, max_iterations=30, full_passes=2, tolerance=0.01
        )
        policies = {
            "optimised": (F.col("model_net_value"), False),
            "greedy": (F.col("model_net_value"), True),
            "today's ranking, same limits": (F.col("expected_value"), True),
            "tier rule, same limits": (tier_value, True),
            "oracle": (F.col("true_net"), False),
        }
        out: dict = {
            "subscribers": n,
            "days": days,
            "as_of": str(ctx.as_of),
            "constraints": [c.__dict__ for c in constraints],
            "uplift_scored_share": base.agg(
                F.avg((F.col("uplift_source") == "model").cast("double"))
            ).first()[0],
        }
        results: dict = {}
        for name, (value, greedy) in policies.items():
            t0 = time.perf_counter()
            result = allocate(base.withColumn("net_value", value), constraints, alloc, greedy=greedy)
            seconds = time.perf_counter() - t0
            chosen = (
                result.actions.where(F.col("allocation_status") == CHOSEN)
                .select("subscriber_id", "offer_id", "channel")
                .join(base, on=["subscriber_id", "offer_id", "channel"])
            )
            figures = judge(chosen, base, bronze, ctx.as_of)
            figures.update(
                {
                    "seconds": round(seconds, 1),
                    "solver_passes": result.iterations,
                    "use": {k: round(v) for k, v in result.usage.items()},
                    "shadow_prices": {k: round(v, 1) for k, v in result.prices.items()},
                }
            )
            result.actions.unpersist()
            results[name] = figures
            print(name, json.dumps(figures, default=str), flush=True)
        oracle = results["oracle"]["true_incremental_margin"]
        for figures in results.values():
            figures["share_of_oracle"] = (
                round(figures["true_incremental_margin"] / oracle, 3) if oracle else None
            )
        # Today's engine as it publishes: every channel's slots, no cross-channel cap, no limits.
        today = build_offers(
            _gold(ctx, "features"),
            _gold(ctx, "segments"),
            _gold(ctx, "scores"),
            ctx.store.read("silver", "offer_history"),
            offers_frame(spark, load_catalog(ctx.config.offers.catalog_file), 7),
            offer_channels_frame(spark, load_catalog(ctx.config.offers.catalog_file)),
            ctx.as_of,
            "bench",
            OfferParams(allocate=False, campaign_id=p.campaign_id, control_share=p.control_share),
        ).offers.select("subscriber_id", "offer_id", "channel")
        as_published = judge(today, base, bronze, ctx.as_of)
        results["today's engine as published (no limits)"] = as_published
        out["policies"] = results
        base.unpersist()
        return out
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


def synthetic_actions(spark: SparkSession, n: int, per_sub: int, seed: int) -> DataFrame:
    """n subscribers x per_sub actions over 12 offers and 5 channels (2 push), seeded values."""
    channels = F.array(*[F.lit(c) for c in ("sms", "ussd", "app", "ecommerce", "banking")])
    subs = spark.range(n).withColumnRenamed("id", "idx")
    rows = subs.select("idx", F.explode(F.sequence(F.lit(0), F.lit(per_sub - 1))).alias("k"))

    def u(s):
        return F.rand(seed + s)

    offer_no = F.pmod(F.col("idx") * 7 + F.col("k") * 5, F.lit(12))
    return rows.select(
        F.format_string("s%09d", "idx").alias("subscriber_id"),
        F.format_string("O%02d", offer_no).alias("offer_id"),
        channels[F.pmod(F.col("k") + F.col("idx"), F.lit(5)).cast("int")].alias("channel"),
        F.when(F.pmod(F.col("k") + F.col("idx"), F.lit(5)) < 2, "push")
        .otherwise("pull")
        .alias("channel_kind"),
        F.lit(3).alias("slots"),
        (F.exp(u(1) * 3) * 200 - 300).alias("net_value"),
        F.when(F.pmod(F.col("k") + F.col("idx"), F.lit(5)) < 2, 100.0).otherwise(0.0).alias("contact_cost"),
        F.when(offer_no < 4, u(2) * 500).otherwise(0.0).alias("expected_cost"),
        F.when(F.pmod(F.col("idx"), F.lit(10)) == 0, "control").otherwise("treatment").alias("group"),
        F.lit(2).alias("push_left"),
    ).dropDuplicates(["subscriber_id", "offer_id", "channel"])


def peak_heap_mb(spark: SparkSession) -> float:
    """The JVM's peak heap use so far (all memory pools), in MiB."""
    jvm = spark.sparkContext._jvm
    pools = jvm.java.lang.management.ManagementFactory.getMemoryPoolMXBeans()
    total = 0
    for i in range(pools.size()):
        pool = pools.get(i)
        if str(pool.getType()) == "Heap memory":
            total += pool.getPeakUsage().getUsed()
    return total / 2**20


def scale(spark: SparkSession, sizes: list[int], per_sub: int, seed: int) -> list[dict]:
    out = []
    for n in sizes:
        actions = synthetic_actions(spark, n, per_sub, seed).persist()
        rows = actions.count()
        t = n * 0.9
        constraints = (
            Constraint("capacity:sms", "channel_capacity", "sms", round(0.08 * t)),
            Constraint("capacity:ussd", "channel_capacity", "ussd", round(0.10 * t)),
            Constraint(
                "budget:incentives", "budget", "incentives", 60.0 * t, offers=("O00", "O01", "O02", "O03")
            ),
            Constraint("max_volume:O05", "offer_max", "O05", round(0.02 * t)),
        )
        alloc = AllocationParams(
            max_offers=3, sample_share=0.1, max_iterations=30, full_passes=2, tolerance=0.01
        )
        t0 = time.perf_counter()
        result = allocate(actions, constraints, alloc)
        seconds = time.perf_counter() - t0
        violation = max(
            (result.usage[c.name] - c.limit) / c.limit
            if c.sense == "<="
            else (c.limit - result.usage[c.name]) / c.limit
            for c in constraints
        )
        chosen = result.actions.where(F.col("allocation_status") == CHOSEN).count()
        figures = {
            "subscribers": n,
            "actions": rows,
            "seconds": round(seconds, 1),
            "solver_passes": result.iterations,
            "seconds_per_pass_estimate": round(seconds / max(result.iterations + 2, 1), 2),
            "final_max_violation": round(violation, 6),
            "chosen": chosen,
            "peak_heap_mib": round(peak_heap_mb(spark)),
            "use": {k: round(v) for k, v in result.usage.items()},
            "limits": {c.name: c.limit for c in constraints},
            "shadow_prices": {k: round(v, 2) for k, v in result.prices.items()},
        }
        result.actions.unpersist()
        actions.unpersist()
        print(json.dumps(figures), flush=True)
        out.append(figures)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subscribers", type=int, default=20_000, help="quality run size (0: skip)")
    ap.add_argument("--days", type=int, default=180)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--scale-sizes", default="", help="comma-separated sizes for the solver timing")
    ap.add_argument("--actions", type=int, default=12, help="actions per subscriber in the scale run")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "allocation.json"))
    ap.add_argument(
        "--keep-lake", default="", help="build the lake here and keep it; reuse it when it exists"
    )
    args = ap.parse_args()
    spark = get_spark(
        app_name="bench_allocation",
        master="local[*]",
        shuffle_partitions=8,
        log_level="ERROR",
        extra_conf={"spark.driver.memory": "12g", "spark.ui.enabled": "false"},
        show_progress=False,
    )
    report: dict = {"date": date.today().isoformat(), "machine": "2 cores, 24 GiB, local[*]"}
    if args.subscribers:
        keep = Path(args.keep_lake) if args.keep_lake else None
        report["quality"] = quality(spark, args.subscribers, args.days, args.seed, keep)
    if args.scale_sizes:
        report["scale"] = scale(spark, [int(x) for x in args.scale_sizes.split(",")], args.actions, args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
