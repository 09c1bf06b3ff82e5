"""Render the report's collected data (`cvo_spark.report.data.collect_report`) as one HTML page.

The page is self-contained: inline CSS, inline SVG charts, and one tiny inline script
that only records whether the charts rendered (for the headless-browser test). It opens
from a file with no server and no network. A section whose table is missing shows the
`Unavailable` message ("not available (stage X has not run)") and the rest still renders.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cvo_spark.report.charts import (
    CSS,
    RENDER_CHECK_JS,
    bar_chart,
    esc,
    fmt_int,
    fmt_money,
    fmt_num,
    fmt_pct,
    fmt_pp,
    interval_chart,
    kpi_cards,
    line_chart,
    quadrant_chart,
    records_table,
)
from cvo_spark.report.charts import (
    Column as TableColumn,
)
from cvo_spark.report.data import ROI_CONVERSION_RATES, Unavailable
from cvo_spark.segments.rules import QUADRANT_INCUBATOR, QUADRANT_RISK, QUADRANT_SNIPER, QUADRANT_STAR

#: (anchor, title) of every section, in page order.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Executive summary"),
    ("tiers", "Value tiers and personas"),
    ("k-selection", "Choosing the number of personas (K-Means)"),
    ("personas", "Persona profiles and recommended tactics"),
    ("matrix", "Strategic matrix"),
    ("b2b", "B2B revenue concentration"),
    ("models", "Model quality"),
    ("offers", "Top opportunities"),
    ("roi", "ROI scenarios"),
    ("campaigns", "Campaign uplift"),
    ("quality", "Data quality"),
    ("audit", "Run audit"),
)

#: Metrics the model table shows, in order; the rest (counts, interval ends) stay in MLflow.
KEY_METRICS = (
    "roc_auc", "pr_auc", "lift_top_decile", "capture_top_decile", "brier", "accuracy", "base_rate",
    "mae", "rmse", "r2", "wape",
    "qini_coefficient", "qini_gain_over_propensity", "uplift_top10", "uplift_top20", "uplift_top30",
)  # fmt: skip
#: Series of the Qini chart: curve name in model_curves -> legend.
QINI_SERIES = {
    "qini_t_learner": "uplift model",
    "qini_propensity_if_contacted": "ranked by propensity",
    "qini_random": "random",
}

#: Centroid features shown in persona profiles, with how to format each.
CENTROID_FORMATS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("arpu_3m", "ARPU (3m)", fmt_money),
    ("voice_share", "voice", fmt_pct),
    ("sms_share", "SMS", fmt_pct),
    ("data_share", "data", fmt_pct),
    ("digital_share", "digital", fmt_pct),
    ("data_mb_3m", "data MB (3m)", fmt_int),
    ("voice_minutes_3m", "voice min (3m)", fmt_int),
    ("recharge_count_3m", "recharges (3m)", lambda v: fmt_num(v, 1)),
)

_PCT_AXIS: dict[str, Any] = {"yfmt": lambda v: f"{v * 100:.0f}%", "value_fmt": fmt_pct}


def _na(value: Unavailable) -> str:
    return f'<p class="na">{esc(value.message)}</p>'


def _note(text: str) -> str:
    return f"<p class='note'>{text}</p>"


def _charts(*svgs: str) -> str:
    return f'<div class="charts">{"".join(svgs)}</div>'


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


# --------------------------------------------------------------------------- segments
def section_summary(d: dict) -> str:
    h, hv, clv = d["headline"], d["high_value"], d["clv"]
    if isinstance(h, Unavailable):
        return _na(h)
    cards = [
        ("Active subscribers", fmt_int(h.get("active_subscribers")), f"active at the end of {d['as_of']}"),
        (
            "Revenue (3 months)",
            fmt_money(h.get("revenue_3m")),
            f"last month {fmt_money(h.get('revenue_1m'))}",
        ),
        ("ARPU (monthly)", fmt_money(h.get("arpu_3m")), "mean of each subscriber's 3-month monthly average"),
    ]
    if isinstance(clv, Unavailable):
        cards.append(("Avg predicted CLV (12m)", "n/a", clv.message))
    else:
        note = f"over {fmt_int(clv.get('scored'))} scored subscribers"
        cards.append(("Avg predicted CLV (12m)", fmt_money(clv.get("clv_12m_mean")), note))
    if isinstance(hv, Unavailable):
        cards.append(("High Value share of revenue", "n/a", hv.message))
    else:
        note = (
            f"{fmt_int(hv.get('high_value_subscribers'))} subscribers "
            f"({fmt_pct(hv.get('high_value_subscriber_share'))} of the base)"
        )
        cards.append(("High Value share of revenue", fmt_pct(hv.get("high_value_revenue_share")), note))
    return kpi_cards(cards)


def _group_table(rows: list[dict], key: str, label: str) -> str:
    return records_table(rows, [
        (label, key, None),
        ("Subscribers", "subscribers", fmt_int),
        ("Share of subscribers", "subscriber_share", fmt_pct),
        ("Revenue (3m)", "revenue_3m", fmt_money),
        ("Share of revenue", "revenue_share", fmt_pct),
        ("Mean ARPU", "arpu_3m_mean", fmt_money),
    ])  # fmt: skip


def section_tiers(d: dict) -> str:
    out = ["<h3>Value tiers</h3>"]
    tiers, life, personas, cross = d["tiers"], d["lifecycle"], d["personas"], d["persona_tiers"]
    if isinstance(tiers, Unavailable):
        out.append(_na(tiers))
    else:
        names = [r["value_tier"] for r in tiers]
        out.append(_group_table(tiers, "value_tier", "Value tier"))
        out.append(_charts(
            bar_chart(names, [r["revenue_share"] or 0.0 for r in tiers],
                      "Share of 3-month revenue by value tier",
                      "Value tier", "Share of revenue (%)", **_PCT_AXIS),
            bar_chart(names, [r["subscribers"] for r in tiers], "Subscribers by value tier", "Value tier",
                      "Subscribers (count)", value_fmt=fmt_int),
        ))  # fmt: skip
    if not isinstance(life, Unavailable):
        out.append("<h3>Lifecycle</h3>" + _group_table(life, "lifecycle", "Lifecycle"))
    out.append("<h3>Personas</h3>")
    if isinstance(personas, Unavailable):
        out.append(_na(personas))
        return "".join(out)
    out.append(records_table(personas, [
        ("Persona", "persona_name", None),
        ("Subscribers", "subscribers", fmt_int),
        ("Revenue (3m)", "revenue_3m", fmt_money),
        ("Share of revenue", "revenue_share", fmt_pct),
        ("Mean ARPU", "arpu_3m_mean", fmt_money),
    ]))  # fmt: skip
    out.append(_charts(bar_chart(
        [p["persona_name"] for p in personas], [p["revenue_share"] or 0.0 for p in personas],
        "Share of 3-month revenue by persona", "Persona", "Share of revenue (%)", width=640, **_PCT_AXIS,
    )))  # fmt: skip
    if not isinstance(cross, Unavailable) and cross:
        out.append("<h3>Personas by value tier</h3>" + records_table(cross, [
            ("Persona", "persona_name", None),
            ("Value tier", "value_tier", None),
            ("Subscribers", "subscribers", fmt_int),
            ("Share of revenue", "revenue_share", fmt_pct),
        ]))  # fmt: skip
    return "".join(out)


def section_k_selection(d: dict) -> str:
    ks = d["k_selection"]
    if isinstance(ks, Unavailable):
        return _na(ks)
    chosen = next((r["k"] for r in ks if r.get("chosen")), None)
    note = ""
    if chosen is not None:
        note = (
            f"<p>Chosen k = <b>{chosen}</b> (dashed line): the k with the best silhouette. Silhouette runs "
            "from -1 to 1; higher means subscribers sit closer to their own persona than to the next one. "
            "WCSS (within-cluster sum of squares, on standardised features) always falls as k grows; look "
            "for the elbow.</p>"
        )
    common: dict[str, Any] = {"highlight_x": chosen, "xfmt": lambda v: f"{v:g}", "integer_x": True}
    charts = _charts(
        line_chart({"silhouette": [(r["k"], r["silhouette"]) for r in ks]},
                   "Silhouette by number of personas",
                   "Number of personas k", "Silhouette (-1 to 1)", yfmt=lambda v: f"{v:g}", **common),
        line_chart({"WCSS": [(r["k"], r["wcss"]) for r in ks]}, "Within-cluster sum of squares by k",
                   "Number of personas k", "WCSS (standardised units)", y_from_zero=True, **common),
    )  # fmt: skip
    table = records_table(ks, [
        ("k", "k", str),
        ("Silhouette", "silhouette", lambda v: fmt_num(v, 3)),
        ("WCSS", "wcss", lambda v: fmt_num(v, 1)),
        ("Chosen", lambda r: "yes" if r.get("chosen") else "", None),
    ])  # fmt: skip
    return note + charts + table


def _centroid_text(centroid: dict | None) -> str:
    if not centroid:
        return ""
    return "; ".join(
        f"{label} {fmt(centroid[key])}" for key, label, fmt in CENTROID_FORMATS if key in centroid
    )


def section_personas(d: dict) -> str:
    personas = d["personas"]
    if isinstance(personas, Unavailable):
        return _na(personas)
    note = _note("Centroids are in original units (the persona's average subscriber).")
    return note + records_table(personas, [
        ("Persona", "persona_name", None),
        ("Subscribers", "subscribers", fmt_int),
        ("Share of revenue", "revenue_share", fmt_pct),
        ("Typical profile", lambda p: _centroid_text(p.get("centroid")), None),
        ("Recommended tactics", lambda p: " · ".join(p.get("tactics") or []) or "—", None),
    ])  # fmt: skip


#: What each strategic-matrix quadrant is and what to do with it (the legend under the chart);
#: the levels are those of `segments.rules.quadrant` (see `charts.QUADRANT_LEVELS`).
QUADRANT_LEGEND: dict[str, str] = {
    QUADRANT_STAR: "high revenue, high usage (retain, reward)",
    QUADRANT_RISK: "high revenue, low usage (targeted usage stimulation before revenue follows usage down)",
    QUADRANT_SNIPER: "low revenue, high usage (monetise: targeted paid packs and bundles)",
    QUADRANT_INCUBATOR: "low revenue, low usage (low-cost nurture or retention, or let go)",
}


def section_matrix(d: dict) -> str:
    m = d["matrix"]
    if isinstance(m, Unavailable):
        return _na(m)
    cells = {
        r["matrix_quadrant"]: (
            f"{fmt_int(r['subscribers'])} subscriber{'' if r['subscribers'] == 1 else 's'}",
            f"{fmt_pct(r['revenue_share'])} of revenue, ARPU {fmt_money(r['arpu_3m_mean'])}",
        )
        for r in m
        if r["matrix_quadrant"]
    }
    text = _note(" ".join(f"{name}: {QUADRANT_LEGEND[name]}." for name in QUADRANT_LEGEND))
    chart = quadrant_chart(
        cells, "Strategic matrix: revenue vs usage", "Usage (low → high)", "Revenue (low → high)"
    )
    return text + _charts(chart) + _group_table(m, "matrix_quadrant", "Quadrant")


#: How each B2B concentration metric is labelled and formatted.
CONCENTRATION_LABELS: dict[str, tuple[str, Callable[[Any], str]]] = {
    "top3_share": ("Top 3 accounts' share of revenue", fmt_pct),
    "top15pct_share": ("Top 15% of accounts' share of revenue", fmt_pct),
    "gini": ("Gini coefficient (0 = equal, 1 = one account has all)", lambda v: fmt_num(v, 3)),
    # b2b writes HHI as a sum of squared shares (1/n = equal, 1 = one account); the antitrust
    # convention (0-10,000) multiplies it by 10,000, which is how people quote it.
    "hhi": (
        "Herfindahl-Hirschman index (0-10,000; above 2,500 = highly concentrated)",
        lambda v: fmt_int(v * 10_000 if v is not None else None),
    ),
}


def section_b2b(d: dict) -> str:
    conc, lorenz, prof = d["b2b_concentration"], d["b2b_lorenz"], d["b2b_profiles"]
    if all(isinstance(x, Unavailable) for x in (conc, lorenz, prof)):
        return _na(conc)
    out = []
    if isinstance(conc, Unavailable):
        out.append(_na(conc))
    else:
        cards = []
        for r in conc:
            label, fmt = CONCENTRATION_LABELS.get(r["metric"], (r["metric"], fmt_num))
            cards.append((label, fmt(r["value"]), ""))
        out.append(kpi_cards(cards))
    if isinstance(lorenz, Unavailable):
        out.append(_na(lorenz))
    else:
        pts = [(r["account_share"], r["revenue_share"]) for r in lorenz]
        if pts and pts[0] != (0.0, 0.0):
            pts = [(0.0, 0.0)] + pts

        def pct(v: float) -> str:
            return f"{v * 100:.0f}%"

        out.append(_charts(line_chart(
            {"Lorenz curve": pts, "Perfect equality": [(0.0, 0.0), (1.0, 1.0)]},
            "B2B Lorenz curve of revenue",
            "Cumulative share of accounts (%, smallest first)", "Cumulative share of revenue (%)",
            xfmt=pct, yfmt=pct, dashed=("Perfect equality",),
        )))  # fmt: skip
    if not isinstance(prof, Unavailable):
        out.append("<h3>B2B clusters</h3>" + records_table(prof, [
            ("Cluster", "cluster_name", None),
            ("Accounts", "accounts", fmt_int),
            ("Share of revenue", "revenue_share", fmt_pct),
            ("ARPU", "arpu", fmt_money),
            ("AOV", "aov", fmt_money),
            ("Delivery rate", "delivery_rate", fmt_pct),
            ("Failure rate", "failure_rate", fmt_pct),
            ("Revenue trend", "revenue_trend_pct", fmt_pct),
        ]))  # fmt: skip
    return "".join(out)


# --------------------------------------------------------------------------- models and offers
def metric_flag(metric: str, value) -> str:
    """A warning for a number that must not be read as a success (invariant 7)."""
    if not _finite(value):
        return ""
    if metric == "roc_auc" and value >= 0.99:
        return "Too good to be true: an out-of-time AUC this high is a leak to investigate, not a result."
    if metric == "accuracy" and value >= 0.999:
        return "100% accuracy is a leak to investigate, not a result."
    if metric == "roc_auc" and value < 0.55:
        return "About chance (0.5 = a coin flip): this model does not rank subscribers."
    return ""


def _metric_text(r: dict) -> str:
    flag = metric_flag(r["metric"], r["value"])
    return (f"⚠ {flag} " if flag else "") + (r.get("reading") or "")


def _curve_charts(curves: list[dict]) -> str:
    def pct(v: float) -> str:
        return f"{v * 100:.0f}%"

    charts = []
    for target in sorted({c["target"] for c in curves}):
        lift = [(c["x"], c["y"]) for c in curves if c["target"] == target and c["curve"] == "lift"]
        cal = [(c["x"], c["y"]) for c in curves if c["target"] == target and c["curve"] == "calibration"]
        if lift:
            charts.append(line_chart(
                {"model": lift, "random targeting": [(0.0, 1.0), (1.0, 1.0)]}, f"Cumulative lift: {target}",
                "Share of subscribers targeted, highest scores first (%)", "Lift over random (×)",
                xfmt=pct, yfmt=lambda v: f"{v:.1f}×", dashed=("random targeting",), y_from_zero=True,
                width=440,
            ))  # fmt: skip
        qini = {
            label: [(c["x"], c["y"]) for c in curves if c["target"] == target and c["curve"] == name]
            for name, label in QINI_SERIES.items()
        }
        if any(qini.values()):
            charts.append(line_chart(
                {k: v for k, v in qini.items() if v}, f"Qini curve: {target}",
                "Share of contacts targeted, highest scores first (%)", "Incremental acceptances",
                xfmt=pct, yfmt=lambda v: f"{v:,.0f}", dashed=("random",), width=440,
            ))  # fmt: skip
        if cal:
            charts.append(line_chart(
                {"model": cal, "perfect calibration": [(0.0, 0.0), (1.0, 1.0)]}, f"Calibration: {target}",
                "Predicted probability (%)", "Observed rate (%)", xfmt=pct, yfmt=pct,
                dashed=("perfect calibration",), width=440,
            ))  # fmt: skip
    return _charts(*charts)


def section_models(d: dict) -> str:
    ev, curves = d["evaluations"], d["curves"]
    if isinstance(ev, Unavailable):
        return _na(ev)
    guide = _note(
        "All numbers are on an out-of-time holdout: months the model never saw. ROC-AUC 0.5 is chance and "
        "1.0 perfect ranking; an out-of-time AUC near 1.0, or 100% accuracy, is a leak to investigate, not a "
        "result. Each model is compared with a simple baseline; a model that does not beat it adds nothing. "
        "Lift 1.0 = no better than random targeting. Uplift: what contact adds over not contacting, "
        "judged on the last weeks of logged contacts (treatment vs control) by the Qini curve, the "
        "incremental acceptances among the contacts ranked first; the Qini coefficient is the area "
        "between that curve and "
        "random targeting per treated contact (0 = random; its interval is a bootstrap over subscribers)."
    )
    rows = sorted(
        (r for r in ev if r["metric"] in KEY_METRICS),
        key=lambda r: (r["target"], KEY_METRICS.index(r["metric"]), r["model_kind"]),
    )
    money = ("mae", "rmse")
    table = records_table(rows, [
        ("Target", "target", None),
        ("Model", "model_kind", None),
        ("Metric", "metric", None),
        ("Value", lambda r: fmt_num(r["value"], 0 if r["metric"] in money else 3), str),
        ("What it means", _metric_text, None),
    ])  # fmt: skip
    trained = ", ".join(sorted({str(r["trained_at"])[:19] for r in ev}))
    out = [guide, _note(f"Training run(s): {esc(trained)}"), table, _gate_table(ev)]
    out.append(_na(curves) if isinstance(curves, Unavailable) else _curve_charts(curves))
    return "".join(out)


def _gate_table(ev: list[dict]) -> str:
    """Which trained version scores subscribers, and the champion gate's reason (metric 'promoted').

    The reason is the train stage's own (`cvo_spark.models.champion_gate`), so the report
    and the registry cannot disagree on whether a model may rank subscribers.
    """
    rows = sorted((r for r in ev if r["metric"] == "promoted"), key=lambda r: r["target"])
    if not rows:
        return ""
    columns: list[TableColumn] = [
        ("Target", "target", None),
        ("Version", "model_version", None),
        ("Champion", lambda r: "yes" if r["value"] == 1.0 else "no", None),
        ("Why", "reading", None),
    ]
    return (
        "<h3>Which model scores subscribers</h3>"
        + _note(
            "A trained version becomes champion, and scores subscribers, only when the report would let it "
            "rank (better than chance, interval above 0.50), it beats its baseline on the same rows, and any "
            "gain over the current champion has a paired 95% interval above 0. "
            "Otherwise the current champion "
            "stays; with no champion the baseline scores, and the score run's checks say so."
        )
        + records_table(rows, columns)
    )


def section_offers(d: dict) -> str:
    top, summary = d["top_offers"], d["offer_summary"]
    if isinstance(top, Unavailable):
        return _na(top)
    out = [
        _note(
            "Subscribers are shown by a pseudonymous reference (first 8 hex characters of the SHA-256 of "
            "the id), never by their raw id."
        ),
        records_table(top, [
            ("Subscriber ref", "subscriber_ref", None),
            ("Offer", "offer_id", None),
            ("Channel", "channel", None),
            ("Rank", "rank", str),
            ("Propensity", "propensity", fmt_pct),
            ("Expected value", "expected_value", fmt_money),
            ("Why", "reasons", None),
        ]),
    ]  # fmt: skip
    if not isinstance(summary, Unavailable):
        out.append("<h3>Offers published by channel</h3>" + records_table(summary, [
            ("Channel", "channel", None),
            ("Group", "group", None),
            ("Offers", "offers", fmt_int),
            ("Subscribers", "subscribers", fmt_int),
            ("Expected value", "expected_value", fmt_money),
            ("Mean propensity", "propensity_mean", fmt_pct),
        ]))  # fmt: skip
    out.append(_uplift_table(d.get("uplift_by_offer")))
    out.append(_policy_table(d.get("policies"), d.get("as_of")))
    return "".join(out)


def _policy_table(rows, as_of) -> str:
    """Candidate policies judged offline on logged decisions (gold policy_evaluations)."""
    head = "<h3>Policies judged offline, before they go live</h3>"
    if rows is None:
        return ""
    if isinstance(rows, Unavailable):
        return head + _note(
            f"Not evaluated for this date: run <code>cvo evaluate-policy --as-of {as_of}</code> "
            "(after the train stage) to judge candidate policies on the logged decisions."
        )
    text = _note(
        "Incremental margin per contact opportunity over not contacting, estimated from the logged "
        "decisions of the out-of-time evaluation window, each weighted by the probability with which it "
        "was chosen. Doubly robust (DR) corrects the uplift model's own estimate by what the log saw; its "
        "interval is a bootstrap over subscribers. IPS and SNIPS use the weights alone. The effective "
        "sample size says how many logged decisions the estimate really rests on; a policy's contacts on "
        "actions the log never tested cannot be judged and are counted. When the smaller of the log's "
        "and the control arm's effective sample is under the configured minimum, the interval is flagged "
        "unreliable: a policy that always picks one of many actions matches few logged decisions."
    )
    return head + text + records_table(rows, [
        ("Policy", "policy", None),
        ("DR [interval]", _with_interval(fmt_money, "value", "ci_low", "ci_high"), str),
        ("IPS", "ips", fmt_money),
        ("SNIPS", "snips", fmt_money),
        ("Contact share", "contact_share", fmt_pct),
        ("Contact cost", "contact_cost", fmt_money),
        ("Net of cost (DR)", "net_value", fmt_money),
        ("Effective sample", "effective_sample_size", fmt_int),
        ("Untested share", "unsupported_share", fmt_pct),
        ("Support", _support_note, None),
    ])  # fmt: skip


def _support_note(r: dict) -> str:
    """'interval unreliable: rests on N effective decisions' for a low-support row, else ''
    (also for rows written before the flag existed)."""
    if not r.get("low_support"):
        return ""
    both = (r.get("effective_sample_size"), r.get("control_effective_sample_size"))
    ess = [float(v) for v in both if v is not None and _finite(v)]
    return (
        f"interval unreliable: rests on {fmt_int(min(ess))} effective decisions"
        if ess
        else "interval unreliable"
    )


def _uplift_table(rows) -> str:
    """What contact adds per offer and channel (gold offer_scores), or why it is missing."""
    head = "<h3>What contact adds, per offer and channel (uplift model)</h3>"
    if rows is None:
        return ""
    if isinstance(rows, Unavailable):
        # score writes offer_scores only with an uplift champion; "stage not run" would mislead
        return head + _note(
            "Not available for this date: no uplift model is champion yet (the train run's checks say why: "
            "too few control contacts to learn from, or no model shown better than random on its Qini)."
        )
    text = _note(
        "Uplift = the accept probability if contacted minus if not contacted, from the uplift model "
        "(offer_scores), averaged over every subscriber scored. A negative uplift means the contact puts "
        'people off ("sleeping dogs"); a high accept rate without contact with little uplift means they '
        "would buy anyway. Incremental margin = uplift x (price - unit cost), "
        "before incentives and contact costs."
    )
    return head + text + records_table(rows, [
        ("Offer", "offer_id", None),
        ("Channel", "channel", None),
        ("Subscribers", "subscribers", fmt_int),
        ("If contacted", "p_if_contacted", fmt_pct),
        ("If not", "p_if_not", fmt_pct),
        ("Uplift", "uplift", fmt_pp),
        ("Contact lowers acceptance", "negative_share", fmt_pct),
        ("Incremental margin", "incremental_margin", fmt_money),
    ])  # fmt: skip


def _count(value) -> str:
    # Expected conversions are fractional; whole numbers read better once they are large.
    return fmt_int(value) if not _finite(value) or abs(value) >= 100 else fmt_num(value, 1)


def _scenario(r: dict) -> str:
    return "Model expectation" if r["scenario"] == "model" else f"{r['scenario']} conversion"


def section_roi(d: dict) -> str:
    roi = d["roi"]
    if isinstance(roi, Unavailable):
        return _na(roi)
    rates = ", ".join(fmt_pct(r, 0) for r in ROI_CONVERSION_RATES)
    text = _note(
        f"Each treatment subscriber counts once, with their best offer. At a conversion rate of {rates}, "
        "that share of them accepts: revenue is the offer prices they pay; expected return is their value if "
        "accepted (expected value ÷ propensity = the offer's margin after its unit cost, plus the saved "
        "lifetime value on retention offers). The last row is the models' own expectation (the sum of "
        "expected values) and the conversion rate it implies."
    )
    table = records_table(roi, [
        ("Scenario", _scenario, None),
        ("Conversion rate", "conversion_rate", fmt_pct),
        ("Subscribers targeted", "subscribers", fmt_int),
        ("Conversions", "conversions", _count),
        ("Revenue", "revenue", fmt_money),
        ("Expected return", "expected_return", fmt_money),
    ])  # fmt: skip
    labels = ["Model" if r["scenario"] == "model" else r["scenario"] for r in roi]
    chart = bar_chart(
        labels, [r["expected_return"] or 0.0 for r in roi], "Expected return by conversion scenario",
        "Conversion scenario", "Expected return (Rp)", value_fmt=fmt_money,
    )  # fmt: skip
    return text + table + _charts(chart)


def _with_interval(value: Callable[[Any], str], mid: str, low: str, high: str) -> Callable[[dict], str]:
    return lambda r: f"{value(r.get(mid))} [{value(r.get(low))}, {value(r.get(high))}]"


def _pp_or_none(v):
    return v * 100 if _finite(v) else None


def section_campaigns(d: dict) -> str:
    camp = d["campaigns"]
    if isinstance(camp, Unavailable):
        return _na(camp)
    text = _note(
        "Uplift = accept rate of the treatment group minus the control group, with a 95% interval; an "
        "interval that crosses 0 has not shown an effect. SRM flags a treatment/control split that differs "
        "from the plan (a broken randomisation)."
    )
    table = records_table(camp, [
        ("Period", "period", None),
        ("Offer", "offer_id", None),
        ("Channel", "channel", None),
        ("Treated", "contacted_treatment", fmt_int),
        ("Control", "contacted_control", fmt_int),
        ("Accept (T)", "accept_rate_treatment", fmt_pct),
        ("Accept (C)", "accept_rate_control", fmt_pct),
        ("Uplift [95% CI]", _with_interval(fmt_pp, "uplift", "uplift_ci_low", "uplift_ci_high"), str),
        ("Incremental revenue [95% CI]", _with_interval(fmt_money, "incremental_revenue",
                                                        "incremental_revenue_ci_low",
                                                        "incremental_revenue_ci_high"), str),
        ("Split", lambda r: "⚠ SRM" if r.get("srm_flag") else "ok", None),
    ])  # fmt: skip
    chart = interval_chart(
        [f"{r['offer_id']} · {r['channel']} · {r['period']}" for r in camp],
        [_pp_or_none(r.get("uplift")) for r in camp],
        [_pp_or_none(r.get("uplift_ci_low")) for r in camp],
        [_pp_or_none(r.get("uplift_ci_high")) for r in camp],
        "Uplift in accept rate, treatment vs control (95% CI)", "Uplift (percentage points)",
        "Campaign",
        xfmt=lambda v: f"{v:+.1f}",
    )  # fmt: skip
    return text + table + _charts(chart)


# --------------------------------------------------------------------------- operations
def section_quality(d: dict) -> str:
    q = d["quarantine"]
    if isinstance(q, Unavailable):
        return _na(q)
    if not q:
        return "<p class='ok'>No input row was rejected.</p>"
    total = sum(r["rows"] for r in q)
    return (
        f"<p>{fmt_int(total)} input rows were rejected and kept in the quarantine table with their reason "
        "(none is silently dropped).</p>"
        + records_table(q, [("Source table", "source_table", None), ("Reason", "reason", None),
                            ("Rows", "rows", fmt_int)])
    )  # fmt: skip


def _seconds(r: dict):
    if r.get("finished_at") and r.get("started_at"):
        return (r["finished_at"] - r["started_at"]).total_seconds()
    return None


def _pairs(mapping: dict | None, pattern: str, fmt: Callable[[Any], str]) -> str:
    return ", ".join(pattern.format(k, fmt(v)) for k, v in sorted((mapping or {}).items()))


def section_audit(d: dict) -> str:
    runs = d["runs"]
    if isinstance(runs, Unavailable):
        return _na(runs)
    return records_table(runs, [
        ("Stage", "stage", None),
        ("Status", lambda r: r["status"] if r["status"] == "succeeded" else f"⚠ {r['status']}", None),
        ("Started (UTC)", lambda r: str(r["started_at"])[:19], None),
        ("Seconds", _seconds, lambda v: fmt_num(v, 1)),
        ("Row counts", lambda r: _pairs(r.get("row_counts"), "{}={}", fmt_int), None),
        ("Checks", lambda r: _pairs(r.get("checks"), "{}: {}", str), None),
        ("Message", lambda r: (r.get("message") or "")[:300], None),
        ("Run id", "run_id", None),
    ])  # fmt: skip


RENDERERS: dict[str, Callable[[dict], str]] = {
    "summary": section_summary,
    "tiers": section_tiers,
    "k-selection": section_k_selection,
    "personas": section_personas,
    "matrix": section_matrix,
    "b2b": section_b2b,
    "models": section_models,
    "offers": section_offers,
    "roi": section_roi,
    "campaigns": section_campaigns,
    "quality": section_quality,
    "audit": section_audit,
}


def render_report(data: dict, title: str = "Customer Value Optimizer report") -> str:
    """The whole page as one string (UTF-8 HTML5)."""
    nav = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t in SECTIONS)
    body = "".join(f'<section id="{a}"><h2>{esc(t)}</h2>{RENDERERS[a](data)}</section>' for a, t in SECTIONS)
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    as_of = esc(data["as_of"])
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(title)} — as of {as_of}</title><style>{CSS}</style><script>{RENDER_CHECK_JS}</script>"
        f"</head><body><header><h1>{esc(title)}</h1><p>As of {as_of} · money in Rupiah (Rp)</p></header>"
        f"<nav>{nav}</nav><main>{body}</main>"
        f"<footer>Generated {made} by cvo_spark. Subscriber ids are never shown; references are truncated "
        "SHA-256 hashes.</footer></body></html>"
    )
