"""Trigger-offer choice for one batch of quota / recharge events (pure DataFrame transforms).

Silver ``quota_events`` is read as a Delta stream. For each event the job picks the best
eligible offer from the latest published gold ``offers`` snapshot and appends one row to
gold ``trigger_offers`` (subscriber_id, event_type, event_ts, offer_id, channel,
emitted_at). Rules, in the order they apply (`select_trigger_offers`):

1. **Already emitted** events (same subscriber_id, event_type, event_ts in
   trigger_offers) are skipped, so a re-processed batch adds nothing.
2. **Control group and universal holdout**: a subscriber with any ``group = 'control'``
   row in the snapshot gets nothing (the measured control must stay untouched). A
   subscriber of the universal holdout (the hash of subscriber_id alone,
   `cvo_spark.offers.engine.is_holdout`, or any 'holdout' row in the snapshot) is decided
   like everyone from their 'holdout' rows, and the decision is kept with group
   'holdout' (gold ``decisions``) but never emitted to trigger_offers: holdout decisions
   go through rules 3-5 like the others, counting earlier holdout decisions as emitted.
3. **Offer choice**: among the subscriber's treatment offers valid on the event's date
   (valid_from <= date <= valid_to), the best rank on the channel configured for the
   event type (``stream.channel_by_event``). When the subscriber has no valid offer on
   that channel, the fallback is their best offer on any channel (highest
   expected_value, then best rank) and it is emitted on *that offer's* channel, since a
   channel only sends offers published for it. No valid offer: nothing.
4. **Contact cap** on the chosen channel: treatment contacts in silver offer_history
   plus trigger offers already emitted on that channel within ``contact_window_days``
   before the event; at ``max_contacts_per_channel`` the event gets nothing (no detour to
   another channel: the cap is a promise not to push harder).
5. **Suppression**: no two trigger offers for a subscriber less than ``suppress_minutes``
   apart. Against earlier batches this is a join with trigger_offers (either side in
   time, so a late event cannot slip in before an emitted one). Within a batch the first
   event per subscriber per suppression window is kept: windows are laid from the
   subscriber's first event in the batch, and a kept event closer than the window to the
   previous kept one is dropped as well. This never emits two offers closer than the
   window; in a long back-fill batch it can emit fewer than a strict one-by-one replay.
   Caps then also count earlier emissions of the same batch.

`cvo_spark.stream.job` runs these per micro-batch of a Delta stream and owns the delivery
guarantees (checkpoint, idempotent append, watermark).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType, TimestampType

from cvo_spark.core.util import require_columns
from cvo_spark.offers.engine import is_holdout
from cvo_spark.offers.publish import DECISIONS_COLUMNS

EVENT_KEY = ("subscriber_id", "event_type", "event_ts")
OFFER_COLUMNS = (
    "subscriber_id",
    "channel",
    "rank",
    "offer_id",
    "expected_value",
    "group",
    "valid_from",
    "valid_to",
)
#: Snapshot columns a trigger decision carries into gold `decisions` when the snapshot has them.
DECISION_DETAIL_COLUMNS = {
    "campaign_id": "string",
    "net_value": "double",
    "expected_cost": "double",
}
#: What `select_trigger_decisions` returns per kept event.
TRIGGER_DECISION_COLUMNS = (
    *("subscriber_id", "event_type", "event_ts"),
    "offer_id",
    "channel",
    "group",
    "valid_from",
    "valid_to",
    *DECISION_DETAIL_COLUMNS,
)
TRIGGER_OFFERS_SCHEMA = StructType(
    [
        StructField("subscriber_id", StringType()),
        StructField("event_type", StringType()),
        StructField("event_ts", TimestampType()),
        StructField("offer_id", StringType()),
        StructField("channel", StringType()),
        StructField("emitted_at", TimestampType()),
    ]
)


@dataclass(frozen=True)
class TriggerRules:
    """Plain values the trigger transform needs (from config ``stream`` and ``offers``)."""

    channel_by_event: Mapping[str, str]
    suppress_minutes: int
    contact_window_days: int
    max_contacts_per_channel: int
    #: Push channels get no trigger offer in [quiet_start, quiet_end) hours (wrapping
    #: midnight when start > end); the event then goes to a pull channel's offer or none.
    push_channels: tuple[str, ...] = ()
    quiet_start: int = 0
    quiet_end: int = 0
    #: Universal holdout (config offers.universal_holdout_share / _key); 0: none.
    holdout_share: float = 0.0
    holdout_key: str = "cvo-universal-holdout"


# ----------------------------------------------------------------------------- transforms
def _seconds(col: str) -> F.Column:
    return F.unix_seconds(F.col(col))


def with_preferred_channel(events: DataFrame, channel_by_event: Mapping[str, str]) -> DataFrame:
    """Add ``preferred_channel`` (the channel configured for ``event_type``; null if none)."""
    require_columns(events, ("event_type",), "with_preferred_channel")
    if not channel_by_event:
        return events.withColumn("preferred_channel", F.lit(None).cast("string"))
    mapping = F.create_map(*[F.lit(x) for kv in sorted(channel_by_event.items()) for x in kv])
    return events.withColumn("preferred_channel", mapping[F.col("event_type")])


def in_quiet_hours(ts: F.Column, start: int, end: int) -> F.Column:
    """Whether `ts` falls in [start, end) hours of the session time zone (start > end wraps
    midnight: 21..8 is 21:00-07:59; start == end: never)."""
    hour = F.hour(ts)
    if start == end:
        return F.lit(False)
    if start < end:
        return (hour >= start) & (hour < end)
    return (hour >= start) | (hour < end)


def choose_offers(
    events: DataFrame,
    offers: DataFrame,
    push_channels: tuple[str, ...] = (),
    quiet_start: int = 0,
    quiet_end: int = 0,
    holdout_share: float = 0.0,
    holdout_key: str = "cvo-universal-holdout",
) -> DataFrame:
    """One row per event with an eligible offer: adds ``offer_id``, ``channel``, ``group``
    ('treatment' or 'holdout'), ``valid_from``, ``valid_to`` and `DECISION_DETAIL_COLUMNS`
    (null when the snapshot has none).

    Needs events (subscriber_id, event_type, event_ts, preferred_channel) and one offers
    snapshot (`OFFER_COLUMNS`). Drops events of control-group subscribers and events
    with no treatment (or, in the universal holdout, holdout) offer valid on the event's
    date (rules 2 and 3 of the module doc); in quiet hours, offers on `push_channels` are
    not candidates.
    """
    require_columns(events, (*EVENT_KEY, "preferred_channel"), "choose_offers")
    require_columns(offers, OFFER_COLUMNS, "choose_offers")
    details = [
        (F.col(c) if c in offers.columns else F.lit(None)).cast(t).alias(c)
        for c, t in DECISION_DETAIL_COLUMNS.items()
    ]
    snapshot = offers.select(
        "subscriber_id",
        F.col("channel").alias("offer_channel"),
        "rank",
        "offer_id",
        "expected_value",
        "group",
        "valid_from",
        "valid_to",
        *details,
    )
    event_date = F.to_date("event_ts")
    is_valid = (F.coalesce(F.col("valid_from"), event_date) <= event_date) & (
        event_date <= F.coalesce(F.col("valid_to"), event_date)
    )
    on_channel = F.col("offer_channel") == F.coalesce(F.col("preferred_channel"), F.lit(""))
    per_event = Window.partitionBy(*EVENT_KEY)
    best_first = per_event.orderBy(
        F.when(on_channel, 0).otherwise(1),  # the configured channel first
        F.when(on_channel, F.col("rank")),  # ... and its best rank
        F.col("expected_value").desc_nulls_last(),  # fallback: best value on any channel
        F.col("rank"),
        F.col("offer_channel"),
        F.col("offer_id"),  # total order: deterministic choice
    )
    quiet = F.col("offer_channel").isin(list(push_channels)) & in_quiet_hours(
        F.col("event_ts"), quiet_start, quiet_end
    )
    # The hash decides even when the snapshot predates the holdout (or its share changed):
    # a subscriber it names is never sent anything.
    held = is_holdout(F.col("subscriber_id"), holdout_share, holdout_key) | (
        F.max((F.col("group") == "holdout").cast("int")).over(per_event) == 1
    )
    # One pass over the snapshot: a subscriber with any control row is excluded whole.
    return (
        events.join(snapshot, on="subscriber_id", how="inner")
        .withColumn("_has_control", F.max((F.col("group") == "control").cast("int")).over(per_event))
        .withColumn("_held", held)
        .where((F.col("_has_control") == 0) & F.col("group").isin("treatment", "holdout") & is_valid & ~quiet)
        .withColumn("_choice", F.row_number().over(best_first))
        .where(F.col("_choice") == 1)
        .select(
            *EVENT_KEY,
            "offer_id",
            F.col("offer_channel").alias("channel"),
            F.when(F.col("_held"), F.lit("holdout")).otherwise(F.lit("treatment")).alias("group"),
            "valid_from",
            "valid_to",
            *DECISION_DETAIL_COLUMNS,
        )
    )


def with_emitted_history(
    chosen: DataFrame, emitted: DataFrame, suppress_minutes: int, window_days: int
) -> DataFrame:
    """Compare each chosen event with the trigger offers already emitted (one join).

    Needs chosen (event key, channel) and emitted (event key, channel of earlier trigger
    offers). Adds ``is_emitted`` (this very event was emitted before), ``is_near_emitted``
    (an emitted offer less than `suppress_minutes` before or after it) and
    ``emitted_contacts`` (emitted offers on the same channel in the `window_days` before
    it, for the cap).
    """
    require_columns(emitted, (*EVENT_KEY, "channel"), "with_emitted_history")
    suppress_sec, window_sec = suppress_minutes * 60, window_days * 86_400
    e = emitted.select(
        F.col("subscriber_id").alias("_e_sub"),
        F.col("event_type").alias("_e_type"),
        F.col("channel").alias("_e_channel"),
        _seconds("event_ts").alias("_e_sec"),
    )
    e_sec = _seconds("event_ts")
    # Only emitted rows that can matter for this event join (bounded per subscriber).
    near = (F.col("_e_sec") > e_sec - max(suppress_sec, window_sec)) & (
        F.col("_e_sec") < e_sec + suppress_sec
    )
    same_event = (F.col("_e_type") == F.col("event_type")) & (F.col("_e_sec") == e_sec)
    in_window = (
        (F.col("_e_channel") == F.col("channel"))
        & (F.col("_e_sec") > e_sec - window_sec)
        & (F.col("_e_sec") <= e_sec)
    )
    return (
        chosen.join(e, on=(F.col("subscriber_id") == F.col("_e_sub")) & near, how="left")
        .groupBy(*chosen.columns)
        .agg(
            F.coalesce(F.max(same_event), F.lit(False)).alias("is_emitted"),
            F.coalesce(F.max(F.abs(F.col("_e_sec") - e_sec) < suppress_sec), F.lit(False)).alias(
                "is_near_emitted"
            ),
            F.count(F.when(in_window, 1)).alias("emitted_contacts"),
        )
    )


def with_prior_contacts(chosen: DataFrame, contacts: DataFrame, window_days: int) -> DataFrame:
    """Add ``prior_contacts``: past contacts on the event's channel in the window before it.

    Needs chosen (event key, channel, emitted_contacts) and contacts (subscriber_id,
    channel, contact_ts: treatment contacts of offer_history). A contact counts when
    event_ts - window_days < contact_ts <= event_ts; emitted trigger offers
    (``emitted_contacts``) are added.
    """
    require_columns(contacts, ("subscriber_id", "channel", "contact_ts"), "with_prior_contacts")
    require_columns(chosen, ("channel", "emitted_contacts"), "with_prior_contacts")
    window_sec = window_days * 86_400
    c = contacts.select(
        F.col("subscriber_id").alias("_c_sub"),
        F.col("channel").alias("_c_channel"),
        _seconds("contact_ts").alias("_c_sec"),
    )
    e_sec = _seconds("event_ts")
    # One left join + aggregate (not a join back onto `chosen`): the batch's lineage is
    # evaluated once.
    return (
        chosen.join(
            c,
            on=(F.col("subscriber_id") == F.col("_c_sub"))
            & (F.col("channel") == F.col("_c_channel"))
            & (F.col("_c_sec") > e_sec - window_sec)
            & (F.col("_c_sec") <= e_sec),
            how="left",
        )
        .groupBy(*chosen.columns)
        .agg(F.count("_c_sec").alias("_history_contacts"))
        .withColumn("prior_contacts", F.col("_history_contacts") + F.col("emitted_contacts"))
        .drop("_history_contacts")
    )


def filter_suppressed_in_batch(chosen: DataFrame, suppress_minutes: int) -> DataFrame:
    """Keep the first event per subscriber per suppression window within the batch.

    Windows are laid from the subscriber's first event in the batch; a kept event less
    than `suppress_minutes` after the previous kept one is dropped as well, so no two
    kept events are closer than the window (rule 5 of the module doc).
    """
    if suppress_minutes <= 0:
        return chosen
    window_sec = suppress_minutes * 60
    per_subscriber = Window.partitionBy("subscriber_id")
    in_slot = Window.partitionBy("subscriber_id", "_slot").orderBy("event_ts", "event_type")
    in_time = Window.partitionBy("subscriber_id").orderBy("event_ts", "event_type")
    return (
        chosen.withColumn("_sec", _seconds("event_ts"))
        .withColumn("_slot", F.floor((F.col("_sec") - F.min("_sec").over(per_subscriber)) / window_sec))
        .withColumn("_first", F.row_number().over(in_slot) == 1)
        .where(F.col("_first"))
        .withColumn("_gap", F.col("_sec") - F.lag("_sec").over(in_time))
        .where(F.col("_gap").isNull() | (F.col("_gap") >= window_sec))
        .drop("_sec", "_slot", "_first", "_gap")
    )


def filter_batch_capped(kept: DataFrame, window_days: int, max_contacts: int) -> DataFrame:
    """Apply the cap with this batch's own emissions: prior + batch emissions so far <= max.

    Needs kept (subscriber_id, channel, event_ts, prior_contacts).
    """
    window_sec = window_days * 86_400
    so_far = (
        Window.partitionBy("subscriber_id", "channel")
        .orderBy(_seconds("event_ts"))
        .rangeBetween(-(window_sec - 1), 0)
    )
    return (
        kept.withColumn("_batch_contacts", F.count(F.lit(1)).over(so_far))
        .where(F.col("prior_contacts") + F.col("_batch_contacts") <= max_contacts)
        .drop("_batch_contacts")
    )


def relevant_history(
    emitted: DataFrame, contacts: DataFrame, first_sec: int, last_sec: int, rules: TriggerRules
) -> tuple[DataFrame, DataFrame]:
    """Only the emitted rows and contacts that can matter for events in [first, last]
    (unix seconds of the batch's earliest and latest event_ts).

    Every rule looks back at most max(suppression, contact window) from an event and
    forward at most the suppression window, so older and later rows are cut by constant
    timestamp bounds that Delta can skip files with: a micro-batch then reads the recent
    part of the ever-growing trigger_offers and offer_history, not all of it.
    """
    suppress, window = rules.suppress_minutes * 60, rules.contact_window_days * 86_400

    def at(sec: float) -> Column:
        return F.timestamp_seconds(F.lit(int(sec)))  # constant-folded to a timestamp literal

    emitted = emitted.where(
        (F.col("event_ts") > at(first_sec - max(suppress, window)))
        & (F.col("event_ts") < at(last_sec + suppress))
    )
    contacts = contacts.where(
        (F.col("contact_ts") > at(first_sec - window)) & (F.col("contact_ts") <= at(last_sec))
    )
    return emitted, contacts


def select_trigger_decisions(
    events: DataFrame, offers: DataFrame, contacts: DataFrame, emitted: DataFrame, rules: TriggerRules
) -> DataFrame:
    """The trigger decisions of one micro-batch (`TRIGGER_DECISION_COLUMNS`): the offers to
    emit (group 'treatment') and those decided for the universal holdout (group 'holdout',
    logged, never emitted).

    Parameters
    ----------
    events : the batch (subscriber_id, event_type, event_ts; one row per key).
    offers : one published offers snapshot (`OFFER_COLUMNS`).
    contacts : subscriber_id, channel, contact_ts of past treatment contacts (offer_history).
    emitted : earlier trigger decisions (event key and channel): trigger_offers plus the
        holdout's logged ones, for rules 1, 4 and 5.
    """
    require_columns(events, EVENT_KEY, "select_trigger_offers")
    # Every later join, window and aggregate is keyed by subscriber first: one shuffle here
    # satisfies them all (Spark accepts hash partitioning on a subset of clustering keys).
    new_events = events.select(*EVENT_KEY).repartition("subscriber_id")
    window, cap = rules.contact_window_days, rules.max_contacts_per_channel
    return (
        with_preferred_channel(new_events, rules.channel_by_event)
        .transform(
            choose_offers,
            offers,
            rules.push_channels,
            rules.quiet_start,
            rules.quiet_end,
            rules.holdout_share,
            rules.holdout_key,
        )
        .transform(with_emitted_history, emitted, rules.suppress_minutes, window)
        .where(~F.col("is_emitted") & ~F.col("is_near_emitted"))
        .transform(with_prior_contacts, contacts, window)
        .where(F.col("prior_contacts") < cap)
        .transform(filter_suppressed_in_batch, rules.suppress_minutes)
        .transform(filter_batch_capped, window, cap)
        .select(*TRIGGER_DECISION_COLUMNS)
    )


def select_trigger_offers(
    events: DataFrame, offers: DataFrame, contacts: DataFrame, emitted: DataFrame, rules: TriggerRules
) -> DataFrame:
    """The trigger offers of one micro-batch to emit: event key, offer_id, channel (the
    treatment rows of `select_trigger_decisions`; same parameters)."""
    return (
        select_trigger_decisions(events, offers, contacts, emitted, rules)
        .where(F.col("group") == "treatment")
        .select(*EVENT_KEY, "offer_id", "channel")
    )


def trigger_decision_rows(decisions: DataFrame, run_id: str, default_campaign_id: str) -> DataFrame:
    """gold `decisions` rows (`cvo_spark.offers.publish.DECISIONS_COLUMNS`) of trigger decisions.

    ``decision_id``: 32 hex characters of sha2('trigger' | subscriber | event_type |
    event_ts in microseconds | offer | channel), the same whenever the event is decided
    again (a replayed micro-batch), so the log is written by an insert-only MERGE on it.
    ``as_of`` is the event's date; ``probability`` 1 (the choice is deterministic);
    ``model_versions`` empty (the snapshot's scores are the batch decisions'); ``source``
    'trigger'; ``campaign_id`` the chosen offer's (else `default_campaign_id`).
    """
    require_columns(decisions, TRIGGER_DECISION_COLUMNS, "trigger_decision_rows")
    key = F.concat_ws(
        "|",
        F.lit("trigger"),
        F.col("subscriber_id"),
        F.col("event_type"),
        F.unix_micros(F.col("event_ts")).cast("string"),
        F.col("offer_id"),
        F.col("channel"),
    )
    rows = decisions.select(
        F.substring(F.sha2(key, 256), 1, 32).alias("decision_id"),
        "subscriber_id",
        "offer_id",
        "channel",
        "group",
        F.lit(1.0).alias("probability"),
        F.create_map().cast("map<string,string>").alias("model_versions"),
        F.lit("trigger").alias("source"),
        F.coalesce(F.col("campaign_id"), F.lit(default_campaign_id)).alias("campaign_id"),
        "net_value",
        "expected_cost",
        "valid_from",
        "valid_to",
        F.lit(run_id).alias("run_id"),
        F.to_date("event_ts").alias("as_of"),
        "event_type",
        "event_ts",
    )
    return rows.select(*DECISIONS_COLUMNS)
