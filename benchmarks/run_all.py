"""One command for the whole benchmark: every stage at several sizes, with peers.

    .venv/bin/python benchmarks/run_all.py --sizes 10000,100000,1000000 --days 90

For each size it generates (or reuses) bronze data under `--data/<size>`, then times
generate, ingest, features, segments, train, score and offers through the same stage
code `cvo run` uses, recording wall time, input rows per second and peak memory of the
Python process and its Spark JVM together. On the same data, in the same run, the
single-machine peers a user would otherwise pick are timed too (`peers.py`: DuckDB for
the feature aggregation, scikit-learn KMeans for personas, LightGBM for a propensity
model) and printed as ratios to ours (see `peers.py` for what each side includes). The
scaling exponent per stage is the slope of log(time) on log(subscribers). The load
average at the start and end of each size is recorded beside the figures: a busy
machine inflates them. Results: `--out/benchmark.json` and `.md`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peers as peer_mod
from harness import Measurement, measure, scaling_exponent, write_results

STAGES = ("ingest", "features", "segments", "train", "score", "offers")


def _table_rows(store, layer: str, name: str) -> int:
    return store.read(layer, name).count() if store.exists(layer, name) else 0


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def bench_size(
    spark,
    n: int,
    days: int,
    seed: int,
    data_root: Path,
    results: list,
    peers: bool,
    model_lake: Path | None = None,
    min_history_days: int = 30,
) -> dict:
    """Time every stage (and the peers) for `n` subscribers; return this size's load and wall time.

    With `model_lake`, the train stage (and the propensity peer) is not run at this size:
    score uses the champion models registered in that lake's MLflow store, the usual
    "train on a sample, score everyone" set-up. The returned info says so.
    """
    load_start, t0 = _load(), time.perf_counter()
    from cvo_spark.core.config import load_config
    from cvo_spark.core.io import TableStore
    from cvo_spark.core.stage import StageContext
    from cvo_spark.pipeline import new_run_id, run_stage
    from cvo_spark.synth.generate import DEFAULT_END_DATE, write_bronze

    lake = data_root / f"n{n}_d{days}"
    config = load_config(HERE.parent / "conf" / "local.yaml").with_lake(str(lake))
    # 90 days of data leave no training snapshot with the default 90 days of history
    # before it; the benchmark times the work, so it trains on what there is.
    models = config.models.model_copy(update={"min_history_days": min_history_days})
    config = config.model_copy(update={"models": models})
    if model_lake is not None:
        from cvo_spark.models.mlflow_store import default_tracking_uri

        uri = default_tracking_uri(str(model_lake))
        mlflow = config.mlflow.model_copy(update={"tracking_uri": uri, "registry_uri": uri})
        config = config.model_copy(update={"mlflow": mlflow})
    store = TableStore(spark, config)
    bronze = Path(store.ref("bronze", "usage_daily").path).parent
    if not store.exists("bronze", "usage_daily"):
        with measure("generate", n, results=results) as m:
            counts = write_bronze(spark, str(bronze), n, days, seed, DEFAULT_END_DATE)
            m["rows"] = sum(v for k, v in counts.items() if not k.startswith("_"))
    usage_rows = _table_rows(store, "bronze", "usage_daily")
    as_of = DEFAULT_END_DATE
    ctx = StageContext(
        spark,
        config,
        store,
        as_of,
        new_run_id(as_of),
        overrides=frozenset({"psi_offer_id", "psi_price_band"}),
    )
    stages = [s for s in STAGES if not (model_lake is not None and s == "train")]
    for stage in stages:
        rows = usage_rows if stage in ("ingest", "features") else n
        with measure(stage, n, rows=rows, results=results):
            run_stage(ctx, stage)
    if peers:
        skip = ("propensity_vs_lightgbm",) if model_lake is not None else ()
        peer_mod.run_peers(spark, store, as_of, n, results, skip=skip)
    info = {
        "subscribers": n,
        "days": days,
        "usage_rows": usage_rows,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "load_avg_start": load_start,
        "load_avg_end": _load(),
        "models_from": str(model_lake) if model_lake is not None else "trained at this size",
    }
    print(f"  load average (1/5/15 min): start {load_start}, end {info['load_avg_end']}", flush=True)
    return info


def _is_comparison(m: Measurement) -> bool:
    return "ratio_ours_to_peer" in m.extra


def exponents_of(results: list[Measurement], last_two: bool = False) -> dict[str, float | None]:
    """Scaling exponent per stage, and of both sides of each comparison.

    Over all sizes by default; with `last_two`, between the two largest sizes only, where
    fixed per-job overhead no longer hides how the work grows.
    """
    series: dict[str, list[tuple[int, float]]] = {}
    for m in results:
        if _is_comparison(m):
            series.setdefault(f"{m.name} (ours)", []).append((m.subscribers, m.extra["ours_seconds"]))
            series.setdefault(f"{m.name} (peer)", []).append((m.subscribers, m.seconds))
        else:
            series.setdefault(m.name, []).append((m.subscribers, m.seconds))
    if last_two:
        series = {name: sorted(points)[-2:] for name, points in series.items()}
    return {name: scaling_exponent(points) for name, points in series.items()}


def _models_note(size: dict) -> str:
    src = size.get("models_from", "trained at this size")
    if src == "trained at this size":
        return src
    return f"not trained here: scored with the champions of {Path(src).name}"


def markdown(results: list[Measurement], exponents: dict[str, float | None], sizes: list[dict]) -> str:
    lines = [
        "| stage | subscribers | wall s | rows/s | peak MB (python+JVM) |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in results:
        if not _is_comparison(m):
            lines.append(
                f"| {m.name} | {m.subscribers:,} | {m.seconds:,.1f} | {m.rows_per_second:,.0f} "
                f"| {m.peak_rss_mb:,.0f} |"
            )
    ratios = [m for m in results if _is_comparison(m)]
    if ratios:
        lines += [
            "",
            (
                "Ratios above 1: ours is slower. Peak memory: ours is python + JVM; DuckDB its own "
                "process; scikit-learn and LightGBM the python process."
            ),
            "",
            (
                "| comparison | subscribers | rows | ours s | peer s | ours / peer | ours peak MB "
                "| peer peak MB | runs (reported) | check |"
            ),
            "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for m in ratios:
            e = m.extra
            runs = f"{e['runs']} (warm)" if e["runs"] > 1 else "1"
            lines.append(
                f"| {m.name} | {m.subscribers:,} | {m.rows:,} | {e['ours_seconds']:,.1f} | {m.seconds:,.1f} "
                f"| {e['ratio_ours_to_peer']:.2f} | {e['ours_peak_rss_mb']:,.0f} | {m.peak_rss_mb:,.0f} "
                f"| {runs} | {e['check']} |"
            )
    tail = exponents_of(results, last_two=True)

    def fmt(v):
        return "n/a" if v is None else f"{v:.2f}"

    lines += [
        "",
        "| stage | scaling exponent, all sizes (1.0 = linear) | between the two largest sizes |",
        "|---|---:|---:|",
    ]
    lines += [f"| {k} | {fmt(v)} | {fmt(tail.get(k))} |" for k, v in exponents.items()]
    lines += [
        "",
        (
            "| subscribers | usage rows | wall s (all stages + peers) | load avg at start (1/5/15 min) "
            "| at end | models |"
        ),
        "|---:|---:|---:|---|---|---|",
    ]
    lines += [
        f"| {s['subscribers']:,} | {s['usage_rows']:,} | {s['wall_seconds']:,.0f} "
        f"| {' / '.join(f'{x:.2f}' for x in s['load_avg_start'])} "
        f"| {' / '.join(f'{x:.2f}' for x in s['load_avg_end'])} "
        f"| {_models_note(s)} |"
        for s in sizes
    ]
    return "\n".join(lines) + "\n"


def _kept(path: Path, rerun: set[int]) -> tuple[list[Measurement], list[dict]]:
    """Measurements and size infos of an earlier run, minus the sizes being run again."""
    import json

    if not path.exists():
        return [], []
    old = json.loads(path.read_text())
    fields = ("name", "subscribers", "seconds", "rows", "peak_rss_mb", "extra")
    kept = [Measurement(**{k: r[k] for k in fields}) for r in old["results"] if r["subscribers"] not in rerun]
    sizes = [s for s in old.get("sizes", []) if s["subscribers"] not in rerun]
    print(f"  kept {len(kept)} measurements of sizes {sorted({m.subscribers for m in kept})} from {path}")
    return kept, sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated subscriber counts")
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--data", default=str(HERE / "data"))
    parser.add_argument("--out", default=str(HERE / "out"))
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--shuffle-partitions", type=int, default=8)
    parser.add_argument(
        "--min-history-days",
        type=int,
        default=30,
        help=(
            "models.min_history_days for the train stage (90-day data has no snapshot with 90 days behind it)"
        ),
    )
    parser.add_argument("--driver-memory", default="12g")
    parser.add_argument(
        "--train-max",
        type=int,
        default=None,
        help="largest size the train stage runs at; bigger sizes score with that size's models",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the results of sizes not run now from the existing --out/benchmark.json",
    )
    args = parser.parse_args(argv)

    from cvo_spark.core.session import get_spark

    spark = get_spark(
        "cvo_bench",
        "local[*]",
        args.shuffle_partitions,
        "ERROR",
        {"spark.driver.memory": args.driver_memory},
        show_progress=False,
    )
    sizes = [int(s) for s in args.sizes.split(",") if s]
    results: list[Measurement] = []
    per_size: list[dict] = []
    if args.keep:
        results, per_size = _kept(Path(args.out) / "benchmark.json", set(sizes))
    trained = [n for n in sizes if args.train_max is None or n <= args.train_max]
    for n in sizes:
        print(f"== {n:,} subscribers x {args.days} days", flush=True)
        model_lake = None
        if args.train_max is not None and n > args.train_max:
            model_n = max(trained) if trained else args.train_max
            model_lake = Path(args.data) / f"n{model_n}_d{args.days}"
        per_size.append(
            bench_size(
                spark,
                n,
                args.days,
                args.seed,
                Path(args.data),
                results,
                not args.no_peers,
                model_lake,
                args.min_history_days,
            )
        )
        results.sort(key=lambda m: m.subscribers)
        per_size.sort(key=lambda s: s["subscribers"])
        # Written after every size, so an hour-long run that dies at 1M keeps the smaller sizes.
        exponents = exponents_of(results)
        payload = {
            "date": date.today().isoformat(),
            "machine": {"cores": os.cpu_count(), "spark_master": spark.sparkContext.master},
            "days": args.days,
            "sizes": per_size,
            "results": [m.as_dict() for m in results],
            "scaling_exponents": exponents,
            "scaling_exponents_two_largest": exponents_of(results, last_two=True),
        }
        write_results(Path(args.out), "benchmark", payload, markdown(results, exponents, per_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
