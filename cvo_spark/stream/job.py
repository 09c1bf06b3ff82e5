"""`cvo stream`: contextual trigger offers from quota / recharge events (Structured Streaming).

Silver ``quota_events`` is read as a Delta stream. For each event the job picks the best
eligible offer from the latest published gold ``offers`` snapshot and appends one row to
gold ``trigger_offers`` (subscriber_id, event_type, event_ts, offer_id, channel,
emitted_at). Every trigger decision, the emitted ones and those of the universal holdout
(decided like everyone, never emitted), is also logged in gold ``decisions`` (source
'trigger'). The rules (already emitted, control group and holdout, offer choice, contact
cap, suppression) are the pure transforms of `cvo_spark.stream.triggers`; this module is
the streaming IO around them.

Delivery guarantees:

- **Exactly once**: progress is checkpointed (``stream.checkpoint``, relative to the lake
  root) and each micro-batch is appended with Delta's idempotent-write options
  ``txnAppId`` (the streaming query id, stable for a checkpoint) / ``txnVersion`` (the
  batch id). A batch re-run after a crash between the write and the checkpoint commit is
  skipped by Delta; rule 1 is a second guard. The batch's decisions are written to gold
  ``decisions`` first, by an insert-only MERGE on decision_id (stable per event and offer),
  so a replay adds nothing there either, and a crash between the two writes leaves no
  emitted offer without its decision row.
- **Late events**: ``withWatermark(event_ts, watermark_minutes)`` plus ``dropDuplicates``
  on the event key (the key holds event_ts, so the de-duplication state is evicted as
  the watermark passes). An out-of-order event less than the watermark delay older than
  the newest event seen is processed; an older one is dropped (by then a "your quota is
  low" offer is stale). Spark filters late rows of micro-batch N against the watermark
  in force for batch N-1 (so chained stateful operators agree), i.e. the newest event
  time of batches up to N-2 minus the delay; the first batches of a query therefore
  drop nothing and a back-fill processes all history.
- The source must be append-only (ingest appending new events). A commit that rewrites
  or deletes rows in silver quota_events stops the stream with Delta's error rather than
  silently re-reading or skipping events.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from contextlib import contextmanager
from datetime import date

from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from cvo_spark.core.errors import ConfigError, MissingTableError
from cvo_spark.core.io import TableStore, under_root
from cvo_spark.core.stage import StageContext
from cvo_spark.core.util import first_row
from cvo_spark.offers.stage import offer_params
from cvo_spark.stream.triggers import (
    EVENT_KEY,
    TRIGGER_OFFERS_SCHEMA,
    TriggerRules,
    relevant_history,
    select_trigger_decisions,
    trigger_decision_rows,
)

QUERY_NAME = "cvo_trigger_offers"
#: How often a running stream without a pinned offers date looks for a newer publish.
OFFERS_REFRESH_SECONDS = 60.0


def resolve_offers_as_of(store: TableStore, offers_as_of: date | None) -> date:
    """The offers snapshot to use: `offers_as_of` when it exists, else the newest published."""
    if not store.has("offers"):
        raise MissingTableError(
            f"stream: missing table gold.offers at {store.location('offers')}: run the offers stage first"
        )
    if offers_as_of is not None:
        if store.read_as_of("offers", offers_as_of).limit(1).count() == 0:
            raise MissingTableError(f"stream: gold.offers has no partition as_of={offers_as_of}")
        return offers_as_of
    newest = store.latest_as_of("offers")
    if newest is None:
        raise MissingTableError("stream: gold.offers is empty: run the offers stage first")
    return newest


class TriggerOfferSink:
    """The ``foreachBatch`` function: choose offers for one micro-batch and append them.

    The append is idempotent per (query id, batch id) through Delta's ``txnAppId`` /
    ``txnVersion``, so a batch replayed after a crash writes nothing twice. With
    ``offers_as_of`` None the newest offers snapshot is looked up again at most every
    `OFFERS_REFRESH_SECONDS`, so a long-running stream picks up a new publish without a
    restart.
    """

    def __init__(
        self,
        store: TableStore,
        rules: TriggerRules,
        checkpoint: str,
        offers_as_of: date | None,
        default_campaign_id: str = "cvo",
    ):
        self.store = store
        self.rules = rules
        self.checkpoint = checkpoint
        self.offers_as_of = offers_as_of
        self.default_campaign_id = default_campaign_id
        self._app_id: str | None = None
        self._resolved: tuple[date, float] | None = None

    def app_id(self, spark: SparkSession) -> str:
        """`cvo_trigger_offers-<query id>`: the id lives in the checkpoint, so it is stable
        across restarts and new for a fresh checkpoint (whose batch ids start again at 0)."""
        if self._app_id is None:
            metadata = f"{self.checkpoint.rstrip('/')}/metadata"
            query_id = first_row(spark.read.json(metadata), f"stream: query id in checkpoint {metadata}")[
                "id"
            ]
            self._app_id = f"{QUERY_NAME}-{query_id}"
        return self._app_id

    def _emitted(self, spark: SparkSession) -> DataFrame:
        """Earlier trigger decisions (event key, channel): the emitted offers, plus the
        holdout's logged decisions, so rules 1, 4 and 5 treat the holdout alike."""
        cols = [*EVENT_KEY, "channel"]
        if self.store.has("trigger_offers"):
            emitted = self.store.table("trigger_offers").select(*cols)
        else:
            emitted = spark.createDataFrame([], TRIGGER_OFFERS_SCHEMA).select(*cols)
        if self.store.has("decisions"):
            log = self.store.table("decisions")
            if "event_ts" in log.columns:
                held = log.where((F.col("source") == "trigger") & (F.col("group") == "holdout"))
                emitted = emitted.unionByName(held.select(*cols))
        return emitted

    def _contacts(self, spark: SparkSession) -> DataFrame:
        if not self.store.has("offer_history"):
            return spark.createDataFrame([], "subscriber_id string, channel string, contact_ts timestamp")
        return (
            self.store.table("offer_history")
            .where(F.col("group") == "treatment")  # control rows were never actually contacted
            .select("subscriber_id", "channel", F.col("contacted_ts").alias("contact_ts"))
        )

    def offers(self) -> DataFrame:
        """The offers snapshot; the newest as_of is looked up at most once a minute."""
        if self.offers_as_of is not None:
            as_of = self.offers_as_of  # checked when the query started
        else:
            now = time.monotonic()
            if self._resolved is None or now - self._resolved[1] > OFFERS_REFRESH_SECONDS:
                self._resolved = (resolve_offers_as_of(self.store, None), now)
            as_of = self._resolved[0]
        return self.store.read_as_of("offers", as_of)

    def batch_decisions(self, events: DataFrame, first_sec: int, last_sec: int) -> DataFrame:
        """This batch's trigger decisions (`select_trigger_decisions`: treatment and
        holdout); its events span [first_sec, last_sec] (unix seconds), which bounds the
        history read."""
        spark = events.sparkSession
        emitted, contacts = relevant_history(
            self._emitted(spark), self._contacts(spark), first_sec, last_sec, self.rules
        )
        return select_trigger_decisions(events, self.offers(), contacts, emitted, self.rules)

    def batch_output(self, events: DataFrame, first_sec: int, last_sec: int) -> DataFrame:
        """The rows this batch appends (trigger_offers schema): the treatment decisions."""
        return self.emitted_rows(self.batch_decisions(events, first_sec, last_sec))

    @staticmethod
    def emitted_rows(decisions: DataFrame) -> DataFrame:
        # No explicit coalesce: adaptive execution already merges a small batch's shuffle
        # partitions into one file, while a large back-fill keeps its parallelism.
        return (
            decisions.where(F.col("group") == "treatment")
            .withColumn("emitted_at", F.current_timestamp())
            .select(*[F.col(f.name).cast(f.dataType) for f in TRIGGER_OFFERS_SCHEMA.fields])
        )

    def log_decisions(self, decisions: DataFrame, batch_id: int) -> None:
        """Insert this batch's decisions into gold `decisions` (insert-only MERGE on
        decision_id: a replayed batch adds nothing), aligned to the table's columns."""
        spark = decisions.sparkSession
        rows = trigger_decision_rows(decisions, f"{self.app_id(spark)}-{batch_id}", self.default_campaign_id)
        # Not conformed to the registry's columns: the rows are aligned to the stored log's
        # own columns, which an older lake may lack (see below).
        if not self.store.has("decisions"):
            self.store.write(rows, "decisions", mode="insert_new", conform=False)  # creates it
            return
        target = self.store.table("decisions").schema
        # A log written before a column existed: keep its columns (the batch's next run,
        # which merges its schema, adds them); a column only the log has reads null.
        aligned = rows.select(
            *[
                (F.col(f.name) if f.name in rows.columns else F.lit(None)).cast(f.dataType).alias(f.name)
                for f in target.fields
            ]
        )
        self.store.write(aligned, "decisions", mode="insert_new", conform=False)

    def write(self, rows: DataFrame, batch_id: int) -> None:
        self.store.write(
            rows,
            "trigger_offers",
            options={"txnAppId": self.app_id(rows.sparkSession), "txnVersion": batch_id},
        )

    def __call__(self, events: DataFrame, batch_id: int) -> None:
        # Persisted: the batch is read twice (emptiness, then the write), and re-running a
        # stateful plan would recompute the de-duplication state.
        events = events.persist()
        try:
            span = first_row(
                events.agg(
                    F.count(F.lit(1)).alias("n"),
                    F.min(F.unix_seconds("event_ts")).alias("first"),
                    F.max(F.unix_seconds("event_ts")).alias("last"),
                ),
                f"stream: span of batch {batch_id}",
            )
            # Watermark-only batches (no new rows) write nothing: no empty Delta commits.
            if span["n"]:
                # Materialised once: both writes below see the same choice, computed
                # before either changes the history it reads.
                decisions = self.batch_decisions(events, span["first"], span["last"]).persist()
                try:
                    decisions.count()
                    self.log_decisions(decisions, batch_id)  # first: no offer without its log row
                    self.write(self.emitted_rows(decisions), batch_id)
                finally:
                    decisions.unpersist()
        finally:
            events.unpersist()


def checkpoint_location(lake: str, checkpoint: str) -> str:
    """`checkpoint` as is when absolute or a URI, else under the lake root."""
    return under_root(lake, checkpoint)


def rules_from(ctx: StageContext) -> TriggerRules:
    s, o = ctx.config.stream, ctx.config.offers
    return TriggerRules(
        channel_by_event=dict(s.channel_by_event),
        suppress_minutes=s.suppress_minutes,
        contact_window_days=o.contact_window_days,
        max_contacts_per_channel=o.max_contacts_per_channel,
        push_channels=offer_params(ctx.config).push_channels,
        quiet_start=o.allocation.quiet_hours_start,
        quiet_end=o.allocation.quiet_hours_end,
        holdout_share=o.universal_holdout_share,
        holdout_key=o.universal_holdout_key,
    )


def start_trigger_stream(
    ctx: StageContext,
    *,
    available_now: bool,
    offers_as_of: date | None = None,
    sink: TriggerOfferSink | None = None,
) -> StreamingQuery:
    """Start the trigger-offer query (checks its inputs first) and return it running."""
    s = ctx.config.stream
    store = ctx.store
    if not store.has("quota_events"):
        raise MissingTableError(
            f"stream: missing table silver.quota_events at {store.location('quota_events')}"
        )
    resolve_offers_as_of(store, offers_as_of)  # fail before starting, with one clear line
    unknown = sorted(set(s.channel_by_event) - {"recharge", "quota_low", "quota_expiring", "package_expired"})
    if unknown:
        raise ConfigError(f"stream.channel_by_event: unknown event type {unknown[0]!r}")
    checkpoint = store.under_lake(s.checkpoint)
    sink = sink or TriggerOfferSink(
        store, rules_from(ctx), checkpoint, offers_as_of, ctx.config.offers.campaign_id
    )

    source = store.read_stream(
        "quota_events", {"maxFilesPerTrigger": s.max_files_per_trigger} if s.max_files_per_trigger else None
    )
    events = (
        source.select(*EVENT_KEY)
        .where(F.col("subscriber_id").isNotNull() & F.col("event_ts").isNotNull())
        .withWatermark("event_ts", f"{s.watermark_minutes} minutes")
        .dropDuplicates(list(EVENT_KEY))
    )
    writer = (
        events.writeStream.queryName(QUERY_NAME).option("checkpointLocation", checkpoint).foreachBatch(sink)
    )
    writer = (
        writer.trigger(availableNow=True)
        if available_now
        else writer.trigger(processingTime=f"{s.trigger_seconds} seconds")
    )
    return writer.start()


def run_stream(ctx: StageContext, available_now: bool, offers_as_of: date | None) -> None:
    """`cvo stream`: run until the available events are processed, or until Ctrl-C.

    Any failure inside a micro-batch stops the query and is re-raised; the checkpoint
    makes the next start resume from the first uncommitted batch.
    """
    query = start_trigger_stream(ctx, available_now=available_now, offers_as_of=offers_as_of)
    mode = "available events" if available_now else f"every {ctx.config.stream.trigger_seconds}s until Ctrl-C"
    print(f"cvo: [stream] trigger offers started ({mode})", file=sys.stderr, flush=True)
    stop_requested: list[int] = []
    with _stop_signals(stop_requested):
        try:
            # Short waits; a signal only sets a flag, so no JVM call is ever interrupted half-way
            # (the Spark JVM itself ignores SIGINT: PySpark starts it that way).
            while query.isActive and not stop_requested:
                query.awaitTermination(1)
        except StreamingQueryException:
            pass  # reported below from query.exception()
    if stop_requested:
        print(
            "cvo: [stream] stopping (the current micro-batch finishes or is replayed on restart) ...",
            file=sys.stderr,
            flush=True,
        )
        query.stop()
    error = query.exception()
    if error is not None:
        raise RuntimeError(f"trigger-offer stream failed: {str(error).strip().splitlines()[0]}")
    progress = query.recentProgress
    events = sum(p.numInputRows for p in progress)
    print(
        f"cvo: [stream] stopped after {len(progress)} batch(es) in this run, {events:,} events read",
        file=sys.stderr,
        flush=True,
    )


@contextmanager
def _stop_signals(flag: list[int]):
    """While active, SIGINT / SIGTERM append to `flag` instead of raising mid-call."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda signum, _frame: flag.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
