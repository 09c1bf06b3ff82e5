"""Side-by-side peers for `run_all.py`: the single-machine tools a user would otherwise pick.

`run_peers` runs after the stages of one size, in the same process, on the lake those
stages just wrote, and records one `Measurement` per comparison whose `seconds` are the
peer's and whose `extra` carries ``ours_seconds`` and ``ratio_ours_to_peer`` (above 1:
ours is slower):

- ``features core vs DuckDB``: our usage_daily core aggregation (`_agg_usage` +
  `with_trend_features`, the ``ours_core`` of bench_features.py, no-op sink) against
  `bench_features.duckdb_core_sql` in a DuckDB child process (threads = cores), both on
  the silver usage_daily table; DuckDB reads exactly the Parquet files live in the Delta
  log (`DeltaTable.toDF().inputFiles()`). The aggregates are cross-checked.
- ``personas KMeans vs scikit-learn``: `fit_kmeans` on every subscriber of gold
  ``features`` (fit_sample_rows = all of them, so both fit the same rows; the stage itself
  samples at most ``fit_sample_rows``) plus assigning everyone (`with_clusters`, no-op
  sink), against scikit-learn `KMeans` fit + predict on the same persona columns (window
  rates applied, log1p, z-score done in numpy inside the timing: the same matrix as the
  Spark pipeline's, to 1e-13); same k (the one the segments stage chose), n_init,
  max_iter and seed. Quality shows as the within-cluster sum of squares of both in the
  standardised space; with n_init = 1 either side can land in a worse local optimum
  (k-means|| vs k-means++ starts), so a gap there is initialisation luck, not a defect.
- ``propensity GBT vs LightGBM``: the GBT pipeline of `build_classifier` (median imputer,
  assembler, GBTClassifier) fitted on the train split of the frame the train stage
  builds, against `LGBMClassifier` with the configured trees, depth and learning rate
  (num_leaves = 2^depth, max_bin = 32 as Spark's maxBins) on the same rows; ROC-AUC of
  both on the evaluation half of the out-of-time snapshot, computed the same way.

Runs: ours runs once; when that took under `WARMUP_MAX_SECONDS`, both engines run twice
and the second (warm) run is reported, otherwise both run once (ours is then already
JVM-warm from the stages before it). The JSON says which (``runs``, ``reported_run``).
Inputs are materialised (cached, or pulled to pandas with Arrow) before any timing;
the pull is reported as ``pull_seconds`` and not counted. Peak memory: ours is Python +
JVM; DuckDB is its child process; scikit-learn and LightGBM are the Python process alone.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from urllib.parse import unquote, urlparse

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from harness import Measurement, PeakMemory, record

#: A first run of ours shorter than this is repeated (for both engines) and the second reported.
WARMUP_MAX_SECONDS = 60.0
#: The propensity target compared (one is enough for a speed ratio).
TARGET = "churn"
MB = 2**20


def run_peers(spark, store, as_of: date, n: int, results: list, skip: tuple[str, ...] = ()) -> None:
    """Time each comparison for this size and append its `Measurement` to `results`.

    A peer whose library is not installed is skipped with a line saying so; so is a
    comparison named in `skip` (the propensity one where the size trains no model).
    """
    for compare in (features_vs_duckdb, personas_vs_sklearn, propensity_vs_lightgbm):
        if compare.__name__ in skip:
            print(f"  peers: {compare.__name__} not run at this size", flush=True)
            continue
        try:
            compare(spark, store, as_of, n, results)
        except ImportError as err:
            print(f"  peers: {compare.__name__} skipped ({err})", flush=True)


# --------------------------------------------------------------------------- timing
def _timed(fn: Callable[[], object], runs: int, children: bool = True) -> tuple[object, list[float], float]:
    """Run `fn` `runs` times; (last result, seconds per run, peak RSS in bytes over all runs)."""
    times, peak, result = [], 0, None
    for _ in range(runs):
        with PeakMemory(children=children) as mem:
            t0 = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t0)
        peak = max(peak, mem.peak)
    return result, times, peak


def _timed_ours(fn: Callable[[], object]) -> tuple[object, list[float], float]:
    """Ours once, and again when that was cheap (see `WARMUP_MAX_SECONDS`)."""
    result, times, peak = _timed(fn, 1)
    if times[0] < WARMUP_MAX_SECONDS:
        result, more, peak2 = _timed(fn, 1)
        times, peak = times + more, max(peak, peak2)
    return result, times, peak


def _run_note(runs: int) -> str:
    if runs > 1:
        return "second (first is a warm-up)"
    return f"first (one run each: ours took over {WARMUP_MAX_SECONDS:.0f}s; JVM warm from the stages)"


def _comparison(
    name: str,
    n: int,
    rows: int,
    ours_times: list[float],
    ours_peak: float,
    peer_times: list[float],
    peer_peak: float,
    peer_memory: str,
    check: str,
    results: list,
    **extra,
) -> Measurement:
    ours, peer = ours_times[-1], peer_times[-1]
    m = Measurement(
        name,
        n,
        peer,
        rows,
        peer_peak / MB,
        {
            "ours_seconds": ours,
            "peer_seconds": peer,
            "ratio_ours_to_peer": ours / peer if peer > 0 else float("nan"),
            "ours_times_s": ours_times,
            "peer_times_s": peer_times,
            "runs": len(ours_times),
            "reported_run": _run_note(len(ours_times)),
            "ours_peak_rss_mb": ours_peak / MB,
            "ours_memory": "python + JVM",
            "peer_memory": peer_memory,
            "check": check,
            "load_avg_1m_at_end": os.getloadavg()[0],
            **extra,
        },
    )
    record(m, results)
    print(f"  {'':<28} ours {ours:8.1f}s  ours/peer {m.extra['ratio_ours_to_peer']:.2f}  {check}", flush=True)
    return m


@contextmanager
def _arrow(spark):
    """Arrow-backed toPandas for the peer pulls (the session setting is restored after)."""
    key = "spark.sql.execution.arrow.pyspark.enabled"
    before = spark.conf.get(key, "false")
    spark.conf.set(key, "true")
    try:
        yield
    finally:
        spark.conf.set(key, before)


# --------------------------------------------------------------------------- features
def _live_files(spark, store, layer: str, name: str) -> list[str]:
    """Local paths of the Parquet files in the current snapshot of a Delta table."""
    from delta.tables import DeltaTable

    ref = store.ref(layer, name)
    table = (
        DeltaTable.forName(spark, ref.catalog_name)
        if ref.catalog_name
        else DeltaTable.forPath(spark, ref.path)
    )
    files = []
    for uri in table.toDF().inputFiles():
        parsed = urlparse(uri)
        if parsed.scheme not in ("", "file"):
            raise ValueError(f"DuckDB peer reads local files only; {layer}.{name} has {uri}")
        files.append(unquote(parsed.path) if parsed.scheme else uri)
    return files


def features_vs_duckdb(spark, store, as_of: date, n: int, results: list) -> None:
    import duckdb  # noqa: F401 - fail fast (ImportError: skipped) before timing ours
    from bench_features import duckdb_core_sql, run_duckdb

    from cvo_spark.features.subscriber import _agg_usage, with_trend_features

    w = store.config.features.windows
    usage = store.read_input("silver", "usage_daily")

    def core_df():
        return _agg_usage(usage, as_of, w).transform(with_trend_features, w)

    def ours() -> None:
        core_df().write.format("noop").mode("overwrite").save()

    _, ours_times, ours_peak = _timed_ours(ours)
    usage_rows = usage.count()
    spark_check = [
        float(x or 0.0)
        for x in core_df()
        .selectExpr("count(*)", "sum(revenue_3m)", "sum(revenue_1m)", "sum(revenue_volatility)")
        .first()
    ]

    files = _live_files(spark, store, "silver", "usage_daily")
    placeholder = "__live_files__"
    sql = duckdb_core_sql(
        placeholder, as_of, w.arpu_short_days, w.arpu_long_days, w.trend_recent_days, w.trend_prior_days
    )
    file_list = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    sql = sql.replace(f"read_parquet('{placeholder}')", f"read_parquet([{file_list}])")
    if placeholder in sql:
        raise RuntimeError("duckdb_core_sql no longer reads read_parquet('<glob>'): update peers.py")
    threads = os.cpu_count() or 1
    duck = run_duckdb(sql, threads=threads, runs=len(ours_times))
    duck_check = [float(x or 0.0) for x in duck["check"]]
    agree = all(abs(a - b) <= 1e-6 * max(1.0, abs(a)) for a, b in zip(spark_check, duck_check, strict=True))
    _comparison(
        "features core vs DuckDB",
        n,
        usage_rows,
        ours_times,
        ours_peak,
        duck["times"],
        duck["peak_rss_bytes"],
        "DuckDB child process",
        "results agree" if agree else "RESULTS DIFFER",
        results,
        input="silver usage_daily",
        input_files=len(files),
        ours_sink="noop",
        peer_sink="in-memory table (CREATE TABLE AS)",
        peer_reads="the Delta log's live Parquet files (DeltaTable.toDF().inputFiles())",
        duckdb_threads=threads,
        spark_master=spark.sparkContext.master,
        results_agree=agree,
        core_check={"spark": spark_check, "duckdb": duck_check},
    )


# --------------------------------------------------------------------------- personas
def _chosen_k(store, as_of: date, pc) -> int:
    """The k the segments stage chose for `as_of` (persona_k_selection), else the configured one."""
    from pyspark.sql import functions as F

    if store.exists("gold", "persona_k_selection"):
        row = (
            store.read("gold", "persona_k_selection")
            .filter((F.col("as_of") == F.lit(as_of)) & F.col("chosen"))
            .select("k")
            .first()
        )
        if row is not None:
            return int(row["k"])
    return pc.k if pc.k is not None else pc.k_min


def _sklearn_kmeans(pdf, features, log_features, k: int, n_init: int, max_iter: int, seed: int):
    """log1p + z-score (as the Spark pipeline) then KMeans fit + predict; (labels, inertia)."""
    import numpy as np
    from sklearn.cluster import KMeans

    logs = set(log_features)
    x = np.column_stack(
        [
            np.log1p(np.clip(np.nan_to_num(pdf[c].to_numpy(float)), 0, None))
            if c in logs
            else np.nan_to_num(pdf[c].to_numpy(float))
            for c in features
        ]
    )
    std = x.std(axis=0, ddof=1)  # Spark's StandardScaler: sample std
    x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    model = KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, random_state=seed).fit(x)
    return model.predict(x), float(model.inertia_)


def personas_vs_sklearn(spark, store, as_of: date, n: int, results: list) -> None:
    import sklearn  # noqa: F401
    from pyspark.sql import functions as F

    from cvo_spark.segments.personas import WindowRates, fit_kmeans, with_clusters, with_window_rates

    config = store.config
    pc = config.segments.personas
    rates = WindowRates(tuple(pc.window_total_features), config.features.windows.arpu_long_days)
    k = _chosen_k(store, as_of, pc)
    matrix = (
        store.read("gold", "features")
        .filter(F.col("as_of") == F.lit(as_of))
        .select("subscriber_id", *pc.features, *([rates.los_col] if rates.columns else []))
        .cache()
    )
    try:
        rows = matrix.count()

        def ours():
            fit = fit_kmeans(
                matrix, "subscriber_id", pc.features, pc.log_features, [k], pc.seed, pc.max_iter,
                rows, pc.silhouette_sample_rows, rates=rates, n_init=pc.n_init,
            )  # fmt: skip
            assigned = with_clusters(matrix, fit, {c: c for c in range(fit.k)}, {}, "__cluster", "__unnamed")
            assigned.write.format("noop").mode("overwrite").save()
            return fit

        fit, ours_times, ours_peak = _timed_ours(ours)
        t0 = time.perf_counter()
        with _arrow(spark):
            pdf = (
                with_window_rates(matrix, rates)
                .select(*[F.col(c).cast("double") for c in pc.features])
                .toPandas()
            )
        pull = time.perf_counter() - t0
    finally:
        matrix.unpersist()
    (_, inertia), peer_times, peer_peak = _timed(
        lambda: _sklearn_kmeans(pdf, pc.features, pc.log_features, k, pc.n_init, pc.max_iter, pc.seed),
        len(ours_times),
        children=False,
    )
    matrix_mb = pdf.memory_usage(deep=True).sum() / MB
    wcss = fit.scores[0].wcss
    _comparison(
        "personas KMeans vs scikit-learn",
        n,
        rows,
        ours_times,
        ours_peak,
        peer_times,
        peer_peak,
        "python process (holds the pulled matrix)",
        f"WCSS (lower is better) ours {wcss:,.0f} / peer {inertia:,.0f}",
        results,
        k=k,
        k_source="gold persona_k_selection (chosen)",
        n_init=pc.n_init,
        max_iter=pc.max_iter,
        seed=pc.seed,
        features=list(pc.features),
        fit_rows=rows,
        ours_includes="fit_kmeans (prep + KMeans + silhouette on a <= silhouette_sample_rows sample) "
        "+ assigning every row (noop sink)",
        peer_includes="log1p + z-score in numpy, KMeans fit + predict",
        ours_wcss=wcss,
        peer_inertia=inertia,
        pull_seconds=pull,
        pulled_matrix_mb=matrix_mb,
    )


# --------------------------------------------------------------------------- propensity
def propensity_vs_lightgbm(spark, store, as_of: date, n: int, results: list) -> None:
    import lightgbm as lgb
    import numpy as np
    from pyspark import StorageLevel
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F
    from sklearn.metrics import roc_auc_score

    from cvo_spark.models.labels import (
        EVALUATION,
        TRAIN,
        build_training_frame,
        snapshots_with_history,
        training_snapshot_dates,
    )
    from cvo_spark.models.propensity import MODEL_FEATURES, build_classifier, usable_features
    from cvo_spark.models.train_stage import INPUTS

    config = store.config
    cfg = config.models
    label = f"label_{TARGET}"
    silver = {name: store.read_input("silver", name) for name in INPUTS}
    snapshots = snapshots_with_history(
        training_snapshot_dates(as_of, cfg.horizon_days, cfg.training_snapshots, cfg.snapshot_spacing_days),
        silver["usage_daily"].agg(F.min("usage_date")).first()[0],
        cfg.min_history_days,
    )
    frame = build_training_frame(
        silver, snapshots, as_of, cfg.horizon_days, config.features.windows,
        config.segments.lifecycle.new_max_days, cfg.upsell_arpu_increase,
        cfg.cross_sell_lookback_days, cfg.seed,
    )  # fmt: skip
    frame = frame.select("split", label, *MODEL_FEATURES).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        train = frame.where(F.col("split") == TRAIN)
        evaluation = frame.where(F.col("split") == EVALUATION)
        train_rows, eval_rows = train.count(), evaluation.count()
        features = usable_features(train, MODEL_FEATURES)
        pipeline = build_classifier(
            "gbt", features, label, TARGET, cfg.seed, cfg.gbt_max_iter, cfg.gbt_max_depth
        )

        model, ours_times, ours_peak = _timed_ours(lambda: pipeline.fit(train))
        t0 = time.perf_counter()
        as_float = [F.col(c).cast("float").alias(c) for c in (*features, label)]
        with _arrow(spark):
            ours_eval = (
                model.transform(evaluation)
                .select(
                    F.col(label).cast("float").alias("y"), vector_to_array(f"{TARGET}__prob")[1].alias("p")
                )
                .toPandas()
            )
            train_pdf = train.select(*as_float).toPandas()
            eval_pdf = evaluation.select(*as_float).toPandas()
        pull = time.perf_counter() - t0
    finally:
        frame.unpersist()

    params = {
        "n_estimators": cfg.gbt_max_iter,
        "max_depth": cfg.gbt_max_depth,
        "num_leaves": 2**cfg.gbt_max_depth,
        "learning_rate": 0.1,  # build_classifier's stepSize
        "max_bin": 32,  # Spark's default maxBins
        "random_state": cfg.seed,
        "n_jobs": os.cpu_count() or 1,
        "verbose": -1,
    }
    x_train, y_train = train_pdf[features], train_pdf[label].to_numpy()

    def peer():
        return lgb.LGBMClassifier(**params).fit(x_train, y_train)

    clf, peer_times, peer_peak = _timed(peer, len(ours_times), children=False)
    pulled_mb = (train_pdf.memory_usage().sum() + eval_pdf.memory_usage().sum()) / MB

    def auc(y, p) -> float | None:
        return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None

    auc_ours = auc(ours_eval["y"].to_numpy(), ours_eval["p"].to_numpy())
    auc_peer = auc(eval_pdf[label].to_numpy(), clf.predict_proba(eval_pdf[features])[:, 1])
    check = (
        f"OOT AUC ours {auc_ours:.3f} / peer {auc_peer:.3f}"
        if auc_ours is not None and auc_peer is not None
        else "OOT AUC n/a (one class in the evaluation half)"
    )
    _comparison(
        "propensity GBT vs LightGBM",
        n,
        train_rows,
        ours_times,
        ours_peak,
        peer_times,
        peer_peak,
        "python process (holds the pulled rows)",
        check,
        results,
        target=TARGET,
        snapshots=[d.isoformat() for d in snapshots],
        train_rows=train_rows,
        evaluation_rows=eval_rows,
        n_features=len(features),
        ours_includes="median Imputer + VectorAssembler + GBTClassifier fit on the cached train split "
        "(no isotonic calibration, no baseline)",
        ours_params={
            "maxIter": cfg.gbt_max_iter,
            "maxDepth": cfg.gbt_max_depth,
            "stepSize": 0.1,
            "maxBins": 32,
        },
        peer_params=params,
        peer_input="float32 pandas frame; missing values left as NaN (LightGBM's own handling)",
        auc_ours=auc_ours,
        auc_peer=auc_peer,
        auc_on="evaluation half of the out-of-time snapshot, uncalibrated probability, sklearn roc_auc_score",
        pull_seconds=pull,
        pulled_mb=pulled_mb,
    )
