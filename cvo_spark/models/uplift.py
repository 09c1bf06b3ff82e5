"""Uplift: what each offer on each channel adds over doing nothing, per subscriber.

Learned from `offer_history`, a randomised experiment per contact (treatment contacted,
control held out by a hash). The learner is a **pooled T-learner**: two gradient-boosted
classifiers over every offer and channel at once,

    mu1(x, a) = P(accept | contacted with a),    fitted on treatment rows,
    mu0(x, a) = P(accept | not contacted),       fitted on control rows,
    uplift(x, a) = mu1 - mu0,

where x are the subscriber's features as of the latest weekly snapshot before the contact,
and a = (offer, channel) enters as features: the offer's own indicator, its category, type,
price and margin, its price over the subscriber's typical recharge, the channel, and the
number of contacts the subscriber got in the `fatigue_days` before (contact fatigue). One
model per arm pools all offers, so a rare offer borrows strength from its category, price
and channel (the trees split on the offer indicator only where its data say so).

Why this T-learner: an S-learner (one model with the treatment flag as a feature) lets the
trees ignore a weak flag and shrink every effect to zero. With a 90/10 split the control arm
is the noisy one, so it gets a small, shallow model (15 trees of depth 2, at least 20
contacts a leaf) without the channel and recent-contact inputs, which cannot change what
someone does when nobody contacts them. Measured on the generator's planted truth (6,000
subscribers, 56 days of contacts, 2,300 of them control): correlation of the predicted with
the planted effect over every subscriber x offer x channel 0.24 with both arms alike (and
sleeping dogs ranked above persuadables in one persona of four), 0.38 with a depth-3 control
model, 0.41 with a logistic control model, 0.44 with this one, which ranks sleeping dogs
below persuadables in all four. X/DR-learners are the next thing to try against it
(`benchmarks/bench_uplift.py` holds the comparison).

Point in time: a contact on day c uses the snapshot of the latest snapshot date < c, and
its label is an acceptance within `outcome_days` of the contact; only contacts whose outcome
window closed by as_of are used. Snapshots are weekly, so the training frame grows with the
contacts but the feature computation does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import cast

from pyspark.ml import PipelineModel, Transformer
from pyspark.ml.classification import GBTClassifier
from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from cvo_spark.core.config import ModelsConfig, UpliftConfig
from cvo_spark.core.schemas import SUBSCRIBER_CHANNELS
from cvo_spark.core.util import require_columns
from cvo_spark.models.propensity import (
    MODEL_FEATURES,
    build_classifier,
    with_model_inputs,
    without_training_summary,
)

TREATED, CONTROL = "uplift_t", "uplift_c"
OFFER_TYPES = ("upsell", "cross_sell", "retention", "loyalty")
HISTORY_COLUMNS = ("subscriber_id", "offer_id", "channel", "contacted_ts", "group", "accepted", "accepted_ts")
CATALOG_COLUMNS = ("offer_id", "offer_type", "category", "price", "unit_cost")


@dataclass(frozen=True)
class UpliftParams:
    """Plain values for the uplift transforms (the stages fill them from config)."""

    # Defaults from the config model (written once there); the control arm's are fixed below.
    snapshot_days: int = UpliftConfig().snapshot_days
    history_days: int = UpliftConfig().history_days
    outcome_days: int = UpliftConfig().outcome_days
    fatigue_days: int = UpliftConfig().fatigue_days
    evaluation_days: int = UpliftConfig().evaluation_days
    max_iter: int = UpliftConfig().gbt_max_iter
    max_depth: int = UpliftConfig().gbt_max_depth
    #: The control arm (10% of contacts) gets a smaller, shallower model: see the module docstring.
    control_max_iter: int = 15
    control_max_depth: int = 2
    control_min_instances: int = 20
    seed: int = ModelsConfig().seed
    #: Each arm learns from at most this many contacts (a seeded sample beyond): the fit's
    #: cost stops growing with the base while the control arm keeps all it has below it.
    max_contacts_per_arm: int = UpliftConfig().max_contacts_per_arm


# ---------------------------------------------------------------------------- features
def offer_feature_names(offer_ids: Sequence[str], categories: Sequence[str]) -> list[str]:
    """The action features, in a stable order (stored with the model)."""
    return [
        "offer_price",
        "offer_margin",
        "price_to_recharge",
        "recent_contacts",
        *[f"is_type_{t}" for t in OFFER_TYPES],
        *[f"is_category_{c}" for c in sorted(categories)],
        *[f"is_channel_{c}" for c in SUBSCRIBER_CHANNELS],
        *[f"is_offer_{o}" for o in sorted(offer_ids)],
    ]


def with_action_features(rows: DataFrame, offer_ids: Sequence[str], categories: Sequence[str]) -> DataFrame:
    """Add the action features of `offer_feature_names` as doubles.

    Needs offer_id, channel, offer_type, category, price, unit_cost, recharge_mean_amount,
    recent_contacts. An offer the catalog no longer has keeps null price and margin (the
    model's imputer fills them) and zero indicators.
    """
    require_columns(
        rows,
        [
            "offer_id",
            "channel",
            "offer_type",
            "category",
            "price",
            "unit_cost",
            "recharge_mean_amount",
            "recent_contacts",
        ],
        "with_action_features",
    )
    typical = F.col("recharge_mean_amount")
    cols: dict[str, Column] = {
        "offer_price": F.col("price").cast("double"),
        "offer_margin": (F.col("price") - F.col("unit_cost")).cast("double"),
        "price_to_recharge": F.when(typical > 0, F.col("price") / typical).cast("double"),
        "recent_contacts": F.coalesce(F.col("recent_contacts"), F.lit(0)).cast("double"),
    }
    for t in OFFER_TYPES:
        cols[f"is_type_{t}"] = (F.col("offer_type") == t).cast("double")
    for c in sorted(categories):
        cols[f"is_category_{c}"] = (F.col("category") == c).cast("double")
    for c in SUBSCRIBER_CHANNELS:
        cols[f"is_channel_{c}"] = (F.col("channel") == c).cast("double")
    for o in sorted(offer_ids):
        cols[f"is_offer_{o}"] = (F.col("offer_id") == o).cast("double")
    return rows.withColumns(
        {k: F.coalesce(v, F.lit(0.0)) if k.startswith("is_") else v for k, v in cols.items()}
    )


def with_model_rows(
    rows: DataFrame, offer_ids: Sequence[str], categories: Sequence[str], inputs: Sequence[str] | None = None
) -> DataFrame:
    """Rows of `training_frame` or `scoring_frame` made ready for the model: the action
    features, and every subscriber input (`inputs`, default all) as a double."""
    with_actions = with_action_features(rows, offer_ids, categories)
    return with_model_inputs(with_actions) if inputs is None else with_model_inputs(with_actions, inputs)


def snapshot_dates(as_of: date, p: UpliftParams) -> list[date]:
    """Weekly snapshot dates, oldest first, covering the contacts the model learns from.

    The last is as_of - outcome_days - 1 (its contacts' outcomes are known by as_of); the
    first covers `history_days` of contacts before it.
    """
    last = as_of - timedelta(days=p.outcome_days + 1)
    count = max(1, p.history_days // p.snapshot_days)
    return [last - timedelta(days=p.snapshot_days * k) for k in reversed(range(count))]


def _snapshot_of(contact_date: Column, snapshots: Sequence[date]) -> Column:
    """The latest snapshot date strictly before the contact date (null before the first)."""
    expr = F.lit(None).cast("date")
    for d in sorted(snapshots):  # later dates override earlier ones
        expr = F.when(contact_date > F.lit(d), F.lit(d)).otherwise(expr)
    return expr


def recent_contacts(offer_history: DataFrame, fatigue_days: int) -> DataFrame:
    """Each row of `offer_history` with ``recent_contacts``: the subscriber's treatment
    contacts in the `fatigue_days` before it (strictly before its contacted_ts)."""
    secs = F.col("contacted_ts").cast("long")
    before = Window.partitionBy("subscriber_id").orderBy(secs).rangeBetween(-fatigue_days * 86_400, -1)
    return offer_history.withColumn(
        "recent_contacts", F.count(F.when(F.col("group") == "treatment", F.lit(1))).over(before)
    )


def contacts_as_of(offer_history: DataFrame, as_of: date, fatigue_days: int) -> DataFrame:
    """``subscriber_id, recent_contacts``: treatment contacts in the `fatigue_days` up to the end of as_of."""
    end = F.lit(as_of + timedelta(days=1)).cast("timestamp")
    start = F.lit(as_of - timedelta(days=fatigue_days - 1)).cast("timestamp")
    return (
        offer_history.where(
            (F.col("group") == "treatment") & (F.col("contacted_ts") >= start) & (F.col("contacted_ts") < end)
        )
        .groupBy("subscriber_id")
        .agg(F.count(F.lit(1)).alias("recent_contacts"))
    )


def training_frame(
    offer_history: DataFrame,
    snapshot_features: DataFrame,
    catalog_offers: DataFrame,
    snapshots: Sequence[date],
    as_of: date,
    p: UpliftParams,
) -> DataFrame:
    """One row per logged contact whose outcome is known by as_of, with its snapshot's features.

    Needs HISTORY_COLUMNS in `offer_history`, the features table columns plus
    ``snapshot_date`` in `snapshot_features` (one row per subscriber and snapshot), and
    CATALOG_COLUMNS in `catalog_offers`. Adds ``treated`` (1 treatment, 0 control),
    ``label`` (accepted within outcome_days), ``recent_contacts``, ``snapshot_date`` and
    ``split`` ('train', or 'evaluation' for the last `evaluation_days` of contacts).
    """
    require_columns(offer_history, HISTORY_COLUMNS, "uplift training_frame(offer_history)")
    require_columns(catalog_offers, CATALOG_COLUMNS, "uplift training_frame(catalog_offers)")
    last_contact_day = as_of - timedelta(days=p.outcome_days)
    first_contact_day = snapshots[0] + timedelta(days=1)
    contacts = (
        recent_contacts(offer_history, p.fatigue_days)
        .withColumn("contact_date", F.to_date("contacted_ts"))
        .where(F.col("contact_date").between(F.lit(first_contact_day), F.lit(last_contact_day)))
        .withColumn("snapshot_date", _snapshot_of(F.col("contact_date"), snapshots))
    )
    window_end = F.col("contacted_ts") + F.make_interval(days=F.lit(p.outcome_days))
    accepted = (
        F.coalesce(F.col("accepted"), F.lit(False))
        & F.col("accepted_ts").isNotNull()
        & (F.col("accepted_ts") <= window_end)
    )
    eval_start = last_contact_day - timedelta(days=p.evaluation_days - 1)
    frame = (
        contacts.select(
            "subscriber_id",
            "offer_id",
            "channel",
            "contacted_ts",
            "contact_date",
            "snapshot_date",
            "recent_contacts",
            (F.col("group") == "treatment").cast("int").alias("treated"),
            accepted.cast("int").alias("label"),
            F.when(F.col("contact_date") >= F.lit(eval_start), F.lit("evaluation"))
            .otherwise(F.lit("train"))
            .alias("split"),
        )
        .join(snapshot_features, on=["subscriber_id", "snapshot_date"], how="inner")
        .join(F.broadcast(catalog_offers.select(*CATALOG_COLUMNS)), on="offer_id", how="left")
    )
    return frame


def scoring_frame(
    features: DataFrame,
    offer_history: DataFrame,
    catalog_offers: DataFrame,
    offer_channels: DataFrame,
    as_of: date,
    p: UpliftParams,
) -> DataFrame:
    """Every subscriber of `features` (one as_of) x every catalog offer x each of its channels.

    The offer_channels and catalog frames are tiny and broadcast; ``recent_contacts`` is
    the fatigue count up to the end of as_of. Eligibility is the offer engine's business:
    scores exist for every pair, so `cvo explain` can say what an ineligible offer would add.
    """
    require_columns(catalog_offers, CATALOG_COLUMNS, "uplift scoring_frame(catalog_offers)")
    recent = contacts_as_of(offer_history, as_of, p.fatigue_days)
    actions = catalog_offers.select(*CATALOG_COLUMNS).join(
        offer_channels.select("offer_id", "channel"), on="offer_id", how="inner"
    )
    rows = (
        features.join(recent, on="subscriber_id", how="left")
        .withColumn("recent_contacts", F.coalesce(F.col("recent_contacts"), F.lit(0)))
        .crossJoin(F.broadcast(actions))
    )
    return rows


# ---------------------------------------------------------------------------- model
@dataclass(frozen=True)
class UpliftFit:
    model: PipelineModel
    features: tuple[str, ...]
    train_rows: dict[str, int]


def fit_uplift(
    train: DataFrame, features: Sequence[str], p: UpliftParams, scratch_dir: str | None = None
) -> UpliftFit:
    """Fit the two arms on `train` (rows of `training_frame` with their action features)
    and chain them into one PipelineModel that writes ``uplift_t__prob`` and ``uplift_c__prob``."""
    require_columns(train, [*features, "treated", "label"], "fit_uplift")
    counts = {
        r["treated"]: r["n"] for r in train.groupBy("treated").agg(F.count(F.lit(1)).alias("n")).collect()
    }
    models: list[Transformer] = []
    used = {}
    for prefix, arm, name in ((TREATED, 1, "treatment"), (CONTROL, 0, "control")):
        rows = train.where(F.col("treated") == arm)
        n = counts.get(arm, 0)
        if n > p.max_contacts_per_arm:
            rows = rows.sample(fraction=p.max_contacts_per_arm / n, seed=p.seed)
        used[name] = min(n, p.max_contacts_per_arm)
        if arm == 1:
            pipeline = build_classifier("gbt", features, "label", prefix, p.seed, p.max_iter, p.max_depth)
        else:
            pipeline = build_classifier(
                "gbt",
                control_features(features),
                "label",
                prefix,
                p.seed,
                p.control_max_iter,
                p.control_max_depth,
            )
            cast(GBTClassifier, pipeline.getStages()[-1]).setMinInstancesPerNode(p.control_min_instances)
        fitted = pipeline.fit(rows)
        models.extend(without_training_summary(s, scratch_dir) for s in fitted.stages)
    return UpliftFit(PipelineModel(stages=models), tuple(features), used)


def control_features(features: Sequence[str]) -> list[str]:
    """The inputs of the no-contact arm: without the channel and the recent contacts, which
    cannot change what someone does when nobody contacts them."""
    return [f for f in features if not f.startswith("is_channel_") and f != "recent_contacts"]


def with_uplift(model: PipelineModel, rows: DataFrame) -> DataFrame:
    """Apply a fitted uplift model: adds ``p_accept_if_contacted``, ``p_accept_if_not`` and
    ``uplift`` (their difference), dropping the model's intermediate columns."""
    before = set(rows.columns)
    scored = model.transform(rows)
    p1 = vector_to_array(F.col(f"{TREATED}__prob"))[1]
    p0 = vector_to_array(F.col(f"{CONTROL}__prob"))[1]
    out = scored.withColumns({"p_accept_if_contacted": p1, "p_accept_if_not": p0}).withColumn(
        "uplift", F.col("p_accept_if_contacted") - F.col("p_accept_if_not")
    )
    keep = [
        c for c in out.columns if c in before or c in ("p_accept_if_contacted", "p_accept_if_not", "uplift")
    ]
    return out.select(*keep)


def model_features(offer_ids: Sequence[str], categories: Sequence[str]) -> list[str]:
    """Subscriber features then action features: the model's inputs in order."""
    return [*MODEL_FEATURES, *offer_feature_names(offer_ids, categories)]


# ---------------------------------------------------------------------------- reasons
def with_uplift_reasons(
    rows: DataFrame, sure_thing_rate: float = 0.15, min_effect: float = 0.005
) -> DataFrame:
    """Add ``uplift_reasons``: what contacting adds, in words (2-3 strings).

    Needs p_accept_if_contacted, p_accept_if_not, uplift, channel and recent_contacts.
    """
    pct = lambda c: F.format_number(c * 100, 1)  # noqa: E731 - a formatting shorthand
    effect = (
        F.when(
            F.col("uplift") >= min_effect,
            F.format_string(
                "contact on %s adds +%s points (%s%% if contacted vs %s%% anyway)",
                F.col("channel"),
                pct(F.col("uplift")),
                pct(F.col("p_accept_if_contacted")),
                pct(F.col("p_accept_if_not")),
            ),
        )
        .when(
            F.col("uplift") <= -min_effect,
            F.format_string(
                "contact on %s may put them off: %s points (%s%% if contacted vs %s%% anyway)",
                F.col("channel"),
                pct(F.col("uplift")),
                pct(F.col("p_accept_if_contacted")),
                pct(F.col("p_accept_if_not")),
            ),
        )
        .otherwise(
            F.format_string(
                "contact on %s changes little (%s%% if contacted vs %s%% anyway)",
                F.col("channel"),
                pct(F.col("p_accept_if_contacted")),
                pct(F.col("p_accept_if_not")),
            )
        )
    )
    kind = (
        F.when(F.col("uplift") <= -min_effect, F.lit("sleeping dog: better left alone"))
        .when(
            (F.col("p_accept_if_not") >= sure_thing_rate) & (F.col("uplift") < min_effect * 4),
            F.lit("sure thing: likely to buy without an offer"),
        )
        .when(F.col("uplift") >= min_effect * 4, F.lit("persuadable: the offer makes the difference"))
        .when(F.col("p_accept_if_contacted") < 0.02, F.lit("lost cause: unlikely to take it either way"))
    )
    fatigue = F.when(
        F.col("recent_contacts") >= 2,
        F.format_string(
            "contacted %d times recently: fatigue lowers the effect", F.col("recent_contacts").cast("int")
        ),
    )
    reasons = F.filter(F.array(effect, kind, fatigue), lambda r: r.isNotNull())
    return rows.withColumn("uplift_reasons", reasons)
