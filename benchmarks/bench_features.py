"""Benchmark of the `features` transform against DuckDB on the same data (not a test).

    .venv/bin/python benchmarks/bench_features.py --subscribers 100000 --days 90 [--data DIR]

1. Generates bronze Delta tables with `cvo_spark.synth.generate.write_bronze` (or reuses
   ``--data DIR`` / the default ``benchmarks/data/bronze_<N>x<D>`` when complete).
2. Times, on Spark ``local[2]``:
   * ``ours_full``: `build_subscriber_features` over the six subscriber tables, written to
     a Delta table (a real Delta commit, overwrite);
   * ``ours_core``: only the usage_daily one-pass aggregation (revenue/usage sums over the
     30- and 90-day windows, trend halves, volatility) plus the trend/volatility columns,
     run with ``.write.format("noop")`` (computed, not written).
3. Times ``duckdb_core``: the same core aggregation in DuckDB (threads = 2), reading the
   Delta table's Parquet files with ``read_parquet('<table>/*.parquet')``. That bypasses
   the Delta log - fine here because the table was written once by one overwrite, so
   every Parquet file in the folder is live - and materialises the result as an
   in-memory table.
4. Each engine runs twice; the second (warm JVM, warm OS cache) run is reported. Peak
   memory is the RSS of the Python driver plus its JVM (`harness.PeakMemory`: psutil
   polling of the process tree every 50 ms) for ours, and of the DuckDB child process
   (polled the same way) for DuckDB.

Writes ``benchmarks/out/features_<N>.json`` and prints one markdown row.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import PeakMemory, tree_rss_bytes

SUBSCRIBER_TABLES = ("subscribers", "usage_daily", "recharges", "purchases", "quota_events", "offer_history")


# --------------------------------------------------------------------------- duckdb
def duckdb_core_sql(
    usage_glob: str, as_of: date, short: int = 30, long: int = 90, recent: int = 30, prior: int = 60
) -> str:
    """The usage_daily core aggregation of `cvo_spark.features.subscriber._agg_usage` in DuckDB SQL."""
    d = f"DATE '{as_of.isoformat()}'"

    def start(n):
        return f"({d} - INTERVAL {n - 1} DAY)"

    return f"""
    CREATE OR REPLACE TABLE core AS
    WITH u AS (
        SELECT subscriber_id, usage_date,
               coalesce(voice_revenue, 0) + coalesce(sms_revenue, 0) + coalesce(data_revenue, 0)
                 + coalesce(digital_revenue, 0) AS rev,
               coalesce(voice_minutes, 0) AS vm, coalesce(sms_count, 0) AS sms, coalesce(data_mb, 0) AS mb,
               coalesce(voice_revenue, 0) AS vr, coalesce(sms_revenue, 0) AS sr,
               coalesce(data_revenue, 0) AS dr,
               coalesce(digital_revenue, 0) AS gr
        FROM read_parquet('{usage_glob}')
        WHERE usage_date <= {d}
    ), a AS (
        SELECT subscriber_id,
          sum(CASE WHEN usage_date >= {start(short)} THEN rev ELSE 0 END) AS revenue_1m,
          sum(CASE WHEN usage_date >= {start(long)} THEN rev ELSE 0 END) AS revenue_3m,
          sum(CASE WHEN usage_date >= {start(long)} THEN vr ELSE 0 END) AS voice_revenue_3m,
          sum(CASE WHEN usage_date >= {start(long)} THEN sr ELSE 0 END) AS sms_revenue_3m,
          sum(CASE WHEN usage_date >= {start(long)} THEN dr ELSE 0 END) AS data_revenue_3m,
          sum(CASE WHEN usage_date >= {start(long)} THEN gr ELSE 0 END) AS digital_revenue_3m,
          sum(CASE WHEN usage_date >= {start(long)} THEN vm ELSE 0 END) AS voice_minutes_3m,
          sum(CASE WHEN usage_date >= {start(long)} THEN sms ELSE 0 END) AS sms_count_3m,
          sum(CASE WHEN usage_date >= {start(long)} THEN mb ELSE 0 END) AS data_mb_3m,
          sum(CASE WHEN usage_date >= {start(long)} AND (vm > 0 OR sms > 0 OR mb > 0 OR gr > 0)
                   THEN 1 ELSE 0 END) AS active_days_3m,
          sum(CASE WHEN usage_date >= {start(long)} THEN rev * rev ELSE 0 END) AS revenue_sq_3m,
          sum(CASE WHEN usage_date >= {start(recent)} THEN rev ELSE 0 END) AS revenue_recent,
          sum(CASE WHEN usage_date >= {start(recent + prior)} AND usage_date < {start(recent)}
                   THEN rev ELSE 0 END) AS revenue_prior,
          sum(CASE WHEN usage_date >= {start(recent)} THEN mb ELSE 0 END) AS data_mb_recent,
          sum(CASE WHEN usage_date >= {start(recent + prior)} AND usage_date < {start(recent)}
                   THEN mb ELSE 0 END) AS data_mb_prior,
          sum(CASE WHEN usage_date >= {start(recent)} THEN vm ELSE 0 END) AS voice_minutes_recent,
          sum(CASE WHEN usage_date >= {start(recent + prior)} AND usage_date < {start(recent)}
                   THEN vm ELSE 0 END) AS voice_minutes_prior,
          max(CASE WHEN rev > 0 THEN usage_date END) AS last_revenue_usage_date
        FROM u GROUP BY subscriber_id
    )
    SELECT *,
      CASE WHEN revenue_prior <> 0 THEN (revenue_recent / {recent} - revenue_prior / {prior})
           / (revenue_prior / {prior}) END AS revenue_trend_pct,
      CASE WHEN data_mb_prior <> 0 THEN (data_mb_recent / {recent} - data_mb_prior / {prior})
           / (data_mb_prior / {prior}) END AS data_trend_pct,
      CASE WHEN voice_minutes_prior <> 0
           THEN (voice_minutes_recent / {recent} - voice_minutes_prior / {prior})
           / (voice_minutes_prior / {prior}) END AS voice_trend_pct,
      CASE WHEN revenue_3m <> 0 THEN sqrt(greatest(revenue_sq_3m / {long} - (revenue_3m / {long}) ^ 2, 0))
           / (revenue_3m / {long}) END AS revenue_volatility
    FROM a
    """


def _duckdb_child(sql: str, threads: int, runs: int, out: mp.Queue) -> None:
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        con.execute(sql)
        times.append(time.perf_counter() - t0)
    check = con.execute(
        "SELECT count(*), sum(revenue_3m), sum(revenue_1m), sum(revenue_volatility) FROM core"
    ).fetchone()
    out.put({"times": times, "check": [float(x) for x in check]})


def run_duckdb(sql: str, threads: int, runs: int) -> dict:
    """Run the DuckDB query `runs` times in a fresh child process; peak RSS of that process."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_duckdb_child, args=(sql, threads, runs, queue))
    child.start()
    peak = 0
    result = None
    while result is None:
        peak = max(peak, tree_rss_bytes(child.pid))
        try:
            result = queue.get(timeout=0.05)
        except Exception:  # noqa: BLE001 - queue.Empty: keep polling
            if not child.is_alive() and queue.empty():
                raise RuntimeError("duckdb child died") from None
    child.join()
    result["peak_rss_bytes"] = peak
    return result


# --------------------------------------------------------------------------- spark
def ensure_data(spark, data: Path, subscribers: int, days: int, seed: int) -> dict[str, int]:
    """Reuse complete bronze tables under `data`, else generate them; return row counts."""
    from cvo_spark.synth.generate import write_bronze

    complete = all((data / t / "_delta_log").is_dir() for t in SUBSCRIBER_TABLES)
    if not complete:
        print(f"generating {subscribers:,} x {days} days into {data} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        write_bronze(spark, str(data), subscribers, days, seed)
        print(f"generated in {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    return {t: spark.read.format("delta").load(str(data / t)).count() for t in SUBSCRIBER_TABLES}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subscribers", type=int, required=True)
    ap.add_argument("--days", type=int, required=True)
    ap.add_argument("--data", type=Path, default=None, help="bronze folder (reused when complete)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--shuffle-partitions", type=int, default=None)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args(argv)

    from cvo_spark.core.config import FeatureWindows
    from cvo_spark.core.session import get_spark
    from cvo_spark.features.subscriber import _agg_usage, build_subscriber_features, with_trend_features
    from cvo_spark.synth.generate import DEFAULT_END_DATE

    n, days = args.subscribers, args.days
    data = args.data or HERE / "data" / f"bronze_{n}x{days}"
    out_dir = HERE / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    # Enough shuffle partitions that one holds ~60k subscribers' aggregation buffers, no more:
    # 8 at 100k, 16 at 1M.
    partitions = args.shuffle_partitions or max(8, min(64, n // 62_500))
    spark = get_spark(
        app_name="bench_features",
        master="local[2]",
        shuffle_partitions=partitions,
        extra_conf={"spark.ui.enabled": "false"},
        show_progress=False,
    )
    rows = ensure_data(spark, data, n, days, args.seed)
    tables = {t: spark.read.format("delta").load(str(data / t)) for t in SUBSCRIBER_TABLES}
    as_of, windows = DEFAULT_END_DATE, FeatureWindows()
    sink = str(data.parent / f"features_{n}x{days}_out")  # under the git-ignored data folder

    def ours_full() -> None:
        df = build_subscriber_features(
            tables["subscribers"],
            tables["usage_daily"],
            tables["recharges"],
            tables["purchases"],
            tables["quota_events"],
            tables["offer_history"],
            as_of,
            windows,
        )
        df.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(sink)

    def core_df():
        return _agg_usage(tables["usage_daily"], as_of, windows).transform(with_trend_features, windows)

    def ours_core() -> None:
        core_df().write.format("noop").mode("overwrite").save()

    results: dict[str, dict] = {}
    for name, fn in (("ours_full", ours_full), ("ours_core", ours_core)):
        times, peak = [], 0
        for _ in range(args.runs):
            with PeakMemory(interval=0.05) as mem:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            peak = max(peak, mem.peak)
            print(f"{name}: {times[-1]:.1f}s", file=sys.stderr, flush=True)
        results[name] = {"times_s": times, "peak_rss_bytes": peak}
    written = spark.read.format("delta").load(sink).count()
    check = (
        core_df()
        .selectExpr("count(*)", "sum(revenue_3m)", "sum(revenue_1m)", "sum(revenue_volatility)")
        .first()
    )
    spark_check = [float(x) for x in check]

    usage_glob = str(data / "usage_daily" / "*.parquet")
    duck = run_duckdb(duckdb_core_sql(usage_glob, as_of), threads=2, runs=args.runs)
    for t in duck["times"]:
        print(f"duckdb_core: {t:.1f}s", file=sys.stderr)
    results["duckdb_core"] = {"times_s": duck["times"], "peak_rss_bytes": duck["peak_rss_bytes"]}
    agree = all(
        abs(a - b) <= 1e-6 * max(1.0, abs(a)) for a, b in zip(spark_check, duck["check"], strict=True)
    )

    input_rows = sum(rows.values())
    usage_rows = rows["usage_daily"]
    warm = {k: v["times_s"][-1] for k, v in results.items()}
    report = {
        "subscribers": n,
        "days": days,
        "as_of": as_of.isoformat(),
        "master": "local[2]",
        "shuffle_partitions": partitions,
        "duckdb_threads": 2,
        "input_rows": rows,
        "features_rows_written": written,
        "ours_full_sink": "delta (overwrite)",
        "ours_core_sink": "noop",
        "duckdb_sink": "in-memory table (CREATE TABLE AS); read_parquet bypasses the Delta log",
        "runs": args.runs,
        "reported_run": "last (warm JVM)",
        "results": results,
        "warm_seconds": warm,
        "rows_per_second": {
            "ours_full": input_rows / warm["ours_full"],
            "ours_core": usage_rows / warm["ours_core"],
            "duckdb_core": usage_rows / warm["duckdb_core"],
        },
        "ratio_ours_full_over_duckdb_core": warm["ours_full"] / warm["duckdb_core"],
        "ratio_ours_core_over_duckdb_core": warm["ours_core"] / warm["duckdb_core"],
        "core_results_agree": agree,
        "core_check": {"spark": spark_check, "duckdb": duck["check"]},
        "cpu_count": os.cpu_count(),
        "load_avg_1m_at_end": os.getloadavg()[0],
    }
    path = out_dir / f"features_{n}.json"
    path.write_text(json.dumps(report, indent=2))
    gib = 1024**3
    print(
        "| N | days | usage rows | ours full (Delta) s | ours core (noop) s | duckdb core s | "
        "ours full rows/s | duckdb rows/s | peak RSS ours GiB | peak RSS duckdb GiB | "
        "full/duckdb | core/duckdb |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {n:,} | {days} | {usage_rows:,} | {warm['ours_full']:.1f} | {warm['ours_core']:.1f} | "
        f"{warm['duckdb_core']:.1f} | {report['rows_per_second']['ours_full']:,.0f} | "
        f"{report['rows_per_second']['duckdb_core']:,.0f} | "
        f"{results['ours_full']['peak_rss_bytes'] / gib:.2f} | "
        f"{results['duckdb_core']['peak_rss_bytes'] / gib:.2f} | "
        f"{report['ratio_ours_full_over_duckdb_core']:.1f} | "
        f"{report['ratio_ours_core_over_duckdb_core']:.1f} |"
    )
    print(f"wrote {path}; core results agree: {agree}", file=sys.stderr)
    spark.stop()
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
