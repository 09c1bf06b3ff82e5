# Databricks notebook source
# MAGIC %md
# MAGIC # 01 · Explore segments
# MAGIC
# MAGIC Value tiers, lifecycle, personas (with the K-Means k-selection), the strategic matrix and
# MAGIC B2B concentration for one as-of date. Every number comes from `cvo_spark.report.data`, the same
# MAGIC queries the HTML report uses; this notebook only sets parameters and displays results.
# MAGIC
# MAGIC **Parameters**: `conf` (YAML config), `lake` (lake root, empty = the config's), `as_of` (ISO date).
# MAGIC On Databricks they are widgets; elsewhere environment variables `CVO_CONF`, `CVO_LAKE`, `CVO_AS_OF`.

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
store = TableStore(spark, config)
gold = report.load_gold(store, AS_OF)
features, segments, profiles = gold["features"], gold["segments"], gold["segment_profiles"]
have_segments = not isinstance(segments, report.Unavailable) and not isinstance(features, report.Unavailable)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Headline figures

# COMMAND ----------

report.show(features if isinstance(features, report.Unavailable) else report.headline(features), display)
if have_segments:
    display(report.high_value_share(segments, features))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Value tiers and lifecycle

# COMMAND ----------

if have_segments:
    display(report.tier_summary(segments, features))
    display(report.group_summary(segments, features, "lifecycle"))
else:
    report.show(segments if isinstance(segments, report.Unavailable) else features)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Personas: how many (silhouette and WCSS per k), and who they are

# COMMAND ----------

report.show(gold["persona_k_selection"], display)
report.show(
    profiles if isinstance(profiles, report.Unavailable) else report.persona_profiles(profiles), display
)
if not isinstance(profiles, report.Unavailable):
    display(report.persona_by_tier(profiles))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Strategic matrix

# COMMAND ----------

if have_segments:
    display(report.matrix_summary(segments, features))
else:
    report.show(segments)

# COMMAND ----------

# MAGIC %md
# MAGIC ## B2B: concentration and clusters

# COMMAND ----------

report.show(gold["b2b_concentration"], display)
report.show(gold["b2b_profiles"], display)
