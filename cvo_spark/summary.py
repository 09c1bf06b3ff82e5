"""The few headline lines `cvo run` and `cvo demo` print when they finish.

Reads whatever gold tables exist for the run's as-of date (through the report's
queries, so the numbers match the report) and prints plain text; a missing table is one
"not available" line, never an error.
"""

from __future__ import annotations

import sys
from typing import TextIO

from pyspark.sql import functions as F

from cvo_spark.pipeline import StageContext
from cvo_spark.report import Unavailable, headline, high_value_share, load_gold, persona_profiles
from cvo_spark.report_charts import fmt_int, fmt_money, fmt_num, fmt_pct


def summary_lines(ctx: StageContext) -> list[str]:
    """The summary as lines of text (small aggregates only reach the driver)."""
    g = load_gold(ctx.store, ctx.as_of)
    f, s = g["features"], g["segments"]
    lines = [f"cvo summary - as of {ctx.as_of}"]

    if isinstance(f, Unavailable):
        lines.append(f"  subscribers: {f.message}")
    else:
        h = headline(f).collect()[0]
        lines.append(f"  active subscribers: {fmt_int(h['active_subscribers'])}")
        lines.append(
            f"  revenue (3 months): {fmt_money(h['revenue_3m'])}   ARPU (monthly): {fmt_money(h['arpu_3m'])}"
        )
    if not isinstance(s, Unavailable) and not isinstance(f, Unavailable):
        hv = high_value_share(s, f).collect()[0]
        lines.append(
            f"  High Value: {fmt_int(hv['high_value_subscribers'])} subscribers, "
            f"{fmt_pct(hv['high_value_revenue_share'])} of revenue"
        )

    p = g["segment_profiles"]
    if isinstance(p, Unavailable):
        lines.append(f"  personas: {p.message}")
    else:
        names = [r["persona_name"] for r in persona_profiles(p).select("persona_name").collect()]
        lines.append(f"  personas found: {len(names)} ({', '.join(names)})")

    ev = g["model_evaluations"]
    if isinstance(ev, Unavailable):
        lines.append(f"  models: {ev.message}")
    else:
        rows = (
            ev.where((F.col("metric") == "roc_auc") & (F.col("model_kind") != "baseline"))
            .select("target", "model_kind", "value")
            .orderBy("target")
            .collect()
        )
        auc = ", ".join(f"{r['target']} {fmt_num(r['value'], 3)}" for r in rows) or "none recorded"
        lines.append(f"  models (out-of-time ROC-AUC; 0.5 = chance): {auc}")

    o = g["offers"]
    if isinstance(o, Unavailable):
        lines.append(f"  offers: {o.message}")
    else:
        groups = {r["group"]: r["n"] for r in o.groupBy("group").agg(F.count(F.lit(1)).alias("n")).collect()}
        lines.append(
            f"  offers published: {fmt_int(sum(groups.values()))} "
            f"(treatment {fmt_int(groups.get('treatment', 0))}, control {fmt_int(groups.get('control', 0))})"
        )

    runs = g["runs"]
    if not isinstance(runs, Unavailable):
        last = (
            runs.where(F.col("stage") == "offers")
            .orderBy(F.col("started_at").desc())
            .select("status", "message")
            .limit(1)
            .collect()
        )
        if last:
            status = last[0]["status"]
            text = "published" if status == "succeeded" else f"{status}: {(last[0]['message'] or '')[:160]}"
            lines.append(f"  publish status: {text}")
        report = (
            runs.where((F.col("stage") == "report") & (F.col("status") == "succeeded"))
            .orderBy(F.col("started_at").desc())
            .select("message")
            .limit(1)
            .collect()
        )
        if report and report[0]["message"]:
            lines.append(f"  {report[0]['message']}")
    return lines


def print_summary(ctx: StageContext, file: TextIO | None = None) -> None:
    """Print `summary_lines` (to stdout by default)."""
    print("\n".join(summary_lines(ctx)), file=file or sys.stdout, flush=True)
