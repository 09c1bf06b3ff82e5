"""Faults and bad input: what a crash, a bad file or a bad value does to a run.

The whole fault list in one place; the tests named in another module already cover
their item, the ones without a module are here.

Crashes and restarts (DESIGN invariants 2 and 3)

- driver SIGKILLed during ingest, features or the offers publish, then re-run:
  `test_killed_driver_then_rerun_leaves_one_complete_snapshot` (real `cvo run`
  subprocesses; slow).
- run dying between staging and publish (simulated in-process):
  test_publish.py::test_run_killed_between_staging_and_publish_leaves_the_snapshot.
- streaming job crashing between its write and its checkpoint commit, stopped and
  restarted: test_stream.py::test_crash_between_write_and_commit_loses_and_duplicates_nothing,
  test_stream.py::test_stop_mid_stream_then_restart_matches_clean_run.
- re-running a stage for the same as_of: test_ingest.py::test_stage_rerun_is_idempotent,
  test_io.py::test_partition_overwrite_is_idempotent_and_touches_one_partition.

Fail closed at publish (invariant 4)

- stuck feed: test_publish.py::test_stuck_feed_refuses_and_keeps_the_published_snapshot.
- collapsed model: test_publish.py::test_collapsed_model_refuses_and_keeps_the_published_snapshot.
- misspelt --override: test_publish.py::test_unknown_override_name_is_refused_not_ignored.

Bad input (invariant 6: never a crash, never silently dropped)

- a rule per column (null/blank key, missing value, negative or non-finite amount, unknown
  enum, event in the future or before activation, unknown owner, key conflict):
  test_ingest.py::test_subscriber_rules, test_usage_rules_and_string_parsing,
  test_event_table_rules, test_b2b_rules.
- missing column or incompatible type: test_ingest.py::test_schema_mismatches_name_table_and_column,
  test_stage_schema_error_stops_before_writing.
- extra column: test_ingest.py::test_extra_columns_ignored_with_warning.
- missing table: test_ingest.py::test_stage_missing_table_is_named,
  test_cli.py::test_missing_input_table_stops_with_its_name.
- exact duplicates and ``rows in = silver + quarantined + removed duplicates``:
  test_ingest.py::test_stage_counts_and_accounting_identity,
  test_generated_bronze_is_clean_except_injected_rows.
- corrupt Parquet file in a bronze table: `test_corrupt_bronze_file_is_one_line_naming_the_table`
  (its message: `test_unreadable_file_message_keeps_the_file_and_the_innermost_cause`).
- empty table: `test_empty_bronze_table_is_ingested_and_accounted`.
- a storm of nulls, dates in year 9999 and 1900, non-numeric money strings ("12,5abc"):
  `test_dirty_lake_quarantines_every_bad_row_with_its_reason`.
- one subscriber with a million events (skew): `test_one_subscriber_with_a_million_recharges`
  (slow).

Bad config (one clear line naming the key)

- unknown or mistyped key, negative window, empty k range, share out of range:
  test_config.py::test_bad_key_or_value_names_it; through the command line:
  `test_bad_config_value_is_one_cli_line_naming_the_key`, test_cli.py::test_bad_config_key_is_one_line.
- unknown channel in the offer catalog: test_catalog.py::test_unknown_channel_is_named_with_its_offer,
  test_unknown_channel_in_the_channels_section_is_named; through `cvo run`:
  `test_unknown_catalog_channel_is_one_cli_line`.
- pseudonymisation on but its key missing: test_ingest.py::test_pseudonym_key_refused_when_unset_or_empty,
  test_stage_refuses_pseudonymisation_without_key; through `cvo run`:
  `test_missing_privacy_key_is_one_cli_line`.
- missing or unparsable YAML: test_config.py::test_missing_and_invalid_yaml_files;
  bad date argument: test_cli.py::test_bad_date_is_rejected_by_argparse.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from cvo_spark.cli import main
from cvo_spark.core.config import load_config, parse_config
from cvo_spark.core.io import TableStore, unreadable_file_message, unreadable_table_error
from cvo_spark.core.schemas import INPUT_SCHEMAS, OPTIONAL_INPUT_TABLES, REQUIRED_INPUT_SCHEMAS
from cvo_spark.core.stage import StageContext
from cvo_spark.features import stage as features_stage
from cvo_spark.ingest import stage as ingest_stage
from cvo_spark.synth.generate import GENERATED_TABLES

REPO = Path(__file__).resolve().parents[1]
AS_OF = date(2026, 6, 30)
NOW = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)  # the ingest clock of the in-process runs
TOL = 24.0


def ts(text: str) -> datetime:
    """A UTC instant (aware, so Spark does not read it in the driver's zone)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# =========================================================================== bad input
#: A tiny clean bronze lake; each bad-input test swaps one or more tables for a faulty one.
BASE_ROWS = {
    "subscribers": [
        ("s1", date(2024, 1, 1), "prepaid", "Jakarta", "mid", "active", None),
        ("s2", date(2024, 1, 1), "postpaid", "Bandung", "high", "active", None),
        ("whale", date(2024, 1, 1), "prepaid", "Jakarta", "high", "active", None),
    ],
    "usage_daily": [
        ("s1", date(2026, 6, 1), 10.0, 1500.0, 3, 300.0, 200.0, 2500.0, 0.0),
        ("s2", date(2026, 6, 1), 0.0, 0.0, 0, 0.0, 900.0, 9000.0, 1000.0),
    ],
    "recharges": [("s1", ts("2026-06-10T10:00:00"), 5000.0, "ussd")],
    "purchases": [("s2", ts("2026-06-11T09:00:00"), "data_10gb", 25000.0, "app")],
    "quota_events": [("s1", ts("2026-06-12T08:00:00"), "quota_low", 10.0, None)],
    "offer_history": [
        (
            "s1",
            "DATA_BOOST_5GB",
            "sms",
            ts("2026-06-01T10:00:00"),
            "treatment",
            True,
            ts("2026-06-02T10:00:00"),
            10000.0,
        ),
    ],
    "b2b_accounts": [("a1", "Acme", "retail", 5_000_000.0, 100.0, ["sms"], date(2025, 1, 1))],
    "b2b_messages": [("a1", ts("2026-06-01T10:00:00"), "whatsapp", "delivered", True, 350.0)],
}


@pytest.fixture(scope="module")
def base_lake(spark, tmp_path_factory) -> Path:
    """Lake root whose bronze holds `BASE_ROWS` (read-only for the tests)."""
    root = tmp_path_factory.mktemp("faults_lake")
    store = TableStore(spark, parse_config({"lake": str(root)}))
    for table, rows in BASE_ROWS.items():
        store.overwrite(spark.createDataFrame(rows, REQUIRED_INPUT_SCHEMAS[table]), "bronze", table)
    return root


def lake_config(base_lake: Path, tmp_path: Path, **bronze_paths: Path) -> dict:
    """Config over the base bronze with some tables swapped; silver and gold of this test only."""
    return {
        "lake": str(base_lake),
        "tables": {
            "silver": str(tmp_path / "silver"),
            "gold": str(tmp_path / "gold"),
            "overrides": {f"bronze.{t}": str(p) for t, p in bronze_paths.items()},
        },
    }


def write_faulty(spark, tmp_path: Path, **frames) -> dict[str, Path]:
    """Write each faulty bronze table as Delta under tmp_path; return table -> path."""
    paths = {}
    for table, df in frames.items():
        paths[table] = tmp_path / "faulty" / table
        df.write.format("delta").save(str(paths[table]))
    return paths


def ingest_with(spark, config: dict):
    """Run the ingest stage in-process with the fixed clock; (result, store)."""
    store = TableStore(spark, parse_config(config))
    return ingest_stage.ingest(store, NOW, TOL, run_id="faults", as_of=AS_OF), store


def assert_identity_on_tables(store: TableStore, result) -> None:
    """rows in = silver + quarantined + duplicates, counted on the written tables themselves."""
    quarantine = Counter(r["source_table"] for r in store.read("gold", "quarantine").collect())
    for table in INPUT_SCHEMAS:
        if table in OPTIONAL_INPUT_TABLES and not store.exists("bronze", table):
            continue  # an optional input this lake does not send: skipped by ingest
        rows_in = store.read("bronze", table).count()
        silver = store.read("silver", table).count()
        duplicates = result.row_counts[f"{table}.duplicates"]
        assert rows_in == silver + quarantine[table] + duplicates, table
        assert (
            result.row_counts[f"{table}.in"],
            result.row_counts[f"{table}.silver"],
            result.row_counts[f"{table}.quarantined"],
        ) == (rows_in, silver, quarantine[table]), table


@pytest.mark.parametrize("checksum", ["crc kept", "crc removed"])
def test_corrupt_bronze_file_is_one_line_naming_the_table(spark, base_lake, tmp_path, capsys, checksum):
    """Garbage bytes in one Parquet file of bronze usage_daily: one line naming table and
    file, exit code 2, and nothing written to silver or quarantine. With the Hadoop
    checksum file kept the read fails on the checksum; without it (as on an object store)
    Parquet itself finds no footer."""
    bad = tmp_path / "usage_daily"
    shutil.copytree(base_lake / "bronze" / "usage_daily", bad)
    part = min(bad.glob("part-*.parquet"))
    part.write_bytes(b"\x00garbage, not parquet\xff" * 40)
    if checksum == "crc removed":
        (bad / f".{part.name}.crc").unlink()
    conf = tmp_path / "conf.yaml"
    conf.write_text(yaml.safe_dump(lake_config(base_lake, tmp_path, usage_daily=bad)))

    code = main(["run", "--conf", str(conf), "--as-of", AS_OF.isoformat(), "--stages", "ingest"])

    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert code == 2
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"cvo: error: table bronze.usage_daily: cannot read data file {part.name}"), (
        errors
    )
    assert "Py4J" not in errors[0] and len(errors[0]) < 400
    store = TableStore(spark, load_config(conf))
    assert [t for t in INPUT_SCHEMAS if store.exists("silver", t)] == []  # nothing half-written
    assert not store.exists("gold", "quarantine")
    run = store.read("gold", "runs").collect()
    assert [(r["stage"], r["status"]) for r in run] == [("ingest", "failed")]
    assert run[0]["message"].startswith("table bronze.usage_daily: cannot read data file")


READ_FAILURE = (
    "An error occurred while calling o1612.collectToPython.\n"
    ": org.apache.spark.SparkException: [FAILED_READ_FILE.NO_HINT] Encountered error while reading file "
    "file:/lake/bronze/usage_daily/part-00000-db80-c000.snappy.parquet.  SQLSTATE: KD001\n"
    "\tat org.apache.spark.sql.errors.QueryExecutionErrors$."
    "cannotReadFilesError(QueryExecutionErrors.scala:856)\n"
    "Caused by: java.lang.RuntimeException: "
    "file:/lake/bronze/usage_daily/part-00000-db80-c000.snappy.parquet "
    "is not a Parquet file. Expected magic number at tail, but found [98, 97, 103, 101]\n"
    "\t... 21 more\n"
)


def test_unreadable_file_message_keeps_the_file_and_the_innermost_cause():
    assert unreadable_file_message(RuntimeError(READ_FAILURE)) == (
        "part-00000-db80-c000.snappy.parquet: RuntimeException: is not a Parquet file. "
        "Expected magic number at tail, but found [98, 97, 103, 101]"
    )
    assert unreadable_file_message(RuntimeError("[DIVIDE_BY_ZERO] Division by zero.")) is None


def test_unreadable_file_in_any_stage_names_the_table_from_its_path():
    silver_failure = READ_FAILURE.replace("/lake/bronze/", "/lake/silver/")
    err = unreadable_table_error(RuntimeError(silver_failure), "stage features")
    assert str(err).startswith(
        "stage features: table silver.usage_daily: "
        "cannot read data file part-00000-db80-c000.snappy.parquet: "
    )
    assert unreadable_table_error(RuntimeError("[DIVIDE_BY_ZERO] Division by zero."), "stage x") is None


def test_corrupt_silver_file_stops_the_features_stage_on_one_line(spark, base_lake, tmp_path, capsys):
    """Past ingest no single table is being read; the line still names the table (from the path)."""
    config = lake_config(base_lake, tmp_path)
    ingest_with(spark, config)
    part = min((tmp_path / "silver" / "usage_daily").glob("part-*.parquet"))
    part.write_bytes(b"\x00garbage, not parquet\xff" * 40)
    (part.parent / f".{part.name}.crc").unlink(missing_ok=True)
    conf = tmp_path / "conf.yaml"
    conf.write_text(yaml.safe_dump(config))

    code = main(["run", "--conf", str(conf), "--as-of", AS_OF.isoformat(), "--stages", "features"])

    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cvo: error")]
    assert code == 2 and len(errors) == 1, errors
    assert errors[0].startswith(
        f"cvo: error: stage features: table silver.usage_daily: cannot read data file {part.name}"
    )


@pytest.mark.parametrize("table", ["usage_daily", "subscribers"])
def test_empty_bronze_table_is_ingested_and_accounted(spark, base_lake, tmp_path, caplog, table):
    """What a user expects of an empty input table: not a crash and not an error at ingest
    (a feed may deliver nothing, e.g. a new product with no events yet), but a warning
    naming it, an empty silver table with the contract schema, and the identity
    ``0 = 0 + 0 + 0``. A feed that stopped is refused later, by the publish freshness
    check (test_publish.py). An empty *subscribers* table sends every subscriber row of the
    other tables to quarantine as an unknown subscriber: nothing disappears silently."""
    paths = write_faulty(spark, tmp_path, **{table: spark.createDataFrame([], INPUT_SCHEMAS[table])})
    with caplog.at_level(logging.WARNING, logger="cvo_spark.ingest.validate"):
        result, store = ingest_with(spark, lake_config(base_lake, tmp_path, **paths))

    assert f"table {table}: bronze table is empty" in caplog.text
    counts = result.row_counts
    assert [counts[f"{table}.{n}"] for n in ("in", "silver", "quarantined", "duplicates")] == [0, 0, 0, 0]
    silver = store.read("silver", table)
    assert silver.count() == 0 and silver.schema.fieldNames() == INPUT_SCHEMAS[table].fieldNames()
    assert_identity_on_tables(store, result)
    reasons = Counter((r["source_table"], r["reason"]) for r in store.read("gold", "quarantine").collect())
    if table == "usage_daily":
        assert reasons == Counter()
        assert counts["subscribers.silver"] == 3
    else:
        unknown = "{}.subscriber_id: unknown subscriber (not among valid subscribers)"
        assert reasons == Counter(
            {
                (t, unknown.format(t)): len(BASE_ROWS[t])
                for t in ("usage_daily", "recharges", "purchases", "quota_events", "offer_history")
            }
        )
        assert counts["b2b_accounts.silver"] == 1  # b2b tables are not owned by subscribers


def null_storm(spark, n: int = 1000):
    """n distinct usage rows of s1/s2 over ~n/2 days; 30% with a null subscriber_id,
    usage_date or voice_revenue (10% each); the first 20 null-key rows twice over."""
    i = F.col("id")
    columns = [
        F.when(i % 10 == 3, F.lit(None))
        .when(i % 2 == 0, F.lit("s1"))
        .otherwise(F.lit("s2"))
        .alias("subscriber_id"),
        F.when(i % 10 == 6, F.lit(None))
        .otherwise(F.date_sub(F.lit(AS_OF), (i / 2).cast("int")))
        .cast("date")
        .alias("usage_date"),
        i.cast("double").alias("voice_minutes"),  # makes every row distinct
        F.when(i % 10 == 9, F.lit(None)).otherwise(100.0 + i).cast("double").alias("voice_revenue"),
        F.lit(2).cast("long").alias("sms_count"),
        F.lit(200.0).alias("sms_revenue"),
        F.lit(50.0).alias("data_mb"),
        F.lit(700.0).alias("data_revenue"),
        F.lit(0.0).alias("digital_revenue"),
    ]
    ids = spark.range(n)
    return ids.select(*columns).unionByName(ids.where((i % 10 == 3) & (i < 200)).select(*columns))


def test_dirty_lake_quarantines_every_bad_row_with_its_reason(spark, base_lake, tmp_path):
    """One ingest over a null storm in usage_daily, dates in year 9999 and 1900 in four
    tables, and money as text ("12,5abc", "12,5", "Rp 5.000", "", "NaN") in recharges:
    every bad row is in quarantine with its reason, every good row in silver, and
    ``rows in = silver + quarantined + removed duplicates`` per table."""
    S = INPUT_SCHEMAS
    far = [
        ("s1", date(9999, 12, 31), 1.0, 1.0, 1, 1.0, 1.0, 1.0, 1.0),
        ("s1", date(1900, 1, 1), 1.0, 1.0, 1, 1.0, 1.0, 1.0, 1.0),
    ]
    usage = null_storm(spark).unionByName(spark.createDataFrame(far, S["usage_daily"]))
    subscribers = spark.createDataFrame(
        BASE_ROWS["subscribers"]
        + [
            ("old", date(1900, 1, 1), "prepaid", "Jakarta", "mid", "active", None),
            ("fut", date(9999, 12, 31), "prepaid", "Jakarta", "mid", "active", None),
        ],
        S["subscribers"],
    )
    text_money = StructType(
        [StructField("amount", StringType()) if f.name == "amount" else f for f in S["recharges"].fields]
    )
    recharge_amounts = ["5000", "1e3", "12,5abc", "12,5", "Rp 5.000", "", "NaN"]
    recharges = spark.createDataFrame(
        [
            ("s1", ts(f"2026-06-{10 + k:02d}T10:00:00"), amount, "app")
            for k, amount in enumerate(recharge_amounts)
        ]
        + [
            ("s2", ts("9999-12-31T23:59:59"), "5000", "app"),
            ("s2", ts("1900-01-01T00:00:00"), "5000", "app"),
        ],
        text_money,
    )
    messages = spark.createDataFrame(
        BASE_ROWS["b2b_messages"] + [("a1", ts("1900-01-01T08:00:00"), "sms", "delivered", True, 100.0)],
        S["b2b_messages"],
    )
    paths = write_faulty(
        spark,
        tmp_path,
        usage_daily=usage,
        subscribers=subscribers,
        recharges=recharges,
        b2b_messages=messages,
    )

    result, store = ingest_with(spark, lake_config(base_lake, tmp_path, **paths))

    past = "before the earliest plausible date 1990-01-01"
    expected = Counter(
        {
            ("usage_daily", "usage_daily.subscriber_id: null or empty key"): 100,
            ("usage_daily", "usage_daily.usage_date: missing value"): 100,
            ("usage_daily", "usage_daily.voice_revenue: missing value"): 100,
            ("usage_daily", "usage_daily.usage_date: in the future: 9999-12-31"): 1,
            (
                "usage_daily",
                (
                    f"usage_daily.usage_date: {past}: 1900-01-01; "
                    "usage_daily.usage_date: before activation_date 2024-01-01"
                ),
            ): 1,
            ("subscribers", f"subscribers.activation_date: {past}: 1900-01-01"): 1,
            ("subscribers", "subscribers.activation_date: in the future: 9999-12-31"): 1,
            ("recharges", "recharges.amount: not a number: '12,5abc'"): 1,
            ("recharges", "recharges.amount: not a number: '12,5'"): 1,
            ("recharges", "recharges.amount: not a number: 'Rp 5.000'"): 1,
            ("recharges", "recharges.amount: not a number: ''"): 1,
            ("recharges", "recharges.amount: not a finite number NaN"): 1,
            ("recharges", "recharges.recharge_ts: in the future: 9999-12-31 23:59:59"): 1,
            (
                "recharges",
                (
                    f"recharges.recharge_ts: {past}: 1900-01-01 00:00:00; "
                    "recharges.recharge_ts: before activation_date 2024-01-01"
                ),
            ): 1,
            ("b2b_messages", f"b2b_messages.message_ts: {past}: 1900-01-01 08:00:00"): 1,
        }
    )
    quarantine = store.read("gold", "quarantine")
    assert Counter((r["source_table"], r["reason"]) for r in quarantine.collect()) == expected

    counts = result.row_counts
    assert [counts[f"usage_daily.{n}"] for n in ("in", "silver", "quarantined", "duplicates")] == [
        1022,
        700,
        302,
        20,
    ]
    assert [counts[f"recharges.{n}"] for n in ("in", "silver", "quarantined", "duplicates")] == [9, 2, 7, 0]
    assert_identity_on_tables(store, result)
    # Money text that is a number is parsed; the raw JSON keeps the text that is not.
    assert sorted(r["amount"] for r in store.read("silver", "recharges").collect()) == [1000.0, 5000.0]
    raw = quarantine.where(F.col("reason").contains("12,5abc")).first()["raw"]
    assert json.loads(raw)["amount"] == "12,5abc"
    assert {r["subscriber_id"] for r in store.read("silver", "subscribers").collect()} == {
        "s1",
        "s2",
        "whale",
    }


@pytest.mark.slow
def test_one_subscriber_with_a_million_recharges(spark, base_lake, tmp_path):
    """Skew: one subscriber with 1,000,000 recharges in the 90-day window (one every 5 s,
    amounts 1,000..5,000, 70% app) next to ordinary ones. Ingest and features complete
    and the subscriber's recharge features are exactly what the events say."""
    n = 1_000_000
    i = F.col("id")
    last = datetime.combine(AS_OF, datetime.min.time(), UTC) + timedelta(hours=23)
    whale = spark.range(n).select(
        F.lit("whale").alias("subscriber_id"),
        F.timestamp_seconds(F.lit(int(last.timestamp())) - i * 5).alias("recharge_ts"),
        (F.lit(1000.0) * (i % 5 + 1)).alias("amount"),
        F.when(i % 10 < 7, F.lit("app")).otherwise(F.lit("ussd")).alias("channel"),
    )
    recharges = spark.createDataFrame(BASE_ROWS["recharges"], INPUT_SCHEMAS["recharges"]).unionByName(whale)
    paths = write_faulty(spark, tmp_path, recharges=recharges)
    config = lake_config(base_lake, tmp_path, **paths)

    result, store = ingest_with(spark, config)
    assert (result.row_counts["recharges.in"], result.row_counts["recharges.silver"]) == (n + 1, n + 1)
    cfg = parse_config(config)
    features_stage.run(StageContext(spark, cfg, store, AS_OF, "faults-features"))

    rows = {
        r["subscriber_id"]: r for r in store.read("gold", "features").where(F.col("as_of") == AS_OF).collect()
    }
    assert set(rows) == {"s1", "s2", "whale"}
    w = rows["whale"]
    assert (w["recharge_count_3m"], w["frequency_3m"], w["purchase_count_3m"]) == (n, n, 0)
    assert w["recharge_amount_3m"] == 3_000.0 * n
    assert w["recharge_mean_amount"] == pytest.approx(3_000.0, rel=1e-12)
    population_std = 1000.0 * 2**0.5  # of 1, 2, 3, 4, 5 thousand, equally often
    assert w["recharge_std_amount"] == pytest.approx(population_std, rel=1e-9)
    assert (w["days_since_last_recharge"], w["recency_days"], w["preferred_channel"]) == (0, 0, "app")
    # The others are not disturbed by their neighbour.
    assert (rows["s1"]["recharge_count_3m"], rows["s1"]["recharge_amount_3m"]) == (1, 5000.0)
    assert rows["s1"]["preferred_channel"] == "ussd" and rows["s2"]["recharge_count_3m"] == 0


# =========================================================================== bad config
@pytest.mark.parametrize(
    ("conf", "named"),
    [
        (
            {"features": {"windows": {"quota_days": -7}}},
            "features.windows.quota_days: Input should be greater than 0",
        ),
        (
            {"segments": {"personas": {"k_min": 6, "k_max": 3}}},
            "segments.personas: k range is empty",
        ),
        (
            {"ingest": {"earliest_event_date": "long ago"}},
            "ingest.earliest_event_date: Input should be a valid date",
        ),
        ({"offers": {"catalog_fil": "x.yaml"}}, "offers.catalog_fil: unknown key"),
    ],
)
def test_bad_config_value_is_one_cli_line_naming_the_key(tmp_path, capsys, conf, named):
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(conf))
    code = main(["run", "--conf", str(path), "--as-of", AS_OF.isoformat()])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith(f"cvo: error: {path}: {named}") and "\n" not in err


def test_unknown_catalog_channel_is_one_cli_line(spark, tmp_path, capsys):
    catalog = yaml.safe_load((REPO / "conf" / "offers.yaml").read_text())
    catalog["offers"][0]["channels"] = ["sms", "fax"]
    (tmp_path / "offers.yaml").write_text(yaml.safe_dump(catalog))
    conf = tmp_path / "conf.yaml"
    conf.write_text(
        yaml.safe_dump({"lake": str(tmp_path / "lake"), "offers": {"catalog_file": "offers.yaml"}})
    )
    code = main(["run", "--conf", str(conf), "--as-of", AS_OF.isoformat(), "--stages", "offers"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cvo: error")]
    assert code == 2
    offer_id = catalog["offers"][0]["offer_id"]
    assert len(errors) == 1
    assert errors[0].startswith(
        f"cvo: error: {tmp_path / 'offers.yaml'}: offers[0] ({offer_id}).channels: "
        "unknown channel 'fax'; known: sms, "
    ), errors


def test_missing_privacy_key_is_one_cli_line(spark, base_lake, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CVO_TEST_ABSENT_KEY", raising=False)
    config = lake_config(base_lake, tmp_path)
    config["ingest"] = {"privacy": {"pseudonymize": True, "key_env": "CVO_TEST_ABSENT_KEY"}}
    conf = tmp_path / "conf.yaml"
    conf.write_text(yaml.safe_dump(config))
    code = main(["run", "--conf", str(conf), "--as-of", AS_OF.isoformat(), "--stages", "ingest"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cvo: error")]
    assert code == 2
    assert errors == [
        (
            "cvo: error: ingest.privacy.pseudonymize is on but environment variable "
            "CVO_TEST_ABSENT_KEY is unset or empty"
        )
    ]
    store = TableStore(spark, load_config(conf))
    assert [t for t in INPUT_SCHEMAS if store.exists("silver", t)] == []  # refused before any data


# =========================================================================== crash and restart
KILL_STAGES = ("ingest", "features", "offers")
KILLS_PER_STAGE = 2
KILL_SEED = 9
#: Gold tables the killed stages write, with their key (besides as_of).
GOLD_KEYS = {
    "quarantine": ("source_table", "raw"),
    "features": ("subscriber_id",),
    "b2b_features": ("account_id",),
    "offers_staging": ("subscriber_id", "channel", "rank"),
    "offers": ("subscriber_id", "channel", "rank"),
}
WRITES = {
    "ingest": [("silver", t) for t in GENERATED_TABLES] + [("gold", "quarantine")],
    "features": [("gold", "features"), ("gold", "b2b_features")],
    "offers": [("gold", "offers_staging"), ("gold", "offers")],
}


def kill_conf(tmp_path: Path) -> Path:
    """A config for a small, quick lake: 2 cores, 2 shuffle partitions, small driver."""
    conf = {
        "lake": str(tmp_path / "lake"),
        "spark": {
            "master": "local[2]",
            "shuffle_partitions": 2,
            "log_level": "ERROR",
            "conf": {
                "spark.driver.memory": "1g",
                "spark.ui.enabled": "false",
                "spark.ui.showConsoleProgress": "false",
            },
        },
        "offers": {"catalog_file": str(REPO / "conf" / "offers.yaml")},
    }
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


def synthetic_gold(subscribers, as_of: date) -> dict:
    """Deterministic, varied `segments` and `scores` rows per subscriber: stand-ins for the
    segments, train and score stages (minutes of MLlib that add nothing to a crash test).
    Offers only use the rows of subscribers that also have features."""
    from cvo_spark.models.score_stage import SCORES_SCHEMA
    from cvo_spark.segments.stage import SEGMENTS_SCHEMA

    def u(k: int):
        return F.pmod(F.xxhash64("subscriber_id", F.lit(k)), F.lit(1000)) / 1000.0

    def pick(values: tuple, k: int):
        return F.element_at(
            F.array(*[F.lit(v) for v in values]), (F.floor(u(k) * len(values)) + 1).cast("int")
        )

    tier = pick(("Priority", "Gold", "Mass", "Mass"), 5)
    segments = subscribers.select(
        "subscriber_id",
        F.lit(as_of).alias("as_of"),
        tier.alias("value_tier"),
        (tier == "Priority").alias("is_high_value"),
        F.when(F.datediff(F.lit(as_of), "activation_date") < 90, "new").otherwise("base").alias("lifecycle"),
        F.floor(u(6) * 4).alias("persona_id"),
        pick(("Legacy Active", "Digital Active", "Socially Active", "Traditional Active"), 6).alias(
            "persona_name"
        ),
        pick(("Star", "Risk Area", "Sniper Zone", "Incubator"), 7).alias("matrix_quadrant"),
        *[(F.floor(u(k) * 5) + 1).alias(c) for k, c in ((8, "r_score"), (9, "f_score"), (10, "m_score"))],
        F.lit("333").alias("rfm_score"),
    )
    scores = subscribers.select(
        "subscriber_id",
        F.lit(as_of).alias("as_of"),
        (0.05 + 0.9 * u(1)).alias("p_upsell"),
        (0.05 + 0.9 * u(2)).alias("p_cross_sell"),
        (0.02 + 0.5 * u(3)).alias("p_churn"),
        (100_000.0 + 900_000.0 * u(4)).alias("clv_12m"),
        F.array(F.lit("arpu_3m"), F.lit("data_trend_pct")).alias("reasons_upsell"),
        F.array(F.lit("digital_share"), F.lit("voice_share")).alias("reasons_cross_sell"),
        F.array(F.lit("recency_days"), F.lit("revenue_trend_pct")).alias("reasons_churn"),
        F.create_map(F.lit("upsell"), F.lit("synthetic")).alias("model_versions"),
    )
    return {
        name: df.select(*[F.col(f.name).cast(f.dataType) for f in schema.fields])
        for name, df, schema in (("segments", segments, SEGMENTS_SCHEMA), ("scores", scores, SCORES_SCHEMA))
    }


def table_states(store: TableStore, tables) -> dict[tuple[str, str], tuple[int, int]]:
    """(rows, distinct keys) per table, in one Spark job: a gold table's AS_OF partition
    keyed by `GOLD_KEYS`, a silver table keyed by the whole row."""
    parts = []
    for layer, name in tables:
        df = store.read(layer, name)
        if layer == "gold":
            df, key = df.where(F.col("as_of") == F.lit(AS_OF)), F.struct(*GOLD_KEYS[name])
        else:
            key = F.struct(*df.columns)
        counts = df.agg(F.count(F.lit(1)).alias("n"), F.count_distinct(key).alias("keys"))
        parts.append(counts.select(F.lit(layer).alias("layer"), F.lit(name).alias("name"), "n", "keys"))
    union = functools.reduce(DataFrame.unionByName, parts)
    return {(r["layer"], r["name"]): (r["n"], r["keys"]) for r in union.collect()}


def offers_snapshot(store: TableStore) -> tuple[frozenset, frozenset]:
    """Published offers of AS_OF: (rows without run_id, run_ids)."""
    rows = store.read("gold", "offers").where(F.col("as_of") == F.lit(AS_OF)).collect()
    body = frozenset(
        tuple(tuple(v) if isinstance(v, list) else v for k, v in r.asDict().items() if k != "run_id")
        for r in rows
    )
    return body, frozenset(r["run_id"] for r in rows)


class CvoProcess:
    """`cvo run` in its own process group; stderr lines timestamped as they arrive."""

    def __init__(self, conf: Path, stages: str, log: Path):
        self.lines: list[tuple[float, str]] = []
        self.log = log.open("a")
        self.log.write(f"### {time.strftime('%H:%M:%S')} cvo run --stages {stages}\n")
        self.log.flush()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cvo_spark.cli",
                "run",
                "--conf",
                str(conf),
                "--as-of",
                AS_OF.isoformat(),
                "--stages",
                stages,
            ],
            cwd=REPO,
            stdout=self.log,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={k: v for k, v in os.environ.items() if k != "CVO_DEBUG"},
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))
            self.log.write(line)

    def seen(self, text: str) -> float | None:
        return next((t for t, line in list(self.lines) if text in line), None)

    def wait_for(self, text: str, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (at := self.seen(text)) is not None:
                return at
            if self.proc.poll() is not None:
                self.reader.join(5)
                return self.seen(text)
            time.sleep(0.05)
        return None

    def kill(self) -> None:
        """SIGKILL the whole group (python, spark-submit, the JVM) and wait until it is gone."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the JVM is a grandchild: make sure it died too
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        self.reader.join(5)
        self.log.close()


@pytest.mark.slow
def test_killed_driver_then_rerun_leaves_one_complete_snapshot(spark, tmp_path):
    """SIGKILL a real `cvo run` during ingest, features and the offers publish, at points
    spread over each stage's duration (measured once, on the clean run; delays from a
    seeded generator), then re-run to completion. After every kill and after the re-run,
    each table the stage writes is readable and holds exactly the clean run's rows for the
    as_of with no duplicate key (no second snapshot, no partial one), and the published
    offers are the clean snapshot whole: one run_id, the old one or the new one, never a
    mix, also when read while a publish is running."""
    from cvo_spark.synth.generate import write_bronze

    conf = kill_conf(tmp_path)
    config = load_config(conf)
    store = TableStore(spark, config)
    lake = Path(config.lake)
    log = tmp_path / "cvo_runs.log"
    write_bronze(spark, str(lake / "bronze"), 300, 60, 5, AS_OF)
    # A few bad rows so quarantine has an as_of partition to keep whole.
    usage = store.read("bronze", "usage_daily").orderBy("subscriber_id", "usage_date").limit(2)
    store.append(
        usage.withColumn("data_revenue", F.lit(-1.0)).unionByName(
            usage.withColumn("subscriber_id", F.lit("nobody"))
        ),
        "bronze",
        "usage_daily",
    )
    for name, df in synthetic_gold(store.read("bronze", "subscribers"), AS_OF).items():
        store.overwrite_partition(df, "gold", name, AS_OF)

    # The clean run: reference rows, and each stage's duration in a process of its own.
    clean = CvoProcess(conf, ",".join(KILL_STAGES), log)
    try:
        assert clean.proc.wait(900) == 0, f"clean run failed; see {log}"
    finally:
        clean.kill()
    took = {}
    for _, line in clean.lines:
        if match := re.match(r"cvo: \[(\w+)\] done in ([\d.]+)s", line):
            took[match[1]] = float(match[2])
    reference = table_states(store, [t for tables in WRITES.values() for t in tables])
    assert all(n == keys and n > 0 for n, keys in reference.values()), reference
    clean_offers, clean_ids = offers_snapshot(store)
    assert len(clean_ids) == 1

    def assert_whole(tables, when: str) -> None:
        states = table_states(store, tables)
        assert states == {t: reference[t] for t in tables}, when
        body, ids = offers_snapshot(store)
        assert body == clean_offers and len(ids) == 1, f"offers not one whole snapshot {when}: {ids}"

    rng = random.Random(KILL_SEED)
    mid_stage_kills = Counter()
    for stage in KILL_STAGES:
        for k in range(KILLS_PER_STAGE):
            share = 0.05 + 0.8 * (k + rng.random()) / KILLS_PER_STAGE  # one point per slice of the stage
            run = CvoProcess(conf, stage, log)
            try:
                started = run.wait_for(f"cvo: [{stage}] as of", timeout=300)
                assert started is not None, f"{stage} never started; see {log}"
                if stage == "offers":  # the published snapshot is readable while a publish runs
                    assert offers_snapshot(store) == (clean_offers, clean_ids)
                while time.monotonic() < started + share * took[stage] and run.proc.poll() is None:
                    time.sleep(0.02)
                if run.proc.poll() is None and run.seen(f"cvo: [{stage}] done") is None:
                    mid_stage_kills[stage] += 1
            finally:
                run.kill()
            assert_whole(WRITES[stage], f"after a kill at {share:.0%} of {stage}")
    # Timing is the OS's: require that each stage was really cut short at least once.
    assert set(mid_stage_kills) == set(KILL_STAGES), (mid_stage_kills, took)

    rerun = CvoProcess(conf, ",".join(KILL_STAGES), log)
    try:
        assert rerun.proc.wait(900) == 0, f"re-run failed; see {log}"
    finally:
        rerun.kill()
    assert_whole([t for tables in WRITES.values() for t in tables], "after the re-run")
    final_ids = offers_snapshot(store)[1]
    assert final_ids != clean_ids  # the re-run published a snapshot of its own, whole
    exports = lake / "exports" / AS_OF.isoformat()
    assert not (exports / "_spark_out").exists()
    files = sorted(exports.glob("*.jsonl"))
    assert files and all(
        {json.loads(line)["run_id"] for line in path.read_text().splitlines()} <= final_ids for path in files
    )
