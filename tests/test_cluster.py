"""Cluster deployment: conf/cluster.yaml, scripts/submit.sh, and a real standalone cluster.

The slow test starts a Spark standalone master and two one-core workers on loopback
(pyspark's own `spark-class`), submits the pipeline through `scripts/submit.sh` on a
small generated lake, and checks that segments, scores and offers equal the ones the
same stages produce in local mode on a copy of the same bronze files (invariant 5:
same inputs, config and seed give the same outputs, wherever they run).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from datetime import date
from pathlib import Path

import pytest

from cvo_spark.core.config import load_config
from cvo_spark.core.io import TableStore
from cvo_spark.report.stage import default_report_path

REPO = Path(__file__).resolve().parents[1]
SUBMIT = REPO / "scripts" / "submit.sh"
AS_OF = date(2026, 6, 30)  # the as_of of the shared pipeline lake (conftest.py)
#: The stages the cluster runs (the report and measure add nothing to compare).
CLUSTER_STAGES = ("ingest", "features", "segments", "train", "score", "offers")


# --------------------------------------------------------------------------- config
def test_cluster_config_validates_and_names_catalog_tables():
    config = load_config(REPO / "conf" / "cluster.yaml")
    store = TableStore(None, config)  # refs only: no session needed
    assert store.ref("gold", "offers").catalog_name == "main.cvo_gold.offers"
    assert store.ref("bronze", "usage_daily").catalog_name == "main.cvo_bronze.usage_daily"
    assert store.ref("silver", "recharges").path is None
    assert config.lake.startswith("s3a://") and config.spark.shuffle_partitions >= 100
    assert config.ingest.privacy.pseudonymize is True


def test_report_path_on_object_storage_and_dbfs():
    assert default_report_path("s3a://bucket/lake", AS_OF) == Path("reports/report_2026-06-30.html")
    assert default_report_path("dbfs:/mnt/cvo", AS_OF) == Path("/dbfs/mnt/cvo/reports/report_2026-06-30.html")
    assert default_report_path("/data/lake", AS_OF) == Path("/data/lake/reports/report_2026-06-30.html")


# --------------------------------------------------------------------------- submit.sh
def _submit(*args: str, env: dict | None = None, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SUBMIT), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def test_submit_help_documents_the_options():
    done = _submit("--help")
    assert done.returncode == 0
    for option in (
        "--master",
        "--conf",
        "--lake",
        "--as-of",
        "--stages",
        "--deploy-mode",
        "--spark-conf",
        "--job",
    ):
        assert option in done.stdout


def test_submit_dry_run_ships_package_delta_and_config():
    from importlib.metadata import version

    done = _submit(
        "--master",
        "spark://127.0.0.1:7077",
        "--as-of",
        "2026-06-30",
        "--stages",
        "ingest,features",
        "--lake",
        "/tmp/x",
        "--spark-conf",
        "spark.executor.memory=1g",
        "--dry-run",
    )
    assert done.returncode == 0, done.stderr
    cmd = done.stdout
    assert "--master spark://127.0.0.1:7077" in cmd and "--deploy-mode client" in cmd
    assert f"--packages io.delta:delta-spark_2.13:{version('delta-spark')}" in cmd
    assert "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension" in cmd
    assert "spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog" in cmd
    assert "--py-files" in cmd and "cvo_spark.zip" in cmd and "--files conf/local.yaml" in cmd
    assert (
        "jobs/run_pipeline.py --conf conf/local.yaml --as-of 2026-06-30 "
        "--lake /tmp/x --stages ingest\\,features" in cmd
    )
    assert "--conf spark.executor.memory=1g" in cmd


def test_submit_refuses_bad_arguments():
    assert _submit("--master", "local[1]").returncode == 2  # no --as-of
    assert "unknown option" in _submit("--as-of", "2026-06-30", "--bogus").stderr
    assert "no job nope" in _submit("--as-of", "2026-06-30", "--job", "nope", "--dry-run").stderr


def test_every_stage_has_a_thin_job():
    from cvo_spark.pipeline import STAGES

    for stage in STAGES:
        text = (REPO / "jobs" / f"{stage}.py").read_text()
        assert f'"--stages", "{stage}"' in text and "cvo_main" in text
        assert len([ln for ln in text.splitlines() if ln.strip() and not ln.startswith(("#", '"'))]) < 12


# --------------------------------------------------------------------------- the cluster
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    raise TimeoutError(f"timed out waiting for {what}")


def _alive_workers(webui: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{webui}/json/", timeout=5) as resp:
            return int(json.load(resp).get("aliveworkers", 0))
    except OSError:
        return 0


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory):
    """A master and two workers (1 core, 2g each) on 127.0.0.1; killed at teardown."""
    home = _spark_home()
    work = tmp_path_factory.mktemp("standalone")
    env = dict(
        os.environ,
        SPARK_HOME=str(home),
        SPARK_LOCAL_IP="127.0.0.1",
        SPARK_LOG_DIR=str(work / "logs"),
        SPARK_WORKER_DIR=str(work / "work"),
        SPARK_NO_DAEMONIZE="1",
    )
    port, webui = _free_port(), _free_port()
    spark_class = str(home / "bin" / "spark-class")
    procs: list[subprocess.Popen] = []
    logs = []

    def start(name: str, *args: str) -> None:
        log = open(work / f"{name}.log", "w")  # noqa: SIM115 - closed at teardown
        logs.append(log)
        procs.append(
            subprocess.Popen(
                [spark_class, *args], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )

    try:
        start(
            "master",
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(webui),
        )
        _wait(lambda: _master_up(webui), 120, "the master")
        for i in range(2):
            start(
                f"worker{i}",
                "org.apache.spark.deploy.worker.Worker",
                f"spark://127.0.0.1:{port}",
                "--cores",
                "1",
                "--memory",
                "2g",
                "--host",
                "127.0.0.1",
                "--webui-port",
                str(_free_port()),
                "--work-dir",
                str(work / f"work{i}"),
            )
        _wait(lambda: _alive_workers(webui) == 2, 120, "two workers to register")
        yield f"spark://127.0.0.1:{port}"
    finally:
        for proc in procs:  # only the processes this fixture started, by their own id
            if proc.poll() is None:
                proc.kill()
        for proc in procs:
            proc.wait(timeout=30)
        for log in logs:
            log.close()


def _master_up(webui: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{webui}/json/", timeout=5):
            return True
    except OSError:
        return False


def _gold(spark, lake: Path, name: str, drop: tuple[str, ...] = ()):
    df = spark.read.format("delta").load(str(lake / "gold" / name)).where(f"as_of = DATE'{AS_OF}'")
    return df.drop(*[c for c in drop if c in df.columns])


@pytest.mark.slow
def test_pipeline_on_standalone_cluster_matches_local_mode(
    spark, pipeline_bronze, build_pipeline_lake, standalone_cluster, tmp_path
):
    from chispa import assert_approx_df_equality, assert_df_equality

    # Local mode: the session's shared pipeline lake (conftest.py), run in this process
    # with the same YAML the cluster gets; the cluster works on a copy of its bronze files
    # (identical files, identical splits). The cluster run goes in the background while
    # the local one runs (or is already done, when another test built it first): two
    # independent processes, and on 2 cores the cluster's many small jobs leave room.
    local_lake, cluster_lake = pipeline_bronze.lake, tmp_path / "cluster"
    conf_file = pipeline_bronze.conf_file
    shutil.copytree(local_lake / "bronze", cluster_lake / "bronze")

    # Output goes to files, not pipes, so the submission never blocks on a full pipe.
    out_path, err_path = tmp_path / "submit.out", tmp_path / "submit.err"
    out_file, err_file = open(out_path, "w"), open(err_path, "w")  # noqa: SIM115 - closed below
    submit = subprocess.Popen(
        [
            "bash",
            str(SUBMIT),
            "--master",
            standalone_cluster,
            "--conf",
            str(conf_file),
            "--lake",
            str(cluster_lake),
            "--as-of",
            AS_OF.isoformat(),
            "--stages",
            ",".join(CLUSTER_STAGES),
            "--driver-memory",
            "2g",
            "--spark-conf",
            "spark.executor.memory=1g",
        ],
        cwd=REPO,
        stdout=out_file,
        stderr=err_file,
        start_new_session=True,
    )
    try:
        build_pipeline_lake()
        submit.wait(timeout=1200)
    finally:
        if submit.poll() is None:
            os.killpg(submit.pid, 9)
            submit.wait(30)
        out_file.close()
        err_file.close()
    done = subprocess.CompletedProcess(
        submit.args, submit.returncode, out_path.read_text(), err_path.read_text()
    )
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-5000:])
    assert "cvo summary" in done.stdout

    runs = spark.read.format("delta").load(str(cluster_lake / "gold" / "runs"))
    assert {r["stage"] for r in runs.where("status = 'succeeded'").collect()} == set(CLUSTER_STAGES)

    seg_l, seg_c = (_gold(spark, lk, "segments") for lk in (local_lake, cluster_lake))
    assert seg_l.count() > 0
    assert_df_equality(seg_l, seg_c, ignore_row_order=True, ignore_nullable=True)
    score_cols = ("model_versions",)
    sc_l, sc_c = (_gold(spark, lk, "scores", score_cols) for lk in (local_lake, cluster_lake))
    off_l, off_c = (_gold(spark, lk, "offers", ("run_id",)) for lk in (local_lake, cluster_lake))
    assert sc_l.count() == sc_c.count() > 0
    assert off_l.count() > 0
    assert_approx_df_equality(sc_l, sc_c, precision=1e-9, ignore_row_order=True, ignore_nullable=True)
    assert_approx_df_equality(off_l, off_c, precision=1e-6, ignore_row_order=True, ignore_nullable=True)
