"""One command for the whole benchmark: every stage at several sizes, with peers.

    .venv/bin/python benchmarks/run_all.py --sizes 10000,100000,1000000 --days 90

For each size it generates (or reuses) bronze data under `--data/<size>`, then times
generate, ingest, features, segments, train, score and offers through the same stage
code `cvo run` uses, recording wall time, input rows per second and peak memory of the
Python process and its Spark JVM together. On the same data, in the same run, the
single-machine peers a user would otherwise pick are timed too (`peers.py`: DuckDB for
the feature aggregation, scikit-learn KMeans for personas, LightGBM for a propensity
model) and printed as ratios to ours. The scaling exponent per stage is the slope of
log(time) on log(subscribers). Results: `--out/benchmark.json` and `.md`.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import Measurement, measure, scaling_exponent, write_results  # noqa: E402

STAGES = ("ingest", "features", "segments", "train", "score", "offers")


def _table_rows(store, layer: str, name: str) -> int:
    return store.read(layer, name).count() if store.exists(layer, name) else 0


def bench_size(spark, n: int, days: int, seed: int, data_root: Path, results: list, peers: bool) -> None:
    from cvo_spark.config import load_config
    from cvo_spark.generate import DEFAULT_END_DATE, write_bronze
    from cvo_spark.io import TableStore
    from cvo_spark.pipeline import StageContext, new_run_id, run_stage

    lake = data_root / f"n{n}_d{days}"
    config = load_config(HERE.parent / "conf" / "local.yaml").with_lake(str(lake))
    store = TableStore(spark, config)
    bronze = Path(store.ref("bronze", "usage_daily").path).parent
    if not store.exists("bronze", "usage_daily"):
        with measure("generate", n, results=results) as m:
            counts = write_bronze(spark, str(bronze), n, days, seed, DEFAULT_END_DATE)
            m["rows"] = sum(v for k, v in counts.items() if not k.startswith("_"))
    usage_rows = _table_rows(store, "bronze", "usage_daily")
    as_of = DEFAULT_END_DATE
    ctx = StageContext(spark, config, store, as_of, new_run_id(as_of), overrides=frozenset({"psi_offer_id", "psi_price_band"}))
    for stage in STAGES:
        rows = usage_rows if stage in ("ingest", "features") else n
        with measure(stage, n, rows=rows, results=results):
            run_stage(ctx, stage)
    if peers:
        try:
            import peers as peer_mod
        except ImportError:
            # The peers still live in the per-capability scripts (bench_features.py: DuckDB,
            # bench_kmeans.py: scikit-learn, bench_models.py: LightGBM); run those for ratios.
            print("  peers: run benchmarks/bench_*.py for the side-by-side ratios", flush=True)
            return
        peer_mod.run_peers(spark, store, as_of, n, results)


def markdown(results: list[Measurement], exponents: dict[str, float | None]) -> str:
    lines = [
        "| stage | subscribers | wall s | rows/s | peak MB (python+JVM) |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in results:
        lines.append(
            f"| {m.name} | {m.subscribers:,} | {m.seconds:,.1f} | {m.rows_per_second:,.0f} | {m.peak_rss_mb:,.0f} |"
        )
    lines += ["", "| stage | scaling exponent (1.0 = linear) |", "|---|---:|"]
    lines += [f"| {k} | {'n/a' if v is None else f'{v:.2f}'} |" for k, v in exponents.items()]
    ratios = [m for m in results if "ratio_ours_to_peer" in m.extra]
    if ratios:
        lines += ["", "| comparison | subscribers | ours s | peer s | ours / peer |", "|---|---:|---:|---:|---:|"]
        for m in ratios:
            e = m.extra
            lines.append(
                f"| {m.name} | {m.subscribers:,} | {e['ours_seconds']:,.1f} | {m.seconds:,.1f} "
                f"| {e['ratio_ours_to_peer']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated subscriber counts")
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--data", default=str(HERE / "data"))
    parser.add_argument("--out", default=str(HERE / "out"))
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--shuffle-partitions", type=int, default=8)
    parser.add_argument("--driver-memory", default="12g")
    args = parser.parse_args(argv)

    from cvo_spark.session import get_spark

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
    for n in sizes:
        print(f"== {n:,} subscribers x {args.days} days", flush=True)
        bench_size(spark, n, args.days, args.seed, Path(args.data), results, not args.no_peers)
    exponents = {
        name: scaling_exponent([(m.subscribers, m.seconds) for m in results if m.name == name])
        for name in dict.fromkeys(m.name for m in results)
    }
    payload = {
        "date": date.today().isoformat(),
        "machine": {"cores": __import__("os").cpu_count()},
        "days": args.days,
        "results": [m.as_dict() for m in results],
        "scaling_exponents": exponents,
    }
    write_results(Path(args.out), "benchmark", payload, markdown(results, exponents))
    return 0


if __name__ == "__main__":
    sys.exit(main())
