"""The report as a person sees it: rendered by headless Chromium, charts drawn, no script error.

The page carries a tiny inline script that counts the charts that actually rendered and
records any script error as attributes on <html>; `--dump-dom` returns the DOM after load.
Chromium is Debian's package (scripts/install_chromium.sh); the test fails without it.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from test_report import AS_OF, IDS, build_gold_lake

from cvo_spark.report.data import collect_report
from cvo_spark.report.html import render_report

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


def chromium_binary() -> str | None:
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def run_chromium(binary: str, profile: Path, *args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    cmd = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def browser() -> str:
    binary = chromium_binary()
    # No skip: a report test that silently does not run proves nothing. `make test`
    # installs Chromium first; a bare `pytest` without it fails with the fix in the message.
    assert binary is not None, "chromium is not installed: run scripts/install_chromium.sh (make test does)"
    return binary


@pytest.fixture(scope="module")
def report_file(spark, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    store = build_gold_lake(spark, root / "lake")
    path = root / "report.html"
    path.write_text(render_report(collect_report(store, AS_OF)), encoding="utf-8")
    return path


def test_report_renders_charts_without_script_errors(browser, report_file, tmp_path):
    html = report_file.read_text(encoding="utf-8")
    svg_charts = html.count('<svg class="chart"')
    assert svg_charts >= 8  # tiers x2, personas, k x2, matrix, lorenz, lift, calibration, roi
    assert "<script src" not in html and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )

    done = run_chromium(
        browser, tmp_path / "profile", "--virtual-time-budget=5000", "--dump-dom", report_file.as_uri()
    )
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    rendered = re.search(r'data-charts-rendered="(\d+)"', dom)
    errors = re.search(r'data-script-errors="(\d+)"', dom)
    assert rendered and errors, "the render-check script did not run"
    assert int(errors.group(1)) == 0, re.search(r'data-errors-text="([^"]*)"', dom).group(1)
    assert int(rendered.group(1)) == svg_charts  # every chart has a size and content in the browser
    for sid in IDS:
        assert sid not in dom


def test_report_screenshot_is_not_blank(browser, report_file, tmp_path):
    shot = tmp_path / "report.png"
    done = run_chromium(
        browser, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1400,3000", report_file.as_uri()
    )
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    assert png_size(shot) == (1400, 3000)
    # A blank page compresses to a few kB; a page of tables and charts does not.
    assert shot.stat().st_size > 60_000
    if os.environ.get("CVO_SAVE_SCREENSHOT"):
        shutil.copy(shot, os.environ["CVO_SAVE_SCREENSHOT"])


@pytest.mark.slow
def test_cvo_report_of_a_real_pipeline_lake_renders(browser, pipeline_lake, tmp_path, capsys):
    """`cvo report` on the generated lake every batch stage ran on (conftest.py), in Chromium."""
    from cvo_spark.cli import main

    out = tmp_path / "report.html"
    args = ["report", "--as-of", pipeline_lake.as_of.isoformat(), "--out", str(out)]
    assert main([*args, "--conf", str(pipeline_lake.conf_file), "--lake", str(pipeline_lake.lake)]) == 0
    html = out.read_text(encoding="utf-8")
    # Every section came from a real table: none says its stage has not run.
    assert "has not run" not in html and "no stage has run" not in html
    done = run_chromium(
        browser, tmp_path / "profile", "--virtual-time-budget=5000", "--dump-dom", out.as_uri()
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rendered = re.search(r'data-charts-rendered="(\d+)"', done.stdout)
    errors = re.search(r'data-script-errors="(\d+)"', done.stdout)
    assert rendered and errors and int(errors.group(1)) == 0
    assert int(rendered.group(1)) == html.count('<svg class="chart"') >= 10
    shot = tmp_path / "report.png"
    done = run_chromium(
        browser, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1400,3000", out.as_uri()
    )
    assert done.returncode == 0 and shot.stat().st_size > 60_000
