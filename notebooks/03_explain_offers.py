# Databricks notebook source
# MAGIC %md
# MAGIC # 03 · Explain offers
# MAGIC
# MAGIC What was published for `as_of` (by channel and group), the top opportunities by expected
# MAGIC value (subscribers shown by pseudonymous reference only), ROI scenarios at 20/30/40%
# MAGIC conversion, campaign uplift, and `cvo explain` for one subscriber: why these offers, and why
# MAGIC not the others.
# MAGIC
# MAGIC **Parameters**: `conf`, `lake`, `as_of`, `subscriber_id` (empty = the subscriber with the best
# MAGIC expected value). Widgets on Databricks, else `CVO_CONF`, `CVO_LAKE`, `CVO_AS_OF`, `CVO_SUBSCRIBER_ID`.

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
SUBSCRIBER_ID = _param("subscriber_id", "")

# COMMAND ----------

from pyspark.sql import functions as F

from cvo_spark.core.config import load_config
from cvo_spark.core.io import TableStore
from cvo_spark.core.stage import StageContext
from cvo_spark.offers.explain import explain
from cvo_spark.pipeline import new_run_id
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
offers = gold["offers"]
have_offers = not isinstance(offers, report.Unavailable)

# COMMAND ----------

# MAGIC %md
# MAGIC ## What was published

# COMMAND ----------

report.show(report.offer_summary(offers) if have_offers else offers, display)
report.show(report.top_opportunities(offers) if have_offers else offers, display)

# COMMAND ----------

# MAGIC %md
# MAGIC ## ROI scenarios and measured uplift

# COMMAND ----------

report.show(report.roi_scenarios(offers) if have_offers else offers, display)
campaigns = gold["campaign_results"]
report.show(
    campaigns if isinstance(campaigns, report.Unavailable) else report.campaign_overview(campaigns), display
)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Why this subscriber got these offers

# COMMAND ----------

if have_offers:
    best = report.best_offer_per_subscriber(offers).orderBy(F.col("expected_value").desc(), "subscriber_id")
    subscriber_id = SUBSCRIBER_ID or best.first()["subscriber_id"]
    ctx = StageContext(spark=spark, config=config, store=store, as_of=AS_OF, run_id=new_run_id(AS_OF))
    print(explain(ctx, subscriber_id))
else:
    report.show(offers)
