"""One SparkSession for the whole test run (Delta on, 2 shuffle partitions, UI off)."""

from __future__ import annotations

import pytest


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
