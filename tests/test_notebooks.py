"""The Databricks source-format notebooks run top to bottom in local mode.

Each notebook is split on its COMMAND separators; markdown (MAGIC) cells are skipped and
the code cells run in one namespace holding the test session as `spark` and a `display`
that records what was shown. Parameters come from the CVO_* environment variables, the
fallback a notebook uses when `dbutils` is absent.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cvo_spark.synth.generate import DEFAULT_END_DATE

AS_OF = DEFAULT_END_DATE  # the as_of of the shared pipeline lake (conftest.py)

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("01_explore_segments.py", "02_evaluate_models.py", "03_explain_offers.py")
HEADER = "# Databricks notebook source"
SEPARATOR = "# COMMAND ----------"


def notebook_cells(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == HEADER, f"{path.name}: first line must be {HEADER!r}"
    cells = [c.strip() for c in text[len(HEADER) :].split(SEPARATOR)]
    return [c for c in cells if c and not all(line.startswith("# MAGIC") for line in c.splitlines())]


def run_notebook(path: Path, spark, monkeypatch, **params: str) -> list:
    for name, value in params.items():
        monkeypatch.setenv(f"CVO_{name.upper()}", value)
    shown: list = []

    def display(value) -> None:
        # What a notebook displays is small by construction: collect it like Databricks would.
        shown.append(value.collect() if hasattr(value, "collect") else value)

    namespace = {"spark": spark, "display": display, "__name__": "__notebook__"}
    for i, cell in enumerate(notebook_cells(path)):
        exec(compile(cell, f"{path.name}[cell {i}]", "exec"), namespace)  # noqa: S102 - the test's purpose
    return shown


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_format_and_no_copied_logic(name):
    path = REPO / "notebooks" / name
    text = path.read_text(encoding="utf-8")
    cells = notebook_cells(path)
    assert len(cells) >= 4 and "# MAGIC %md" in text
    # Parameters first: the first code cell declares them (widgets on Databricks, env vars here).
    assert "dbutils.widgets" in cells[0] and "AS_OF" in cells[0] and "LAKE" in cells[0]
    # No business logic: the only functions defined are the parameter helper; imports come from
    # the library (and the standard library / pyspark functions for the parameters).
    tree = ast.parse("\n".join(cells))
    defined = [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert defined == ["_param"]
    modules = {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert modules <= {"cvo_spark", "datetime", "pyspark"}


def _gold(spark, shared, name: str):
    from pyspark.sql import functions as F

    return spark.read.format("delta").load(str(shared.lake / "gold" / name)).where(F.col("as_of") == AS_OF)


def _params(shared) -> dict[str, str]:
    """The notebook parameters for the session's shared pipeline lake (conftest.py)."""
    return {"conf": str(shared.conf_file), "lake": str(shared.lake), "as_of": shared.as_of.isoformat()}


@pytest.mark.slow
def test_explore_segments_notebook(spark, pipeline_lake, monkeypatch):
    shown = run_notebook(REPO / "notebooks" / NOTEBOOKS[0], spark, monkeypatch, **_params(pipeline_lake))
    features = _gold(spark, pipeline_lake, "features")
    expected_revenue = features.agg({"revenue_3m": "sum"}).first()[0]
    headline = shown[0][0]
    assert headline["active_subscribers"] == features.count()
    assert headline["revenue_3m"] == pytest.approx(expected_revenue)
    tiers = next(
        t for t in shown if t and "value_tier" in t[0].asDict() and "subscriber_share" in t[0].asDict()
    )
    assert sum(r["subscribers"] for r in tiers) == features.count()
    assert sum(r["revenue_share"] for r in tiers) == pytest.approx(1.0)
    k_rows = next(t for t in shown if t and "silhouette" in t[0].asDict())
    assert sum(1 for r in k_rows if r["chosen"]) == 1


@pytest.mark.slow
def test_evaluate_models_notebook(spark, pipeline_lake, monkeypatch):
    shown = run_notebook(REPO / "notebooks" / NOTEBOOKS[1], spark, monkeypatch, **_params(pipeline_lake))
    evaluations = shown[0]
    assert {"upsell", "cross_sell", "churn"} <= {r["target"] for r in evaluations}
    assert all(r["reading"] for r in evaluations if r["metric"] == "roc_auc")
    summary = shown[-1]
    stats = {r["summary"]: r for r in summary}
    assert 0.0 <= float(stats["mean"]["p_churn"]) <= 1.0


@pytest.mark.slow
def test_explain_offers_notebook(spark, pipeline_lake, monkeypatch, capsys):
    shown = run_notebook(REPO / "notebooks" / NOTEBOOKS[2], spark, monkeypatch, **_params(pipeline_lake))
    printed = capsys.readouterr().out
    offers = _gold(spark, pipeline_lake, "offers")
    summary, top, roi = shown[0], shown[1], shown[2]
    assert sum(r["offers"] for r in summary) == offers.count()
    assert len(top) == min(10, offers.where("`group` = 'treatment'").count())
    raw_ids = {r["subscriber_id"] for r in offers.select("subscriber_id").distinct().collect()}
    assert not any(r["subscriber_ref"] in raw_ids for r in top) and all(
        len(r["subscriber_ref"]) == 8 for r in top
    )
    assert [r["scenario"] for r in roi] == ["20%", "30%", "40%", "model"]
    # explain ran on the best subscriber and read the published offers.
    assert "offers (published):" in printed and "excluded:" in printed
