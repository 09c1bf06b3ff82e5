"""The few headline lines `cvo run` and `cvo demo` print when they finish.

Reads whatever gold tables exist for the run's as-of date (through the report's
queries, so the numbers match the report) and prints plain text. A missing table, or
one without the columns a line needs, is one "not available" line, never an error: the
summary is also printed when a publish is refused, and must not hide that refusal.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from pyspark.sql import functions as F

from cvo_spark.core.errors import MissingColumnsError
from cvo_spark.core.stage import StageContext
from cvo_spark.report.charts import fmt_int, fmt_money, fmt_num, fmt_pct
from cvo_spark.report.data import (
    Unavailable,
    headline,
    high_value_share,
    load_gold,
    mean_clv,
    persona_profiles,
)


def _subscribers(g: dict) -> list[str]:
    f = g["features"]
    if isinstance(f, Unavailable):
        return [f"  subscribers: {f.message}"]
    h = headline(f).collect()[0]
    lines = [
        f"  active subscribers: {fmt_int(h['active_subscribers'])}",
        f"  revenue (3 months): {fmt_money(h['revenue_3m'])}   ARPU (monthly): {fmt_money(h['arpu_3m'])}",
    ]
    s = g["segments"]
    if not isinstance(s, Unavailable):
        hv = high_value_share(s, f).collect()[0]
        lines.append(
            f"  High Value: {fmt_int(hv['high_value_subscribers'])} subscribers, "
            f"{fmt_pct(hv['high_value_revenue_share'])} of revenue"
        )
    return lines


def _personas(g: dict) -> list[str]:
    p = g["segment_profiles"]
    if isinstance(p, Unavailable):
        return [f"  personas: {p.message}"]
    names = [r["persona_name"] for r in persona_profiles(p).select("persona_name").collect()]
    return [f"  personas found: {len(names)} ({', '.join(names)})"]


def _models(g: dict) -> list[str]:
    ev = g["model_evaluations"]
    if isinstance(ev, Unavailable):
        return [f"  models: {ev.message}"]
    rows = (
        ev.where((F.col("metric") == "roc_auc") & (F.col("model_kind") != "baseline"))
        .select("target", "model_kind", "value")
        .orderBy("target")
        .collect()
    )
    # The champion gate's verdict per target, as train recorded it (metric 'promoted').
    gate = {
        r["target"]: "champion" if r["value"] == 1.0 else "not promoted"
        for r in ev.where(F.col("metric") == "promoted").select("target", "value").collect()
    }
    auc = (
        ", ".join(
            f"{r['target']} {fmt_num(r['value'], 3)}"
            + (f" ({gate[r['target']]})" if r["target"] in gate else "")
            for r in rows
        )
        or "none recorded"
    )
    lines = [f"  models (out-of-time ROC-AUC; 0.5 = chance): {auc}"]
    qini = {
        r["metric"]: r["value"]
        for r in ev.where((F.col("target") == "uplift") & (F.col("model_kind") == "t_learner")).collect()
    }
    if "qini_coefficient" in qini:
        lines.append(
            "  uplift model (out-of-time Qini coefficient; 0 = random): "
            f"{fmt_num(qini['qini_coefficient'], 4)} "
            f"[{fmt_num(qini.get('qini_ci_low'), 4)}, {fmt_num(qini.get('qini_ci_high'), 4)}]"
        )
    return lines


def _clv(g: dict) -> list[str]:
    sc = g["scores"]
    if isinstance(sc, Unavailable):
        return [f"  predicted CLV: {sc.message}"]
    clv = mean_clv(sc).collect()[0]
    return [
        (
            f"  average predicted CLV (12 months): {fmt_money(clv['clv_12m_mean'])} "
            f"over {fmt_int(clv['scored'])} scored subscribers"
        )
    ]


def _offers(g: dict) -> list[str]:
    o = g["offers"]
    if isinstance(o, Unavailable):
        return [f"  offers: {o.message}"]
    groups = {r["group"]: r["n"] for r in o.groupBy("group").agg(F.count(F.lit(1)).alias("n")).collect()}
    return [
        (
            f"  offers published: {fmt_int(sum(groups.values()))} "
            f"(treatment {fmt_int(groups.get('treatment', 0))}, control {fmt_int(groups.get('control', 0))}, "
            f"universal holdout {fmt_int(groups.get('holdout', 0))})"
        )
    ]


def _campaigns(g: dict) -> list[str]:
    """Power before launch of the running campaigns with a goal (none configured: no line)."""
    power = g["campaign_power"]
    if isinstance(power, Unavailable):
        return []
    rows = power.select("campaign_id", "underpowered", "message").orderBy("campaign_id").collect()
    return [f"  {'UNDERPOWERED ' if r['underpowered'] else ''}{r['message']}" for r in rows]


def _runs(g: dict) -> list[str]:
    runs = g["runs"]
    if isinstance(runs, Unavailable):
        return []
    lines = []
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


#: The summary's sections, in print order, each with the label its "not available" line uses.
SECTIONS: tuple[tuple[str, Callable[[dict], list[str]]], ...] = (
    ("subscribers", _subscribers),
    ("personas", _personas),
    ("models", _models),
    ("predicted CLV", _clv),
    ("offers", _offers),
    ("campaign power", _campaigns),
    ("runs", _runs),
)


def summary_lines(ctx: StageContext) -> list[str]:
    """The summary as lines of text (small aggregates only reach the driver)."""
    g = load_gold(ctx.store, ctx.as_of)
    lines = [f"cvo summary - as of {ctx.as_of}"]
    for label, section in SECTIONS:
        try:
            lines += section(g)
        except MissingColumnsError as err:
            lines.append(f"  {label}: not available ({err})")
    return lines


def print_summary(ctx: StageContext, file: TextIO | None = None) -> None:
    """Print `summary_lines` (to stdout by default)."""
    print("\n".join(summary_lines(ctx)), file=file or sys.stdout, flush=True)
