"""Next-best-offer engine: eligibility, scoring, contact policy, ranking, control group, reasons.

Pure DataFrame -> DataFrame transforms (no IO, no config): the `offers` stage passes plain
values in an `OfferParams`. The shape of the computation:

1. ``subscriber_profiles``: features + segments + scores, one row per subscriber;
   ``contact_history`` summarises offer_history for the contact policy, and
   ``with_contact_summaries`` attaches it as maps, still one row per subscriber.
2. ``candidate_offers``: subscribers x catalog (the catalog is tiny and broadcast), each
   pair gets an ``exclusion_reason`` (null = still in): eligibility, the High Value price
   floor, the cool-down after a rejected contact; then pairs x the offer's channels, the
   per-channel contact cap; then propensity, expected value and a rank per subscriber and
   channel (window function), and rows past the channel's slot count are excluded too.
   Every join on the large side is a broadcast of the catalog, so the rows stay
   partitioned by subscriber and the ranking window needs no further shuffle.
   `cvo explain` keeps the excluded rows (``keep_excluded=True``) to say why not.
3. ``select_offers``: the kept rows with group (control hash), reasons and validity, in
   the `offers` schema of docs/tables.md.

Scoring (documented in conf/offers.yaml too)
    base score by offer type: upsell -> p_upsell; cross_sell -> p_cross_sell;
    retention -> p_churn; loyalty -> (p_upsell + p_cross_sell) / 2 x (1 - p_churn).
    propensity = base x 1 / (1 + price_elasticity x price / max(arpu_3m, arpu_floor)):
    an offer costing what the subscriber spends in a month is less likely to be taken.
    expected_value = propensity x (price - unit_cost), plus, on retention offers,
    p_churn x clv_12m x retention_save_rate (the lifetime value the offer saves).
    rank_score = expected_value x type weight (business steer, default 1); expected_value
    itself stays in Rupiah.

Time windows end at as_of inclusive: "the last N days" are dates in [as_of - N + 1, as_of];
only offer_history events before the end of as_of count (point in time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DateType,
    DoubleType,
    IntegerType,
    StringType,
    StructField,
    StructType,
)

from cvo_spark.core.config import AllocationConfig, FeatureWindows, OffersConfig
from cvo_spark.core.schemas import SUBSCRIBER_CHANNELS
from cvo_spark.core.util import require_columns
from cvo_spark.offers.allocation import CHOSEN, AllocationParams, AllocationResult, Constraint, allocate

OFFERS_SCHEMA = StructType(
    [
        StructField("subscriber_id", StringType()),
        StructField("channel", StringType()),
        StructField("rank", IntegerType()),
        StructField("as_of", DateType()),
        StructField("offer_id", StringType()),
        StructField("offer_type", StringType()),
        StructField("price", DoubleType()),
        StructField("expected_value", DoubleType()),
        StructField("propensity", DoubleType()),
        StructField("reason_codes", ArrayType(StringType())),
        StructField("group", StringType()),
        StructField("valid_from", DateType()),
        StructField("valid_to", DateType()),
        StructField("run_id", StringType()),
        # Decision core: what the action adds, what it costs, how it was chosen.
        StructField("net_value", DoubleType()),
        StructField("uplift", DoubleType()),
        StructField("uplift_source", StringType()),
        StructField("expected_cost", DoubleType()),
        StructField("contact_cost", DoubleType()),
        StructField("probability", DoubleType()),
        # Stable id of the decision (campaign, as_of, subscriber, offer, channel): exports and
        # gold `decisions` carry it, so responses can be joined back to what was decided.
        StructField("decision_id", StringType()),
        # The campaign the decision belongs to (`offers.campaigns`, else the default campaign).
        StructField("campaign_id", StringType()),
    ]
)

FEATURE_COLUMNS = (
    "subscriber_id",
    "payment_type",
    "length_of_stay_days",
    "arpu_3m",
    "data_trend_pct",
    "voice_trend_pct",
    "revenue_trend_pct",
    "quota_low_count",
    "voice_share",
    "digital_share",
)
SEGMENT_COLUMNS = ("subscriber_id", "value_tier", "is_high_value", "lifecycle", "persona_name")
SCORE_COLUMNS = (
    "subscriber_id",
    "p_upsell",
    "p_cross_sell",
    "p_churn",
    "clv_12m",
    "reasons_upsell",
    "reasons_cross_sell",
    "reasons_churn",
)
HISTORY_COLUMNS = ("subscriber_id", "offer_id", "channel", "contacted_ts", "group", "accepted", "accepted_ts")


#: The business defaults live once, in the config models; the parameter object takes theirs.
_OFFERS, _ALLOC, _WINDOWS = OffersConfig(), AllocationConfig(), FeatureWindows()


@dataclass(frozen=True)
class OfferParams:
    """Plain values the offer transforms need (`offers.stage.offer_params` fills them from
    config and the catalog). Defaults are the config's, except three that only a config and
    catalog can say: the universal holdout is off (0) for a bare parameter object, and push
    channels and consent defaults come from the catalog's channels."""

    campaign_id: str = _OFFERS.campaign_id
    control_share: float = _OFFERS.control_share
    #: Universal holdout (hash of subscriber_id and the key alone); 0 = none here, so a
    #: transform called without a config holds nobody back (offers.universal_holdout_share).
    universal_holdout_share: float = 0.0
    universal_holdout_key: str = _OFFERS.universal_holdout_key
    contact_window_days: int = _OFFERS.contact_window_days
    max_contacts_per_channel: int = _OFFERS.max_contacts_per_channel
    cooldown_days_after_reject: int = _OFFERS.cooldown_days_after_reject
    high_value_min_price_share: float = _OFFERS.high_value_min_price_share
    price_elasticity: float = _OFFERS.price_elasticity
    arpu_floor: float = _OFFERS.arpu_floor
    retention_min_p_churn: float = _OFFERS.retention_min_p_churn
    retention_save_rate: float = _OFFERS.retention_save_rate
    type_weights: dict[str, float] = field(default_factory=dict)
    trend_days: int = _WINDOWS.trend_recent_days  # the window the trend reasons talk about
    quota_days: int = _WINDOWS.quota_days
    # Decision core (see cvo_spark/offers/allocation.py and AllocationConfig).
    allocate: bool = _ALLOC.enabled
    push_channels: tuple[str, ...] = ("sms", "ussd", "call_centre")
    max_push_contacts: int = _ALLOC.max_push_contacts
    fatigue_ignored_contacts: int = _ALLOC.fatigue_ignored_contacts
    fatigue_window_days: int = _ALLOC.fatigue_window_days
    #: channel -> allowed, for a subscriber with no consent row for the channel.
    consent_when_missing: dict[str, bool] = field(
        default_factory=lambda: dict.fromkeys(SUBSCRIBER_CHANNELS, True)
    )
    uplift_fallback_share: float = _ALLOC.uplift_fallback_share
    #: DESIGN invariant 9: the share of subscribers whose decision is drawn uniformly among
    #: their explorable actions (0 = off, the default) and the hash key of that draw.
    exploration_share: float = _ALLOC.exploration_share
    exploration_key: str = _ALLOC.exploration_key


# ---------------------------------------------------------------------------- helpers
def _end_of(day: date) -> Column:
    """Timestamp literal: midnight after `day` (events strictly before it are 'as of day')."""
    return F.lit(day + timedelta(days=1)).cast("timestamp")


def _money(col: Column) -> Column:
    return F.format_number(col, 0)


def _list(col: Column) -> Column:
    return F.concat(F.lit("["), F.array_join(col, ", "), F.lit("]"))


def base_persona(col: Column) -> Column:
    """Persona name without the number of a split persona ('Digital Active 2' -> 'Digital Active')."""
    return F.regexp_replace(col, r"\s+\d+$", "")


def _str_or_col(value: str | Column) -> Column:
    return F.lit(value) if isinstance(value, str) else value


def decision_id(campaign_id: str | Column, as_of: date) -> Column:
    """32 hex characters of sha2(campaign | as_of | subscriber_id | offer_id | channel): the
    same decision gets the same id on a re-run (idempotent), another day or campaign another.
    `campaign_id` is a name or a column (one campaign per row)."""
    key = F.concat_ws(
        "|",
        _str_or_col(campaign_id),
        F.lit(as_of.isoformat()),
        F.col("subscriber_id"),
        F.col("offer_id"),
        F.col("channel"),
    )
    return F.substring(F.sha2(key, 256), 1, 32)


def control_bucket(subscriber_id: Column, campaign_id: str | Column) -> Column:
    """A uniform number in [0, 1) from a stable hash of (campaign_id, subscriber_id).

    xxhash64 is deterministic across runs, machines and Spark versions, so the same
    subscriber stays in the same group of a campaign (invariant 5) and another campaign
    draws an independent control group. `campaign_id` may be a column (Spark hashes the
    value, so a column holding 'cvo' draws the same group as the literal 'cvo').
    """
    h = F.xxhash64(_str_or_col(campaign_id), subscriber_id)
    return F.pmod(h, F.lit(1_000_000)).cast("double") / 1_000_000.0


def holdout_bucket(subscriber_id: Column, key: str) -> Column:
    """A uniform number in [0, 1) from a hash of subscriber_id and the holdout key alone.

    The universal holdout is ``holdout_bucket < universal_holdout_share``: the same
    subscribers in every run and every campaign (DESIGN invariant 9). The hash takes a
    fixed tag before the key, so it never coincides with a campaign's control hash (two
    inputs) even for a campaign named like the key, and is independent of all of them.
    """
    h = F.xxhash64(F.lit("universal_holdout"), F.lit(key), subscriber_id)
    return F.pmod(h, F.lit(1_000_000)).cast("double") / 1_000_000.0


def is_holdout(subscriber_id: Column, share: float, key: str) -> Column:
    """Whether a subscriber is in the universal holdout (never true with share 0)."""
    return holdout_bucket(subscriber_id, key) < F.lit(float(share))


# ---------------------------------------------------------------------------- inputs
def subscriber_profiles(features: DataFrame, segments: DataFrame, scores: DataFrame) -> DataFrame:
    """One row per subscriber of `features` with its segment and model scores.

    Needs FEATURE_COLUMNS, SEGMENT_COLUMNS and SCORE_COLUMNS (all for one as_of). Adds
    ``has_scores``; a subscriber without a segment or score row keeps nulls there and is
    excluded later with a reason, never silently dropped.
    """
    require_columns(features, FEATURE_COLUMNS, "subscriber_profiles(features)")
    require_columns(segments, SEGMENT_COLUMNS, "subscriber_profiles(segments)")
    require_columns(scores, SCORE_COLUMNS, "subscriber_profiles(scores)")
    return (
        features.select(*FEATURE_COLUMNS)
        .join(segments.select(*SEGMENT_COLUMNS), on="subscriber_id", how="left")
        .join(
            scores.select(*SCORE_COLUMNS).withColumn("has_scores", F.lit(True)),
            on="subscriber_id",
            how="left",
        )
        .withColumn("has_scores", F.coalesce(F.col("has_scores"), F.lit(False)))
    )


def contact_history(
    offer_history: DataFrame, as_of: date, contact_window_days: int, cooldown_days: int
) -> tuple[DataFrame, DataFrame]:
    """Summaries of treatment contacts up to the end of `as_of` for the contact policy.

    Needs HISTORY_COLUMNS. Control-group rows were never sent, so they count neither
    towards the cap nor as a rejection. A contact counts as accepted only if accepted by
    as_of (a later acceptance is unknown as of D).

    Returns
    -------
    (channel_contacts, recent_rejects)
        ``subscriber_id, channel, contacts`` (distinct messages: rows sharing one
        contacted_ts are one contact) over the last `contact_window_days`, and
        ``subscriber_id, offer_id, last_rejected`` (date of the newest contact not
        accepted) over the last `cooldown_days`.
    """
    require_columns(offer_history, HISTORY_COLUMNS, "contact_history")
    sent = offer_history.where(
        (F.col("group") == "treatment") & (F.col("contacted_ts") < _end_of(as_of))
    ).withColumn("contact_date", F.to_date("contacted_ts"))
    window_start = as_of - timedelta(days=contact_window_days - 1)
    channel_contacts = (
        sent.where(F.col("contact_date") >= F.lit(window_start))
        .groupBy("subscriber_id", "channel")
        # A contact is one message (one contacted_ts), however many offers it showed: the
        # slate this run publishes on a channel is one more contact, not `slots` of them.
        .agg(F.count_distinct("contacted_ts").alias("contacts"))
    )
    accepted_by_as_of = F.coalesce(F.col("accepted"), F.lit(False)) & (
        F.col("accepted_ts").isNull() | (F.col("accepted_ts") < _end_of(as_of))
    )
    cooldown_start = as_of - timedelta(days=max(cooldown_days, 1) - 1)
    recent_rejects = (
        sent.where(
            ~accepted_by_as_of & (F.col("contact_date") >= F.lit(cooldown_start)) & F.lit(cooldown_days > 0)
        )
        .groupBy("subscriber_id", "offer_id")
        .agg(F.max("contact_date").alias("last_rejected"))
    )
    return channel_contacts, recent_rejects


def contact_load(
    offer_history: DataFrame,
    triggers: DataFrame | None,
    as_of: date,
    push_channels: tuple[str, ...],
    contact_window_days: int,
    fatigue_window_days: int,
) -> DataFrame:
    """Per subscriber: ``push_contacts`` (push contacts in the contact window, trigger
    offers included) and ``ignored_contacts`` (push treatment contacts in the fatigue
    window not accepted by as_of).

    Needs HISTORY_COLUMNS; `triggers` (gold trigger_offers: subscriber_id, channel,
    emitted_at) may be None. A contact is one message: rows sharing a contacted_ts are one.
    """
    require_columns(offer_history, HISTORY_COLUMNS, "contact_load")
    end = _end_of(as_of)
    window_start = F.lit(as_of - timedelta(days=contact_window_days - 1)).cast("timestamp")
    fatigue_start = F.lit(as_of - timedelta(days=fatigue_window_days - 1)).cast("timestamp")
    accepted_by_as_of = F.coalesce(F.col("accepted"), F.lit(False)) & (
        F.col("accepted_ts").isNull() | (F.col("accepted_ts") < end)
    )
    sent = offer_history.where(
        (F.col("group") == "treatment")
        & (F.col("contacted_ts") < end)
        & F.col("channel").isin(list(push_channels))
        & (F.col("contacted_ts") >= F.least(window_start, fatigue_start))
    )
    contacts = sent.groupBy("subscriber_id", "channel", "contacted_ts").agg(
        F.max(accepted_by_as_of.cast("int")).alias("accepted_any")
    )
    load = contacts.groupBy("subscriber_id").agg(
        F.sum((F.col("contacted_ts") >= window_start).cast("int")).alias("push_contacts"),
        F.sum(((F.col("contacted_ts") >= fatigue_start) & (F.col("accepted_any") == 0)).cast("int")).alias(
            "ignored_contacts"
        ),
    )
    if triggers is not None:
        require_columns(triggers, ("subscriber_id", "channel", "emitted_at"), "contact_load(triggers)")
        pushed = (
            triggers.where(
                (F.col("emitted_at") >= window_start)
                & (F.col("emitted_at") < end)
                & F.col("channel").isin(list(push_channels))
            )
            .groupBy("subscriber_id")
            .agg(F.count(F.lit(1)).alias("trigger_contacts"))
        )
        load = load.join(pushed, on="subscriber_id", how="full").select(
            "subscriber_id",
            (
                F.coalesce(F.col("push_contacts"), F.lit(0)) + F.coalesce(F.col("trigger_contacts"), F.lit(0))
            ).alias("push_contacts"),
            F.coalesce(F.col("ignored_contacts"), F.lit(0)).alias("ignored_contacts"),
        )
    return load


def consent_by_channel(consents: DataFrame | None, as_of: date) -> DataFrame | None:
    """Per subscriber ``consent`` (map channel -> allowed): the newest row per (subscriber,
    channel) stated before the end of as_of (a later opt-out is not known yet)."""
    if consents is None:
        return None
    require_columns(consents, ("subscriber_id", "channel", "allowed", "updated_ts"), "consent_by_channel")
    newest = (
        consents.where(F.col("updated_ts") < _end_of(as_of))
        .groupBy("subscriber_id", "channel")
        # max_by: the value of the newest statement (ties: a denial wins, fail closed).
        .agg(
            F.max_by(
                F.col("allowed").cast("int"), F.struct(F.col("updated_ts"), (~F.col("allowed")).cast("int"))
            ).alias("allowed")
        )
    )
    return newest.groupBy("subscriber_id").agg(
        F.map_from_entries(F.collect_list(F.struct("channel", F.col("allowed") == 1))).alias("consent")
    )


# ---------------------------------------------------------------------------- rules
def _first_reason(*rules: tuple[Column, Column]) -> Column:
    """The reason of the first rule whose condition holds (null when none does)."""
    expr = None
    for cond, reason in rules:
        expr = F.when(cond, reason) if expr is None else expr.when(cond, reason)
    if expr is None:
        raise ValueError("_first_reason needs at least one (condition, reason) rule")
    return expr


def _not_in(value: Column, allowed: Column) -> Column:
    # A null value (no segment row) is not in any list: fail closed.
    return allowed.isNotNull() & (
        value.isNull() | ~F.coalesce(F.array_contains(allowed, value), F.lit(False))
    )


def base_score(offer_type: Column) -> Column:
    """The model score that drives an offer type's propensity (see the module docstring)."""
    loyalty = (F.col("p_upsell") + F.col("p_cross_sell")) / 2.0 * (1.0 - F.col("p_churn"))
    return (
        F.when(offer_type == "upsell", F.col("p_upsell"))
        .when(offer_type == "cross_sell", F.col("p_cross_sell"))
        .when(offer_type == "retention", F.col("p_churn"))
        .when(offer_type == "loyalty", loyalty)
    )


def with_eligibility(pairs: DataFrame, retention_min_p_churn: float) -> DataFrame:
    """Add ``exclusion_reason``: the first eligibility rule a (subscriber, offer) pair fails.

    Needs the profile columns and the catalog's ``elig_*`` columns. Null means eligible.
    Reasons read like "not eligible: value tier Mass not in [Priority, Gold]".
    """
    persona = base_persona(F.col("persona_name"))
    arpu, tenure = F.col("arpu_3m"), F.col("length_of_stay_days")
    unknown = F.lit("unknown")
    reason = _first_reason(
        (
            ~F.col("has_scores") | base_score(F.col("offer_type")).isNull(),
            F.concat(F.lit("not scored: no "), F.col("offer_type"), F.lit(" score for this subscriber")),
        ),
        (
            _not_in(F.col("value_tier"), F.col("elig_value_tiers")),
            F.format_string(
                "not eligible: value tier %s not in %s",
                F.coalesce(F.col("value_tier"), unknown),
                _list(F.col("elig_value_tiers")),
            ),
        ),
        (
            _not_in(persona, F.col("elig_personas")),
            F.format_string(
                "not eligible: persona %s not in %s",
                F.coalesce(persona, unknown),
                _list(F.col("elig_personas")),
            ),
        ),
        (
            _not_in(F.col("lifecycle"), F.col("elig_lifecycle")),
            F.format_string(
                "not eligible: lifecycle %s not in %s",
                F.coalesce(F.col("lifecycle"), unknown),
                _list(F.col("elig_lifecycle")),
            ),
        ),
        (
            _not_in(F.col("payment_type"), F.col("elig_payment_types")),
            F.format_string(
                "not eligible: payment type %s not in %s",
                F.coalesce(F.col("payment_type"), unknown),
                _list(F.col("elig_payment_types")),
            ),
        ),
        (
            F.col("elig_min_arpu_3m").isNotNull()
            & ~F.coalesce(arpu >= F.col("elig_min_arpu_3m"), F.lit(False)),
            F.format_string(
                "not eligible: arpu_3m %s below %s",
                F.coalesce(_money(arpu), unknown),
                _money(F.col("elig_min_arpu_3m")),
            ),
        ),
        (
            F.col("elig_max_arpu_3m").isNotNull()
            & ~F.coalesce(arpu <= F.col("elig_max_arpu_3m"), F.lit(False)),
            F.format_string(
                "not eligible: arpu_3m %s above %s",
                F.coalesce(_money(arpu), unknown),
                _money(F.col("elig_max_arpu_3m")),
            ),
        ),
        (
            F.col("elig_min_tenure_days").isNotNull()
            & ~F.coalesce(tenure >= F.col("elig_min_tenure_days"), F.lit(False)),
            F.format_string(
                "not eligible: tenure %s days below %d",
                F.coalesce(tenure.cast("string"), unknown),
                F.col("elig_min_tenure_days"),
            ),
        ),
        (
            F.col("elig_max_tenure_days").isNotNull()
            & ~F.coalesce(tenure <= F.col("elig_max_tenure_days"), F.lit(False)),
            F.format_string(
                "not eligible: tenure %s days above %d",
                F.coalesce(tenure.cast("string"), unknown),
                F.col("elig_max_tenure_days"),
            ),
        ),
        (
            (F.col("offer_type") == "retention") & (F.col("p_churn") < F.lit(retention_min_p_churn)),
            F.format_string(
                "not eligible: churn risk %.2f below %.2f (retention offers are for churn risks)",
                F.col("p_churn"),
                F.lit(retention_min_p_churn),
            ),
        ),
    )
    return pairs.withColumn("exclusion_reason", reason)


def with_contact_summaries(
    profiles: DataFrame,
    channel_contacts: DataFrame,
    recent_rejects: DataFrame,
    load: DataFrame | None = None,
    consents: DataFrame | None = None,
) -> DataFrame:
    """Attach each subscriber's contact summaries as maps, joined once per subscriber.

    Adds ``contacts_by_channel`` (map channel -> contacts in the window), ``rejected_on``
    (map offer_id -> date of the newest contact not accepted), ``push_contacts`` and
    ``ignored_contacts`` (`contact_load`, 0 when None) and ``consent`` (map channel ->
    allowed, `consent_by_channel`; null when None). Joining here, at one row per
    subscriber, keeps the far larger subscriber x offer x channel rows free of shuffles:
    they stay partitioned by subscriber_id up to the ranking.
    """
    contacts = channel_contacts.groupBy("subscriber_id").agg(
        F.map_from_entries(F.collect_list(F.struct("channel", "contacts"))).alias("contacts_by_channel")
    )
    rejects = recent_rejects.groupBy("subscriber_id").agg(
        F.map_from_entries(F.collect_list(F.struct("offer_id", "last_rejected"))).alias("rejected_on")
    )
    out = profiles.join(contacts, on="subscriber_id", how="left").join(
        rejects, on="subscriber_id", how="left"
    )
    if load is not None:
        out = out.join(load, on="subscriber_id", how="left")
    else:
        out = out.withColumn("push_contacts", F.lit(None).cast("int")).withColumn(
            "ignored_contacts", F.lit(None).cast("int")
        )
    out = out.withColumn(
        "push_contacts", F.coalesce(F.col("push_contacts"), F.lit(0)).cast("int")
    ).withColumn("ignored_contacts", F.coalesce(F.col("ignored_contacts"), F.lit(0)).cast("int"))
    if consents is not None:
        return out.join(consents, on="subscriber_id", how="left")
    return out.withColumn("consent", F.lit(None).cast("map<string,boolean>"))


def with_pair_policy(pairs: DataFrame, high_value_min_price_share: float, cooldown_days: int) -> DataFrame:
    """Contact policy on (subscriber, offer): High Value price floor, cool-down after a reject.

    Needs ``exclusion_reason`` (kept when already set), is_high_value, arpu_3m, price,
    offer_type, offer_id and ``rejected_on`` (`with_contact_summaries`). A High Value
    subscriber is not offered anything cheaper than `high_value_min_price_share` x
    arpu_3m, except a retention offer; an offer not accepted in the last `cooldown_days`
    is not repeated, on any channel.
    """
    floor = F.lit(high_value_min_price_share) * F.col("arpu_3m")
    under_floor = (
        F.coalesce(F.col("is_high_value"), F.lit(False))
        & (F.col("offer_type") != "retention")
        & F.coalesce(F.col("price") < floor, F.lit(False))
    )
    last_rejected = F.col("rejected_on")[F.col("offer_id")]  # null when absent (no ANSI error for maps)
    reason = F.coalesce(
        F.col("exclusion_reason"),
        _first_reason(
            (
                under_floor,
                F.format_string(
                    "price floor: %s is under %.0f%% of this High Value subscriber's arpu_3m %s",
                    _money(F.col("price")),
                    F.lit(high_value_min_price_share * 100),
                    _money(F.col("arpu_3m")),
                ),
            ),
            (
                last_rejected.isNotNull(),
                F.format_string(
                    "cool-down: not accepted when offered on %s (%d-day cool-down)",
                    F.date_format(last_rejected, "yyyy-MM-dd"),
                    F.lit(cooldown_days),
                ),
            ),
        ),
    )
    return pairs.withColumn("exclusion_reason", reason)


def with_contact_cap(rows: DataFrame, max_contacts: int, window_days: int) -> DataFrame:
    """Exclude every offer on a channel the subscriber was contacted on `max_contacts`
    times or more in the last `window_days` (needs channel, exclusion_reason and
    ``contacts_by_channel`` from `with_contact_summaries`)."""
    contacts = F.coalesce(F.col("contacts_by_channel")[F.col("channel")], F.lit(0))
    reason = F.coalesce(
        F.col("exclusion_reason"),
        F.when(
            contacts >= F.lit(max_contacts),
            F.format_string(
                "contact cap: %d contact(s) on %s in the last %d days (max %d)",
                contacts,
                F.col("channel"),
                F.lit(window_days),
                F.lit(max_contacts),
            ),
        ),
    )
    return rows.withColumn("exclusion_reason", reason)


def with_channel_policy(rows: DataFrame, p: OfferParams) -> DataFrame:
    """Consent and rest on (subscriber, offer, channel) rows, before the per-channel cap.

    Needs channel, exclusion_reason, ``consent``, ``ignored_contacts`` (from
    `with_contact_summaries`). A channel without a consent row for the subscriber is
    allowed or not as ``p.consent_when_missing`` says (a channel missing there is
    denied: never a silent allow). A subscriber who ignored
    ``fatigue_ignored_contacts`` push contacts in the fatigue window is rested: no push.
    """
    stated = F.col("consent")[F.col("channel")]
    default = F.lit(False)
    for channel, allowed in sorted(p.consent_when_missing.items()):
        default = F.when(F.col("channel") == channel, F.lit(bool(allowed))).otherwise(default)
    is_push = F.col("channel").isin(list(p.push_channels))
    reason = F.coalesce(
        F.col("exclusion_reason"),
        _first_reason(
            (stated.isNotNull() & ~stated, F.format_string("no consent for %s", F.col("channel"))),
            (
                stated.isNull() & ~default,
                F.format_string(
                    "no consent for %s (none on record; the config denies it when missing)", F.col("channel")
                ),
            ),
            (
                is_push & (F.col("ignored_contacts") >= F.lit(p.fatigue_ignored_contacts)),
                F.format_string(
                    "rested: ignored %d contacts in %d days",
                    F.col("ignored_contacts"),
                    F.lit(p.fatigue_window_days),
                ),
            ),
        ),
    )
    return rows.withColumn("exclusion_reason", reason)


# ---------------------------------------------------------------------------- scoring
def _type_weight(type_weights: dict[str, float]) -> Column:
    expr = F.lit(1.0)
    for offer_type, weight in sorted(type_weights.items()):
        expr = F.when(F.col("offer_type") == offer_type, F.lit(float(weight))).otherwise(expr)
    return expr


def with_expected_value(rows: DataFrame, p: OfferParams) -> DataFrame:
    """Add ``propensity``, ``expected_value`` (Rupiah) and ``rank_score`` (weighted).

    Needs offer_type, price, unit_cost, arpu_3m, p_upsell, p_cross_sell, p_churn, clv_12m.
    See the module docstring for the formulas.
    """
    spend = F.greatest(F.coalesce(F.col("arpu_3m"), F.lit(0.0)), F.lit(p.arpu_floor))
    price_factor = 1.0 / (1.0 + F.lit(p.price_elasticity) * F.col("price") / spend)
    propensity = base_score(F.col("offer_type")) * price_factor
    is_retention = F.col("offer_type") == "retention"
    retention_value = F.when(
        is_retention & (F.col("p_churn") >= F.lit(p.retention_min_p_churn)),
        F.col("p_churn") * F.coalesce(F.col("clv_12m"), F.lit(0.0)) * F.lit(p.retention_save_rate),
    ).otherwise(F.lit(0.0))
    return (
        rows.withColumn("propensity", propensity)
        .withColumn("retention_value", retention_value)
        .withColumn(
            "expected_value", F.col("propensity") * (F.col("price") - F.col("unit_cost")) + retention_value
        )
        .withColumn("rank_score", F.col("expected_value") * _type_weight(p.type_weights))
    )


OFFER_SCORE_COLUMNS = (
    "subscriber_id",
    "offer_id",
    "channel",
    "uplift",
    "p_accept_if_contacted",
    "p_accept_if_not",
)


def with_net_value(rows: DataFrame, offer_scores: DataFrame | None, p: OfferParams) -> DataFrame:
    """Add the net incremental value of each action (DECISION_CORE.md), in Rupiah.

    Needs propensity, retention_value (`with_expected_value`), price, unit_cost,
    incentive, regular_price, contact_cost; `offer_scores` (gold, one as_of) gives the
    uplift model's p_accept_if_contacted, p_accept_if_not and uplift per action. Adds:

    - ``uplift`` = the model's, else propensity x ``uplift_fallback_share`` (the share of
      acceptances assumed incremental; ``uplift_source`` says 'model' or 'assumed');
    - ``p_accept`` = P(accept | contacted), the model's or today's propensity;
    - ``expected_cost`` = p_accept x incentive: every acceptor gets the incentive, not
      only the incremental ones (what budgets count);
    - ``displaced`` = p_accept x P(accept anyway) x max(regular_price - price, 0): regular
      spend the offer can replace (P(accept anyway) = the model's p_accept_if_not, else
      propensity x (1 - share));
    - ``net_value`` = uplift x margin + retention_value - expected_cost - displaced; the
      channel's ``contact_cost`` is paid once per contact by the allocation.
    """
    if offer_scores is not None:
        require_columns(offer_scores, OFFER_SCORE_COLUMNS, "with_net_value(offer_scores)")
        rows = rows.join(
            offer_scores.select(*OFFER_SCORE_COLUMNS), on=["subscriber_id", "offer_id", "channel"], how="left"
        )
    else:
        for c in OFFER_SCORE_COLUMNS[3:]:
            rows = rows.withColumn(c, F.lit(None).cast("double"))
    share = F.lit(p.uplift_fallback_share)
    modelled = F.col("uplift").isNotNull()
    p_accept = F.coalesce(F.col("p_accept_if_contacted"), F.col("propensity"))
    p_anyway = F.coalesce(F.col("p_accept_if_not"), F.col("propensity") * (1 - share))
    gap = F.greatest(F.coalesce(F.col("regular_price") - F.col("price"), F.lit(0.0)), F.lit(0.0))
    return (
        rows.withColumn("uplift_source", F.when(modelled, F.lit("model")).otherwise(F.lit("assumed")))
        .withColumn("uplift", F.coalesce(F.col("uplift"), F.col("propensity") * share))
        .withColumn("p_accept", p_accept)
        .withColumn("expected_cost", F.col("p_accept") * F.col("incentive"))
        .withColumn("displaced", F.col("p_accept") * p_anyway * gap)
        .withColumn(
            "net_value",
            F.col("uplift") * (F.col("price") - F.col("unit_cost"))
            + F.col("retention_value")
            - F.col("expected_cost")
            - F.col("displaced"),
        )
        .drop("p_accept_if_contacted", "p_accept_if_not")
    )


def with_rank(rows: DataFrame) -> DataFrame:
    """Add ``rank`` (1 best) per subscriber and channel among rows still in, and exclude
    rows ranked past the channel's ``slots``.

    Needs subscriber_id, channel, slots, rank_score, expected_value, offer_id,
    exclusion_reason. Ties break on offer_id, so the ranking is deterministic.
    """
    kept = F.col("exclusion_reason").isNull()
    order = Window.partitionBy("subscriber_id", "channel").orderBy(
        kept.desc(),
        F.col("rank_score").desc_nulls_last(),
        F.col("expected_value").desc_nulls_last(),
        F.col("offer_id"),
    )
    ranked = rows.withColumn("rank", F.when(kept, F.row_number().over(order)).cast("int"))
    over_slots = F.col("rank") > F.col("slots")
    return ranked.withColumn(
        "exclusion_reason",
        F.when(
            over_slots,
            F.format_string(
                "ranked %d on %s, which shows %d offer(s)", F.col("rank"), F.col("channel"), F.col("slots")
            ),
        ).otherwise(F.col("exclusion_reason")),
    ).withColumn("rank", F.when(~over_slots, F.col("rank")))


def candidate_offers(
    profiles: DataFrame,
    catalog_offers: DataFrame,
    offer_channels: DataFrame,
    channel_contacts: DataFrame,
    recent_rejects: DataFrame,
    p: OfferParams,
    keep_excluded: bool = False,
    load: DataFrame | None = None,
    consents: DataFrame | None = None,
    offer_scores: DataFrame | None = None,
) -> DataFrame:
    """Subscribers x offers x channels with ``exclusion_reason``, scores and values.

    Needs `profiles` from `subscriber_profiles`, the catalog frames from
    `cvo_spark.core.catalog`, the summaries from `contact_history`, and optionally
    `contact_load`, `consent_by_channel` and gold offer_scores. With ``p.allocate`` the
    rows carry ``net_value`` (`with_net_value`) and are left for `allocate_offers`;
    without, today's per-channel ranking (`with_rank`) cuts them to the channel's slots.
    With ``keep_excluded=False`` (the batch) excluded rows are dropped as early as
    possible; with True (explain) every row stays with the first rule that excluded it.
    """
    drop = (lambda df: df) if keep_excluded else (lambda df: df.where(F.col("exclusion_reason").isNull()))
    pairs = (
        with_contact_summaries(profiles, channel_contacts, recent_rejects, load, consents)
        .crossJoin(F.broadcast(catalog_offers))
        .transform(with_eligibility, p.retention_min_p_churn)
        .transform(with_pair_policy, p.high_value_min_price_share, p.cooldown_days_after_reject)
        .transform(drop)
    )
    rows = (
        pairs.join(F.broadcast(offer_channels), on="offer_id", how="inner")
        .transform(with_channel_policy, p)
        .transform(with_contact_cap, p.max_contacts_per_channel, p.contact_window_days)
        .transform(drop)
        .transform(with_expected_value, p)
    )
    if p.allocate:
        rows = with_net_value(rows, offer_scores, p).withColumn("rank", F.lit(None).cast("int"))
    else:
        rows = rows.transform(with_rank)
    return rows.transform(drop).drop("contacts_by_channel", "rejected_on", "consent")


def with_group(rows: DataFrame, p: OfferParams) -> DataFrame:
    """Add ``campaign_id`` and ``group``, per row.

    'holdout' for the subscribers of the universal holdout (`is_holdout`: a hash of the
    subscriber alone, whatever the campaign); else 'control' for the row's campaign's
    control share of the rest (a hash of subscriber and campaign); else 'treatment'.
    Holdout and control rows are decided like everyone, written, never sent. The row's
    campaign is its ``campaign_id`` / ``control_share`` columns (from the catalog frame of
    a run with campaigns) where set, else ``p.campaign_id`` / ``p.control_share``.
    """
    campaign = F.lit(p.campaign_id)
    share = F.lit(p.control_share)
    if "campaign_id" in rows.columns:
        campaign = F.coalesce(F.col("campaign_id"), campaign)
    if "control_share" in rows.columns:
        share = F.coalesce(F.col("control_share"), share)
    holdout = is_holdout(F.col("subscriber_id"), p.universal_holdout_share, p.universal_holdout_key)
    control = control_bucket(F.col("subscriber_id"), F.col("campaign_id")) < share
    return rows.withColumn("campaign_id", campaign).withColumn(
        "group",
        F.when(holdout, F.lit("holdout")).when(control, F.lit("control")).otherwise(F.lit("treatment")),
    )


def exploration_bucket(subscriber_id: Column, key: str, as_of: date | None) -> Column:
    """A uniform number in [0, 1) from a hash of the exploration key, subscriber and day.

    The day is in the hash so the explored subscribers are a fresh draw every run (nobody
    is explored forever) while a re-run of the same day draws the same ones (invariant 5).
    It is independent of the control and holdout hashes (other inputs).
    """
    day = F.lit(as_of.isoformat() if as_of else "")
    h = F.xxhash64(F.lit("exploration"), F.lit(key), day, subscriber_id)
    return F.pmod(h, F.lit(1_000_000)).cast("double") / 1_000_000.0


def with_exploration(actions: DataFrame, p: OfferParams, as_of: date | None) -> DataFrame:
    """Add ``explored`` and ``probability`` (DESIGN invariant 9: measurable decisions).

    Needs ``subscriber_id, offer_id, channel, channel_kind, push_left`` (allocation actions:
    every row already passed eligibility, consent, rest and the per-channel caps). A
    ``p.exploration_share`` of subscribers (`exploration_bucket`) keep exactly one action,
    drawn uniformly (a hash of key, day, subscriber, offer and channel) among their
    *explorable* actions: every action, less push ones when no push contact is left (the
    contact cap holds for exploration too). That row gets ``explored`` true and
    ``probability`` 1/n, n the subscriber's explorable actions; the allocation takes it
    whatever its value (exempt from the value threshold only: it still uses budgets and
    capacities, and the repair cuts it last). Everyone else's rows keep ``explored`` false
    and ``probability`` 1 (the engine's choice is deterministic). An explored subscriber
    with nothing explorable gets nothing. With share 0 no row is explored.
    """
    if p.exploration_share <= 0:
        return actions.withColumn("explored", F.lit(False)).withColumn("probability", F.lit(1.0))
    bucket = exploration_bucket(F.col("subscriber_id"), p.exploration_key, as_of)
    flagged = actions.withColumn("_explore", bucket < F.lit(float(p.exploration_share)))
    explorable = (F.col("channel_kind") != "push") | (F.col("push_left") >= 1)
    draw = F.xxhash64(
        F.lit("exploration_draw"),
        F.lit(p.exploration_key),
        F.lit(as_of.isoformat() if as_of else ""),
        F.col("subscriber_id"),
        F.col("offer_id"),
        F.col("channel"),
    )
    per_sub = Window.partitionBy("subscriber_id")
    order = per_sub.orderBy(draw, "offer_id", "channel")
    explored = (
        flagged.where(F.col("_explore") & explorable)
        .withColumn("_n", F.count(F.lit(1)).over(per_sub))
        .withColumn("_pick", F.row_number().over(order))
        .where(F.col("_pick") == 1)
        .withColumn("explored", F.lit(True))
        .withColumn("probability", 1.0 / F.col("_n"))
        .drop("_n", "_pick", "_explore")
    )
    rest = (
        flagged.where(~F.col("_explore"))
        .withColumn("explored", F.lit(False))
        .withColumn("probability", F.lit(1.0))
        .drop("_explore")
    )
    return rest.unionByName(explored)


def allocation_actions(candidates: DataFrame, p: OfferParams, as_of: date | None = None) -> DataFrame:
    """The kept candidate rows as allocation actions (`allocation.ACTION_COLUMNS`), with the
    exploration columns (`with_exploration`; the draw is per `as_of`)."""
    return (
        candidates.where(F.col("exclusion_reason").isNull())
        .transform(with_group, p)
        .withColumn("push_left", F.greatest(F.lit(p.max_push_contacts) - F.col("push_contacts"), F.lit(0)))
        .transform(with_exploration, p, as_of)
    )


def allocate_offers(
    candidates: DataFrame,
    constraints: tuple[Constraint, ...],
    p: OfferParams,
    alloc: AllocationParams,
    greedy: bool = False,
    as_of: date | None = None,
) -> tuple[DataFrame, AllocationResult]:
    """Choose among the kept candidates for the whole base (`cvo_spark.offers.allocation`).

    Returns the chosen rows (every candidate column, plus group, ``explored`` and
    ``probability`` (`with_exploration`; the draw is per `as_of`), adjusted_value and a
    ``rank`` 1.. per subscriber and channel by adjusted value) and the solver's result.
    The caller unpersists ``result.actions``.
    """
    # Read twice (the solver's per-subscriber arrays, then the join back): computed once.
    actions = allocation_actions(candidates, p, as_of).persist()
    result = allocate(actions, constraints, alloc, greedy=greedy)
    result.inputs = actions
    chosen = result.actions.where(F.col("allocation_status") == CHOSEN).select(
        "subscriber_id", "offer_id", "channel", "adjusted_value"
    )
    order = Window.partitionBy("subscriber_id", "channel").orderBy(F.col("adjusted_value").desc(), "offer_id")
    rows = (
        actions.drop("rank")
        .join(chosen, on=["subscriber_id", "offer_id", "channel"], how="inner")
        .withColumn("rank", F.row_number().over(order).cast("int"))
    )
    return rows, result


# ---------------------------------------------------------------------------- reasons
def _pct(col: Column) -> Column:
    return F.round(F.abs(col) * 100).cast("int")


def reason_candidates(p: OfferParams) -> tuple[list[Column], Column, list[Column]]:
    """Readable reasons, each null when it does not apply: (from the subscriber's own data,
    in priority order; from the model's contributions; the segment line, then fallbacks)."""
    cat, otype = F.col("category"), F.col("offer_type")
    days, qdays = p.trend_days, p.quota_days

    def up(c: str) -> Column:
        return F.coalesce(F.col(c), F.lit(0.0)) >= 0.1

    def down(c: str) -> Column:
        return F.coalesce(F.col(c), F.lit(0.0)) <= -0.1

    segment = F.concat_ws(
        ", ",
        base_persona(F.col("persona_name")),
        F.when(F.col("is_high_value"), F.lit("High Value")).otherwise(
            F.concat(F.col("value_tier"), F.lit(" tier"))
        ),
    )
    model = (
        F.when(otype == "retention", F.lit("churn"))
        .when(otype == "cross_sell", F.lit("cross-sell"))
        .otherwise(F.lit("upsell"))
    )
    drivers = (
        F.when(otype == "retention", F.col("reasons_churn"))
        .when(otype == "cross_sell", F.col("reasons_cross_sell"))
        .otherwise(F.col("reasons_upsell"))
    )
    own_data = [
        F.when(otype == "retention", F.format_string("churn risk %d%%", _pct(F.col("p_churn")))),
        F.when(
            (otype == "retention") & down("revenue_trend_pct"),
            F.format_string(
                "spend down %d%% in the last %d days", _pct(F.col("revenue_trend_pct")), F.lit(days)
            ),
        ),
        F.when(
            (cat == "data") & up("data_trend_pct"),
            F.format_string(
                "data usage up %d%% in the last %d days", _pct(F.col("data_trend_pct")), F.lit(days)
            ),
        ),
        F.when(
            (cat.isin("data", "bundle")) & (F.coalesce(F.col("quota_low_count"), F.lit(0)) > 0),
            F.format_string(
                "quota ran low %d time(s) in the last %d days", F.col("quota_low_count"), F.lit(qdays)
            ),
        ),
        F.when(
            (cat.isin("voice", "sms")) & up("voice_trend_pct"),
            F.format_string(
                "voice minutes up %d%% in the last %d days", _pct(F.col("voice_trend_pct")), F.lit(days)
            ),
        ),
        F.when(
            (cat.isin("voice", "sms")) & (F.coalesce(F.col("voice_share"), F.lit(0.0)) >= 0.3),
            F.format_string("voice is %d%% of spend", _pct(F.col("voice_share"))),
        ),
        F.when(
            (cat == "digital") & (F.coalesce(F.col("digital_share"), F.lit(0.0)) >= 0.05),
            F.format_string("digital services are %d%% of spend", _pct(F.col("digital_share"))),
        ),
        F.when(
            (otype.isin("upsell", "loyalty")) & (cat == "bundle") & up("revenue_trend_pct"),
            F.format_string(
                "spend up %d%% in the last %d days", _pct(F.col("revenue_trend_pct")), F.lit(days)
            ),
        ),
        F.when(
            F.col("lifecycle") == "new",
            F.format_string("new subscriber (%d days)", F.col("length_of_stay_days")),
        ),
    ]
    from_model = F.when(
        F.size(F.coalesce(drivers, F.array())) > 0,
        F.concat(model, F.lit(" model drivers: "), F.array_join(F.slice(drivers, 1, 2), ", ")),
    )
    net = F.when(
        F.col("net_value").isNotNull(),
        F.format_string(
            "adds Rp %s net (uplift %+.1f pts, %s)",
            _money(F.col("net_value")),
            F.col("uplift") * 100,
            F.col("uplift_source"),
        ),
    )
    fallbacks = [
        net,
        F.when(F.length(segment) > 0, segment),
        # Always present, so every row has at least two reasons.
        F.format_string("%d%% likely to accept", F.round(F.col("propensity") * 100).cast("int")),
        F.concat(F.lit("expected value Rp "), _money(F.col("expected_value"))),
    ]
    return own_data, from_model, fallbacks


def with_reasons(rows: DataFrame, p: OfferParams, max_reasons: int = 3) -> DataFrame:
    """Add ``reason_codes``: `max_reasons` (2-3) readable reasons that apply.

    At most two come from the subscriber's own data, so the model's contributions to the
    propensity always get the next place when the model has any; the segment line and
    then the propensity and expected value fill what is left.
    """
    own_data, from_model, fallbacks = reason_candidates(p)

    def present(cols: list[Column]) -> Column:
        return F.filter(F.array(*cols), lambda r: r.isNotNull())

    reasons = F.concat(
        F.slice(present(own_data), 1, max(max_reasons - 1, 1)), present([from_model, *fallbacks])
    )
    return rows.withColumn("reason_codes", F.slice(reasons, 1, max_reasons))


def with_exploration_reason(rows: DataFrame, p: OfferParams, max_reasons: int = 3) -> DataFrame:
    """Put the exploration first in an explored row's ``reason_codes`` (needs ``explored``,
    ``probability``, ``reason_codes``): a person reading the decision must see it was
    drawn at random on purpose, not chosen for its value."""
    n = F.round(1.0 / F.col("probability")).cast("long")
    text = F.format_string(
        "Drawn at random among %d eligible offers (the %s%% exploration share), so the engine "
        "learns what its own choice would miss",
        n,
        F.lit(f"{p.exploration_share * 100:g}"),
    )
    return rows.withColumn(
        "reason_codes",
        F.when(
            F.col("explored"), F.concat(F.array(text), F.slice("reason_codes", 1, max_reasons - 1))
        ).otherwise(F.col("reason_codes")),
    )


# ---------------------------------------------------------------------------- output
def select_offers(candidates: DataFrame, as_of: date, run_id: str, p: OfferParams) -> DataFrame:
    """The kept candidates as `offers` rows (OFFERS_SCHEMA): group, reasons, validity.

    Needs the columns `candidate_offers` produces (and, after `allocate_offers`, its
    group and rank). ``group`` (`with_group`) is 'holdout' for the universal holdout and
    'control' for the campaign's control share: both are written, never exported. valid_from = as_of + 1 day,
    valid_to = valid_from + validity_days - 1 (both inclusive: a 7-day offer runs 7 days,
    and trigger offers read valid_to as the last valid day). ``probability`` is the
    probability with which the decision was chosen: 1 for the engine's deterministic
    choice, 1/n for an explored one (`with_exploration`), whose first reason says so.
    Without the allocation the decision-core columns (net_value, uplift, ...) are null.
    """
    valid_from = F.lit(as_of + timedelta(days=1))
    kept = candidates.where(F.col("exclusion_reason").isNull())
    if "group" not in kept.columns or "campaign_id" not in kept.columns:
        kept = kept.drop("group").transform(with_group, p)
    for name in ("net_value", "uplift", "expected_cost", "contact_cost"):
        if name not in kept.columns:
            kept = kept.withColumn(name, F.lit(None).cast("double"))
    if "uplift_source" not in kept.columns:
        kept = kept.withColumn("uplift_source", F.lit(None).cast("string"))
    if "probability" not in kept.columns:
        kept = kept.withColumn("probability", F.lit(1.0))
    if "explored" not in kept.columns:
        kept = kept.withColumn("explored", F.lit(False))
    kept = (
        kept.transform(with_reasons, p)
        .transform(with_exploration_reason, p)
        .withColumn("decision_id", decision_id(F.col("campaign_id"), as_of))
        .withColumn("as_of", F.lit(as_of))
        .withColumn("valid_from", valid_from)
        .withColumn("valid_to", F.date_add(valid_from, F.col("validity_days") - 1))
        .withColumn("run_id", F.lit(run_id))
    )
    return kept.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in OFFERS_SCHEMA.fields])


@dataclass
class OfferBatch:
    """A batch's `offers` rows and, with the allocation on, what the solver did."""

    offers: DataFrame
    allocation: AllocationResult | None = None

    def release(self) -> None:
        """Unpersist the solver's frames once the offers are written."""
        if self.allocation is not None:
            self.allocation.actions.unpersist()
            if self.allocation.inputs is not None:
                self.allocation.inputs.unpersist()


def build_offers(
    features: DataFrame,
    segments: DataFrame,
    scores: DataFrame,
    offer_history: DataFrame,
    catalog_offers: DataFrame,
    offer_channels: DataFrame,
    as_of: date,
    run_id: str,
    p: OfferParams,
    constraints: tuple[Constraint, ...] = (),
    alloc: AllocationParams | None = None,
    consents: DataFrame | None = None,
    offer_scores: DataFrame | None = None,
    triggers: DataFrame | None = None,
    greedy: bool = False,
) -> OfferBatch:
    """The whole batch: gold inputs (one as_of) + offer history + catalog -> `offers` rows.

    With ``p.allocate`` the rows are chosen for the whole base under `constraints`
    (`allocate_offers`; ``greedy`` = the baseline without prices); without, by today's
    per-channel ranking.
    """
    profiles = subscriber_profiles(features, segments, scores)
    contacts, rejects = contact_history(
        offer_history, as_of, p.contact_window_days, p.cooldown_days_after_reject
    )
    if not p.allocate:
        candidates = candidate_offers(profiles, catalog_offers, offer_channels, contacts, rejects, p)
        return OfferBatch(select_offers(candidates, as_of, run_id, p))
    load = contact_load(
        offer_history, triggers, as_of, p.push_channels, p.contact_window_days, p.fatigue_window_days
    )
    candidates = candidate_offers(
        profiles,
        catalog_offers,
        offer_channels,
        contacts,
        rejects,
        p,
        load=load,
        consents=consent_by_channel(consents, as_of),
        offer_scores=offer_scores,
    )
    chosen, result = allocate_offers(
        candidates, constraints, p, alloc or AllocationParams(), greedy=greedy, as_of=as_of
    )
    return OfferBatch(select_offers(chosen, as_of, run_id, p), result)
