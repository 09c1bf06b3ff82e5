"""SparkSession factory: local[*] by default, Delta Lake through the real connector.

Only `jobs/`, the CLI and tests call this; library transforms receive DataFrames.

The Delta JVM package (io.delta:delta-spark_2.13) is resolved by Spark's Ivy from
Maven Central on first use and cached under ~/.ivy2.5.2; that first resolution takes
tens of seconds, so it is announced on stderr rather than left silent. Under
`spark-submit` (scripts/submit.sh) the master and packages come from the command line
and are not overridden here.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path

from pyspark.sql import SparkSession

SCALA_VERSION = "2.13"


def delta_maven_coordinate() -> str:
    """The Maven coordinate of the Delta JVM package matching the installed delta-spark."""
    return f"io.delta:delta-spark_{SCALA_VERSION}:{version('delta-spark')}"


def _ivy_home() -> Path:
    return Path(os.environ.get("CVO_IVY_HOME", Path.home() / ".ivy2.5.2"))


def _delta_jar_cached() -> bool:
    coord = delta_maven_coordinate().split(":")
    jar = _ivy_home() / "jars" / f"{coord[0]}_{coord[1]}-{coord[2]}.jar"
    return jar.exists()


def _launched_by_spark_submit() -> bool:
    # spark-submit starts the JVM first and hands PySpark the gateway port.
    return "PYSPARK_GATEWAY_PORT" in os.environ


def get_spark(
    app_name: str = "cvo_spark",
    master: str = "local[*]",
    shuffle_partitions: int = 8,
    log_level: str = "WARN",
    extra_conf: Mapping[str, str] | None = None,
    show_progress: bool = True,
) -> SparkSession:
    """Build (or return the running) SparkSession with Delta Lake enabled.

    Parameters
    ----------
    master : used only when not launched by spark-submit.
    shuffle_partitions : `spark.sql.shuffle.partitions`; the default 200 is far too many
        for a laptop-sized lake and dominates small stages with task overhead.
    log_level : Spark's own log level; WARN hides the INFO flood but keeps warnings.
    extra_conf : any further Spark settings (from the YAML config's `spark.conf`).
    """
    active = SparkSession.getActiveSession()
    if active is not None:
        # A notebook's or Databricks' own session: keep its settings, except the clock.
        # Dates "as of D" and the ingest's future check are cut in UTC, whatever the host.
        active.conf.set("spark.sql.session.timeZone", "UTC")
        return active

    builder = SparkSession.builder.appName(app_name)
    conf: dict[str, str] = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.shuffle.partitions": str(shuffle_partitions),
        # One clock for every run: dates "as of D" must not move with the host's zone.
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.showConsoleProgress": "true" if show_progress else "false",
        "spark.sql.adaptive.enabled": "true",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        # Delta reads its log with 50 partitions by default: pure overhead on small tables.
        "spark.databricks.delta.snapshotPartitions": str(max(1, shuffle_partitions)),
    }
    first_fetch = False
    if not _launched_by_spark_submit():
        builder = builder.master(master)
        # Python workers (pandas-based engines such as xgboost.spark) run this interpreter,
        # not whatever `python3` is first on PATH (often one without pandas).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        conf["spark.jars.packages"] = delta_maven_coordinate()
        conf.setdefault("spark.driver.memory", os.environ.get("CVO_DRIVER_MEMORY", "4g"))
        first_fetch = not _delta_jar_cached()
        if first_fetch:
            print(
                f"cvo: first run on this machine - fetching {delta_maven_coordinate()} from Maven "
                f"Central into {_ivy_home()} (once; later runs use the cache)",
                file=sys.stderr,
                flush=True,
            )
    conf.update(extra_conf or {})
    for key, value in conf.items():
        builder = builder.config(key, value)

    started = time.monotonic()
    spark = builder.getOrCreate()
    if first_fetch:
        print(f"cvo: Delta Lake package ready after {time.monotonic() - started:.0f}s", file=sys.stderr)
    spark.sparkContext.setLogLevel(log_level)
    _quiet_known_warnings(spark)
    return spark


#: Spark loggers whose WARN lines are expected in cvo and only bury real warnings.
#: WindowExec warns on every window without PARTITION BY. cvo uses those on purpose and
#: only on small or bounded inputs: lift deciles over the out-of-time evaluation rows
#: (one exact global order is what a decile means), the B2B Lorenz curve and
#: concentration over accounts (thousands), and report shares after a group-by (tens of
#: rows). A 500-subscriber demo printed 121 such lines in the report stage alone.
QUIET_LOGGERS = ("org.apache.spark.sql.execution.window.WindowExec",)


def _quiet_known_warnings(spark: SparkSession) -> None:
    """Raise the listed loggers to ERROR in the driver JVM (where these plans are made)."""
    try:
        jvm = spark.sparkContext._jvm
        if jvm is None:
            raise RuntimeError("no JVM gateway in this session")
        level = jvm.org.apache.logging.log4j.Level.ERROR
        for name in QUIET_LOGGERS:
            jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(name, level)
    except Exception as err:  # noqa: BLE001 - cosmetic: a logging backend we do not know stays as it is
        logging.getLogger(__name__).debug("could not quiet Spark loggers: %s", err)
