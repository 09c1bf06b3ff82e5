"""TableStore: real Delta tables, idempotent partition overwrite, MERGE, contract checks."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F
from pyspark.sql.types import DateType, DoubleType, IntegerType, LongType, StringType, StructField, StructType

from cvo_spark.core.config import parse_config
from cvo_spark.core.errors import MissingTableError, SchemaMismatchError
from cvo_spark.core.io import TableStore, conform_to_contract, contract_problems
from cvo_spark.core.schemas import INPUT_SCHEMAS

D1, D2 = dt.date(2026, 6, 1), dt.date(2026, 6, 2)
SCHEMA = StructType(
    [
        StructField("subscriber_id", StringType()),
        StructField("as_of", DateType()),
        StructField("score", DoubleType()),
    ]
)


@pytest.fixture()
def store(spark, tmp_path):
    return TableStore(spark, parse_config({"lake": str(tmp_path / "lake")}))


def test_paths_and_catalog_names(spark, tmp_path):
    store = TableStore(spark, parse_config({"lake": str(tmp_path), "tables": {"gold": "main.cvo_gold"}}))
    assert store.ref("silver", "usage_daily").path == str(tmp_path / "silver" / "usage_daily")
    assert store.ref("gold", "offers").catalog_name == "main.cvo_gold.offers"
    override = TableStore(
        spark, parse_config({"lake": str(tmp_path), "tables": {"overrides": {"offers": "a.b.c"}}})
    )
    assert override.ref("gold", "offers").catalog_name == "a.b.c"


def test_partition_overwrite_is_idempotent_and_touches_one_partition(spark, store):
    day1 = spark.createDataFrame([("a", D1, 1.0), ("b", D1, 2.0)], SCHEMA)
    day2 = spark.createDataFrame([("a", D2, 3.0)], SCHEMA)
    store.overwrite_partition(day1, "gold", "scores", D1)
    store.overwrite_partition(day2, "gold", "scores", D2)
    rerun = spark.createDataFrame([("a", D1, 10.0)], SCHEMA)
    store.overwrite_partition(rerun, "gold", "scores", D1)
    store.overwrite_partition(rerun, "gold", "scores", D1)

    expected = spark.createDataFrame([("a", D1, 10.0), ("a", D2, 3.0)], SCHEMA)
    assert_df_equality(store.read("gold", "scores"), expected, ignore_row_order=True, ignore_nullable=True)
    assert Path(store.ref("gold", "scores").path, "_delta_log").is_dir()


def test_partition_overwrite_refuses_rows_of_another_date(spark, store):
    store.overwrite_partition(spark.createDataFrame([("a", D1, 1.0)], SCHEMA), "gold", "scores", D1)
    wrong = spark.createDataFrame([("a", D2, 1.0)], SCHEMA)
    with pytest.raises(Exception, match="(?i)replaceWhere|DELTA_REPLACE_WHERE|does not conform"):
        store.overwrite_partition(wrong, "gold", "scores", D1)
    assert store.read("gold", "scores").count() == 1


def test_merge_updates_and_inserts(spark, store):
    schema = StructType([StructField("account_id", StringType()), StructField("revenue", DoubleType())])
    store.merge(spark.createDataFrame([("x", 1.0), ("y", 2.0)], schema), "gold", "accounts", ["account_id"])
    store.merge(spark.createDataFrame([("y", 5.0), ("z", 7.0)], schema), "gold", "accounts", ["account_id"])
    expected = spark.createDataFrame([("x", 1.0), ("y", 5.0), ("z", 7.0)], schema)
    assert_df_equality(store.read("gold", "accounts"), expected, ignore_row_order=True, ignore_nullable=True)
    assert store.history("gold", "accounts").filter(F.col("operation") == "MERGE").count() == 1


def test_missing_table_names_it(store):
    with pytest.raises(MissingTableError, match=r"missing table silver\.usage_daily"):
        store.read("silver", "usage_daily")


def test_a_table_another_process_created_is_seen_by_a_session_that_looked_too_early(spark, store, tmp_path):
    # The stream (another process) creates gold.trigger_offers while this session polls:
    # it looks once while `_delta_log` is still empty, then the first commit lands.
    path = Path(store.ref("gold", "trigger_offers").path)
    (path / "_delta_log").mkdir(parents=True)
    assert not store.exists("gold", "trigger_offers")
    elsewhere = tmp_path / "written_elsewhere"
    spark.range(3).write.format("delta").save(str(elsewhere))
    for commit in (elsewhere / "_delta_log").glob("*.json"):
        shutil.copy(commit, path / "_delta_log" / commit.name)
    for part in elsewhere.glob("*.parquet"):
        shutil.copy(part, path / part.name)
    assert store.exists("gold", "trigger_offers")
    assert store.read("gold", "trigger_offers").count() == 3


def _subscribers(spark, schema):
    return spark.createDataFrame([], schema)


def test_contract_check_names_table_and_column(spark):
    good = INPUT_SCHEMAS["recharges"]
    assert contract_problems(spark.createDataFrame([], good), "recharges") == ([], [], [])

    missing = StructType([f for f in good.fields if f.name != "amount"])
    with pytest.raises(SchemaMismatchError, match="table recharges: missing required column amount"):
        conform_to_contract(spark.createDataFrame([], missing), "recharges")

    changed = StructType(
        [StructField(f.name, DateType() if f.name == "amount" else f.dataType) for f in good.fields]
    )
    with pytest.raises(
        SchemaMismatchError, match=r"recharges: incompatible type for column amount \(expected double"
    ):
        conform_to_contract(spark.createDataFrame([], changed), "recharges")


def test_contract_casts_widenings_and_drops_extras(spark):
    schema = StructType(
        [
            StructField("subscriber_id", StringType()),
            StructField("recharge_ts", INPUT_SCHEMAS["recharges"]["recharge_ts"].dataType),
            StructField("amount", IntegerType()),
            StructField("channel", StringType()),
            StructField("promo_code", StringType()),
        ]
    )
    df = spark.createDataFrame([("s1", dt.datetime(2026, 6, 1, 9), 5000, "app", "X")], schema)
    out = conform_to_contract(df, "recharges")
    assert out.schema == INPUT_SCHEMAS["recharges"]
    assert out.collect()[0]["amount"] == 5000.0
    # sms_count may come as int and is widened to bigint
    usage = StructType(
        [
            StructField(f.name, IntegerType() if f.name == "sms_count" else f.dataType)
            for f in INPUT_SCHEMAS["usage_daily"].fields
        ]
    )
    assert (
        conform_to_contract(spark.createDataFrame([], usage), "usage_daily").schema["sms_count"].dataType
        == LongType()
    )


def test_insert_new_only_appends_so_a_delta_stream_can_follow(spark, store, tmp_path):
    schema = StructType([StructField("subscriber_id", StringType()), StructField("as_of", DateType())])
    first = spark.createDataFrame([("a", D1), ("b", None)], schema)
    store.insert_new(first, "silver", "quota_events")
    store.insert_new(first, "silver", "quota_events")  # re-run: nothing new (null-safe keys)
    store.insert_new(spark.createDataFrame([("a", D1), ("c", D2)], schema), "silver", "quota_events")
    assert store.read("silver", "quota_events").count() == 3

    path = store.ref("silver", "quota_events").path
    out = str(tmp_path / "stream_out")
    query = (
        spark.readStream.format("delta")
        .load(path)
        .writeStream.format("delta")
        .option("checkpointLocation", str(tmp_path / "ckpt"))
        .trigger(availableNow=True)
        .start(out)
    )
    query.awaitTermination(120)
    assert query.exception() is None
    assert spark.read.format("delta").load(out).count() == 3


def test_a_running_session_is_reused_with_the_utc_clock(spark):
    """A notebook's session is kept, but its time zone is set to UTC: as-of cuts depend on it."""
    from cvo_spark.core.session import get_spark

    spark.conf.set("spark.sql.session.timeZone", "Asia/Jakarta")
    try:
        assert get_spark(app_name="again") is spark
        assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    finally:
        spark.conf.set("spark.sql.session.timeZone", "UTC")
