"""K-Means personas: Spark MLlib (our pipeline) against scikit-learn on the same matrix.

    .venv/bin/python benchmarks/bench_kmeans.py --rows 100000,1000000 --k 4

A features matrix of N subscribers (the persona feature columns of `PersonasConfig`,
four planted behaviour groups with lognormal noise) is synthesised with Spark and
materialised before timing. Then, in the same run:

- spark: `fit_kmeans` with a fixed k on all N rows (fit_sample_rows = N: the same data
  scikit-learn sees; the stage itself fits on at most 200k), plus assigning every row
  (`with_clusters`, forced with the no-op writer);
- sklearn: the same preprocessing in numpy (log1p of the log features, z-score), then
  `KMeans(n_clusters=k, n_init=1, max_iter, random_state)` fit + predict. Moving the
  matrix to pandas (`toPandas`) is timed separately and not counted.

Both use k-means++-style initialisation (Spark: k-means||) and stop at the same
max_iter/tolerance scale. Prints wall times, the ratio spark/sklearn and the adjusted
Rand index between the two clusterings (they should agree on planted groups); JSON per
size under benchmarks/out/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import PeakMemory

# Group centres (original units) in PersonasConfig.features order, and group shares.
CENTRES = (
    ((0.55, 0.15, 0.25, 0.05, 60e3, 2_500, 700, 4), 0.30),
    ((0.08, 0.03, 0.51, 0.38, 90e3, 20_000, 130, 5), 0.30),
    ((0.28, 0.09, 0.41, 0.22, 245e3, 43_000, 1_350, 6), 0.15),
    ((0.37, 0.14, 0.48, 0.01, 25e3, 4_500, 160, 2.5), 0.25),
)


def synth_features(spark, rows: int, seed: int, features: tuple[str, ...]):
    """N rows of persona features: a group per row, each value centre * lognormal(0, 0.25)."""
    from pyspark.sql import functions as F

    u = F.rand(seed)
    bounds, acc = [], 0.0
    for _, share in CENTRES:
        acc += share
        bounds.append(acc)
    group = F.lit(len(CENTRES) - 1)
    for i in reversed(range(len(CENTRES) - 1)):
        group = F.when(u < bounds[i], F.lit(i)).otherwise(group)
    df = spark.range(rows).select(F.format_string("s%09d", "id").alias("subscriber_id"), group.alias("group"))
    cols = []
    for j, name in enumerate(features):
        centre = F.array(*[F.lit(float(c[0][j])) for c in CENTRES])[F.col("group")]
        cols.append((centre * F.exp(F.randn(seed + 1 + j) * 0.25)).alias(name))
    return df.select("subscriber_id", "group", *cols)


def sklearn_kmeans(pdf, features, log_features, k, seed, max_iter):
    import numpy as np
    from sklearn.cluster import KMeans

    x = np.column_stack(
        [
            np.log1p(np.clip(pdf[c].to_numpy(float), 0, None))
            if c in log_features
            else pdf[c].to_numpy(float)
            for c in features
        ]
    )
    std = x.std(axis=0, ddof=1)
    x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    model = KMeans(n_clusters=k, n_init=1, max_iter=max_iter, random_state=seed).fit(x)
    return model.predict(x), float(model.inertia_)


def bench(spark, rows: int, k: int, seed: int, max_iter: int, n_init: int = 1) -> dict:
    from sklearn.metrics import adjusted_rand_score

    from cvo_spark.core.config import PersonasConfig
    from cvo_spark.segments.personas import fit_kmeans, with_clusters

    pc = PersonasConfig()
    features, logs = pc.features, pc.log_features
    matrix = synth_features(spark, rows, seed, features).cache()
    matrix.count()

    t0 = time.perf_counter()
    with PeakMemory() as mem_spark:
        fit = fit_kmeans(
            matrix,
            "subscriber_id",
            features,
            logs,
            [k],
            seed,
            max_iter,
            rows,
            min(rows, 50_000),
            n_init=n_init,
        )
        t_fit = time.perf_counter() - t0
        assigned = with_clusters(matrix, fit, {c: c for c in range(k)}, {}, "cluster", "unused").cache()
        assigned.write.format("noop").mode("overwrite").save()
    t_spark = time.perf_counter() - t0

    t1 = time.perf_counter()
    pdf = matrix.orderBy("subscriber_id").toPandas()
    t_topandas = time.perf_counter() - t1
    t2 = time.perf_counter()
    with PeakMemory() as mem_sk:
        labels, inertia = sklearn_kmeans(pdf, features, logs, k, seed, max_iter)
    t_sklearn = time.perf_counter() - t2

    ours = assigned.select("subscriber_id", "cluster", "group").orderBy("subscriber_id").toPandas()
    result = {
        "rows": rows,
        "k": k,
        "max_iter": max_iter,
        "spark_n_init": n_init,
        "spark_master": spark.sparkContext.master,
        "spark_fit_seconds": round(t_fit, 2),
        "spark_fit_assign_seconds": round(t_spark, 2),
        "spark_wcss": fit.scores[0].wcss,
        "spark_silhouette_50k_sample": fit.scores[0].silhouette,
        "sklearn_fit_predict_seconds": round(t_sklearn, 2),
        "sklearn_inertia": inertia,
        "topandas_seconds": round(t_topandas, 2),
        "ratio_spark_over_sklearn": round(t_spark / t_sklearn, 2) if t_sklearn > 0 else None,
        "ari_spark_vs_sklearn": float(adjusted_rand_score(ours["cluster"], labels)),
        "ari_spark_vs_planted": float(adjusted_rand_score(ours["group"], ours["cluster"])),
        "ari_sklearn_vs_planted": float(adjusted_rand_score(ours["group"], labels)),
        "cpu_count": os.cpu_count(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 1),
        "peak_rss_mb_spark_phase": round(mem_spark.peak / 2**20),
        "peak_rss_mb_sklearn_phase": round(mem_sk.peak / 2**20),
    }
    assigned.unpersist()
    matrix.unpersist()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000", help="comma-separated sizes")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--max-iter", type=int, default=40)
    parser.add_argument("--n-init", type=int, default=1, help="Spark initialisations (sklearn: always 1)")
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument("--out", default=str(HERE / "out"))
    args = parser.parse_args(argv)

    from cvo_spark.core.session import get_spark

    spark = get_spark(
        app_name="bench_kmeans", master=args.master, shuffle_partitions=8, log_level="ERROR",
        extra_conf={"spark.driver.memory": args.driver_memory, "spark.ui.enabled": "false"},
        show_progress=False,
    )  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for rows in [int(r) for r in args.rows.split(",")]:
        result = bench(spark, rows, args.k, args.seed, args.max_iter, args.n_init)
        print(
            f"n={rows:>9,}  spark fit {result['spark_fit_seconds']:7.1f}s"
            f"  fit+assign {result['spark_fit_assign_seconds']:7.1f}s"
            f"  sklearn {result['sklearn_fit_predict_seconds']:7.1f}s"
            f"  ratio {result['ratio_spark_over_sklearn']}"
            f"  ARI(spark, sklearn) {result['ari_spark_vs_sklearn']:.3f}",
            flush=True,
        )
        suffix = "" if args.n_init == 1 else f"_ninit{args.n_init}"
        (out / f"bench_kmeans_{rows}{suffix}.json").write_text(json.dumps(result, indent=2))
    spark.stop()


if __name__ == "__main__":
    main()
