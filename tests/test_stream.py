"""Trigger offers: choice rules, restart, crash between write and commit, late events."""

from __future__ import annotations

import time
from datetime import date, datetime
from pathlib import Path

import pytest
from chispa import assert_df_equality
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

from cvo_spark.core.config import parse_config
from cvo_spark.core.errors import MissingColumnsError, MissingTableError
from cvo_spark.core.io import TableStore
from cvo_spark.core.schemas import INPUT_SCHEMAS, REQUIRED_INPUT_SCHEMAS
from cvo_spark.core.stage import StageContext
from cvo_spark.stream.job import (
    TriggerOfferSink,
    checkpoint_location,
    rules_from,
    run_stream,
    start_trigger_stream,
)
from cvo_spark.stream.triggers import TRIGGER_OFFERS_SCHEMA, TriggerRules, select_trigger_offers

AS_OF = date(2026, 6, 30)
VALID_TO = date(2026, 7, 7)
OFFERS = StructType(
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
    ]
)
OUT = StructType([f for f in TRIGGER_OFFERS_SCHEMA.fields if f.name != "emitted_at"])


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def offer(sub, channel, rank, offer_id, ev, group="treatment", valid_to=VALID_TO):
    return (
        sub,
        channel,
        rank,
        AS_OF,
        offer_id,
        "data",
        10_000.0,
        ev,
        0.2,
        ["r"],
        group,
        AS_OF,
        valid_to,
        "run",
    )


OFFER_ROWS = [
    offer("S1", "app", 1, "O_APP1", 500.0),
    offer("S1", "app", 2, "O_APP2", 900.0),
    offer("S1", "ussd", 1, "O_USSD1", 100.0),
    offer("S1", "sms", 1, "O_SMS1", 200.0),
    offer("S2", "sms", 1, "O_SMS2", 100.0),  # no ussd offer: a recharge falls back ...
    offer("S2", "app", 1, "O_APP2B", 300.0),  # ... to the best expected value, on its channel
    offer("S3", "app", 1, "O_CTRL", 900.0, group="control"),
    offer("S4", "sms", 1, "O_SMS4", 100.0),
    offer("S5", "sms", 1, "O_SMS5", 100.0),
    offer("S7", "app", 1, "O_OLD", 100.0, valid_to=AS_OF),  # expired before S7's event
    offer("S8", "app", 1, "O_APP8", 100.0),
]

# (subscriber, channel, contacted_ts, group): S4 has 3 treatment contacts on sms in the week
# before its event (capped); S5 has 2 treatment + 2 control ones (control does not count).
HISTORY_ROWS = [
    ("S4", "sms", "2026-06-26 10:00", "treatment"),
    ("S4", "sms", "2026-06-28 10:00", "treatment"),
    ("S4", "sms", "2026-06-30 10:00", "treatment"),
    ("S4", "sms", "2026-06-20 10:00", "treatment"),  # outside the 7-day window
    ("S5", "sms", "2026-06-28 10:00", "treatment"),
    ("S5", "sms", "2026-06-29 10:00", "treatment"),
    ("S5", "sms", "2026-06-29 11:00", "control"),
    ("S5", "sms", "2026-06-30 11:00", "control"),
    ("S5", "app", "2026-06-30 12:00", "treatment"),  # another channel
]

FIRST_EVENTS = [
    ("S1", "2026-07-01 10:00", "quota_low"),  # app -> O_APP1 (rank 1 beats higher-value rank 2)
    ("S1", "2026-07-01 12:00", "recharge"),  # 2 h later: suppressed
    ("S1", "2026-07-02 00:30", "package_expired"),  # 14.5 h later: sms -> O_SMS1
    ("S2", "2026-07-01 09:00", "recharge"),  # ussd -> none there -> O_APP2B on app
    ("S3", "2026-07-01 09:00", "quota_low"),  # control: nothing
    ("S4", "2026-07-01 11:00", "quota_expiring"),  # capped on sms: nothing
    ("S5", "2026-07-01 11:00", "quota_expiring"),  # 2 contacts < 3: O_SMS5
    ("S6", "2026-07-01 11:00", "quota_low"),  # no offers: nothing
    ("S7", "2026-07-01 11:00", "quota_low"),  # offer expired on 06-30: nothing
    (None, "2026-07-01 11:00", "quota_low"),  # no subscriber: ignored
]
FIRST_EXPECTED = [
    ("S1", "quota_low", ts("2026-07-01 10:00"), "O_APP1", "app"),
    ("S1", "package_expired", ts("2026-07-02 00:30"), "O_SMS1", "sms"),
    ("S2", "recharge", ts("2026-07-01 09:00"), "O_APP2B", "app"),
    ("S5", "quota_expiring", ts("2026-07-01 11:00"), "O_SMS5", "sms"),
]


def make_ctx(spark, tmp_path, **stream):
    config = parse_config(
        {
            "lake": str(tmp_path / "lake"),
            "stream": {"watermark_minutes": 60, "suppress_minutes": 720, **stream},
            # Quiet hours off: these tests are about recovery; quiet hours have their own test.
            "offers": {
                "contact_window_days": 7,
                "max_contacts_per_channel": 3,
                "allocation": {"quiet_hours_start": 0, "quiet_hours_end": 0},
            },
        }
    )
    store = TableStore(spark, config)
    return StageContext(spark, config, store, AS_OF, "test")


def seed_lake(ctx, events=FIRST_EVENTS):
    spark, store = ctx.spark, ctx.store
    store.overwrite_partition(spark.createDataFrame(OFFER_ROWS, OFFERS), "gold", "offers", AS_OF)
    history = spark.createDataFrame(
        [(s, "OFF", ch, ts(t), g, False, None, 0.0) for s, ch, t, g in HISTORY_ROWS],
        REQUIRED_INPUT_SCHEMAS["offer_history"],
    )
    store.overwrite(history, "silver", "offer_history")
    append_events(ctx, events)


def append_events(ctx, events):
    rows = [(s, ts(t), kind, None, None) for s, t, kind in events]
    # One file per append: maxFilesPerTrigger then means one append per micro-batch.
    df = ctx.spark.createDataFrame(rows, INPUT_SCHEMAS["quota_events"]).coalesce(1)
    ctx.store.append(df, "silver", "quota_events")


def emitted(ctx):
    return ctx.store.read("gold", "trigger_offers")


def as_expected(spark, rows):
    return spark.createDataFrame(rows, OUT)


def check(ctx, rows):
    actual = emitted(ctx).drop("emitted_at")
    assert_df_equality(actual, as_expected(ctx.spark, rows), ignore_row_order=True, ignore_nullable=True)


def test_available_now_rules_then_restart_processes_only_new_events(spark, tmp_path):
    ctx = make_ctx(spark, tmp_path)
    seed_lake(ctx)
    run_stream(ctx, available_now=True, offers_as_of=None)
    check(ctx, FIRST_EXPECTED)
    assert emitted(ctx).where(F.col("emitted_at").isNull()).count() == 0
    first_emitted_at = {r["subscriber_id"] + r["event_type"]: r["emitted_at"] for r in emitted(ctx).collect()}

    append_events(
        ctx,
        [
            ("S1", "2026-07-02 05:00", "quota_low"),  # 4.5 h after the emitted 00:30 offer: suppressed
            ("S2", "2026-07-02 10:00", "quota_expiring"),  # 25 h after its last: sms -> O_SMS2
            ("S1", "2026-07-02 00:30", "package_expired"),  # the same event again: nothing new
        ],
    )
    run_stream(ctx, available_now=True, offers_as_of=AS_OF)
    check(ctx, FIRST_EXPECTED + [("S2", "quota_expiring", ts("2026-07-02 10:00"), "O_SMS2", "sms")])
    again = {r["subscriber_id"] + r["event_type"]: r["emitted_at"] for r in emitted(ctx).collect()}
    assert all(again[k] == v for k, v in first_emitted_at.items())  # earlier rows untouched


class CrashAfterWrite(TriggerOfferSink):
    """Dies after batch 0's rows are committed to Delta but before Spark commits the batch."""

    def __call__(self, events, batch_id):
        super().__call__(events, batch_id)
        if batch_id == 0:
            raise RuntimeError("simulated crash between write and checkpoint commit")


def test_crash_between_write_and_commit_loses_and_duplicates_nothing(spark, tmp_path):
    ctx = make_ctx(spark, tmp_path, max_files_per_trigger=1)
    seed_lake(ctx)
    append_events(ctx, [("S2", "2026-07-02 10:00", "quota_expiring")])
    checkpoint = checkpoint_location(ctx.config.lake, ctx.config.stream.checkpoint)
    crashing = CrashAfterWrite(ctx.store, rules_from(ctx), checkpoint, None)
    query = start_trigger_stream(ctx, available_now=True, sink=crashing)
    with pytest.raises(Exception, match="simulated crash"):
        query.awaitTermination()
    assert emitted(ctx).count() == len(FIRST_EXPECTED)  # batch 0 was written ...
    versions_before = ctx.store.history("gold", "trigger_offers").count()

    run_stream(ctx, available_now=True, offers_as_of=None)  # ... and is replayed on restart
    # Same rows as the clean run of the test above: nothing lost, nothing twice.
    check(ctx, FIRST_EXPECTED + [("S2", "quota_expiring", ts("2026-07-02 10:00"), "O_SMS2", "sms")])
    # Replayed batch 0 was skipped by Delta (txnAppId/txnVersion): only batch 1 committed.
    assert ctx.store.history("gold", "trigger_offers").count() == versions_before + 1


#: What the two later appends of the restart tests (S2 expiring, S1 low) trigger.
LATER_EXPECTED = [
    ("S2", "quota_expiring", ts("2026-07-02 10:00"), "O_SMS2", "sms"),
    ("S1", "quota_low", ts("2026-07-03 10:00"), "O_APP1", "app"),
]


def test_stop_mid_stream_then_restart_matches_clean_run(spark, tmp_path):
    ctx = make_ctx(spark, tmp_path, max_files_per_trigger=1, trigger_seconds=1)
    seed_lake(ctx)
    append_events(ctx, [("S2", "2026-07-02 10:00", "quota_expiring")])
    append_events(ctx, [("S1", "2026-07-03 10:00", "quota_low")])
    query = start_trigger_stream(ctx, available_now=False)
    deadline = time.monotonic() + 120
    while (query.lastProgress is None or query.lastProgress.batchId < 0) and time.monotonic() < deadline:
        time.sleep(0.2)
    query.stop()  # files of later appends are still pending
    done_before_restart = emitted(ctx).count() if ctx.store.exists("gold", "trigger_offers") else 0
    run_stream(ctx, available_now=True, offers_as_of=None)
    check(ctx, FIRST_EXPECTED + LATER_EXPECTED)
    assert done_before_restart < len(FIRST_EXPECTED) + 2


@pytest.mark.slow
def test_stream_process_killed_mid_run_then_restarted_loses_and_duplicates_nothing(spark, tmp_path):
    """SIGKILL a real, continuous `cvo stream` (python, spark-submit and the JVM) once its
    first micro-batch is committed, with more files waiting (one file a batch), then
    restart with --available-now: the trigger offers are exactly a clean run's."""
    import os
    import signal
    import subprocess
    import sys

    import yaml

    stream = {
        "watermark_minutes": 60,
        "suppress_minutes": 720,
        "max_files_per_trigger": 1,
        "trigger_seconds": 1,
    }
    offers = {
        "contact_window_days": 7,
        "max_contacts_per_channel": 3,
        "allocation": {"quiet_hours_start": 0, "quiet_hours_end": 0},  # as make_ctx: quiet hours off
        # The stream reads the catalog's channel kinds (push channels keep quiet hours).
        "catalog_file": str(Path(__file__).resolve().parents[1] / "conf" / "offers.yaml"),
    }
    ctx = make_ctx(spark, tmp_path, max_files_per_trigger=1, trigger_seconds=1)
    seed_lake(ctx)
    later = [  # one file each, in time order (none is late); S3 (control) and S6 (no offers) get nothing
        ("S2", "2026-07-02 10:00", "quota_expiring"),
        ("S6", "2026-07-02 11:00", "quota_low"),
        ("S3", "2026-07-02 12:00", "quota_low"),
        ("S1", "2026-07-03 10:00", "quota_low"),
        ("S6", "2026-07-03 11:00", "quota_low"),
        ("S3", "2026-07-03 12:00", "quota_low"),
    ]
    for event in later:
        append_events(ctx, [event])
    conf = tmp_path / "conf.yaml"
    conf.write_text(yaml.safe_dump({"stream": stream, "offers": offers}))
    log = (tmp_path / "stream.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cvo_spark.cli", "stream", "--conf", str(conf), "--lake", ctx.config.lake],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not ctx.store.exists("gold", "trigger_offers") and time.monotonic() < deadline:
            assert proc.poll() is None, f"cvo stream exited early; see {log.name}"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        log.close()
    done_when_killed = emitted(ctx).count()
    run_stream(ctx, available_now=True, offers_as_of=None)
    check(ctx, FIRST_EXPECTED + LATER_EXPECTED)
    assert done_when_killed < len(FIRST_EXPECTED) + 2  # it really was cut short


def test_out_of_order_events_within_watermark_processed_older_dropped(spark, tmp_path):
    # One append per micro-batch. Spark drops late rows against the watermark in force for
    # the previous batch: here max event 12:00 (batch 0) - 60 min = 11:00, applied from batch 2.
    ctx = make_ctx(spark, tmp_path, max_files_per_trigger=1)
    seed_lake(ctx, events=[("S2", "2026-07-01 12:00", "recharge")])
    append_events(ctx, [("S1", "2026-07-01 11:30", "quota_low")])  # 30 min out of order
    append_events(
        ctx,
        [
            ("S8", "2026-07-01 11:20", "quota_low"),  # 40 min late: within the watermark
            ("S5", "2026-07-01 10:00", "quota_expiring"),  # 2 h late: beyond it, dropped
        ],
    )
    run_stream(ctx, available_now=True, offers_as_of=None)
    check(
        ctx,
        [
            ("S2", "recharge", ts("2026-07-01 12:00"), "O_APP2B", "app"),
            ("S1", "quota_low", ts("2026-07-01 11:30"), "O_APP1", "app"),
            ("S8", "quota_low", ts("2026-07-01 11:20"), "O_APP8", "app"),
        ],
    )


def test_missing_offers_is_one_clear_error(spark, tmp_path):
    ctx = make_ctx(spark, tmp_path)
    append_events(ctx, [("S1", "2026-07-01 10:00", "quota_low")])
    with pytest.raises(MissingTableError, match="gold.offers"):
        run_stream(ctx, available_now=True, offers_as_of=None)


# ----------------------------------------------------------------------------- the batch transform
def batch_inputs(spark, events):
    ev = spark.createDataFrame(
        [(s, kind, ts(t)) for s, t, kind in events],
        "subscriber_id string, event_type string, event_ts timestamp",
    )
    offers = spark.createDataFrame(OFFER_ROWS, OFFERS)
    contacts = spark.createDataFrame(
        [(s, ch, ts(t)) for s, ch, t, g in HISTORY_ROWS if g == "treatment"],
        "subscriber_id string, channel string, contact_ts timestamp",
    )
    emitted = spark.createDataFrame([], TRIGGER_OFFERS_SCHEMA)
    return ev, offers, contacts, emitted


def rules(suppress_minutes=720):
    return TriggerRules(
        channel_by_event={
            "recharge": "ussd",
            "quota_low": "app",
            "quota_expiring": "sms",
            "package_expired": "sms",
        },
        suppress_minutes=suppress_minutes,
        contact_window_days=7,
        max_contacts_per_channel=3,
    )


def test_within_batch_suppression_keeps_first_event_per_window(spark):
    ev, offers, contacts, emitted = batch_inputs(
        spark,
        [
            ("S1", "2026-07-01 00:00", "quota_low"),  # kept
            ("S1", "2026-07-01 06:00", "quota_low"),  # 6 h after: suppressed
            ("S1", "2026-07-01 12:30", "quota_low"),  # next window, 12.5 h after: kept
            ("S1", "2026-07-02 00:10", "quota_low"),  # third window but 11 h 40 after 12:30: suppressed
            ("S1", "2026-07-02 13:00", "quota_low"),  # 24.5 h after the last kept one: kept
        ],
    )
    out = select_trigger_offers(ev, offers, contacts, emitted, rules())
    got = sorted(r["event_ts"] for r in out.collect())
    assert got == [ts("2026-07-01 00:00"), ts("2026-07-01 12:30"), ts("2026-07-02 13:00")]


def test_cap_counts_emissions_of_the_same_batch(spark):
    # S5: 2 treatment sms contacts in the week before; with no suppression only one more fits.
    ev, offers, contacts, emitted = batch_inputs(
        spark,
        [
            ("S5", "2026-07-01 10:00", "quota_expiring"),
            ("S5", "2026-07-01 11:00", "package_expired"),
            ("S5", "2026-07-01 12:00", "quota_expiring"),
        ],
    )
    out = select_trigger_offers(ev, offers, contacts, emitted, rules(suppress_minutes=0))
    expected = as_expected(spark, [("S5", "quota_expiring", ts("2026-07-01 10:00"), "O_SMS5", "sms")])
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


def test_history_is_cut_to_what_the_batch_can_use_and_the_result_is_unchanged(spark):
    from cvo_spark.stream.triggers import relevant_history

    ev, offers, contacts, _ = batch_inputs(
        spark, [("S5", "2026-07-01 10:00", "quota_expiring"), ("S5", "2026-07-01 12:00", "quota_expiring")]
    )
    far = spark.createDataFrame(
        [("S5", "sms", ts("2026-05-01 10:00")), ("S5", "sms", ts("2026-07-03 10:00"))], contacts.schema
    )
    contacts = contacts.unionByName(far)
    emitted = spark.createDataFrame(
        [
            ("S5", "quota_low", ts("2026-06-30 22:00"), "O_SMS5", "sms", ts("2026-06-30 22:00")),  # 12 h back
            (
                "S5",
                "quota_low",
                ts("2026-04-01 10:00"),
                "O_SMS5",
                "sms",
                ts("2026-04-01 10:00"),
            ),  # months back
        ],
        TRIGGER_OFFERS_SCHEMA,
    )
    # A naive datetime is local time to both Python and PySpark: the same instant.
    first, last = (int(ts(t).timestamp()) for t in ("2026-07-01 10:00", "2026-07-01 12:00"))
    kept_emitted, kept_contacts = relevant_history(emitted, contacts, first, last, rules())
    assert [r["event_ts"] for r in kept_emitted.collect()] == [ts("2026-06-30 22:00")]
    kept = sorted(r["contact_ts"] for r in kept_contacts.collect())
    assert ts("2026-05-01 10:00") not in kept and ts("2026-07-03 10:00") not in kept and kept
    for r in (rules(), rules(suppress_minutes=0)):
        assert_df_equality(
            select_trigger_offers(ev, offers, kept_contacts, kept_emitted, r),
            select_trigger_offers(ev, offers, contacts, emitted, r),
            ignore_row_order=True,
        )


def test_batch_transform_names_missing_columns(spark):
    ev, offers, contacts, emitted = batch_inputs(spark, [("S1", "2026-07-01 00:00", "quota_low")])
    with pytest.raises(MissingColumnsError, match="valid_to"):
        select_trigger_offers(ev, offers.drop("valid_to"), contacts, emitted, rules())


def test_quiet_hours_keep_push_channels_silent_and_fall_back_to_pull(spark):
    from dataclasses import replace

    from cvo_spark.stream.triggers import in_quiet_hours

    hours = spark.createDataFrame(
        [(ts(f"2026-07-01 {h:02d}:30"),) for h in (7, 8, 20, 21, 23)], "t timestamp"
    )
    quiet = [r["q"] for r in hours.select(in_quiet_hours(F.col("t"), 21, 8).alias("q")).collect()]
    assert quiet == [True, False, False, True, True]  # 21:00-07:59, wrapping midnight
    assert hours.where(in_quiet_hours(F.col("t"), 9, 9)).count() == 0  # start == end: never
    ev, offers, contacts, emitted = batch_inputs(
        spark,
        [
            ("S2", "2026-07-01 22:00", "quota_expiring"),  # sms preferred, quiet: app instead
            ("S5", "2026-07-01 22:00", "quota_expiring"),  # only an sms offer: nothing
            ("S1", "2026-07-01 12:00", "quota_expiring"),  # daytime: sms as configured
        ],
    )
    quiet_rules = replace(
        rules(suppress_minutes=0), push_channels=("sms", "ussd"), quiet_start=21, quiet_end=8
    )
    out = select_trigger_offers(ev, offers, contacts, emitted, quiet_rules)
    expected = as_expected(
        spark,
        [
            ("S2", "quota_expiring", ts("2026-07-01 22:00"), "O_APP2B", "app"),
            ("S1", "quota_expiring", ts("2026-07-01 12:00"), "O_SMS1", "sms"),
        ],
    )
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)
