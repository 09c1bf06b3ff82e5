"""The `cvo` command line: one clear line and a non-zero exit for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cvo_spark.cli import main
from cvo_spark.core.errors import ConfigError
from cvo_spark.pipeline import STAGES, parse_stages

REPO = Path(__file__).resolve().parent.parent


def test_parse_stages_keeps_pipeline_order_and_names_unknown():
    assert parse_stages(None) == STAGES
    assert parse_stages("offers,features") == ("features", "offers")
    with pytest.raises(ConfigError, match="unknown stage 'feature'"):
        parse_stages("feature")


def test_bad_config_key_is_one_line(tmp_path, capsys):
    conf = tmp_path / "bad.yaml"
    conf.write_text("spark:\n  masterr: local[1]\n")
    code = main(["run", "--as-of", "2026-06-30", "--conf", str(conf)])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert err == f"cvo: error: {conf}: spark.masterr: unknown key"


def test_missing_input_table_stops_with_its_name(spark, tmp_path, capsys):
    code = main(["run", "--as-of", "2026-06-30", "--stages", "ingest", "--lake", str(tmp_path / "empty")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert err[-1].startswith("cvo: error: missing table bronze.")


def test_bad_date_is_rejected_by_argparse(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--as-of", "30/06/2026"])
    assert exit_info.value.code == 2
    assert "not an ISO date" in capsys.readouterr().err


def test_console_script_is_installed():
    out = subprocess.run(
        [sys.executable, "-m", "cvo_spark.cli", "--help"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0
    for command in ("generate", "run", "demo", "stream", "explain", "report"):
        assert command in out.stdout


def test_bad_catalog_fails_before_any_stage_runs(tmp_path, capsys):
    # Without the up-front check this run would first fail on the missing bronze tables
    # (or, on a real lake, spend the whole train stage before the offers stage read the catalog).
    catalog = tmp_path / "offers.yaml"
    catalog.write_text(
        (REPO / "conf" / "offers.yaml").read_text().replace("channels: [sms", "channels: [smss", 1)
    )
    conf = tmp_path / "conf.yaml"
    conf.write_text(f"offers:\n  catalog_file: {catalog}\n")
    code = main(
        [
            "run",
            "--as-of",
            "2026-06-30",
            "--stages",
            "ingest,offers",
            "--conf",
            str(conf),
            "--lake",
            str(tmp_path / "lake"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert err.startswith(f"cvo: error: {catalog}: ") and "smss" in err and "\n" not in err
    assert not (tmp_path / "lake").exists()


def test_unknown_override_is_refused_before_spark_starts(tmp_path, capsys):
    code = main(["run", "--as-of", "2026-06-30", "--override", "psi", "--lake", str(tmp_path / "lake")])
    assert code != 0
    assert capsys.readouterr().err.strip().startswith("cvo: error: --override: unknown publish check 'psi'")
