"""Fail-closed publish of the offers: checks on the staged snapshot, one-commit publish, exports.

The `offers` stage writes its rows to gold `offers_staging`, then `run_checks` looks at
the staged partition (re-read from Delta, so what is checked is what is published). If
every check passes (or the operator overrode the failed ones by name), `publish_snapshot`
replaces the as_of partition of gold `offers` in ONE Delta commit (replaceWhere); channel
systems then get their files from `export_channels`. If a check fails, `decide` raises
`PublishRefused` with one line naming the check and by how much, and `offers` keeps the
last good snapshot (DESIGN invariants 3 and 4).

Checks (names are what ``cvo run --override NAME`` accepts):

- ``freshness``: the newest event (at or before as_of) of each silver input is at most
  `freshness_max_days` before as_of. A stuck feed would make yesterday's offers look new.
- ``non_empty``: at least one offer row.
- ``coverage``: share of active subscribers (features rows) with an offer row within
  [min_coverage, max_coverage].
- ``price_floor``: no row priced under the global floor, and no High Value subscriber
  offered a non-retention offer under their floor (share x arpu_3m).
- ``duplicate_keys``: (subscriber_id, channel, rank, as_of) is unique.
- ``holdout``: every row of a subscriber in the universal holdout (hash of subscriber_id
  and the holdout key alone) is a 'holdout' row, and no other row is: the holdout gets
  nothing from any campaign, and is not lost from the measurement either.
- ``propensity``: no collapsed model: each model score (p_upsell, p_cross_sell, p_churn)
  and the offers' propensity have std >= min_propensity_std and are not all zero.
- ``psi_offer_id`` / ``psi_price_band``: population stability index of the offer mix and
  of the price-band mix against the last published snapshot (the newest as_of before
  this one) at most max_psi. PSI = sum over bins of (a - e) x ln(a / e) on shares, an
  empty bin counted as 0.0001; 0.1 is a small shift, 0.25 a large one.

Distributions and statistics are tiny aggregates (tens of rows) collected to the driver.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cvo_spark.core.errors import ConfigError, PublishRefused
from cvo_spark.core.io import TableStore, is_uri
from cvo_spark.core.util import first_row, require_columns
from cvo_spark.offers.engine import is_holdout

#: Upper edges (Rupiah, exclusive) of the price bands the PSI check compares.
PRICE_BAND_EDGES: tuple[float, ...] = (10_000, 25_000, 50_000, 100_000)
PSI_EMPTY_SHARE = 1e-4
OFFER_KEY = ("subscriber_id", "channel", "rank", "as_of")
MODEL_SCORES = ("p_upsell", "p_cross_sell", "p_churn")


@dataclass(frozen=True)
class CheckResult:
    """One publish check: its name, whether it passed, and what it measured."""

    name: str
    passed: bool
    detail: str


# ---------------------------------------------------------------------------- pure checks
def check_freshness(newest: Mapping[str, date | None], as_of: date, max_days: int) -> CheckResult:
    """The stalest input's newest event must be at most `max_days` before `as_of`."""
    if not newest:
        return CheckResult("freshness", False, "no input tables to check")
    missing = sorted(t for t, d in newest.items() if d is None)
    if missing:
        return CheckResult("freshness", False, f"no {missing[0]} event at or before as_of {as_of}")
    dated = {t: d for t, d in newest.items() if d is not None}  # every one, after the check above
    table, day = min(dated.items(), key=lambda kv: (kv[1], kv[0]))
    lag = (as_of - day).days
    detail = f"newest {table} event {day} is {lag} days before as_of {as_of} (limit {max_days})"
    return CheckResult("freshness", lag <= max_days, detail)


def check_non_empty(rows: int) -> CheckResult:
    return CheckResult("non_empty", rows > 0, f"{rows:,} offer rows")


def check_coverage(covered: int, active: int, min_share: float, max_share: float) -> CheckResult:
    share = covered / active if active else 0.0
    detail = (
        f"{share:.1%} of {active:,} active subscribers have an offer "
        f"(allowed {min_share:.1%}..{max_share:.1%})"
    )
    return CheckResult("coverage", active > 0 and min_share <= share <= max_share, detail)


def check_price_floor(under_floor: int, floor: float) -> CheckResult:
    detail = f"{under_floor:,} rows under the price floor (global {floor:,.0f} or High Value share)"
    return CheckResult("price_floor", under_floor == 0, detail)


def check_duplicate_keys(duplicates: int) -> CheckResult:
    return CheckResult(
        "duplicate_keys", duplicates == 0, f"{duplicates:,} duplicate (subscriber, channel, rank) keys"
    )


def check_propensity(stats: Mapping[str, tuple[float | None, float | None]], min_std: float) -> CheckResult:
    """`stats` maps a column to (std, max). Collapsed: std < min_std, or all zero/null."""
    for column, (std, top) in stats.items():
        if top is None or top == 0:
            return CheckResult("propensity", False, f"{column} is zero everywhere (collapsed model)")
        if std is None or std < min_std:
            std_text = "undefined" if std is None else f"{std:.6f}"
            return CheckResult(
                "propensity", False, f"{column} std {std_text} < {min_std:g} (collapsed model)"
            )
    spread = ", ".join(f"{c} std {s:.4f}" for c, (s, _) in stats.items())
    return CheckResult("propensity", True, spread)


def psi(
    expected: Mapping[str, float], actual: Mapping[str, float], empty_share: float = PSI_EMPTY_SHARE
) -> float:
    """Population stability index between two distributions given as counts (or shares).

    Bins are the union of both keys; counts are turned into shares, an empty bin counts
    as `empty_share` so the log stays finite. Identical mixes give 0.
    """
    e_total, a_total = float(sum(expected.values())), float(sum(actual.values()))
    if e_total <= 0 or a_total <= 0:
        raise ValueError("psi needs two non-empty distributions")
    value = 0.0
    for key in sorted(set(expected) | set(actual)):
        e = max(expected.get(key, 0) / e_total, empty_share)
        a = max(actual.get(key, 0) / a_total, empty_share)
        value += (a - e) * math.log(a / e)
    return value


def check_psi(
    name: str,
    previous: Mapping[str, float] | None,
    current: Mapping[str, float],
    max_psi: float,
    previous_as_of: date | None = None,
) -> CheckResult:
    if not previous:
        return CheckResult(name, True, "no previous published snapshot to compare with")
    if not current:
        return CheckResult(name, False, "nothing staged to compare with the previous snapshot")
    value = psi(previous, current)
    return CheckResult(
        name, value <= max_psi, f"PSI {value:.3f} vs snapshot {previous_as_of} (limit {max_psi:g})"
    )


#: Every check `run_checks` and the decision audit make, in order: the names `cvo run
#: --override` accepts.
CHECK_NAMES = (
    "freshness",
    "non_empty",
    "coverage",
    "price_floor",
    "duplicate_keys",
    "propensity",
    "psi_offer_id",
    "psi_price_band",
    "holdout",
    "allocation",
    "offer_cap",
    "one_channel_per_offer",
    "push_contacts",
    "slots",
    "capacity",
    "budget",
    "volume",
    "consent",
)


def validate_overrides(overrides: Iterable[str]) -> frozenset[str]:
    """The override names as a set; an unknown name is a `ConfigError` naming it.

    A misspelt override (``--override psi``) would otherwise override nothing and the
    operator would believe the check was waived.
    """
    names = frozenset(overrides)
    unknown = sorted(names - set(CHECK_NAMES))
    if unknown:
        raise ConfigError(
            f"--override: unknown publish check {', '.join(map(repr, unknown))} "
            f"(checks: {', '.join(CHECK_NAMES)})"
        )
    return names


def decide(results: Iterable[CheckResult], overrides: Iterable[str] = ()) -> dict[str, str]:
    """The checks map recorded in `runs`; raises `PublishRefused` on a failed, not overridden check.

    Values read ``ok: ...``, ``failed: ...`` or ``overridden: ...`` (an operator override of
    a failed check is recorded, never silent).
    """
    overrides = validate_overrides(overrides)
    checks: dict[str, str] = {}
    failed: list[CheckResult] = []
    for r in results:
        if r.passed:
            checks[r.name] = f"ok: {r.detail}"
        elif r.name in overrides:
            checks[r.name] = f"overridden: {r.detail}"
        else:
            checks[r.name] = f"failed: {r.detail}"
            failed.append(r)
    if failed:
        more = (
            f" (+{len(failed) - 1} more: {', '.join(r.name for r in failed[1:])})" if len(failed) > 1 else ""
        )
        err = PublishRefused(f"publish refused: {failed[0].name}: {failed[0].detail}{more}")
        err.checks = checks
        raise err
    return checks


# ---------------------------------------------------------------------------- summaries
def price_band(price: Column) -> Column:
    """Band label of a price: '<10,000', '10,000-25,000', ..., '>=100,000'."""
    edges = PRICE_BAND_EDGES
    expr = F.when(price < edges[0], F.lit(f"<{edges[0]:,.0f}"))
    for low, high in pairwise(edges):
        expr = expr.when(price < high, F.lit(f"{low:,.0f}-{high:,.0f}"))
    return expr.otherwise(F.lit(f">={edges[-1]:,.0f}"))


def distributions(offers: DataFrame) -> tuple[dict[str, int], dict[str, int]]:
    """Counts of offer rows by offer_id and by price band (one small aggregate)."""
    rows = offers.groupBy("offer_id", price_band(F.col("price")).alias("band")).count().collect()
    by_offer: dict[str, int] = {}
    by_band: dict[str, int] = {}
    for r in rows:
        by_offer[r["offer_id"]] = by_offer.get(r["offer_id"], 0) + r["count"]
        by_band[r["band"]] = by_band.get(r["band"], 0) + r["count"]
    return by_offer, by_band


def newest_event_dates(tables: Mapping[str, tuple[DataFrame, str]], as_of: date) -> dict[str, date | None]:
    """Newest event date at or before `as_of` of each table (name -> (frame, event column)).

    Later rows are a backfill's future and are ignored. One small job for all tables.
    """
    parts = [
        events.where(F.to_date(F.col(col)) <= F.lit(as_of))
        .agg(F.max(F.to_date(F.col(col))).alias("newest"))
        .select(F.lit(name).alias("table"), "newest")
        for name, (events, col) in tables.items()
    ]
    if not parts:
        return {}
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    return {r["table"]: r["newest"] for r in union.collect()}


def summarize_offers(staged: DataFrame, floors: DataFrame, price_floor: float) -> dict[str, Any]:
    """One aggregate over the staged rows: counts, duplicate keys, rows under a price floor
    and the spread of propensity.

    Needs OFFER_KEY, offer_type, price, propensity, group; `floors` is
    ``subscriber_id, min_price`` (the High Value floor of the subscribers that have one).
    """
    require_columns(
        staged, [*OFFER_KEY, "offer_id", "offer_type", "price", "propensity", "group"], "summarize_offers"
    )
    under = (
        F.col("price").isNull()
        | (F.col("price") < F.lit(price_floor))
        | (
            (F.col("offer_type") != "retention")
            & (F.col("price") < F.coalesce(F.col("min_price"), F.lit(0.0)))
        )
    )
    # Decisions drawn by the exploration share (probability 1/n < 1; `with_exploration`).
    explored = F.col("probability") < 1 if "probability" in staged.columns else F.lit(False)
    row = first_row(
        staged.join(floors.select("subscriber_id", "min_price"), on="subscriber_id", how="left").agg(
            F.count(F.lit(1)).alias("rows"),
            F.countDistinct("subscriber_id").alias("subscribers"),
            F.countDistinct(*OFFER_KEY).alias("distinct_keys"),
            F.sum(under.cast("int")).alias("under_floor"),
            F.sum((F.col("group") == "treatment").cast("int")).alias("treatment"),
            F.sum((F.col("group") == "control").cast("int")).alias("control"),
            F.sum((F.col("group") == "holdout").cast("int")).alias("holdout"),
            F.sum(explored.cast("int")).alias("explored"),
            F.stddev_pop("propensity").alias("propensity_std"),
            F.max(F.abs("propensity")).alias("propensity_max"),
        ),
        "summarize_offers (aggregate of the staged offers)",
    )
    out = row.asDict()
    for key in ("under_floor", "treatment", "control", "holdout", "explored"):
        out[key] = int(out[key] or 0)
    out["duplicates"] = out["rows"] - out["distinct_keys"]
    return out


def run_checks(
    staged: DataFrame,
    summary: Mapping[str, Any],
    active_subscribers: int,
    scores: DataFrame,
    newest_events: Mapping[str, date | None],
    previous: DataFrame | None,
    previous_as_of: date | None,
    as_of: date,
    *,
    freshness_max_days: int,
    min_coverage: float,
    max_coverage: float,
    price_floor: float,
    min_propensity_std: float,
    max_psi: float,
) -> list[CheckResult]:
    """Every publish check on the staged partition.

    Parameters
    ----------
    staged : the staged `offers` rows of `as_of` (OFFERS_SCHEMA).
    summary : `summarize_offers` of `staged`.
    scores : the as_of `scores` rows (p_upsell, p_cross_sell, p_churn).
    newest_events : `newest_event_dates` of the silver inputs.
    previous, previous_as_of : the last published snapshot's rows and date, or None.
    """
    require_columns(scores, MODEL_SCORES, "run_checks(scores)")
    score_stats = first_row(
        scores.agg(
            *[F.stddev_pop(c).alias(f"{c}_std") for c in MODEL_SCORES],
            *[F.max(F.abs(c)).alias(f"{c}_max") for c in MODEL_SCORES],
        ),
        "run_checks (spread of the model scores)",
    )
    stats = {c: (score_stats[f"{c}_std"], score_stats[f"{c}_max"]) for c in MODEL_SCORES}
    stats["offer propensity"] = (summary["propensity_std"], summary["propensity_max"])
    by_offer, by_band = distributions(staged)
    prev_offer, prev_band = distributions(previous) if previous is not None else (None, None)
    return [
        check_freshness(newest_events, as_of, freshness_max_days),
        check_non_empty(int(summary["rows"])),
        check_coverage(int(summary["subscribers"]), active_subscribers, min_coverage, max_coverage),
        check_price_floor(int(summary["under_floor"]), price_floor),
        check_duplicate_keys(int(summary["duplicates"])),
        check_propensity(stats, min_propensity_std),
        check_psi("psi_offer_id", prev_offer, by_offer, max_psi, previous_as_of),
        check_psi("psi_price_band", prev_band, by_band, max_psi, previous_as_of),
    ]


def check_holdout(staged: DataFrame, share: float, key: str) -> CheckResult:
    """Rows whose group disagrees with the universal holdout hash (`engine.is_holdout`),
    counted apart from the engine: a holdout subscriber's row that is not 'holdout' would be
    sent; a 'holdout' row of anyone else would be lost from treatment and control."""
    held = is_holdout(F.col("subscriber_id"), share, key)
    is_holdout_row = F.col("group") == "holdout"
    row = first_row(
        staged.agg(
            F.sum((held & ~is_holdout_row).cast("long")).alias("leaked"),
            F.sum((~held & is_holdout_row).cast("long")).alias("stray"),
            F.countDistinct(F.when(held, F.col("subscriber_id"))).alias("held"),
        ),
        "check_holdout (aggregate of the staged offers)",
    )
    leaked, stray = int(row["leaked"] or 0), int(row["stray"] or 0)
    if leaked or stray:
        return CheckResult(
            "holdout",
            False,
            f"{leaked:,} row(s) of universal-holdout subscribers not marked holdout, "
            f"{stray:,} 'holdout' row(s) of others",
        )
    return CheckResult(
        "holdout", True, f"{int(row['held'] or 0):,} universal-holdout subscriber(s) decided, none sent"
    )


def previous_snapshot(store: TableStore, as_of: date) -> tuple[DataFrame | None, date | None]:
    """Rows and date of the newest published `offers` partition before `as_of` (None, None if none)."""
    last = store.latest_as_of("offers", before=as_of)
    return (None, None) if last is None else (store.read_as_of("offers", last), last)


# ---------------------------------------------------------------------------- publish + export
def publish_snapshot(store: TableStore, staged: DataFrame, as_of: date) -> None:
    """Replace the `as_of` partition of gold `offers` with `staged` in ONE Delta commit."""
    # mergeSchema: a lake published before the decision-core columns takes them on.
    store.write(staged, "offers", as_of)


def _export_frame(offers: DataFrame, fmt: str) -> DataFrame:
    cols = [
        "decision_id",
        "subscriber_id",
        "channel",
        "rank",
        "offer_id",
        "offer_type",
        "price",
        "valid_from",
        "valid_to",
        "reason_codes",
        "as_of",
        "run_id",
    ]
    df = offers.where(F.col("group") == "treatment").select(*cols)
    if fmt == "csv":  # CSV has no arrays
        df = df.withColumn("reason_codes", F.array_join("reason_codes", " | "))
    return df


def export_channels(
    offers: DataFrame, root: str, as_of: date, channels: Iterable[str], fmt: str
) -> dict[str, str]:
    """Write treatment rows per channel to ``<root>/<as_of>/<channel>.<fmt>``; control rows never leave.

    One Spark write, partitioned by channel and repartitioned so each channel's rows sit in
    one task (one part file a channel). On a local filesystem each part file is then moved
    to ``<channel>.<fmt>``, a single file a channel system can pick up, and a channel with
    no rows gets an empty file (fresh and empty, never stale). On an object store the
    Spark output folder ``<channel>.<fmt>/`` is written per channel instead. Re-running
    overwrites. Returns channel -> path.
    """
    ext = "jsonl" if fmt == "jsonl" else "csv"
    base = f"{root.rstrip('/')}/{as_of.isoformat()}"
    frame = _export_frame(offers, fmt)
    channels = sorted(set(channels))

    def write(df: DataFrame, path: str, partition: str | None = None) -> None:
        writer = df.write.mode("overwrite")
        if partition:
            writer = writer.partitionBy(partition)
        if fmt == "csv":
            writer.option("header", "true").csv(path)
        else:
            writer.json(path)

    if is_uri(root):
        for channel in channels:
            rows = frame.where(F.col("channel") == channel).orderBy("subscriber_id", "rank").coalesce(1)
            write(rows, f"{base}/{channel}.{ext}")
        return {c: f"{base}/{c}.{ext}" for c in channels}

    tmp = Path(base) / "_spark_out"
    by_channel = (
        frame.where(F.col("channel").isin(channels))
        .withColumn("export_channel", F.col("channel"))
        .repartition("export_channel")
        .sortWithinPartitions("export_channel", "subscriber_id", "rank")
    )
    write(by_channel, str(tmp), partition="export_channel")
    paths: dict[str, str] = {}
    for channel in channels:
        target = Path(base) / f"{channel}.{ext}"
        parts = sorted((tmp / f"export_channel={channel}").glob("part-*"))
        if len(parts) == 1:
            os.replace(parts[0], target)
        else:  # no rows (or, defensively, several files): write the one file from the parts
            header = ",".join(c for c in frame.columns) + "\n" if fmt == "csv" else ""
            lines = [
                line
                for part in parts
                for line in part.read_text().splitlines(keepends=True)
                if not (fmt == "csv" and line == header)
            ]
            target.write_text(header + "".join(lines))
        paths[channel] = str(target)
    shutil.rmtree(tmp, ignore_errors=True)
    return paths


# ---------------------------------------------------------------------------- decision audit
def check_allocation(infeasible: Sequence[str], summary: str) -> CheckResult:
    """The solver found a feasible allocation (else: what cannot be met, and nothing new is published)."""
    if infeasible:
        more = f" (+{len(infeasible) - 1} more)" if len(infeasible) > 1 else ""
        return CheckResult("allocation", False, f"infeasible: {infeasible[0]}{more}")
    return CheckResult("allocation", True, summary)


def _push_contacts_before(
    history: DataFrame,
    triggers: DataFrame | None,
    as_of: date,
    push_channels: Sequence[str],
    window_days: int,
) -> DataFrame:
    """subscriber_id, contacts: push messages sent in the window before this run (treatment
    contacts of offer_history, one per contacted_ts, plus trigger offers)."""
    start = F.lit(as_of - timedelta(days=window_days - 1)).cast("timestamp")
    end = F.lit(as_of + timedelta(days=1)).cast("timestamp")
    sent = (
        history.where(
            (F.col("group") == "treatment")
            & F.col("channel").isin(list(push_channels))
            & (F.col("contacted_ts") >= start)
            & (F.col("contacted_ts") < end)
        )
        .select("subscriber_id", "channel", "contacted_ts")
        .distinct()
        .groupBy("subscriber_id")
        .agg(F.count(F.lit(1)).alias("contacts"))
    )
    if triggers is None:
        return sent
    pushed = (
        triggers.where(
            F.col("channel").isin(list(push_channels))
            & (F.col("emitted_at") >= start)
            & (F.col("emitted_at") < end)
        )
        .groupBy("subscriber_id")
        .agg(F.count(F.lit(1)).alias("contacts"))
    )
    return sent.unionByName(pushed).groupBy("subscriber_id").agg(F.sum("contacts").alias("contacts"))


def audit_decisions(
    staged: DataFrame,
    history: DataFrame,
    consents: DataFrame | None,
    as_of: date,
    constraints: Sequence,
    catalog,
    *,
    max_offers: int,
    max_push_contacts: int,
    contact_window_days: int,
    consent_allowed: Mapping[str, bool],
    triggers: DataFrame | None = None,
) -> list[CheckResult]:
    """Every allocation rule checked again on the staged rows, apart from the engine.

    The treatment rows (the ones sent) must keep: at most `max_offers` distinct offers per
    subscriber; one channel per offer; push contacts (this run's push channels plus those
    already sent in the window) at most `max_push_contacts`; no rank past the channel's
    slots; per channel, subscribers reached at most its daily capacity; expected
    incentive of each budget within its allowance, offer volumes within their bounds
    (the limits of `constraints`, tolerance 1e-6 relative); and consent for the channel
    (the newest consent row by as_of, else `consent_allowed`). A few small aggregates.
    """
    sent = staged.where(F.col("group") == "treatment")
    push = sorted(c for c in catalog.channels if catalog.kind(c) == "push")
    per_offer = sent.groupBy("subscriber_id", "offer_id").agg(F.countDistinct("channel").alias("channels"))
    per_sub = sent.groupBy("subscriber_id").agg(
        F.countDistinct("offer_id").alias("offers"),
        F.countDistinct(F.when(F.col("channel").isin(push), F.col("channel"))).alias("push_now"),
    )
    before = _push_contacts_before(history, triggers, as_of, push, contact_window_days)
    slots = F.create_map(
        *[x for ch, spec in sorted(catalog.channels.items()) for x in (F.lit(ch), F.lit(spec.slots))]
    )
    stats = first_row(
        per_sub.join(before, on="subscriber_id", how="left").agg(
            F.sum((F.col("offers") > max_offers).cast("long")).alias("over_offers"),
            F.sum(
                (
                    (F.col("push_now") > 0)
                    & (F.col("push_now") + F.coalesce(F.col("contacts"), F.lit(0)) > max_push_contacts)
                ).cast("long")
            ).alias("over_push"),
        ),
        "contact policy audit (per-subscriber offer and push counts)",
    )
    multi = per_offer.where(F.col("channels") > 1).count()
    past_slots = sent.where(F.col("rank") > F.coalesce(slots[F.col("channel")], F.lit(0))).count()

    if consents is not None:
        newest = (
            consents.where(F.col("updated_ts") < F.lit(as_of + timedelta(days=1)).cast("timestamp"))
            .groupBy("subscriber_id", "channel")
            .agg(
                F.max_by(
                    F.col("allowed").cast("int"),
                    F.struct(F.col("updated_ts"), (~F.col("allowed")).cast("int")),
                ).alias("allowed")
            )
        )
        joined = sent.join(newest, on=["subscriber_id", "channel"], how="left")
    else:
        joined = sent.withColumn("allowed", F.lit(None).cast("int"))
    default = F.lit(False)
    for ch, ok in sorted(consent_allowed.items()):
        default = F.when(F.col("channel") == ch, F.lit(bool(ok))).otherwise(default)
    without_consent = joined.where(F.coalesce(F.col("allowed") == 1, default) == F.lit(False)).count()

    usage = {
        r["channel"]: r["n"]
        for r in sent.groupBy("channel").agg(F.countDistinct("subscriber_id").alias("n")).collect()
    }
    by_offer = {
        r["offer_id"]: (r["n"], r["cost"] or 0.0)
        for r in sent.groupBy("offer_id")
        .agg(F.count(F.lit(1)).alias("n"), F.sum("expected_cost").alias("cost"))
        .collect()
    }
    over_capacity, over_budget, off_volume = [], [], []
    for c in constraints:
        if c.kind == "channel_capacity" and usage.get(c.key, 0) > c.limit:
            over_capacity.append(f"{c.key} {usage.get(c.key, 0):,} > {c.limit:,.0f}")
        elif c.kind == "budget":
            spent = sum(by_offer.get(o, (0, 0.0))[1] for o in c.offers)
            if spent > c.limit * (1 + 1e-6) + 1e-6:
                over_budget.append(f"{c.key} Rp {spent:,.0f} > Rp {c.limit:,.0f}")
        elif c.kind == "offer_max" and by_offer.get(c.key, (0, 0.0))[0] > c.limit:
            off_volume.append(f"{c.key} {by_offer[c.key][0]:,} > max {c.limit:,.0f}")
        elif c.kind == "offer_min" and by_offer.get(c.key, (0, 0.0))[0] < c.limit:
            off_volume.append(f"{c.key} {by_offer.get(c.key, (0, 0.0))[0]:,} < min {c.limit:,.0f}")

    def listed(name: str, items: list[str], ok: str) -> CheckResult:
        return CheckResult(name, not items, "; ".join(items) if items else ok)

    return [
        CheckResult(
            "offer_cap",
            stats["over_offers"] in (0, None),
            f"{stats['over_offers'] or 0:,} subscriber(s) with more than {max_offers} offers",
        ),
        CheckResult(
            "one_channel_per_offer", multi == 0, f"{multi:,} (subscriber, offer) pairs on several channels"
        ),
        CheckResult(
            "push_contacts",
            stats["over_push"] in (0, None),
            f"{stats['over_push'] or 0:,} subscriber(s) over {max_push_contacts} push contacts in "
            f"{contact_window_days} days",
        ),
        CheckResult("slots", past_slots == 0, f"{past_slots:,} rows ranked past their channel's slots"),
        listed("capacity", over_capacity, "every channel within its daily capacity"),
        listed("budget", over_budget, "every budget within today's allowance"),
        listed("volume", off_volume, "every offer within its daily volume bounds"),
        CheckResult(
            "consent", without_consent == 0, f"{without_consent:,} rows to a channel without consent"
        ),
    ]


# ---------------------------------------------------------------------------- decision log
DECISIONS_COLUMNS = (
    "decision_id",
    "subscriber_id",
    "offer_id",
    "channel",
    "group",
    "probability",
    "model_versions",
    "source",
    "campaign_id",
    "net_value",
    "expected_cost",
    "valid_from",
    "valid_to",
    "run_id",
    "as_of",
    # The event a trigger decision answered (null for batch decisions).
    "event_type",
    "event_ts",
)
#: Gold `decisions` rows of one source, for the batch's replaceWhere: a re-run of the
#: offers stage replaces its own rows of the day, never the trigger decisions of that day.
BATCH_SOURCE = "source = 'batch'"


def decision_rows(
    published: DataFrame, scores: DataFrame, campaign_id: str, uplift_version: str | None
) -> DataFrame:
    """gold `decisions` rows of a published batch: one per offers row (treatment, control
    and holdout).

    Needs the published offers (OFFERS_SCHEMA) and the as_of scores (subscriber_id,
    model_versions). ``model_versions`` is the scores' map plus ``uplift`` when the row's
    uplift came from the model; ``probability`` is the offers row's (invariant 9);
    ``source`` 'batch'; ``campaign_id`` the row's (`campaign_id` for offers published
    before rows carried one).
    """
    require_columns(scores, ("subscriber_id",), "decision_rows(scores)")
    if "model_versions" not in scores.columns:  # scores written before versions were kept
        scores = scores.withColumn("model_versions", F.lit(None).cast("map<string,string>"))
    versions = F.coalesce(F.col("model_versions"), F.create_map().cast("map<string,string>"))
    row_campaign = [F.col("campaign_id")] if "campaign_id" in published.columns else []
    if uplift_version is not None:
        uplift = F.when(
            F.col("uplift_source") == "model", F.create_map(F.lit("uplift"), F.lit(uplift_version))
        ).otherwise(F.create_map().cast("map<string,string>"))
        versions = F.map_concat(versions, uplift)
    return (
        published.join(scores.select("subscriber_id", "model_versions"), on="subscriber_id", how="left")
        .withColumn("model_versions", versions)
        .withColumn("source", F.lit("batch"))
        .withColumn("campaign_id", F.coalesce(*row_campaign, F.lit(campaign_id)))
        .withColumn("event_type", F.lit(None).cast("string"))
        .withColumn("event_ts", F.lit(None).cast("timestamp"))
        .select(*DECISIONS_COLUMNS)
    )
