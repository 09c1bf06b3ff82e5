"""The report on small hand-built gold tables: sections, hand-computed figures, privacy, gaps.

`build_gold_lake` is reused by the browser and notebook tests.
"""

from __future__ import annotations

import hashlib
import re
from datetime import date, datetime
from pathlib import Path

import pytest
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from cvo_spark.core.config import parse_config
from cvo_spark.core.io import TableStore
from cvo_spark.core.schemas import OUTPUT_SCHEMAS
from cvo_spark.core.stage import StageContext
from cvo_spark.report.charts import _wrap, fmt_int, fmt_money, fmt_pct, fmt_pp, nice_ticks
from cvo_spark.report.data import Unavailable, collect_report, roi_scenarios, tier_summary
from cvo_spark.report.html import SECTIONS, render_report

AS_OF = date(2026, 6, 30)
IDS = ["6281100000001", "6281100000002", "6281100000003", "6281100000004"]
S, D, L, INT, B = StringType(), DoubleType(), LongType(), IntegerType(), BooleanType()
DT, TS = DateType(), TimestampType()


def _schema(*fields) -> StructType:
    return StructType([StructField(n, t) for n, t in fields])


def ref(subscriber_id: str) -> str:
    return hashlib.sha256(subscriber_id.encode()).hexdigest()[:8]


def build_gold_lake(
    spark, lake: Path, skip: tuple[str, ...] = ("campaign_results", "b2b_profiles")
) -> TableStore:
    """A tiny gold layer for AS_OF. Totals (by hand): revenue_3m 1,234,567; High Value (id 1) 900,000."""
    store = TableStore(spark, parse_config({"lake": str(lake)}))
    t0 = datetime(2026, 6, 30, 23, 0, 0)

    def write(name, rows, schema, partitioned=True):
        if name in skip:
            return
        df = spark.createDataFrame(rows, schema)
        if partitioned:
            store.overwrite_partition(df, "gold", name, AS_OF)
        else:
            store.append(df, "gold", name)

    write(
        "features",
        [
            (IDS[0], AS_OF, 300_000.0, 900_000.0, 300_000.0),
            (IDS[1], AS_OF, 70_000.0, 200_000.0, 200_000.0 / 3),
            (IDS[2], AS_OF, 0.0, 0.0, 0.0),
            (IDS[3], AS_OF, 34_567.0, 134_567.0, 134_567.0 / 3),
        ],
        _schema(("subscriber_id", S), ("as_of", DT), ("revenue_1m", D), ("revenue_3m", D), ("arpu_3m", D)),
    )
    write(
        "segments",
        [
            (IDS[0], AS_OF, "Priority", True, "base", 0, "Digital Active", "Star", 5, 5, 5, "555"),
            (IDS[1], AS_OF, "Gold", False, "base", 1, "Legacy Active", "Sniper Zone", 4, 3, 4, "434"),
            (IDS[2], AS_OF, "Mass", False, "new", 1, "Legacy Active", "Risk Area", 1, 1, 1, "111"),
            (IDS[3], AS_OF, "Mass", False, "base", 0, "Digital Active", "Incubator", 3, 2, 3, "323"),
        ],
        _schema(
            ("subscriber_id", S),
            ("as_of", DT),
            ("value_tier", S),
            ("is_high_value", B),
            ("lifecycle", S),
            ("persona_id", INT),
            ("persona_name", S),
            ("matrix_quadrant", S),
            ("r_score", INT),
            ("f_score", INT),
            ("m_score", INT),
            ("rfm_score", S),
        ),
    )
    write(
        "segment_profiles",
        [
            (
                AS_OF,
                0,
                "Digital Active",
                "ALL",
                2,
                1_034_567.0,
                1_034_567.0 / 1_234_567,
                172_427.8,
                {"arpu_3m": 172_427.8, "digital_share": 0.41, "data_mb_3m": 5_120.0},
                ["bundle streaming", "app-first offers"],
            ),
            (
                AS_OF,
                1,
                "Legacy Active",
                "ALL",
                2,
                200_000.0,
                200_000.0 / 1_234_567,
                33_333.3,
                {"arpu_3m": 33_333.3, "voice_share": 0.62},
                ["voice bundles"],
            ),
            (AS_OF, 0, "Digital Active", "Priority", 1, 900_000.0, 900_000.0 / 1_234_567, 300_000.0, {}, []),
        ],
        _schema(
            ("as_of", DT),
            ("persona_id", INT),
            ("persona_name", S),
            ("value_tier", S),
            ("subscribers", L),
            ("revenue_3m", D),
            ("revenue_share", D),
            ("arpu_3m_mean", D),
            ("centroid", MapType(S, D)),
            ("tactics", ArrayType(S)),
        ),
    )
    write(
        "persona_k_selection",
        [
            (AS_OF, 2, 0.41, 120.0, False),
            (AS_OF, 3, 0.52, 80.0, True),
            (AS_OF, 4, 0.47, 65.0, False),
        ],
        _schema(("as_of", DT), ("k", INT), ("silhouette", D), ("wcss", D), ("chosen", B)),
    )
    write(
        "scores",
        [
            (IDS[0], AS_OF, 1_000_000.0),
            (IDS[1], AS_OF, 500_000.0),
            (IDS[2], AS_OF, None),
            (IDS[3], AS_OF, 200_000.0),
        ],
        _schema(("subscriber_id", S), ("as_of", DT), ("clv_12m", D)),
    )
    write(
        "b2b_concentration",
        [
            (AS_OF, "top3_share", 0.615),
            (AS_OF, "top15pct_share", 0.48),
            (AS_OF, "gini", 0.5321),
            (AS_OF, "hhi", 0.1834),
        ],
        _schema(("as_of", DT), ("metric", S), ("value", D)),
    )
    write(
        "b2b_lorenz",
        [(AS_OF, x / 4, y) for x, y in ((1, 0.05), (2, 0.15), (3, 0.385), (4, 1.0))],
        _schema(("as_of", DT), ("account_share", D), ("revenue_share", D)),
    )
    CHURN_GATE = (
        "not promoted: ROC-AUC gain over champion v1 +0.004 (paired 95% CI -0.010 to +0.018) includes 0"
    )
    ev_schema = _schema(
        ("trained_at", TS),
        ("as_of", DT),
        ("target", S),
        ("model_kind", S),
        ("metric", S),
        ("value", D),
        ("model_version", S),
        ("mlflow_run_id", S),
        ("reading", S),
    )
    write(
        "model_evaluations",
        [
            (t0, AS_OF, "upsell", "gbt", "roc_auc", 0.781, "3", "r1", "ranks well above chance"),
            (t0, AS_OF, "upsell", "baseline", "roc_auc", 0.604, "3", "r1", "baseline"),
            (t0, AS_OF, "churn", "gbt", "roc_auc", 0.995, "2", "r2", "near perfect"),
            (t0, AS_OF, "churn", "gbt", "accuracy", 1.0, "2", "r2", ""),
            # The champion gate's verdicts, as train records them.
            (t0, AS_OF, "upsell", "gbt", "promoted", 1.0, "3", "r1", "champion: first qualifying version"),
            (t0, AS_OF, "churn", "gbt", "promoted", 0.0, "2", "r2", CHURN_GATE),
            (t0, AS_OF, "clv", "bgnbd", "mae", 12_345.6, "1", "r3", "off by this much on average"),
            # An older training run must not show.
            (datetime(2026, 5, 1), date(2026, 5, 1), "upsell", "gbt", "roc_auc", 0.5, "1", "r0", "OLD RUN"),
        ],
        ev_schema,
        partitioned=False,
    )
    write(
        "model_curves",
        [(t0, AS_OF, "upsell", "lift", b, b / 4, 3.0 - 0.5 * b) for b in range(1, 5)]
        + [(t0, AS_OF, "upsell", "calibration", b, b / 5 - 0.1, b / 5 - 0.12) for b in range(1, 5)],
        _schema(
            ("trained_at", TS),
            ("as_of", DT),
            ("target", S),
            ("curve", S),
            ("bucket", INT),
            ("x", D),
            ("y", D),
        ),
        partitioned=False,
    )
    write(
        "offers",
        [
            (
                IDS[0],
                "sms",
                1,
                AS_OF,
                "DATA_BOOST_5GB",
                35_000.0,
                13_000.0,
                0.5,
                ["arpu_3m high"],
                "treatment",
            ),
            (
                IDS[0],
                "app",
                1,
                AS_OF,
                "VOICE_BUNDLE_100",
                15_000.0,
                4_000.0,
                0.4,
                ["voice_share"],
                "treatment",
            ),
            (IDS[1], "sms", 1, AS_OF, "DATA_WEEKLY_2GB", 15_000.0, 2_750.0, 0.25, [], "treatment"),
            (IDS[3], "sms", 1, AS_OF, "DATA_BOOST_5GB", 35_000.0, 5_200.0, 0.2, None, "control"),
        ],
        _schema(
            ("subscriber_id", S),
            ("channel", S),
            ("rank", INT),
            ("as_of", DT),
            ("offer_id", S),
            ("price", D),
            ("expected_value", D),
            ("propensity", D),
            ("reason_codes", ArrayType(S)),
            ("group", S),
        ),
    )
    write(
        "campaign_results",
        [
            (
                AS_OF,
                "DATA_BOOST_5GB",
                "sms",
                "2026-06",
                "ALL",
                900,
                100,
                0.12,
                0.08,
                0.04,
                0.01,
                0.07,
                1_200_000.0,
                300_000.0,
                2_100_000.0,
                0.6,
                False,
            ),
        ],
        _schema(
            ("as_of", DT),
            ("offer_id", S),
            ("channel", S),
            ("period", S),
            ("segment", S),
            ("contacted_treatment", L),
            ("contacted_control", L),
            ("accept_rate_treatment", D),
            ("accept_rate_control", D),
            ("uplift", D),
            ("uplift_ci_low", D),
            ("uplift_ci_high", D),
            ("incremental_revenue", D),
            ("incremental_revenue_ci_low", D),
            ("incremental_revenue_ci_high", D),
            ("srm_p_value", D),
            ("srm_flag", B),
        ),
    )
    write(
        "quarantine",
        [
            ("usage_daily", "negative revenue", '{"x":1}', "run-a", t0, AS_OF),
            ("usage_daily", "negative revenue", '{"x":2}', "run-a", t0, AS_OF),
            ("subscribers", "null key", '{"x":3}', "run-a", t0, AS_OF),
            ("subscribers", "null key", '{"x":4}', "run-x", t0, date(2026, 6, 29)),
        ],
        OUTPUT_SCHEMAS["quarantine"],
        partitioned=False,
    )  # a log of every day: as_of cuts it
    write(
        "runs",
        [
            (
                "run-a",
                "ingest",
                AS_OF,
                "succeeded",
                {"silver_usage_daily": 1_234_567},
                {},
                "",
                t0,
                t0.replace(minute=2),
            ),
            ("run-a", "offers", AS_OF, "refused", {}, {"psi": "0.41 > 0.25"}, "distribution shift", t0, t0),
            ("run-x", "ingest", date(2026, 6, 29), "succeeded", {}, {}, "", t0, t0),
        ],
        OUTPUT_SCHEMAS["runs"],
        partitioned=False,
    )
    return store


@pytest.fixture(scope="module")
def gold_store(spark, tmp_path_factory):
    return build_gold_lake(spark, tmp_path_factory.mktemp("report_lake") / "lake")


@pytest.fixture(scope="module")
def report_data(gold_store):
    return collect_report(gold_store, AS_OF)


@pytest.fixture(scope="module")
def report_html(report_data):
    return render_report(report_data)


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# --------------------------------------------------------------------------- formatting
def test_formatters_write_numbers_for_people():
    assert fmt_money(1_234_567.4) == "Rp 1,234,567"
    assert fmt_money(-5_000) == "-Rp 5,000"
    assert fmt_money(None) == "–" and fmt_money(float("nan")) == "–"
    assert fmt_pct(0.125) == "12.5%"
    assert fmt_pp(0.021) == "+2.1 pp"
    assert fmt_int(12_345.6) == "12,346"
    assert nice_ticks(0, 0.52) == [0.0, 0.2, 0.4, 0.6]  # raw step 0.104 rounds up to 0.2
    assert nice_ticks(0, 1_000_000) == [0.0, 200_000.0, 400_000.0, 600_000.0, 800_000.0, 1_000_000.0]


# --------------------------------------------------------------------------- content
def test_long_category_labels_wrap_onto_two_lines_not_cut():
    assert _wrap("Gold") == ["Gold"]
    assert _wrap("Traditional Active") == ["Traditional", "Active"]
    assert _wrap("Sniper Zone high value customers") == ["Sniper Zone high", "value customers"]
    assert _wrap("Supercalifragilisticexpialidocious") == ["Supercalifragil…"]


def test_every_section_is_present(report_html):
    for anchor, title in SECTIONS:
        assert f'id="{anchor}"' in report_html
        assert title in report_html


def test_executive_summary_figures_computed_by_hand(report_html):
    text = _text(report_html)
    assert "Rp 1,234,567" in text  # 900,000 + 200,000 + 0 + 134,567
    assert "Rp 404,567" in text  # revenue last month
    assert "Rp 102,881" in text  # mean arpu_3m = 1,234,567 / 3 / 4
    assert "Rp 566,667" in text  # mean CLV of 1,000,000, 500,000, 200,000 (None ignored)
    assert "72.9%" in text  # High Value share = 900,000 / 1,234,567


def test_tiers_personas_and_matrix(report_data, report_html):
    tiers = {r["value_tier"]: r for r in report_data["tiers"]}
    assert tiers["Mass"]["subscribers"] == 2
    assert tiers["Mass"]["revenue_share"] == pytest.approx(134_567 / 1_234_567)
    text = _text(report_html)
    assert "10.9%" in text and "16.2%" in text  # Mass and Gold revenue shares
    assert "bundle streaming · app-first offers" in text
    assert "digital 41.0%" in text  # centroid in original units
    quadrants = {r["matrix_quadrant"]: r["subscribers"] for r in report_data["matrix"]}
    assert quadrants == {"Star": 1, "Sniper Zone": 1, "Risk Area": 1, "Incubator": 1}
    assert "Chosen k = <b>3</b>" in report_html


def test_matrix_cells_and_legend_follow_the_quadrant_classifier(spark):
    """Each quadrant sits in the chart cell, and reads in the legend, as `quadrant` classifies it."""
    from pyspark.sql import functions as F

    from cvo_spark.report.charts import quadrant_cell, quadrant_chart
    from cvo_spark.report.html import QUADRANT_LEGEND, section_matrix
    from cvo_spark.segments.rules import quadrant

    levels = spark.createDataFrame(
        [(True, True), (True, False), (False, True), (False, False)],
        "high_revenue boolean, high_usage boolean",
    )
    classified = levels.select(
        "high_revenue",
        "high_usage",
        quadrant(
            F.when(F.col("high_revenue"), 10.0).otherwise(1.0),
            F.when(F.col("high_usage"), 10.0).otherwise(1.0),
            revenue_threshold=5.0,
            usage_threshold=5.0,
        ).alias("name"),
    ).collect()
    assert {r["name"] for r in classified} == set(QUADRANT_LEGEND)
    chart = quadrant_chart({}, "m", "Usage", "Revenue", width=420, height=335)  # cells 165 x 120
    for r in classified:
        column, row = quadrant_cell(r["name"])
        assert column == (1 if r["high_usage"] else 0)  # right = more usage
        assert row == (0 if r["high_revenue"] else 1)  # top = more revenue
        # the SVG draws the name at the centre of that cell:
        # x = 70 + 165 * (col + 0.5), y = 40 + 120 * row + 28
        x, y = 70 + 165 * (column + 0.5), 40 + 120 * row + 28
        assert re.search(rf'<text x="{x:.1f}" y="{y:.1f}"[^>]*>{r["name"]}</text>', chart), r["name"]
        legend = QUADRANT_LEGEND[r["name"]]
        assert legend.startswith(
            f"{'high' if r['high_revenue'] else 'low'} revenue, {'high' if r['high_usage'] else 'low'} usage"
        )
    html = section_matrix({"matrix": []})
    assert "Risk Area: high revenue, low usage" in html and "Sniper Zone: low revenue, high usage" in html
    assert "Incubator: low revenue, low usage" in html


def test_tiers_read_top_tier_first_whatever_their_revenue(spark):
    # Priority earns least here; a tier the ladder does not name ("Legacy") comes last.
    segments = spark.createDataFrame(
        [("a", "Mass"), ("b", "Mass"), ("c", "Gold"), ("d", "Priority"), ("e", "Legacy")],
        "subscriber_id string, value_tier string",
    )
    features = spark.createDataFrame(
        [
            ("a", 300.0, 100.0),
            ("b", 300.0, 100.0),
            ("c", 200.0, 70.0),
            ("d", 100.0, 40.0),
            ("e", 900.0, 300.0),
        ],
        "subscriber_id string, revenue_3m double, arpu_3m double",
    )
    by_revenue = [r["value_tier"] for r in tier_summary(segments, features).collect()]
    assert by_revenue == ["Legacy", "Mass", "Gold", "Priority"]
    ordered = tier_summary(segments, features, ["Priority", "Gold", "Mass"]).collect()
    assert [(r["value_tier"], r["subscribers"]) for r in ordered] == [
        ("Priority", 1), ("Gold", 1), ("Mass", 2), ("Legacy", 1),
    ]  # fmt: skip
    assert ordered[2]["revenue_share"] == pytest.approx(600 / 1800)


def test_models_section_reads_metrics_honestly(report_data, report_html):
    # Only the latest training run at or before as_of shows.
    assert "OLD RUN" not in report_html
    assert {r["target"] for r in report_data["evaluations"]} == {"upsell", "churn", "clv"}
    assert "leak to investigate" in report_html
    assert "100% accuracy is a leak to investigate" in report_html
    assert "Cumulative lift: upsell" in report_html and "Calibration: upsell" in report_html
    assert "0.781" in report_html and "12,346" in report_html
    # The gate's own reason, not a second opinion, says which model scores each target.
    assert "Which model scores subscribers" in report_html
    assert "(paired 95% CI -0.010 to +0.018) includes 0" in report_html


def test_roi_scenarios_by_hand(spark, gold_store, report_data):
    roi = {r["scenario"]: r for r in report_data["roi"]}
    # best treatment offer per subscriber: id1 EV 13,000 / 0.5 = 26,000; id2 2,750 / 0.25 = 11,000
    assert roi["20%"]["subscribers"] == 2
    assert roi["20%"]["expected_return"] == pytest.approx(0.2 * 37_000)
    assert roi["40%"]["revenue"] == pytest.approx(0.4 * 50_000)
    assert roi["model"]["expected_return"] == pytest.approx(15_750)
    assert roi["model"]["conversion_rate"] == pytest.approx(15_750 / 37_000)


def test_roi_and_offers_text(report_html):
    text = _text(report_html)
    assert "Rp 7,400" in text and "Rp 11,100" in text and "Rp 14,800" in text
    assert "42.6%" in text  # implied model conversion


def test_no_raw_subscriber_ids_only_references(report_html):
    for sid in IDS:
        assert sid not in report_html
    assert ref(IDS[0]) in report_html and ref(IDS[1]) in report_html
    assert ref(IDS[3]) not in report_html  # control-group row is not an opportunity


def test_missing_table_says_which_stage(report_data, report_html):
    assert isinstance(report_data["campaigns"], Unavailable)
    assert "not available (stage measure has not run)" in report_html


def test_quality_and_audit_are_for_this_as_of(report_data, report_html):
    counts = {(r["source_table"], r["reason"]): r["rows"] for r in report_data["quarantine"]}
    assert counts == {("usage_daily", "negative revenue"): 2, ("subscribers", "null key"): 1}
    assert [r["stage"] for r in report_data["runs"]] == ["ingest", "offers"]
    assert "⚠ refused" in report_html and "psi: 0.41 &gt; 0.25" in report_html
    assert "silver_usage_daily=1,234,567" in report_html


def test_b2b_concentration_figures(report_html):
    text = _text(report_html)
    assert "61.5%" in text and "48.0%" in text and "0.532" in text
    assert "1,834" in text  # HHI 0.1834 as a sum of squared shares = 1,834 on the 0-10,000 scale


def test_roi_scenarios_skip_zero_propensity(spark):
    schema = _schema(
        ("subscriber_id", S),
        ("group", S),
        ("offer_id", S),
        ("channel", S),
        ("rank", INT),
        ("price", D),
        ("expected_value", D),
        ("propensity", D),
    )
    offers = spark.createDataFrame(
        [
            ("a", "treatment", "X", "sms", 1, 10_000.0, 0.0, 0.0),
            ("b", "treatment", "X", "sms", 1, 20_000.0, 1_000.0, 0.1),
            ("c", "control", "X", "sms", 1, 20_000.0, 9_000.0, 0.9),
        ],
        schema,
    )
    rows = {r["scenario"]: r for r in roi_scenarios(offers, (0.3,)).collect()}
    assert rows["30%"]["subscribers"] == 2
    assert rows["30%"]["expected_return"] == pytest.approx(0.3 * 10_000.0)
    assert rows["30%"]["revenue"] == pytest.approx(0.3 * 30_000.0)


def test_empty_lake_renders_with_every_section_unavailable(spark, tmp_path):
    store = TableStore(spark, parse_config({"lake": str(tmp_path / "empty")}))
    html = render_report(collect_report(store, AS_OF))
    assert html.count('class="na"') >= 10
    assert "not available (stage features has not run)" in html
    assert "not available (no stage has run yet)" in html


def test_report_stage_writes_file_and_summary(spark, gold_store, tmp_path, capsys):
    from cvo_spark.report import stage as report_stage
    from cvo_spark.report.summary import print_summary

    lake = gold_store.config.lake
    ctx = StageContext(spark=spark, config=gold_store.config, store=gold_store, as_of=AS_OF, run_id="t")
    result = report_stage.run(ctx)
    out = Path(lake) / "reports" / "report_2026-06-30.html"
    assert out.exists() and out.stat().st_size == result.row_counts["report_bytes"]
    assert result.checks["missing_tables"] == "b2b_profiles,campaign_results,offer_scores,policy_evaluations"
    print_summary(ctx)
    printed = capsys.readouterr().out
    assert "active subscribers: 4" in printed
    assert "revenue (3 months): Rp 1,234,567" in printed
    assert "72.9% of revenue" in printed
    assert "personas found: 2" in printed
    assert "churn 0.995 (not promoted)" in printed and "upsell 0.781 (champion)" in printed
    assert (
        "average predicted CLV (12 months): Rp 566,667 over 4 scored subscribers" in printed
    )  # nulls skipped
    assert "treatment 3, control 1" in printed
    assert "publish status: refused: distribution shift" in printed


def test_every_chart_has_title_and_axis_labels(report_html):
    charts = re.findall(r'<svg class="chart".*?</svg>', report_html, flags=re.DOTALL)
    assert len(charts) == 10
    for svg in charts:
        title = re.search(r"<title>([^<]+)</title>", svg)
        assert title and f'class="chart-title">{title.group(1)}</text>' in svg
        labels = re.findall(r'class="axis-label"[^>]*>([^<]+)</text>', svg)
        assert len(labels) == 2 and all(labels), title.group(1)
    # Units on the axes: percentages, counts, money.
    assert "Share of revenue (%)" in report_html and "Subscribers (count)" in report_html
    assert "Expected return (Rp)" in report_html


def test_campaign_section_shows_uplift_with_intervals():
    from cvo_spark.report.html import section_campaigns

    row = {
        "period": "2026-06", "offer_id": "DATA_BOOST_5GB", "channel": "sms", "contacted_treatment": 9_000,
        "contacted_control": 1_000, "accept_rate_treatment": 0.12, "accept_rate_control": 0.08,
        "uplift": 0.04, "uplift_ci_low": 0.01, "uplift_ci_high": 0.07, "incremental_revenue": 1_200_000.0,
        "incremental_revenue_ci_low": 300_000.0, "incremental_revenue_ci_high": 2_100_000.0, "srm_flag": True,
    }  # fmt: skip
    html = section_campaigns({"campaigns": [row, dict(row, offer_id="VOICE_BUNDLE_100", uplift=None)]})
    assert "+4.0 pp [+1.0 pp, +7.0 pp]" in html
    assert "Rp 1,200,000 [Rp 300,000, Rp 2,100,000]" in html
    assert "9,000" in html and "12.0%" in html and "⚠ SRM" in html
    svg = re.search(r'<svg class="chart".*?</svg>', html, flags=re.DOTALL).group(0)
    assert len(re.findall(r'class="axis-label"', svg)) == 2
    assert svg.count("<circle") == 1  # the row without an uplift estimate is not drawn


def test_clean_ingest_reads_as_no_rejected_rows_not_as_a_missing_stage(spark, tmp_path):
    # A demo on clean data printed "not available (stage ingest has not run)" for quarantine.
    from cvo_spark.report.data import load_gold

    store = TableStore(spark, parse_config({"lake": str(tmp_path)}))
    t0 = datetime(2026, 6, 30, 8, 0)
    old = [("usage_daily", "null key", "{}", "run-x", t0, date(2026, 6, 29))]
    store.overwrite(spark.createDataFrame(old, OUTPUT_SCHEMAS["quarantine"]), "gold", "quarantine", ["as_of"])
    assert isinstance(load_gold(store, AS_OF)["quarantine"], Unavailable)  # no runs table: unknown

    runs = [("run-a", "ingest", AS_OF, "succeeded", {}, {}, "", t0, t0)]
    store.overwrite(spark.createDataFrame(runs, OUTPUT_SCHEMAS["runs"]), "gold", "runs")
    quarantine = load_gold(store, AS_OF)["quarantine"]
    assert not isinstance(quarantine, Unavailable) and quarantine.count() == 0
    assert "No input row was rejected." in render_report(collect_report(store, AS_OF))
