"""Benchmark of `cvo stream` (not a test): throughput of an available-now back-fill and
end-to-end latency of a continuous run.

    .venv/bin/python benchmarks/bench_stream.py --events 200000 --subscribers 50000

1. Throughput: `--events` quota events (one Delta commit of `--files` files) spread over
   the last 6 days for `--subscribers` subscribers with published offers; one
   available-now run; events per second = events / wall time of the run (query start to
   stop, checkpoint and Delta commits included).
2. Latency: a continuous run (processingTime `--trigger-seconds`) on the same lake; the
   script appends `--latency-files` small files (`--latency-events` events each, fresh
   subscribers, event_ts = now) every `--latency-interval` seconds, recording when each
   append committed. Reported: emitted_at - append time (emitted_at is taken when the
   batch's write is planned) and visible - append time (visible = timestamp of the
   trigger_offers Delta commit holding the row: when a channel system can read it).

Everything is synthetic and deterministic except wall-clock times.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pyspark.sql import functions as F

from cvo_spark.core.config import parse_config
from cvo_spark.core.io import TableStore
from cvo_spark.core.schemas import INPUT_SCHEMAS
from cvo_spark.core.session import get_spark
from cvo_spark.core.stage import StageContext
from cvo_spark.stream.job import start_trigger_stream

CHANNELS = ("app", "sms", "ussd")
EVENT_TYPES = ("recharge", "quota_low", "quota_expiring", "package_expired")


def _u(salt: int):
    """Deterministic uniform [0, 1) from a hash of the row id."""
    return F.pmod(F.xxhash64(F.lit(salt), F.col("id")), F.lit(1_000_003)) / 1_000_003.0


def build_lake(
    spark,
    store: TableStore,
    subscribers: int,
    events: int,
    files: int,
    now: datetime,
    latency_subscribers: int,
) -> None:
    today = now.date()
    ids = spark.range(subscribers + latency_subscribers).withColumn(
        "subscriber_id",
        F.when(F.col("id") < subscribers, F.concat(F.lit("S"), F.col("id").cast("string"))).otherwise(
            F.concat(F.lit("L"), (F.col("id") - subscribers).cast("string"))
        ),
    )
    # 3 channels x 2 ranks per subscriber; 10% control (latency subscribers all treatment).
    offers = ids.crossJoin(
        spark.createDataFrame([(c, r) for c in CHANNELS for r in (1, 2)], "channel string, rank int")
    ).select(
        "subscriber_id",
        "channel",
        "rank",
        F.lit(today).alias("as_of"),
        F.concat(F.upper("channel"), F.lit("_"), F.col("rank").cast("string")).alias("offer_id"),
        F.lit("data").alias("offer_type"),
        F.lit(20_000.0).alias("price"),
        (F.lit(1_000.0) * (3 - F.col("rank")) + _u(3) * 100).alias("expected_value"),
        F.lit(0.2).alias("propensity"),
        F.array(F.lit("bench")).alias("reason_codes"),
        F.when((_u(1) < 0.1) & F.col("subscriber_id").startswith("S"), "control")
        .otherwise("treatment")
        .alias("group"),
        F.lit(today - timedelta(days=7)).alias("valid_from"),
        F.lit(today + timedelta(days=7)).alias("valid_to"),
        F.lit("bench").alias("run_id"),
    )
    store.overwrite_partition(offers, "gold", "offers", today)
    start = int((now - timedelta(days=6)).timestamp())
    span = int(timedelta(days=6).total_seconds()) - 60
    history = spark.range(subscribers).select(
        F.concat(F.lit("S"), F.col("id").cast("string")).alias("subscriber_id"),
        F.lit("OLD").alias("offer_id"),
        F.element_at(F.array(*[F.lit(c) for c in CHANNELS]), (F.floor(_u(4) * 3) + 1).cast("int")).alias(
            "channel"
        ),
        F.timestamp_seconds(F.lit(start) + F.floor(_u(5) * span)).alias("contacted_ts"),
        F.lit("treatment").alias("group"),
        F.lit(False).alias("accepted"),
        F.lit(None).cast("timestamp").alias("accepted_ts"),
        F.lit(0.0).alias("revenue"),
    )
    store.overwrite(history, "silver", "offer_history")
    quota = (
        spark.range(events)
        .select(
            F.concat(F.lit("S"), F.floor(_u(6) * subscribers).cast("long").cast("string")).alias(
                "subscriber_id"
            ),
            F.timestamp_seconds(F.lit(start) + F.floor(_u(7) * span)).alias("event_ts"),
            F.element_at(
                F.array(*[F.lit(e) for e in EVENT_TYPES]), (F.floor(_u(8) * 4) + 1).cast("int")
            ).alias("event_type"),
            F.lit(None).cast("double").alias("remaining_quota_pct"),
            F.lit(None).cast("timestamp").alias("expiry_ts"),
        )
        .repartition(files)
    )
    store.overwrite(quota, "silver", "quota_events")


def throughput(ctx: StageContext, events: int) -> dict:
    t0 = time.monotonic()
    query = start_trigger_stream(ctx, available_now=True)
    query.awaitTermination()
    seconds = time.monotonic() - t0
    emitted = ctx.store.read("gold", "trigger_offers").count()
    batches = len(query.recentProgress)
    return {
        "events": events,
        "seconds": seconds,
        "events_per_s": events / seconds,
        "emitted": emitted,
        "batches": batches,
    }


def latency(ctx: StageContext, files: int, per_file: int, interval: float, wait: float) -> dict:
    spark, store = ctx.spark, ctx.store
    query = start_trigger_stream(ctx, available_now=False)
    appended: dict[str, float] = {}
    try:
        time.sleep(ctx.config.stream.trigger_seconds * 2)  # let the first (empty) batch pass
        for i in range(files):
            now = datetime.now(UTC).replace(tzinfo=None)
            rows = [(f"L{i * per_file + j}", now, EVENT_TYPES[j % 4], None, None) for j in range(per_file)]
            df = spark.createDataFrame(rows, INPUT_SCHEMAS["quota_events"]).coalesce(1)
            store.append(df, "silver", "quota_events")
            appended[f"L{i * per_file}"] = time.time()  # the append's Delta commit is done here
            time.sleep(interval)
        deadline = time.monotonic() + wait
        wanted = files * per_file
        while time.monotonic() < deadline:
            got = store.read("gold", "trigger_offers").where(F.col("subscriber_id").startswith("L")).count()
            if got >= wanted:
                break
            time.sleep(1)
    finally:
        query.stop()
    rows = (
        store.read("gold", "trigger_offers")
        .where(F.col("subscriber_id").isin(list(appended)))
        .select("subscriber_id", (F.unix_micros("emitted_at") / 1e6).alias("emitted"))
        .collect()
    )
    commits = sorted(
        (
            r["timestamp"].replace(tzinfo=UTC).timestamp()
            if r["timestamp"].tzinfo is None
            else r["timestamp"].timestamp()
        )
        for r in store.history("gold", "trigger_offers", limit=1000).select("timestamp").collect()
    )
    to_emit, to_visible = [], []
    for r in rows:
        t_append = appended[r["subscriber_id"]]
        to_emit.append(r["emitted"] - t_append)
        visible = next((c for c in commits if c >= r["emitted"] - 0.001), None)
        if visible is not None:
            to_visible.append(visible - t_append)

    def summary(xs: list[float]) -> dict:
        if not xs:
            return {}
        xs = sorted(xs)
        return {"p50": statistics.median(xs), "p95": xs[min(len(xs) - 1, int(0.95 * len(xs)))], "max": xs[-1]}

    return {
        "files": files,
        "arrived": len(rows),
        "emitted_minus_append": summary(to_emit),
        "visible_minus_append": summary(to_visible),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--subscribers", type=int, default=50_000)
    p.add_argument("--files", type=int, default=8)
    p.add_argument("--lake", default="/tmp/cvo_bench_stream")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--shuffle-partitions", type=int, default=4)
    p.add_argument("--trigger-seconds", type=int, default=1)
    p.add_argument("--latency-files", type=int, default=15)
    p.add_argument("--latency-events", type=int, default=20)
    p.add_argument("--latency-interval", type=float, default=3.0)
    p.add_argument("--latency-wait", type=float, default=120.0)
    args = p.parse_args()

    shutil.rmtree(args.lake, ignore_errors=True)
    spark = get_spark(
        "cvo_bench_stream",
        args.master,
        args.shuffle_partitions,
        "ERROR",
        {"spark.ui.enabled": "false"},
        show_progress=False,
    )
    config = parse_config({"lake": args.lake, "stream": {"trigger_seconds": args.trigger_seconds}})
    store = TableStore(spark, config)
    now = datetime.now(UTC).replace(tzinfo=None)
    ctx = StageContext(spark, config, store, now.date(), "bench")

    t0 = time.monotonic()
    latency_subscribers = args.latency_files * args.latency_events
    build_lake(spark, store, args.subscribers, args.events, args.files, now, latency_subscribers)
    print(f"lake built in {time.monotonic() - t0:.1f}s under {Path(args.lake)}")

    tp = throughput(ctx, args.events)
    print(
        f"throughput: {tp['events']:,} events in {tp['seconds']:.1f}s = {tp['events_per_s']:,.0f} events/s "
        f"({tp['batches']} batch(es), {tp['emitted']:,} trigger offers)"
    )

    lat = latency(ctx, args.latency_files, args.latency_events, args.latency_interval, args.latency_wait)

    def fmt(d):
        return ", ".join(f"{k} {v:.2f}s" for k, v in d.items()) or "n/a"

    print(
        f"latency over {lat['files']} appends ({lat['arrived']} tracked rows arrived, trigger "
        f"{args.trigger_seconds}s): emitted_at - append: {fmt(lat['emitted_minus_append'])}; "
        f"visible - append: {fmt(lat['visible_minus_append'])}"
    )
    spark.stop()


if __name__ == "__main__":
    main()
