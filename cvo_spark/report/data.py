"""The run report: small aggregates of the gold tables for one as-of date.

Three layers, so notebooks can reuse the same numbers the HTML shows:

* `load_gold` reads every gold table the report uses, cut to the as-of date. A table that
  does not exist (or has no rows for that date) becomes an `Unavailable` that names the
  stage which writes it, so the report says "not available (stage X has not run)"
  instead of failing.
* The query functions (`headline`, `tier_summary`, `matrix_summary`, `top_opportunities`,
  ...) are pure DataFrame -> DataFrame aggregations: group-bys first, so only a few
  dozen rows ever reach the driver. No query returns a raw ``subscriber_id``: rows that
  name a subscriber carry ``subscriber_ref``, the first 8 hex characters of its SHA-256
  (invariant 8: reports never list raw ids).
* `collect_report` turns them into plain Python values, and `render_report` (in
  `cvo_spark.report.html`) writes one self-contained HTML page.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from cvo_spark.core import tables
from cvo_spark.core.io import TableStore
from cvo_spark.core.tables import partition_is, partitions_through
from cvo_spark.core.util import require_columns

#: The gold tables the report reads (what the report stage declares to `cvo_spark.pipeline`).
READS: tuple[str, ...] = (
    "features",
    "segments",
    "segment_profiles",
    "persona_k_selection",
    "b2b_segments",
    "b2b_profiles",
    "b2b_concentration",
    "b2b_lorenz",
    "scores",
    "offer_scores",
    "model_evaluations",
    "model_curves",
    "offers",
    "campaign_power",
    "campaign_results",
    "policy_evaluations",
    "quarantine",
    "runs",
)
#: Which stage writes each gold table the report reads (for "stage X has not run"), from the
#: table registry; `runs` gets a row from every stage.
TABLE_STAGE: dict[str, str] = {t: "any" if t == "runs" else tables.table(t).producers[0] for t in READS}

#: Tables cut to ``as_of = D``; the others are cut differently (see `load_gold`): the
#: model tables by training date, quarantine by its own rows.
_DATED = tuple(t for t in READS if t not in ("model_evaluations", "model_curves", "quarantine"))

#: Conversion rates of the ROI scenarios.
ROI_CONVERSION_RATES: tuple[float, ...] = (0.2, 0.3, 0.4)

#: Hex characters of SHA-256 kept in a pseudonymous subscriber reference.
REF_HEX_CHARS = 8


@dataclass(frozen=True)
class Unavailable:
    """A section's table is missing: the report prints `message` instead of the section."""

    table: str
    stage: str
    as_of: date | None = None
    empty: bool = False

    @property
    def message(self) -> str:
        if self.empty:
            return f"not available (stage {self.stage} has not run for as_of {self.as_of})"
        if self.stage == "any":
            return "not available (no stage has run yet)"
        return f"not available (stage {self.stage} has not run)"


Gold = dict[str, "DataFrame | Unavailable"]


def load_gold(store: TableStore, as_of: date) -> Gold:
    """Read the report's gold tables for `as_of`.

    Dated tables are filtered to ``as_of = D``. `model_evaluations` / `model_curves` keep
    the latest training run at or before D (a model trained earlier still serves D).
    `quarantine` is cut to ``as_of = D`` (the ingest run's date); a quarantine table
    written before it had that column keeps the rows of this date's ingest runs instead.
    """
    gold: Gold = {}
    for table, stage in TABLE_STAGE.items():
        if not store.has(table):
            gold[table] = Unavailable(table, stage, as_of)
            continue
        df = store.table(table)
        if table in _DATED or (table == "quarantine" and "as_of" in df.columns):
            df = df.where(partition_is(as_of))
            if df.limit(1).count() == 0:
                gold[table] = Unavailable(table, stage, as_of, empty=True)
                continue
        gold[table] = df
    for table in ("model_evaluations", "model_curves"):
        trained = gold[table]
        if isinstance(trained, DataFrame):
            gold[table] = latest_training(trained, as_of)
    quarantine = gold["quarantine"]
    if isinstance(quarantine, Unavailable) and quarantine.empty and isinstance(gold["runs"], DataFrame):
        # An empty as_of partition after a successful ingest means a clean input, not a
        # missing stage: report "no input row was rejected".
        ingested = gold["runs"].where(
            (F.col("stage") == "ingest") & (F.col("status") == "succeeded") & partition_is(as_of)
        )
        if ingested.limit(1).count() > 0:
            gold["quarantine"] = store.read_as_of("quarantine", as_of)
    elif (
        isinstance(quarantine, DataFrame)
        and "as_of" not in quarantine.columns
        and isinstance(gold["runs"], DataFrame)
    ):
        ingest_runs = gold["runs"].where(F.col("stage") == "ingest").select("run_id").distinct()
        if ingest_runs.limit(1).count() > 0:
            gold["quarantine"] = quarantine.join(ingest_runs, on="run_id", how="left_semi")
    return gold


def latest_training(df: DataFrame, as_of: date) -> DataFrame:
    """Rows of the latest ``trained_at`` per target among training runs with ``as_of <= D``."""
    require_columns(df, ["trained_at", "as_of", "target"], "latest_training")
    cut = df.where(partitions_through(as_of))
    latest = cut.groupBy("target").agg(F.max("trained_at").alias("trained_at"))
    return cut.join(latest, on=["target", "trained_at"], how="inner")


def subscriber_ref(column: str = "subscriber_id") -> F.Column:
    """A short pseudonymous reference: the first 8 hex characters of SHA-256 of the id."""
    return F.substring(F.sha2(F.col(column).cast("string"), 256), 1, REF_HEX_CHARS)


# --------------------------------------------------------------------------- queries
def _with_revenue(segments: DataFrame, features: DataFrame) -> DataFrame:
    """Segments with each subscriber's revenue_3m and arpu_3m (left join: keeps every segment row)."""
    require_columns(features, ["subscriber_id", "revenue_3m", "arpu_3m"], "report")
    return segments.join(
        features.select("subscriber_id", "revenue_3m", "arpu_3m"), on="subscriber_id", how="left"
    )


def _with_share(df: DataFrame, value: str, share: str) -> DataFrame:
    """Add ``share = value / sum(value)``. Runs after a group-by: a global window over a few rows."""
    total = F.sum(F.col(value)).over(Window.partitionBy())
    return df.withColumn(share, F.when(total != 0, F.col(value) / total))


def headline(features: DataFrame) -> DataFrame:
    """One row: active subscribers, revenue (1 and 3 months), mean monthly ARPU (3 months)."""
    require_columns(features, ["subscriber_id", "revenue_1m", "revenue_3m", "arpu_3m"], "headline")
    return features.agg(
        F.count(F.lit(1)).alias("active_subscribers"),
        F.sum("revenue_1m").alias("revenue_1m"),
        F.sum("revenue_3m").alias("revenue_3m"),
        F.avg("arpu_3m").alias("arpu_3m"),
    )


def high_value_share(segments: DataFrame, features: DataFrame) -> DataFrame:
    """One row: High Value subscribers, their share of subscribers and of 3-month revenue."""
    require_columns(segments, ["subscriber_id", "is_high_value"], "high_value_share")
    hv = F.coalesce(F.col("is_high_value"), F.lit(False))
    rev = F.coalesce(F.col("revenue_3m"), F.lit(0.0))
    agg = _with_revenue(segments, features).agg(
        F.sum(F.when(hv, 1).otherwise(0)).alias("high_value_subscribers"),
        F.count(F.lit(1)).alias("subscribers"),
        F.sum(F.when(hv, rev).otherwise(0.0)).alias("high_value_revenue_3m"),
        F.sum(rev).alias("revenue_3m"),
    )
    return agg.select(
        "*",
        (F.col("high_value_subscribers") / F.col("subscribers")).alias("high_value_subscriber_share"),
        F.when(F.col("revenue_3m") != 0, F.col("high_value_revenue_3m") / F.col("revenue_3m")).alias(
            "high_value_revenue_share"
        ),
    )


def mean_clv(scores: DataFrame) -> DataFrame:
    """One row: mean predicted 12-month CLV and the subscribers scored."""
    require_columns(scores, ["clv_12m"], "mean_clv")
    return scores.agg(F.avg("clv_12m").alias("clv_12m_mean"), F.count(F.lit(1)).alias("scored"))


def group_summary(segments: DataFrame, features: DataFrame, by: str) -> DataFrame:
    """Per value of `by` (value_tier, lifecycle, matrix_quadrant, ...): size and revenue share."""
    require_columns(segments, ["subscriber_id", by], "group_summary")
    agg = (
        _with_revenue(segments, features)
        .groupBy(by)
        .agg(
            F.count(F.lit(1)).alias("subscribers"),
            F.sum(F.coalesce(F.col("revenue_3m"), F.lit(0.0))).alias("revenue_3m"),
            F.avg("arpu_3m").alias("arpu_3m_mean"),
        )
    )
    agg = _with_share(_with_share(agg, "subscribers", "subscriber_share"), "revenue_3m", "revenue_share")
    return agg.orderBy(F.col("revenue_3m").desc(), F.col(by))


def tier_summary(segments: DataFrame, features: DataFrame, ladder: Sequence[str] = ()) -> DataFrame:
    """Value tiers with sizes and revenue shares (see `group_summary`), in `ladder` order.

    `ladder` is the configured tier names, highest first (`segments.value_tiers.ladder`):
    a reader looks for the top tier first, whatever its revenue. Tiers not in it follow,
    largest revenue first.
    """
    summary = group_summary(segments, features, "value_tier")
    if not ladder:
        return summary
    position = F.array_position(F.array(*[F.lit(name) for name in ladder]), F.col("value_tier"))
    rank = F.when(position > 0, position).otherwise(F.lit(len(ladder) + 1))
    return summary.orderBy(rank, F.col("revenue_3m").desc(), F.col("value_tier"))


def matrix_summary(segments: DataFrame, features: DataFrame) -> DataFrame:
    """Strategic-matrix quadrants with sizes and revenue shares (see `group_summary`)."""
    return group_summary(segments, features, "matrix_quadrant")


def persona_profiles(profiles: DataFrame) -> DataFrame:
    """The persona-level rows of `segment_profiles` (value_tier = 'ALL'), largest revenue first."""
    require_columns(
        profiles,
        ["persona_id", "persona_name", "value_tier", "subscribers", "revenue_share"],
        "persona_profiles",
    )
    return profiles.where(F.col("value_tier") == "ALL").orderBy(F.col("revenue_share").desc(), "persona_id")


def persona_by_tier(profiles: DataFrame) -> DataFrame:
    """Subscribers per persona x value tier (the per-tier rows of `segment_profiles`)."""
    return (
        profiles.where(F.col("value_tier") != "ALL")
        .select("persona_name", "value_tier", "subscribers", "revenue_share")
        .orderBy("persona_name", "value_tier")
    )


def offer_summary(offers: DataFrame) -> DataFrame:
    """Per channel and group: offers, distinct subscribers, total expected value, mean propensity."""
    require_columns(
        offers, ["subscriber_id", "channel", "group", "expected_value", "propensity"], "offer_summary"
    )
    return (
        offers.groupBy("channel", "group")
        .agg(
            F.count(F.lit(1)).alias("offers"),
            F.countDistinct("subscriber_id").alias("subscribers"),
            F.sum("expected_value").alias("expected_value"),
            F.avg("propensity").alias("propensity_mean"),
        )
        .orderBy(F.col("expected_value").desc(), "channel", "group")
    )


def top_opportunities(offers: DataFrame, n: int = 10) -> DataFrame:
    """The `n` treatment offers with the highest expected value, named by `subscriber_ref` only."""
    require_columns(
        offers,
        ["subscriber_id", "channel", "rank", "offer_id", "expected_value", "propensity", "group"],
        "top_opportunities",
    )
    reasons = F.col("reason_codes") if "reason_codes" in offers.columns else F.array().cast("array<string>")
    return (
        offers.where(F.col("group") == "treatment")
        .orderBy(F.col("expected_value").desc(), F.col("subscriber_id"), F.col("channel"), F.col("rank"))
        .limit(n)
        .select(
            subscriber_ref().alias("subscriber_ref"),
            "offer_id",
            "channel",
            "rank",
            "propensity",
            "expected_value",
            F.concat_ws(", ", F.slice(reasons, 1, 3)).alias("reasons"),
        )
    )


def best_offer_per_subscriber(offers: DataFrame) -> DataFrame:
    """Each treatment subscriber's single best offer (highest expected value, ties by offer_id).

    The ROI scenarios count a subscriber once: someone shown offers on four channels
    converts at most once, so summing all their offers would overstate the return.
    """
    w = Window.partitionBy("subscriber_id").orderBy(
        F.col("expected_value").desc(), F.col("offer_id"), F.col("channel"), F.col("rank")
    )
    return (
        offers.where(F.col("group") == "treatment")
        .withColumn("_best", F.row_number().over(w))
        .where(F.col("_best") == 1)
        .drop("_best")
    )


def roi_scenarios(offers: DataFrame, rates: tuple[float, ...] = ROI_CONVERSION_RATES) -> DataFrame:
    """What the published treatment offers return at fixed conversion rates.

    Per subscriber the best offer counts once. Its value if accepted is
    ``expected_value / propensity`` (the expected value is propensity x value). A
    scenario at rate c converts c of those subscribers: return ``c x sum(value if
    accepted)``, revenue ``c x sum(price)``. The model's own view is ``sum(expected_value)``,
    i.e. an implied conversion rate of ``sum(expected_value) / sum(value if accepted)``.

    Returns one row per rate (``scenario`` 'c%') plus one 'model' row.
    """
    require_columns(
        offers, ["subscriber_id", "expected_value", "propensity", "price", "group"], "roi_scenarios"
    )
    value_if_accepted = F.when(
        F.col("propensity") > 0, F.col("expected_value") / F.col("propensity")
    ).otherwise(F.lit(0.0))
    base = best_offer_per_subscriber(offers).agg(
        F.count(F.lit(1)).alias("subscribers"),
        F.sum(value_if_accepted).alias("value_if_all_accept"),
        F.sum("price").alias("price_if_all_accept"),
        F.sum("expected_value").alias("expected_value"),
    )
    scenarios = [
        base.select(
            F.lit(f"{round(rate * 100)}%").alias("scenario"),
            F.lit(float(rate)).alias("conversion_rate"),
            "subscribers",
            (F.col("subscribers") * rate).alias("conversions"),
            (F.col("price_if_all_accept") * rate).alias("revenue"),
            (F.col("value_if_all_accept") * rate).alias("expected_return"),
        )
        for rate in rates
    ]
    implied = F.when(F.col("value_if_all_accept") > 0, F.col("expected_value") / F.col("value_if_all_accept"))
    model = base.select(
        F.lit("model").alias("scenario"),
        implied.alias("conversion_rate"),
        "subscribers",
        (F.col("subscribers") * implied).alias("conversions"),
        (F.col("price_if_all_accept") * implied).alias("revenue"),
        F.col("expected_value").alias("expected_return"),
    )
    out = scenarios[0]
    for df in scenarios[1:] + [model]:
        out = out.unionByName(df)
    return out


def uplift_by_offer(offer_scores: DataFrame) -> DataFrame:
    """Per offer and channel: mean accept probability if contacted and if not, mean uplift,
    the share of subscribers for whom contact lowers acceptance, best uplift first."""
    require_columns(
        offer_scores,
        [
            "offer_id",
            "channel",
            "p_accept_if_contacted",
            "p_accept_if_not",
            "uplift",
            "expected_incremental_margin",
        ],
        "uplift_by_offer",
    )
    return (
        offer_scores.groupBy("offer_id", "channel")
        .agg(
            F.count(F.lit(1)).alias("subscribers"),
            F.avg("p_accept_if_contacted").alias("p_if_contacted"),
            F.avg("p_accept_if_not").alias("p_if_not"),
            F.avg("uplift").alias("uplift"),
            F.avg((F.col("uplift") < 0).cast("double")).alias("negative_share"),
            F.avg("expected_incremental_margin").alias("incremental_margin"),
        )
        .orderBy(F.col("uplift").desc(), "offer_id", "channel")
    )


def campaign_overview(results: DataFrame, n: int = 15) -> DataFrame:
    """The all-segment rows of `campaign_results`, latest period first, largest incremental revenue first."""
    require_columns(results, ["offer_id", "channel", "period", "segment", "uplift"], "campaign_overview")
    return (
        results.where(F.col("segment") == "ALL")
        .orderBy(
            F.col("period").desc(), F.col("incremental_revenue").desc_nulls_last(), "offer_id", "channel"
        )
        .limit(n)
    )


def policy_overview(evaluations: DataFrame) -> DataFrame:
    """One row per policy: the doubly robust estimate with its interval, IPS and SNIPS beside
    it, and the diagnostics; best net value (after contact costs) first."""
    require_columns(evaluations, ["policy", "estimator", "value", "ci_low", "ci_high"], "policy_overview")
    dr = evaluations.where(F.col("estimator") == "dr")
    others = evaluations.groupBy("policy").agg(
        F.max(F.when(F.col("estimator") == "ips", F.col("value"))).alias("ips"),
        F.max(F.when(F.col("estimator") == "snips", F.col("value"))).alias("snips"),
    )
    return dr.join(others, on="policy", how="left").orderBy(F.col("net_value").desc(), "policy")


def quarantine_counts(quarantine: DataFrame) -> DataFrame:
    """Rejected rows per source table and reason."""
    require_columns(quarantine, ["source_table", "reason"], "quarantine_counts")
    return (
        quarantine.groupBy("source_table", "reason")
        .agg(F.count(F.lit(1)).alias("rows"))
        .orderBy(F.col("rows").desc(), "source_table", "reason")
    )


def run_audit(runs: DataFrame) -> DataFrame:
    """The `runs` rows of the as-of date, oldest first (a few per stage run)."""
    return runs.orderBy("started_at", "stage")


def lorenz_points(lorenz: DataFrame, buckets: int = 100) -> DataFrame:
    """At most `buckets` + 1 points of the B2B Lorenz curve (the largest revenue share per
    account-share bucket), so a large account base still plots from a small collect."""
    require_columns(lorenz, ["account_share", "revenue_share"], "lorenz_points")
    bucket = F.round(F.col("account_share") * buckets).cast("int")
    return (
        lorenz.groupBy(bucket.alias("bucket"))
        .agg(F.max("account_share").alias("account_share"), F.max("revenue_share").alias("revenue_share"))
        .orderBy("bucket")
    )


# --------------------------------------------------------------------------- collect
def _rows(df: DataFrame) -> list[dict[str, Any]]:
    # Only ever called on the aggregates above: a handful of rows.
    return [r.asDict(recursive=True) for r in df.collect()]


def _one(df: DataFrame) -> dict[str, Any]:
    rows = _rows(df)
    return rows[0] if rows else {}


def _section(build: Callable[..., Any], *tables: DataFrame | Unavailable) -> Any:
    """`build(*tables)` when every table is there, else the first missing one's `Unavailable`."""
    missing = next((t for t in tables if isinstance(t, Unavailable)), None)
    return missing if missing is not None else build(*tables)


def collect_report(store: TableStore, as_of: date, top_n: int = 10) -> dict[str, Any]:
    """Every section's data as plain Python values; a missing section is an `Unavailable`."""
    g = load_gold(store, as_of)
    f, s, p, o = g["features"], g["segments"], g["segment_profiles"], g["offers"]

    data: dict[str, Any] = {"as_of": as_of}

    data["headline"] = _section(lambda f: _one(headline(f)), f)
    data["high_value"] = _section(lambda s, f: _one(high_value_share(s, f)), s, f)
    data["clv"] = _section(lambda t: _one(mean_clv(t)), g["scores"])
    ladder = [tier.name for tier in store.config.segments.value_tiers.ladder]
    data["tiers"] = _section(lambda s, f: _rows(tier_summary(s, f, ladder)), s, f)
    data["lifecycle"] = _section(lambda s, f: _rows(group_summary(s, f, "lifecycle")), s, f)
    data["matrix"] = _section(lambda s, f: _rows(matrix_summary(s, f)), s, f)
    data["personas"] = _section(lambda p: _rows(persona_profiles(p)), p)
    data["persona_tiers"] = _section(lambda p: _rows(persona_by_tier(p)), p)
    data["k_selection"] = _section(lambda t: _rows(t.orderBy("k")), g["persona_k_selection"])
    data["b2b_concentration"] = _section(_rows, g["b2b_concentration"])
    data["b2b_lorenz"] = _section(lambda t: _rows(lorenz_points(t)), g["b2b_lorenz"])
    data["b2b_profiles"] = _section(
        lambda t: _rows(t.orderBy(F.col("revenue_share").desc())), g["b2b_profiles"]
    )
    data["evaluations"] = _section(
        lambda t: _rows(t.orderBy("target", "model_kind", "metric")), g["model_evaluations"]
    )
    data["curves"] = _section(lambda t: _rows(t.orderBy("target", "curve", "bucket")), g["model_curves"])
    data["offer_summary"] = _section(lambda o: _rows(offer_summary(o)), o)
    data["uplift_by_offer"] = _section(lambda t: _rows(uplift_by_offer(t)), g["offer_scores"])
    data["top_offers"] = _section(lambda o: _rows(top_opportunities(o, top_n)), o)
    data["roi"] = _section(lambda o: _rows(roi_scenarios(o)), o)
    data["campaigns"] = _section(lambda t: _rows(campaign_overview(t)), g["campaign_results"])
    data["policies"] = _section(lambda t: _rows(policy_overview(t)), g["policy_evaluations"])
    data["quarantine"] = _section(lambda t: _rows(quarantine_counts(t)), g["quarantine"])
    data["runs"] = _section(lambda t: _rows(run_audit(t)), g["runs"])
    return data


def show(value: DataFrame | Unavailable | list | dict, display=print) -> None:
    """Notebook helper: `display` a DataFrame or collected rows, or print why a table is missing."""
    if isinstance(value, Unavailable):
        print(value.message)
    else:
        display(value)
