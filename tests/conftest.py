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
    from cvo_spark.core.session import get_spark

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
class PipelineBronze:
    """The shared lake's generated bronze tables and the YAML every user of it runs with."""

    root: Path
    lake: Path
    conf_file: Path  # also what the cluster test submits
    as_of: date


@dataclass(frozen=True)
class PipelineLake(PipelineBronze):
    """The shared lake after ingest..measure, as `cvo run` leaves it."""

    ctx: object  # the StageContext of the run
    results: dict  # stage -> StageResult


def pipeline_conf(root: Path) -> Path:
    """conf/local.yaml with the test session's partitioning and shorter searches.

    Two shuffle partitions, as in the test session, so a cluster run of the same file
    splits the data the same way; a k search over 2..4, 10 trees and a short uplift history
    keep the run short without changing anything a comparison depends on.
    """
    conf = yaml.safe_load((REPO / "conf" / "local.yaml").read_text())
    conf["spark"] = {"shuffle_partitions": 2, "log_level": "WARN", "conf": {"spark.ui.enabled": "false"}}
    conf["offers"]["catalog_file"] = str(REPO / "conf" / "offers.yaml")
    conf["segments"]["personas"].update({"k_min": 2, "k_max": 4})
    conf["models"]["gbt_max_iter"] = 10
    # The uplift model on 800 subscribers: five weekly snapshots, 10 trees, 20 resamples.
    conf["uplift"] = {
        "history_days": 35,
        "evaluation_days": 7,
        "gbt_max_iter": 10,
        "min_control_contacts": 50,
        "bootstrap_replicates": 20,
    }
    path = root / "conf.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


@pytest.fixture(scope="session")
def pipeline_bronze(spark, tmp_path_factory) -> PipelineBronze:
    from cvo_spark.synth.generate import DEFAULT_END_DATE, write_bronze

    root = tmp_path_factory.mktemp("pipeline")
    lake = root / "lake"
    conf_file = pipeline_conf(root)
    write_bronze(
        spark, str(lake / "bronze"), PIPELINE_SUBSCRIBERS, PIPELINE_DAYS, PIPELINE_SEED, DEFAULT_END_DATE
    )
    return PipelineBronze(root, lake, conf_file, DEFAULT_END_DATE)


@pytest.fixture(scope="session")
def build_pipeline_lake(spark, pipeline_bronze):
    """A callable that runs the shared lake through every batch stage but the report, once.

    A callable rather than a fixture value so the cluster test can start its own run of
    the same bronze on the cluster first and let both go at once.
    """
    from cvo_spark.core.config import load_config
    from cvo_spark.core.io import TableStore
    from cvo_spark.core.stage import StageContext
    from cvo_spark.pipeline import STAGES, new_run_id, run_pipeline

    built: list[PipelineLake] = []

    def build() -> PipelineLake:
        if not built:
            b = pipeline_bronze
            config = load_config(b.conf_file).with_lake(str(b.lake))
            ctx = StageContext(spark, config, TableStore(spark, config), b.as_of, new_run_id(b.as_of))
            results = run_pipeline(ctx, tuple(s for s in STAGES if s != "report"))
            built.append(PipelineLake(b.root, b.lake, b.conf_file, b.as_of, ctx, results))
        return built[0]

    return build


@pytest.fixture(scope="session")
def pipeline_lake(build_pipeline_lake) -> PipelineLake:
    return build_pipeline_lake()
