"""Allocation: one decision per subscriber across channels, for the whole base at once.

The offer engine hands over *actions*: one row per (subscriber, offer, channel) that passed
every per-row rule (eligibility, price floor, cool-down, consent, rest, per-channel cap),
with its net incremental value (`with_net_value`). This module chooses which actions go
out, as in ../shared/DECISION_CORE.md:

    maximise  sum_ia v_ia x_ia
    s.t.      per subscriber: at most `max_offers` distinct offers, one channel per offer,
              at most `push_left` push contacts, at most `slots` offers per channel;
              per run: channel contacts <= daily_capacity, expected incentive of each
              budget's offers <= its paced daily allowance, decisions per offer within
              [min_daily_volume, max_daily_volume].

The per-run ("global") constraints are relaxed with prices: for prices lambda each
subscriber solves a tiny problem alone, *in Spark*: its actions, sorted by adjusted value
``v - min_net_value - lambda . c`` (a contact's channel price is paid once per channel),
are folded left to right with `F.aggregate` (a higher-order column expression, no UDF),
taking an action when it is worth something and no per-subscriber limit is hit. One pass
is a map over one row per subscriber plus a tiny aggregate of usage per (offer, channel)
collected to the driver, which moves the prices by the constraint violations (projected
subgradient with a step per constraint that halves when its violation changes sign and
grows by half while it keeps its sign: it brackets each price like a bisection).

Prices are first found on a hashed sample of subscribers (limits scaled by the sample's
share), then refined by `full_passes` passes on the whole base; a last greedy repair cuts
the lowest-value treatment decisions of any constraint still over its limit (budgets,
then offer maxima, then channel capacities: a cut only lowers the use of the others), so
the published decisions hold every limit exactly. A minimum volume that the eligible
actions cannot reach is reported as infeasible; the stage then publishes nothing new.

Greedy (the baseline to beat) is the same fold with all prices at zero followed by the
same repair: fill by value per subscriber, cut by value where a limit is exceeded.

Only treatment decisions use budgets and capacity (control and holdout rows are never
sent); they are decided with the same prices, so they stay a fair counterfactual. The
group is per action: with campaigns a subscriber can be in one campaign's control and
another's treatment, so a contact counts towards a channel's capacity from the first
*treatment* action the subscriber takes on that channel.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from cvo_spark.core.config import AllocationConfig
from cvo_spark.core.util import first_row, require_columns

log = logging.getLogger(__name__)

#: What the fold decided for an action.
CHOSEN, PRICED_OUT, BELOW_THRESHOLD = "chosen", "priced_out", "below_threshold"
OFFER_ON_OTHER_CHANNEL, OFFER_CAP, PUSH_CAP, SLOTS, REPAIRED = (
    "offer_on_other_channel",
    "offer_cap",
    "push_cap",
    "slots",
    "repaired",
)
#: What an action row needs. ``net_value``: incremental margin net of incentive and
#: displaced spend, *before* the contact cost; ``contact_cost``: the channel's cost per
#: contact, paid once however many of the subscriber's offers the contact carries;
#: ``expected_cost``: expected incentive paid (what budgets count); ``push_left``: push
#: contacts the subscriber may still get in the window.
ACTION_COLUMNS = (
    "subscriber_id",
    "offer_id",
    "channel",
    "channel_kind",
    "slots",
    "net_value",
    "contact_cost",
    "expected_cost",
    "group",
    "push_left",
)


# ---------------------------------------------------------------------------- constraints
@dataclass(frozen=True)
class Constraint:
    """One per-run constraint. kind: 'channel_capacity' (contacts on `key`), 'budget'
    (expected incentive, Rp, of `offers`), 'offer_max' / 'offer_min' (decisions of `key`)."""

    name: str
    kind: str
    key: str
    limit: float
    offers: tuple[str, ...] = ()

    @property
    def sense(self) -> str:
        return ">=" if self.kind == "offer_min" else "<="

    @property
    def unit(self) -> str:
        return {"channel_capacity": "contact", "budget": "Rp of incentive"}.get(self.kind, "decision")


def paced_allowance(amount: float, spent: float, start: date, end: date, as_of: date) -> float:
    """Today's share of a budget: what is left spread evenly over the days left (today
    included). Before `start` or after `end` nothing may be committed."""
    if as_of < start or as_of > end:
        return 0.0
    days_left = (end - as_of).days + 1
    return max(amount - spent, 0.0) / days_left


#: The business defaults live once, in the config model; the parameter objects take theirs.
_ALLOCATION = AllocationConfig()


@dataclass(frozen=True)
class AllocationParams:
    """Plain values of config ``offers.allocation`` for the solver (`offers.stage.allocation_params`)."""

    max_offers: int = _ALLOCATION.max_offers_per_subscriber
    min_net_value: float = _ALLOCATION.min_net_value
    sample_share: float = _ALLOCATION.solver_sample_share
    max_iterations: int = _ALLOCATION.solver_max_iterations
    full_passes: int = _ALLOCATION.solver_full_passes
    tolerance: float = _ALLOCATION.solver_tolerance
    seed: int = _ALLOCATION.solver_seed


@dataclass
class AllocationResult:
    """The decided actions (every input row with ``allocation_status``, ``adjusted_value``
    and ``first_on_channel``) and what the solver did."""

    actions: DataFrame
    prices: dict[str, float]
    usage: dict[str, float]
    constraints: tuple[Constraint, ...]
    iterations: int
    history: list[dict[str, float]] = field(default_factory=list)
    infeasible: list[str] = field(default_factory=list)
    #: The persisted action rows the caller built (unpersisted with `actions`).
    inputs: DataFrame | None = None

    def report(self) -> list[dict[str, Any]]:
        """Per constraint: limit, use, shadow price, whether it binds (what `runs` records)."""
        out = []
        for c in self.constraints:
            use = self.usage.get(c.name, 0.0)
            out.append(
                {
                    "constraint": c.name,
                    "kind": c.kind,
                    "limit": c.limit,
                    "use": use,
                    "shadow_price": self.prices.get(c.name, 0.0),
                    "sense": c.sense,
                }
            )
        return out


# ---------------------------------------------------------------------------- prices as columns
def _map(values: Mapping[str, float]) -> Column:
    if not values:
        return F.create_map().cast("map<string,double>")
    return F.create_map(*[x for k in sorted(values) for x in (F.lit(k), F.lit(float(values[k])))])


def _price_maps(constraints: Sequence[Constraint], prices: Mapping[str, float]) -> tuple[dict, dict, dict]:
    """(per offer: price per Rp of expected incentive; per offer: price per decision, a
    minimum's subsidy negative; per channel: price per contact)."""
    per_cost: dict[str, float] = {}
    per_unit: dict[str, float] = {}
    per_contact: dict[str, float] = {}
    for c in constraints:
        lam = prices.get(c.name, 0.0)
        if lam == 0:
            continue
        if c.kind == "budget":
            for o in c.offers:
                per_cost[o] = per_cost.get(o, 0.0) + lam
        elif c.kind == "offer_max":
            per_unit[c.key] = per_unit.get(c.key, 0.0) + lam
        elif c.kind == "offer_min":
            per_unit[c.key] = per_unit.get(c.key, 0.0) - lam
        elif c.kind == "channel_capacity":
            per_contact[c.key] = per_contact.get(c.key, 0.0) + lam
    return per_cost, per_unit, per_contact


# ---------------------------------------------------------------------------- per subscriber
def _explored(actions: DataFrame) -> Column:
    """The optional ``explored`` flag (`offers.engine.with_exploration`), false when absent."""
    if "explored" in actions.columns:
        return F.coalesce(F.col("explored"), F.lit(False))
    return F.lit(False)


def actions_by_subscriber(actions: DataFrame) -> DataFrame:
    """One row per subscriber: ``subscriber_id, push_left, actions`` (array of structs
    offer_id, channel, is_push, slots, net_value, expected_cost, contact_cost, group,
    explored). Needs ACTION_COLUMNS (``explored`` optional: an explored action is taken
    whatever its value, see `with_exploration`)."""
    require_columns(actions, ACTION_COLUMNS, "actions_by_subscriber")
    item = F.struct(
        F.col("offer_id"),
        F.col("channel"),
        (F.col("channel_kind") == "push").alias("is_push"),
        F.col("slots").cast("int").alias("slots"),
        F.col("net_value").cast("double").alias("net_value"),
        F.col("expected_cost").cast("double").alias("expected_cost"),
        F.col("contact_cost").cast("double").alias("contact_cost"),
        F.col("group"),
        _explored(actions).alias("explored"),
    )
    return actions.groupBy("subscriber_id").agg(
        F.first("push_left").cast("int").alias("push_left"),
        F.collect_list(item).alias("actions"),
    )


def _decide(
    per_sub: DataFrame, constraints: Sequence[Constraint], prices: Mapping[str, float], p: AllocationParams
) -> DataFrame:
    """Add ``decided``: the fold's outcome per action (status, adjusted value, first on channel)."""
    per_cost, per_unit, per_contact = _price_maps(constraints, prices)
    cost_map, unit_map, contact_map = _map(per_cost), _map(per_unit), _map(per_contact)

    def priced(a: Column) -> Column:
        fixed = (
            a["net_value"]
            - F.lit(p.min_net_value)
            - F.coalesce(cost_map[a["offer_id"]], F.lit(0.0)) * a["expected_cost"]
            - F.coalesce(unit_map[a["offer_id"]], F.lit(0.0))
        )
        # A contact's cost and capacity price are paid by the first action on the channel.
        contact = a["contact_cost"] + F.coalesce(contact_map[a["channel"]], F.lit(0.0))
        return F.struct(
            (fixed - contact).alias("sort_value"),
            fixed.alias("fixed"),
            contact.alias("contact_price"),
            a["contact_cost"].alias("contact_cost"),
            a["offer_id"].alias("offer_id"),
            a["channel"].alias("channel"),
            a["is_push"].alias("is_push"),
            a["slots"].alias("slots"),
            a["net_value"].alias("net_value"),
            a["expected_cost"].alias("expected_cost"),
            a["group"].alias("group"),
            a["explored"].alias("explored"),
        )

    # Best first; ties on offer_id then channel, so the fold is deterministic.
    ordered = F.array_sort(
        F.transform("actions", priced),
        lambda x, y: (
            F.when(x["sort_value"] > y["sort_value"], -1)
            .when(x["sort_value"] < y["sort_value"], 1)
            .when(x["offer_id"] < y["offer_id"], -1)
            .when(x["offer_id"] > y["offer_id"], 1)
            .when(x["channel"] < y["channel"], -1)
            .when(x["channel"] > y["channel"], 1)
            .otherwise(0)
        ),
    )
    out_type = (
        "array<struct<offer_id:string,channel:string,status:string,adjusted_value:double,"
        "first_on_channel:boolean,first_sent_on_channel:boolean,net_value:double,"
        "expected_cost:double,contact_cost:double,group:string,explored:boolean>>"
    )
    init = F.struct(
        F.array().cast("array<string>").alias("offers"),
        F.array().cast("array<string>").alias("channels"),
        F.array().cast("array<string>").alias("sent"),
        F.lit(0).alias("push_used"),
        F.array().cast(out_type).alias("out"),
    )
    push_left = F.col("push_left")
    max_offers = F.lit(p.max_offers)

    def step(acc: Column, a: Column) -> Column:
        new_channel = ~F.array_contains(acc["channels"], a["channel"])
        adjusted = a["fixed"] - F.when(new_channel, a["contact_price"]).otherwise(F.lit(0.0))
        on_channel = F.size(F.filter(acc["channels"], lambda c: c == a["channel"]))
        status = (
            F.when(F.array_contains(acc["offers"], a["offer_id"]), F.lit(OFFER_ON_OTHER_CHANNEL))
            .when(F.size(acc["offers"]) >= max_offers, F.lit(OFFER_CAP))
            .when(a["is_push"] & new_channel & (acc["push_used"] >= push_left), F.lit(PUSH_CAP))
            .when(on_channel >= a["slots"], F.lit(SLOTS))
            # Exploration is exempt from the value threshold (and from prices), never from
            # the caps above; budgets and capacities hold through the repair.
            .when(a["explored"], F.lit(CHOSEN))
            .when(
                adjusted <= 0,
                F.when(
                    a["net_value"] - a["contact_cost"] <= F.lit(p.min_net_value), F.lit(BELOW_THRESHOLD)
                ).otherwise(F.lit(PRICED_OUT)),
            )
            .otherwise(F.lit(CHOSEN))
        )
        take = status == CHOSEN
        # Contacts that use capacity: the first treatment action on the channel.
        first_sent = take & (a["group"] == "treatment") & ~F.array_contains(acc["sent"], a["channel"])
        decided = F.struct(
            a["offer_id"].alias("offer_id"),
            a["channel"].alias("channel"),
            status.alias("status"),
            adjusted.alias("adjusted_value"),
            (take & new_channel).alias("first_on_channel"),
            first_sent.alias("first_sent_on_channel"),
            a["net_value"].alias("net_value"),
            a["expected_cost"].alias("expected_cost"),
            a["contact_cost"].alias("contact_cost"),
            a["group"].alias("group"),
            a["explored"].alias("explored"),
        )
        return F.struct(
            F.when(take, F.array_union(acc["offers"], F.array(a["offer_id"])))
            .otherwise(acc["offers"])
            .alias("offers"),
            F.when(take, F.concat(acc["channels"], F.array(a["channel"])))
            .otherwise(acc["channels"])
            .alias("channels"),
            F.when(first_sent, F.concat(acc["sent"], F.array(a["channel"])))
            .otherwise(acc["sent"])
            .alias("sent"),
            (acc["push_used"] + F.when(take & a["is_push"] & new_channel, 1).otherwise(0)).alias("push_used"),
            F.concat(acc["out"], F.array(decided)).alias("out"),
        )

    return per_sub.withColumn("decided", F.aggregate(ordered, init, step, lambda acc: acc["out"]))


def _usage_rows(decided: DataFrame) -> list:
    """Per (offer, channel) of chosen treatment actions: decisions, contacts, expected cost, value."""
    chosen = decided.select(
        F.explode(F.filter("decided", lambda d: (d["status"] == CHOSEN) & (d["group"] == "treatment"))).alias(
            "d"
        )
    ).select("d.*")
    return (
        chosen.groupBy("offer_id", "channel")
        .agg(
            F.count(F.lit(1)).alias("decisions"),
            F.sum(F.col("first_sent_on_channel").cast("long")).alias("contacts"),
            F.sum("expected_cost").alias("cost"),
            F.sum("net_value").alias("value"),
        )
        .collect()
    )


def constraint_usage(
    rows: Sequence, constraints: Sequence[Constraint]
) -> tuple[dict[str, float], dict[str, float]]:
    """(use, value) per constraint from the `_usage_rows` aggregate (driver side, tiny)."""
    use: dict[str, float] = {c.name: 0.0 for c in constraints}
    value: dict[str, float] = {c.name: 0.0 for c in constraints}
    for r in rows:
        for c in constraints:
            if c.kind == "channel_capacity" and r["channel"] == c.key:
                use[c.name] += r["contacts"] or 0
            elif c.kind == "budget" and r["offer_id"] in c.offers:
                use[c.name] += r["cost"] or 0.0
            elif c.kind in ("offer_max", "offer_min") and r["offer_id"] == c.key:
                use[c.name] += r["decisions"] or 0
            else:
                continue
            value[c.name] += r["value"] or 0.0
    return use, value


def _violation(c: Constraint, use: float, limit: float) -> float:
    """Relative violation (> 0: broken), 0 when the limit is 0 and nothing uses it."""
    base = max(limit, 1e-9)
    return (use - limit) / base if c.sense == "<=" else (limit - use) / base


def _converged(
    constraints: Sequence[Constraint],
    use: Mapping[str, float],
    prices: Mapping[str, float],
    scale: float,
    tol: float,
) -> bool:
    for c in constraints:
        limit = c.limit * scale
        v = _violation(c, use[c.name], limit)
        if v > tol:
            return False
        # A priced constraint should be (nearly) tight: otherwise the price is too high.
        if prices.get(c.name, 0.0) > 0 and v < -max(5 * tol, 0.05):
            return False
    return True


class _PriceSearch:
    """Per-constraint price steps: grow while the violation keeps its sign, halve on a flip."""

    def __init__(self, constraints: Sequence[Constraint]):
        self.constraints = tuple(constraints)
        self.prices: dict[str, float] = {c.name: 0.0 for c in constraints}
        self.steps: dict[str, float] = {}
        self.last_sign: dict[str, int] = {}

    def update(self, use: Mapping[str, float], value: Mapping[str, float], scale: float) -> None:
        for c in self.constraints:
            limit = c.limit * scale
            v = _violation(c, use[c.name], limit)
            if c.name not in self.steps:
                # First step: half the mean value per unit the constraint's actions bring.
                per_unit = value[c.name] / use[c.name] if use[c.name] > 0 else 1.0
                self.steps[c.name] = max(abs(per_unit), 1e-6) * 0.5
            sign = 1 if v > 0 else -1
            if c.name in self.last_sign:
                self.steps[c.name] *= 0.5 if sign != self.last_sign[c.name] else 1.5
            self.last_sign[c.name] = sign
            if v <= 0 and self.prices[c.name] == 0:
                continue  # slack and unpriced: stays free
            self.prices[c.name] = max(0.0, self.prices[c.name] + sign * self.steps[c.name])


def sample_of(per_sub: DataFrame, share: float, seed: int) -> DataFrame:
    """A stable hashed sample of subscribers (the same share whatever the partitioning)."""
    if share >= 1:
        return per_sub
    bucket = F.pmod(F.xxhash64(F.lit(seed), F.col("subscriber_id")), F.lit(1_000_000)) / 1_000_000.0
    return per_sub.where(bucket < F.lit(share))


def solve_prices(
    per_sub: DataFrame, constraints: Sequence[Constraint], p: AllocationParams
) -> tuple[dict[str, float], int, list[dict[str, float]]]:
    """Dual prices for `constraints` (see the module docstring); (prices, passes, history)."""
    if not constraints:
        return {}, 0, []
    search = _PriceSearch(constraints)
    history: list[dict[str, float]] = []
    passes = 0
    sample = sample_of(per_sub, p.sample_share, p.seed)
    stages: list[tuple[DataFrame, int]] = []
    if p.sample_share < 1:
        sample = sample.cache()
        total = per_sub.count()
        scale = sample.count() / total if total else 1.0
        if scale > 0:
            stages.append((sample, p.max_iterations))
    stages.append((per_sub, p.full_passes if p.sample_share < 1 else p.max_iterations))
    try:
        for frame, max_passes in stages:
            scale = 1.0 if frame is per_sub else scale
            for _ in range(max_passes):
                use, value = constraint_usage(
                    _usage_rows(_decide(frame, constraints, search.prices, p)), constraints
                )
                passes += 1
                history.append(
                    {
                        "pass": float(passes),
                        "scale": scale,
                        **{f"use:{k}": v / scale for k, v in use.items()},
                        **{f"price:{k}": v for k, v in search.prices.items()},
                    }
                )
                if _converged(constraints, use, search.prices, scale, p.tolerance):
                    break
                search.update(use, value, scale)
    finally:
        if p.sample_share < 1:
            sample.unpersist()
    return dict(search.prices), passes, history


def decide_with_prices(
    actions: DataFrame, constraints: Sequence[Constraint], prices: Mapping[str, float], p: AllocationParams
) -> DataFrame:
    """Each action's status under given prices, without the final repair (what `cvo
    explain` re-runs for one subscriber with the prices the batch found)."""
    return _explode_decided(_decide(actions_by_subscriber(actions), constraints, prices, p))


def binding_constraint(
    constraints: Sequence[Constraint],
    prices: Mapping[str, float],
    offer_id: str,
    channel: str,
    expected_cost: float,
) -> tuple[Constraint, float] | None:
    """The priced constraint that costs this action the most, and what it costs (Rp)."""
    best: tuple[Constraint, float] | None = None
    for c in constraints:
        lam = prices.get(c.name, 0.0)
        if lam <= 0:
            continue
        if c.kind == "budget" and offer_id in c.offers:
            cost = lam * expected_cost
        elif c.kind == "offer_max" and c.key == offer_id or c.kind == "channel_capacity" and c.key == channel:
            cost = lam
        else:
            continue
        if best is None or cost > best[1]:
            best = (c, cost)
    return best


# ---------------------------------------------------------------------------- repair
def _explode_decided(decided: DataFrame) -> DataFrame:
    return decided.select("subscriber_id", F.explode("decided").alias("d")).select("subscriber_id", "d.*")


def _live_use(live: DataFrame, c: Constraint) -> float:
    """Use of constraint `c` by the live (chosen treatment) rows: one small aggregate."""
    if c.kind == "budget":
        agg = F.sum(F.when(F.col("offer_id").isin(list(c.offers)), F.col("expected_cost")).otherwise(0.0))
    elif c.kind in ("offer_max", "offer_min"):
        agg = F.sum((F.col("offer_id") == c.key).cast("long"))
    else:
        agg = F.countDistinct(F.when(F.col("channel") == c.key, F.col("subscriber_id")))
    return float(first_row(live.agg(agg.alias("u")), f"use of constraint {c.name}")["u"] or 0.0)


def repair(rows: DataFrame, constraints: Sequence[Constraint]) -> DataFrame:
    """Cut the lowest-value chosen treatment actions of each <= constraint beyond its limit.

    Needs the exploded decisions (subscriber_id, group, offer_id, channel, status,
    adjusted_value, expected_cost). Budgets first (keep by value per Rp of expected cost
    while the cumulative cost fits), then offer maxima (by value), then channel capacities
    (whole contacts, by the contact's value); a cut sets status 'repaired' and ``cut_by``
    to the constraint's name. Only the chosen treatment rows (at most a few per subscriber)
    are ranked, and only for a constraint actually over its limit.
    """
    # Global orders below are fine: the live rows are few (the caps hold per subscriber).
    is_live = (F.col("status") == CHOSEN) & (F.col("group") == "treatment")
    rows = rows.withColumn("cut_by", F.lit(None).cast("string"))
    # Explored decisions are cut last, and among themselves in a random order (not by value):
    # they were drawn with a logged probability that a cut by value would falsify. Only an
    # exploration share too big for a limit on its own gets any of them cut.
    explored = _explored(rows)
    explored_last = F.when(explored, 0).otherwise(1)

    def keep_order(value: Column) -> Column:
        shuffled = F.xxhash64(F.lit("explore_cut"), "subscriber_id", "offer_id", "channel").cast("double")
        return F.when(explored, shuffled).otherwise(value).desc()

    live = rows.where(is_live).localCheckpoint(eager=True)
    rest = rows.where(~is_live)
    ordered = sorted(
        (c for c in constraints if c.sense == "<="),
        key=lambda c: {"budget": 0, "offer_max": 1, "channel_capacity": 2}[c.kind],
    )
    for c in ordered:
        if _live_use(live, c) <= c.limit * (1 + 1e-9):
            continue
        if c.kind == "budget":
            member = F.col("offer_id").isin(list(c.offers))
            w = Window.orderBy(
                F.when(member, 0).otherwise(1),
                explored_last,
                keep_order(F.col("adjusted_value") / F.greatest(F.col("expected_cost"), F.lit(1e-9))),
                "subscriber_id",
                "offer_id",
                "channel",
            ).rowsBetween(Window.unboundedPreceding, 0)
            cum = F.sum(F.when(member, F.col("expected_cost")).otherwise(0.0)).over(w)
            over = member & (cum > F.lit(c.limit) * (1 + 1e-12))
        elif c.kind == "offer_max":
            member = F.col("offer_id") == c.key
            w = Window.orderBy(
                F.when(member, 0).otherwise(1),
                explored_last,
                keep_order(F.col("adjusted_value")),
                "subscriber_id",
                "channel",
            ).rowsBetween(Window.unboundedPreceding, 0)
            over = member & (F.sum(member.cast("long")).over(w) > F.lit(c.limit))
        else:  # a contact is all of a subscriber's actions on the channel
            member = F.col("channel") == c.key
            live = live.withColumn(
                "_contact_value", F.sum("adjusted_value").over(Window.partitionBy("subscriber_id", "channel"))
            )
            ranked = F.dense_rank().over(
                Window.orderBy(
                    F.when(member, 0).otherwise(1),
                    explored_last,
                    keep_order(F.col("_contact_value")),
                    "subscriber_id",
                )
            )
            over = member & (ranked > F.lit(c.limit))
        live = (
            live.withColumn("_over", over)
            .withColumn("status", F.when(F.col("_over"), F.lit(REPAIRED)).otherwise(F.col("status")))
            .withColumn("cut_by", F.when(F.col("_over"), F.lit(c.name)).otherwise(F.col("cut_by")))
            .drop("_over", "_contact_value")
        )
        cut = live.where(F.col("status") == REPAIRED)
        rest = rest.unionByName(cut)
        live = live.where(F.col("status") == CHOSEN).localCheckpoint(eager=True)
    return rest.unionByName(live)


def allocate(
    actions: DataFrame, constraints: Sequence[Constraint], p: AllocationParams, greedy: bool = False
) -> AllocationResult:
    """Choose actions under `constraints` (greedy=True: prices stay at zero, the baseline).

    Needs ACTION_COLUMNS. Returns every action with ``allocation_status`` (CHOSEN or why
    not), ``adjusted_value``, ``first_on_channel`` and ``cut_by`` (the constraint a repair
    cut it for), persisted (the caller unpersists ``result.actions`` when done).
    """
    constraints = tuple(constraints)
    infeasible = _pool_infeasible(actions, constraints)
    per_sub = actions_by_subscriber(actions).persist()
    history: list[dict[str, float]]
    try:
        if greedy:
            prices, passes, history = {c.name: 0.0 for c in constraints}, 0, []
        else:
            prices, passes, history = solve_prices(per_sub, constraints, p)
        decided = _explode_decided(_decide(per_sub, constraints, prices, p))
        repaired = repair(decided, constraints).persist()
        repaired.count()
    finally:
        per_sub.unpersist()
    live = repaired.where((F.col("status") == CHOSEN) & (F.col("group") == "treatment"))
    usage = {c.name: _live_use(live, c) for c in constraints}
    for c in constraints:
        if (
            c.sense == ">="
            and usage[c.name] < c.limit * (1 - p.tolerance)
            and not any(m.startswith(f"{c.name}:") for m in infeasible)
        ):
            infeasible.append(
                f"{c.name}: {usage[c.name]:,.0f} decisions reachable within the other limits, "
                f"minimum {c.limit:,.0f}"
            )
    return AllocationResult(
        actions=repaired.withColumnRenamed("status", "allocation_status"),
        prices=prices,
        usage=usage,
        constraints=constraints,
        iterations=passes,
        history=history,
        infeasible=infeasible,
    )


def _pool_infeasible(actions: DataFrame, constraints: Sequence[Constraint]) -> list[str]:
    """Minimum volumes no eligible set can reach: fewer treatment subscribers with an
    action for the offer than the minimum."""
    mins = [c for c in constraints if c.sense == ">="]
    if not mins:
        return []
    pool = {
        r["offer_id"]: r["n"]
        for r in actions.where(
            (F.col("group") == "treatment") & F.col("offer_id").isin([c.key for c in mins])
        )
        .groupBy("offer_id")
        .agg(F.countDistinct("subscriber_id").alias("n"))
        .collect()
    }
    return [
        f"{c.name}: only {pool.get(c.key, 0):,} eligible treatment subscribers, minimum {c.limit:,.0f}"
        for c in mins
        if pool.get(c.key, 0) < c.limit
    ]


__all__ = [
    "ACTION_COLUMNS",
    "AllocationParams",
    "AllocationResult",
    "Constraint",
    "actions_by_subscriber",
    "allocate",
    "binding_constraint",
    "constraint_usage",
    "decide_with_prices",
    "paced_allowance",
    "repair",
    "sample_of",
    "solve_prices",
]
