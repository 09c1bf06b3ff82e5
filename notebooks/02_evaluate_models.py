# Databricks notebook source
# MAGIC %md
# MAGIC # 02 · Evaluate models
# MAGIC
# MAGIC Out-of-time quality of the upsell, cross-sell, churn and CLV models of the latest training
# MAGIC run at or before `as_of`, with what each number means, and the distribution of the scores.
# MAGIC ROC-AUC 0.5 is chance; an out-of-time AUC near 1.0 or 100% accuracy is a leak to
# MAGIC investigate, not a result.
# MAGIC
# MAGIC **Parameters**: `conf`, `lake`, `as_of` (widgets on Databricks, else `CVO_CONF`, `CVO_LAKE`,
# MAGIC `CVO_AS_OF`).

# COMMAND ----------

import os
from datetime import date


def _param(name: str, default: str) -> str:
    try:
        dbutils.widgets.text(name, default)  # noqa: F821 - provided by Databricks
        return dbutils.widgets.get(name)  # noqa: F821
    except NameError:
        return os.environ.get(f"CVO_{name.upper()}", default)


CONF = _param("conf", "conf/local.yaml")
LAKE = _param("lake", "")
AS_OF = date.fromisoformat(_param("as_of", "2026-06-30"))

# COMMAND ----------

from cvo_spark.core.config import load_config
from cvo_spark.core.io import TableStore
from cvo_spark.report import data as report
from cvo_spark.report.html import metric_flag

try:
    spark  # noqa: B018 - Databricks and the tests provide a session
except NameError:
    from cvo_spark.core.session import get_spark

    spark = get_spark()
try:
    display  # noqa: B018
except NameError:
    display = print

config = load_config(CONF).with_lake(LAKE or None)
gold = report.load_gold(TableStore(spark, config), AS_OF)
evaluations, curves, scores = gold["model_evaluations"], gold["model_curves"], gold["scores"]

# COMMAND ----------

# MAGIC %md
# MAGIC ## Metrics, with a plain-language reading of each

# COMMAND ----------

report.show(evaluations, display)
if not isinstance(evaluations, report.Unavailable):
    for row in evaluations.select("target", "model_kind", "metric", "value").collect():
        flag = metric_flag(row["metric"], row["value"])
        if flag:
            print(f"WARNING {row['target']} / {row['model_kind']}: {flag}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Lift and calibration curves

# COMMAND ----------

report.show(curves, display)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Score distribution (as of the date)

# COMMAND ----------

if isinstance(scores, report.Unavailable):
    report.show(scores)
else:
    display(
        scores.select("p_upsell", "p_cross_sell", "p_churn", "clv_12m").summary(
            "count", "mean", "25%", "50%", "75%", "max"
        )
    )
