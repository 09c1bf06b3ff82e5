"""One SparkSession for the whole test run (Delta on, 2 shuffle partitions, UI off), and one
generated lake run through every batch stage, shared by the slow end-to-end tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
#: The shared pipeline lake: 150 days give the train stage two snapshots with 90 days of
#: history each (the default `models.min_history_days`).
PIPELINE_SUBSCRIBERS, PIPELINE_DAYS, PIPELINE_SEED = 800, 150, 21


@pytest.fixture(scope="session")
def spark():
    from cvo_spark.session import get_spark

    session = get_spark(
        app_name="cvo_spark_tests",
        master="local[2]",
        shuffle_partitions=2,
        log_level="ERROR",
        extra_conf={"spark.ui.enabled": "false", "spark.driver.memory": "3g"},
        show_progress=False,
    )
    yield session
    session.stop()


@dataclass(frozen=True)
class PipelineLake:
    """A generated lake after ingest..measure, as `cvo run` leaves it."""

    root: Path
    lake: Path
    conf_file: Path  # the YAML every user of the lake runs with (also submitted to the cluster)
    as_of: date
    ctx: object  # the StageContext of the run
    results: dict  # stage -> StageResult


def pipeline_conf(root: Path) -> Path:
    """conf/local.yaml with the test session's partitioning and shorter searches.

    Two shuffle partitions, as in the test session, so a cluster run of the same file
    splits the data the same way; a k search over 2..4 and 10 trees keep the run short
    without changing anything a comparison depends on.
    """
    conf = yaml.safe_load((REPO / "conf" / "local.yaml").read_text())
    conf["spark"] = {"shuffle_partitions": 2, "log_level": "WARN", "conf": {"spark.ui.enabled": "false"}}
    conf["offers"]["catalog_file"] = str(REPO / "conf" / "offers.yaml")
    conf["segments"]["personas"].update({"k_min": 2, "k_max": 4})
    conf["models"]["gbt_max_iter"] = 10
    path = root / "conf.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


@pytest.fixture(scope="session")
def pipeline_lake(spark, tmp_path_factory) -> PipelineLake:
    from cvo_spark.config import load_config
    from cvo_spark.generate import DEFAULT_END_DATE, write_bronze
    from cvo_spark.io import TableStore
    from cvo_spark.pipeline import STAGES, StageContext, new_run_id, run_pipeline

    root = tmp_path_factory.mktemp("pipeline")
    lake = root / "lake"
    conf_file = pipeline_conf(root)
    config = load_config(conf_file).with_lake(str(lake))
    as_of = DEFAULT_END_DATE
    write_bronze(spark, str(lake / "bronze"), PIPELINE_SUBSCRIBERS, PIPELINE_DAYS, PIPELINE_SEED, as_of)
    ctx = StageContext(spark, config, TableStore(spark, config), as_of, new_run_id(as_of))
    results = run_pipeline(ctx, tuple(s for s in STAGES if s != "report"))
    return PipelineLake(root, lake, conf_file, as_of, ctx, results)
