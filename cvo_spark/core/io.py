"""The one module that knows Delta, paths and catalog names.

Every stage reads and writes through a `TableStore`. Stages address a table by its
registered name (`cvo_spark.core.tables`): ``store.write(df, "features", as_of)`` conforms
the frame to the table's schema and writes it with the table's mode;
``store.read_as_of("features", as_of)`` reads one partition; `location`, `read_stream`
and `lake_path` answer where things are. The layer (bronze, silver, gold) is a folder
under the lake root or a catalog schema, as `conf/*.yaml` says; the (layer, name) methods
below are the mechanics those helpers use. Writes are Delta only; there is no Parquet
fallback.

Every read and write is noted in the `Touched` sets of any `recording()` in progress:
`cvo_spark.pipeline` records each stage's run to check it against the stage's declared
reads and writes.

Write modes and the invariant each keeps:

- `overwrite` - whole table replaced in one Delta commit (atomic).
- `overwrite_partition` - exactly one `as_of` partition replaced (`replaceWhere`), so
  re-running a stage for the same date leaves no duplicates and no leftovers.
- `merge` - upsert on a key (MERGE INTO), for tables keyed by id rather than date.
- `insert_new` - insert-only MERGE for event logs read as streams (silver quota_events).
- `append` - only for logs (`runs`, `trigger_offers`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from delta.tables import DeltaTable
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    DataType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    ShortType,
    StructType,
)

from cvo_spark.core.config import Config
from cvo_spark.core.errors import CvoError, MissingTableError, SchemaMismatchError
from cvo_spark.core.schemas import INPUT_SCHEMAS, OPTIONAL_INPUT_COLUMNS
from cvo_spark.core.tables import (
    TableSpec,
    WriteMode,
    bronze,
    partition_condition,
    partition_is,
    partitions_before,
    partitions_through,
    resolve_schema,
    table,
)
from cvo_spark.core.util import first_row

log = logging.getLogger(__name__)

LAYERS = ("bronze", "silver", "gold")


class UnreadableDataError(CvoError):
    """A data file of a table cannot be read (corrupt, truncated, not Parquet)."""


@dataclass(frozen=True)
class TableRef:
    """Where one table lives: a filesystem/object-store path or a catalog name."""

    layer: str
    name: str
    path: str | None = None
    catalog_name: str | None = None

    def __str__(self) -> str:
        return self.catalog_name or self.path or self.name


def _is_catalog(location: str) -> bool:
    return "." in location and "/" not in location and "://" not in location


def _path(ref: TableRef) -> str:
    """The path of a table that is not in a catalog (a TableRef has one or the other)."""
    if ref.path is None:
        raise ValueError(f"table {ref.layer}.{ref.name} has neither a catalog name nor a path")
    return ref.path


def is_uri(location: str) -> bool:
    """Whether `location` is a URI (``s3a://``, ``abfss://``...) rather than a local path."""
    return "://" in location


def _join(root: str, *parts: str) -> str:
    if is_uri(root):
        return "/".join([root.rstrip("/"), *parts])
    return str(Path(root, *parts).absolute())


def under_root(root: str, location: str) -> str:
    """`location` as is when absolute or a URI, else under `root` (a URI stays a URI, a
    local path becomes absolute)."""
    if is_uri(location) or Path(location).is_absolute():
        return location
    return _join(root, location)


def local_path_under(root: str, *parts: str) -> Path | None:
    """A local file path under the lake root `root` for files Python writes itself (the
    report), or None when the lake has no local folder: ``dbfs:/x`` is reached through
    the ``/dbfs/x`` mount, ``file:`` is local, any other scheme has none."""
    if root.startswith("dbfs:/"):
        return Path("/dbfs", root[len("dbfs:/") :].lstrip("/"), *parts)
    if root.startswith("file:"):
        return Path(root[len("file:") :], *parts)
    if is_uri(root):
        return None
    return Path(root, *parts)


@dataclass
class Touched:
    """The tables a piece of work read and wrote: registered names, ``bronze.<name>`` for
    bronze inputs (`cvo_spark.core.tables.bronze`)."""

    reads: set[str] = field(default_factory=set)
    writes: set[str] = field(default_factory=set)


class TableStore:
    """Read and write the lake's Delta tables by (layer, name)."""

    def __init__(self, spark: SparkSession, config: Config):
        self.spark = spark
        self.config = config
        self._recorders: list[Touched] = []

    # ------------------------------------------------------------------ recording
    @contextmanager
    def recording(self) -> Iterator[Touched]:
        """Note every table read or written inside the block (nested recordings each see all)."""
        touched = Touched()
        self._recorders.append(touched)
        try:
            yield touched
        finally:
            self._recorders.remove(touched)

    def _note(self, kind: str, layer: str, name: str) -> None:
        label = bronze(name) if layer == "bronze" else name
        for touched in self._recorders:
            (touched.reads if kind == "read" else touched.writes).add(label)

    # ------------------------------------------------------------------ locations
    def ref(self, layer: str, name: str) -> TableRef:
        if layer not in LAYERS:
            raise ValueError(f"unknown layer {layer!r}; one of {LAYERS}")
        tables = self.config.tables
        override = tables.overrides.get(name) if layer != "bronze" else tables.overrides.get(f"bronze.{name}")
        if override:
            if _is_catalog(override):
                return TableRef(layer, name, catalog_name=override)
            return TableRef(
                layer, name, path=override if "://" in override else str(Path(override).absolute())
            )
        location = getattr(tables, layer)
        if _is_catalog(location):
            return TableRef(layer, name, catalog_name=f"{location}.{name}")
        return TableRef(layer, name, path=_join(self.config.lake, location, name))

    def exists(self, layer: str, name: str) -> bool:
        ref = self.ref(layer, name)
        if ref.catalog_name:
            return self.spark.catalog.tableExists(ref.catalog_name)
        path = _path(ref)
        if DeltaTable.isDeltaTable(self.spark, path):
            return True
        # Delta caches the table's log per path. A session that looked while another
        # process was creating the table (an empty `_delta_log`) keeps answering "no" until
        # the log is next read, so a long-lived session would never see a table the stream
        # or another job created. Reading the schema refreshes the cached log.
        jvm = self.spark._jvm
        if jvm is None:
            raise RuntimeError(f"checking {ref} for a Delta log needs the JVM gateway of a classic session")
        log = jvm.org.apache.hadoop.fs.Path(path, "_delta_log")
        if not log.getFileSystem(self.spark._jsc.hadoopConfiguration()).exists(log):
            return False
        try:
            # Resolving the schema is the point: it reads the log (refreshing the cached one)
            # and raises AnalysisException if nothing is committed yet. The value is unused.
            _ = self.spark.read.format("delta").load(path).schema
        except AnalysisException:
            return False
        return True

    def _delta(self, ref: TableRef) -> DeltaTable:
        if ref.catalog_name:
            return DeltaTable.forName(self.spark, ref.catalog_name)
        return DeltaTable.forPath(self.spark, _path(ref))

    # ------------------------------------------------------------------ reads
    def read(self, layer: str, name: str, version: int | None = None) -> DataFrame:
        """Read a Delta table; a missing one raises `MissingTableError` naming it."""
        ref = self.ref(layer, name)
        if not self.exists(layer, name):
            raise MissingTableError(f"missing table {layer}.{name}: no Delta table at {ref}")
        self._note("read", layer, name)
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.table(ref.catalog_name) if ref.catalog_name else reader.load(ref.path)

    def read_input(self, layer: str, name: str) -> DataFrame:
        """Read an input-contract table, conformed to its schema (see `conform_to_contract`)."""
        return conform_to_contract(self.read(layer, name), name)

    def history(self, layer: str, name: str, limit: int = 20) -> DataFrame:
        self._note("read", layer, name)
        return self._delta(self.ref(layer, name)).history(limit)

    # ------------------------------------------------------------------ writes
    def _writer(self, df: DataFrame, mode: str, partition_by: Sequence[str] | None):
        writer = df.write.format("delta").mode(mode)
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        return writer

    def _save(self, writer, ref: TableRef) -> None:
        self._note("write", ref.layer, ref.name)
        if ref.catalog_name:
            writer.saveAsTable(ref.catalog_name)
        else:
            writer.save(ref.path)

    def overwrite(
        self, df: DataFrame, layer: str, name: str, partition_by: Sequence[str] | None = None
    ) -> None:
        """Replace the whole table in one Delta commit (schema replaced too)."""
        writer = self._writer(df, "overwrite", partition_by).option("overwriteSchema", "true")
        self._save(writer, self.ref(layer, name))

    def append(
        self,
        df: DataFrame,
        layer: str,
        name: str,
        partition_by: Sequence[str] | None = None,
        options: Mapping[str, str | int] | None = None,
    ) -> None:
        """Append `df` in one Delta commit; `options` go to the writer (e.g. Delta's
        ``txnAppId`` / ``txnVersion`` for an idempotent streaming batch)."""
        writer = self._writer(df, "append", partition_by)
        for key, value in (options or {}).items():
            writer = writer.option(key, value)
        self._save(writer, self.ref(layer, name))

    def overwrite_partition(
        self,
        df: DataFrame,
        layer: str,
        name: str,
        as_of: date,
        column: str = "as_of",
        merge_schema: bool = False,
        only: str | None = None,
    ) -> None:
        """Replace exactly the rows with ``column = as_of`` in one commit (idempotent re-runs).

        Rows of `df` must all carry that date; Delta's replaceWhere enforces it and fails
        the write otherwise, so a bug can never overwrite a neighbouring day. With
        `merge_schema`, new columns are added to the table (older partitions read null).
        `only` narrows what is replaced to the rows of the date that also meet this SQL
        predicate (e.g. ``source = 'batch'``: other writers' rows of the day stay).
        """
        ref = self.ref(layer, name)
        condition = partition_condition(as_of, column) + (f" AND ({only})" if only else "")
        if not self.exists(layer, name):
            self._save(self._writer(df, "overwrite", [column]), ref)
            return
        writer = self._writer(df, "overwrite", None).option("replaceWhere", condition)
        if merge_schema:
            writer = writer.option("mergeSchema", "true")
        self._save(writer, ref)

    def write_and_reread(self, df: DataFrame, layer: str, name: str, as_of: date, column: str) -> DataFrame:
        """Replace the `column = as_of` partition with `df` (plus that column), and return it read back.

        For frames whose query plan is far larger than their data (stacked feature
        snapshots): later queries start from the stored files instead of re-planning it.
        New columns are merged into the table.
        """
        self.overwrite_partition(
            df.withColumn(column, F.lit(as_of)), layer, name, as_of, column=column, merge_schema=True
        )
        return self.read(layer, name).where(partition_is(as_of, column)).drop(column)

    def merge(self, df: DataFrame, layer: str, name: str, keys: Iterable[str]) -> None:
        """Upsert `df` on `keys`: matching rows are updated, new ones inserted."""
        keys = list(keys)
        ref = self.ref(layer, name)
        if not self.exists(layer, name):
            self._save(self._writer(df, "overwrite", None), ref)
            return
        cond = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
        self._note("write", layer, name)
        (
            self._delta(ref)
            .alias("t")
            .merge(df.alias("s"), cond)
            .whenMatchedUpdateAll()
            .whenNotMatchedInsertAll()
            .execute()
        )

    def insert_new(self, df: DataFrame, layer: str, name: str, keys: Iterable[str] | None = None) -> None:
        """Insert the rows of `df` the table does not hold yet (insert-only MERGE).

        The commit only adds files, so a Delta stream reading the table sees an append;
        re-running with the same rows adds nothing. `keys` default to every column
        (null-safe equality), for event logs without an id.
        """
        ref = self.ref(layer, name)
        if not self.exists(layer, name):
            self._save(self._writer(df, "overwrite", None), ref)
            return
        cond = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in (list(keys) if keys else df.columns))
        self._note("write", layer, name)
        self._delta(ref).alias("t").merge(df.alias("s"), cond).whenNotMatchedInsertAll().execute()

    def properties(self, layer: str, name: str) -> dict[str, str]:
        """The Delta table properties of an existing table (`MissingTableError` if none)."""
        ref = self.ref(layer, name)
        if not self.exists(layer, name):
            raise MissingTableError(f"missing table {layer}.{name}: no Delta table at {ref}")
        self._note("read", layer, name)
        return dict(first_row(self._delta(ref).detail(), f"DESCRIBE DETAIL of {ref}")["properties"] or {})

    def set_properties(self, layer: str, name: str, properties: Mapping[str, str]) -> None:
        """Set Delta table properties (one metadata-only commit: no data file changes)."""
        ref = self.ref(layer, name)
        ident = ref.catalog_name or f"delta.`{ref.path}`"
        pairs = ", ".join(f"'{k}' = '{v}'" for k, v in sorted(properties.items()))
        self._note("write", layer, name)
        self.spark.sql(f"ALTER TABLE {ident} SET TBLPROPERTIES ({pairs})")

    def delete_where(self, layer: str, name: str, condition: str) -> None:
        if self.exists(layer, name):
            self._note("write", layer, name)
            self._delta(self.ref(layer, name)).delete(condition)

    # ------------------------------------------------------------------ registered tables
    # What stages call: a table by its registered name; layer, partition column, schema
    # and write mode come from `cvo_spark.core.tables`.
    def has(self, name: str) -> bool:
        """Whether registered table `name` exists."""
        return self.exists(table(name).layer, name)

    def location(self, name: str) -> str:
        """Where registered table `name` lives (a path or a catalog name), for messages."""
        return str(self.ref(table(name).layer, name))

    def table(self, name: str) -> DataFrame:
        """All of registered table `name` (`MissingTableError` naming it when absent)."""
        return self.read(table(name).layer, name)

    def optional(self, name: str) -> DataFrame | None:
        """All of registered table `name`, or None when it does not exist (yet)."""
        return self.table(name) if self.has(name) else None

    def input(self, name: str) -> DataFrame:
        """Silver table `name` conformed to its input contract (see `conform_to_contract`)."""
        return self.read_input(table(name).layer, name)

    def has_bronze(self, name: str) -> bool:
        return self.exists("bronze", name)

    def bronze(self, name: str) -> DataFrame:
        """Bronze input table `name` as the source wrote it (ingest checks the contract)."""
        return self.read("bronze", name)

    def bronze_root(self) -> str | None:
        """The folder holding the bronze tables (what `cvo generate` writes into), or None
        when bronze is a catalog schema."""
        ref = self.ref("bronze", "subscribers")
        return None if ref.path is None else str(Path(ref.path).parent)

    def _partition_column(self, name: str) -> str:
        spec = table(name)
        if spec.partition is None:
            raise ValueError(f"table {spec.qualified} has no partition column")
        return spec.partition

    def read_as_of(self, name: str, as_of: date) -> DataFrame:
        """The rows of the `as_of` partition of registered table `name`."""
        return self.table(name).where(partition_is(as_of, self._partition_column(name)))

    def read_through(self, name: str, as_of: date) -> DataFrame:
        """The rows of every partition dated on or before `as_of` (what was known that day)."""
        return self.table(name).where(partitions_through(as_of, self._partition_column(name)))

    def latest_as_of(self, name: str, before: date | None = None) -> date | None:
        """The newest partition date of `name` (strictly before `before` when given), or
        None when the table is absent or has no such partition."""
        if not self.has(name):
            return None
        column = self._partition_column(name)
        df = self.table(name)
        if before is not None:
            df = df.where(partitions_before(before, column))
        return first_row(df.agg(F.max(column)), f"newest {column} of {table(name).qualified}")[0]

    def read_stream(self, name: str, options: Mapping[str, str | int] | None = None) -> DataFrame:
        """Registered table `name` as a Delta streaming source."""
        spec = table(name)
        ref = self.ref(spec.layer, name)
        self._note("read", spec.layer, name)
        reader = self.spark.readStream.format("delta")
        for key, value in (options or {}).items():
            reader = reader.option(key, value)
        return reader.table(ref.catalog_name) if ref.catalog_name else reader.load(_path(ref))

    def write(
        self,
        df: DataFrame,
        name: str,
        as_of: date | None = None,
        *,
        mode: WriteMode | None = None,
        only: str | None = None,
        options: Mapping[str, str | int] | None = None,
        conform: bool = True,
    ) -> None:
        """Write `df` to registered table `name` with its registered mode (or `mode`, one of
        the table's modes), conformed to its schema first (`conform_to_table`).

        ``overwrite_partition`` needs `as_of` and replaces exactly that partition (`only`
        narrows it, see `overwrite_partition`); ``insert_new`` matches on the table's
        ``match_on`` columns; ``append`` passes `options` to the writer. A table that does
        not exist yet is created partitioned by its partition column. `conform=False` is for
        a writer that aligned `df` to the stored table's own columns (an older lake).
        """
        spec = table(name)
        mode = mode or spec.mode
        if mode not in spec.modes:
            raise ValueError(
                f"table {spec.qualified} is not written with mode {mode!r}; its modes: {spec.modes}"
            )
        if conform:
            df = conform_to_table(df, spec)
        partition_by = [spec.partition] if spec.partition else None
        if mode == "overwrite_partition":
            if as_of is None:
                raise ValueError(f"writing a partition of {spec.qualified} needs an as_of date")
            self.overwrite_partition(
                df, spec.layer, name, as_of, self._partition_column(name), spec.merge_schema, only
            )
        elif mode == "overwrite":
            self.overwrite(df, spec.layer, name, partition_by)
        elif mode == "append":
            self.append(df, spec.layer, name, partition_by, options)
        elif not self.exists(spec.layer, name):  # insert_new into a table not created yet
            self._save(self._writer(df, "overwrite", partition_by), self.ref(spec.layer, name))
        else:
            self.insert_new(df, spec.layer, name, spec.match_on or None)

    def write_and_read_back(self, df: DataFrame, name: str, as_of: date) -> DataFrame:
        """Replace the `as_of` partition of `name` with `df` (plus the partition column) and
        return it read back without that column (see `write_and_reread`)."""
        return self.write_and_reread(df, table(name).layer, name, as_of, self._partition_column(name))

    def table_properties(self, name: str) -> dict[str, str]:
        return self.properties(table(name).layer, name)

    def set_table_properties(self, name: str, properties: Mapping[str, str]) -> None:
        self.set_properties(table(name).layer, name, properties)

    # ------------------------------------------------------------------ lake locations
    @property
    def lake_root(self) -> str:
        """The lake root (what MLflow's default store lives under)."""
        return self.config.lake

    def lake_path(self, *parts: str) -> str:
        """A folder or file under the lake root (a URI stays a URI, a local path becomes absolute)."""
        return _join(self.config.lake, *parts)

    def under_lake(self, location: str) -> str:
        """`location` as is when absolute or a URI, else under the lake root."""
        return under_root(self.config.lake, location)

    def scratch_dir(self) -> str | None:
        """Where model fitting spills files executors must read: under a remote lake, else
        None (a local temporary folder will do)."""
        return self.lake_path("_scratch", "models") if is_uri(self.config.lake) else None


def conform_to_table(df: DataFrame, spec: TableSpec) -> DataFrame:
    """`df` with exactly the registered columns of `spec`, in order, cast to their types.

    A missing or an unexpected column is a `SchemaMismatchError` naming the table and the
    column: a stage can never leak an extra column into, or drop one from, a table that
    channel systems read. A table whose columns are its producer's (training frames) is
    written as it comes.
    """
    schema = resolve_schema(spec.schema_ref)
    if schema is None:
        return df
    names = schema.fieldNames() if isinstance(schema, StructType) else list(schema)
    missing = [c for c in names if c not in df.columns]
    if missing:
        raise SchemaMismatchError(f"table {spec.qualified}: the frame to write lacks column {missing[0]}")
    extra = [c for c in df.columns if c not in names]
    if extra:
        raise SchemaMismatchError(
            f"table {spec.qualified}: the frame to write has unregistered column {extra[0]}"
        )
    if isinstance(schema, StructType):
        return df.select(*[F.col(f"`{f.name}`").cast(f.dataType).alias(f.name) for f in schema.fields])
    return df.select(*[F.col(f"`{c}`") for c in names])


# ---------------------------------------------------------------------- contract checks
_WIDENINGS: dict[type, tuple[type, ...]] = {
    DoubleType: (FloatType, IntegerType, LongType, ShortType),
    LongType: (IntegerType, ShortType),
}


def _compatible(expected: DataType, actual: DataType) -> bool:
    if expected == actual:
        return True
    if isinstance(expected, StructType) or isinstance(actual, StructType):
        return False
    return isinstance(actual, _WIDENINGS.get(type(expected), ()))


def contract_problems(df: DataFrame, table: str) -> tuple[list[str], list[str], list[str]]:
    """Compare a DataFrame with the input contract: (missing, incompatible, extra) columns.

    ``incompatible`` entries read ``column (expected T, found U)``. Numeric widenings
    (int to bigint or double, float to double) are compatible and cast on read.
    """
    expected = INPUT_SCHEMAS[table]
    actual = {f.name: f.dataType for f in df.schema.fields}
    optional = OPTIONAL_INPUT_COLUMNS.get(table, ())
    missing = [f.name for f in expected.fields if f.name not in actual and f.name not in optional]
    incompatible = [
        f"{f.name} (expected {f.dataType.simpleString()}, found {actual[f.name].simpleString()})"
        for f in expected.fields
        if f.name in actual and not _compatible(f.dataType, actual[f.name])
    ]
    extra = [c for c in actual if c not in set(expected.fieldNames())]
    return missing, incompatible, extra


def conform_to_contract(df: DataFrame, table: str) -> DataFrame:
    """Select the contract's columns in order, casting numeric widenings.

    Raises `SchemaMismatchError` naming the table and the first bad column when a
    required column is missing or has an incompatible type; an extra column is ignored
    with a warning.
    """
    missing, incompatible, extra = contract_problems(df, table)
    if missing:
        raise SchemaMismatchError(f"table {table}: missing required column {missing[0]}")
    if incompatible:
        raise SchemaMismatchError(f"table {table}: incompatible type for column {incompatible[0]}")
    if extra:
        log.warning("table %s: ignoring extra column(s) %s", table, ", ".join(extra))
    df = with_optional_columns(df, table)
    return df.select(
        *[F.col(f"`{f.name}`").cast(f.dataType).alias(f.name) for f in INPUT_SCHEMAS[table].fields]
    )


def with_optional_columns(df: DataFrame, table: str) -> DataFrame:
    """Add each optional contract column (`OPTIONAL_INPUT_COLUMNS`) `df` lacks, as typed nulls."""
    schema = INPUT_SCHEMAS[table]
    absent = [c for c in OPTIONAL_INPUT_COLUMNS.get(table, ()) if c not in df.columns]
    return df.select("*", *[F.lit(None).cast(schema[c].dataType).alias(c) for c in absent]) if absent else df


# ---------------------------------------------------------------------- unreadable files
#: Spark's error classes for a data file it could not read, and the file they name.
_READ_ERROR = re.compile(r"\[(FAILED_READ_FILE[.\w]*|CANNOT_READ_FILE_FOOTER)\]")
_DATA_FILE = re.compile(r"([\w.+-]+:)?/[^\s,;'\"]*?([^/\s,;'\"]+\.parquet)")
_CAUSE = re.compile(r"Caused by: (?:[\w$]+\.)*([\w$]+(?:Exception|Error))(?::\s*([^\n]*))?")


def unreadable_file_message(err: BaseException) -> str | None:
    """``<file>: <root cause>`` when `err` is Spark failing to read a data file, else None.

    Spark reports a corrupt Parquet file (garbage bytes, truncated, checksum mismatch) as
    ``[FAILED_READ_FILE...]`` or ``[CANNOT_READ_FILE_FOOTER]`` wrapped in a JVM stack
    trace of a hundred lines; this keeps the file name and the innermost cause.
    """
    text = str(err)
    if not _READ_ERROR.search(text):
        return None
    file = _DATA_FILE.search(text)
    causes = _CAUSE.findall(text)
    name = file.group(2) if file else "a data file"
    if not causes:
        return name
    kind, detail = causes[-1]
    detail = detail.strip()
    if file:  # the innermost cause usually names the file again
        detail = " ".join(detail.replace(file.group(0), "").split()).strip(" :")
    cause = f"{kind}: {detail}" if detail else kind
    return f"{name}: {cause[:160]}"


def unreadable_table_error(err: BaseException, where: str) -> UnreadableDataError | None:
    """An `UnreadableDataError` for a failed read anywhere in a stage, else None.

    For reads outside ingest, where no single table is being read: the table is taken
    from the file's path (``.../<layer>/<table>/part-....parquet`` for the lake layers).
    """
    what = unreadable_file_message(err)
    if what is None:
        return None
    file = _DATA_FILE.search(str(err))
    parts = file.group(0).split("/") if file else []
    table = next(
        (
            f"{parts[i]}.{parts[i + 1]}"
            for i in range(len(parts) - 1)
            if parts[i] in ("bronze", "silver", "gold")
        ),
        "a lake table",
    )
    return UnreadableDataError(
        f"{where}: table {table}: cannot read data file {what} "
        f"(corrupt or not Parquet: restore it, or RESTORE the Delta table to a good version)"
    )


@contextmanager
def naming_unreadable_files(layer: str, name: str) -> Iterator[None]:
    """Turn Spark's failure to read a data file of ``layer.name`` into one clear line.

    Wrap the first action on a table's data: a corrupt file then stops the run with an
    `UnreadableDataError` naming the table and the file, instead of a JVM stack trace.
    Any other error passes through unchanged.
    """
    try:
        yield
    except CvoError:
        raise
    except Exception as err:  # only file-read failures are converted
        what = unreadable_file_message(err)
        if what is None:
            raise
        raise UnreadableDataError(
            f"table {layer}.{name}: cannot read data file {what} "
            f"(corrupt or not Parquet: restore it, or RESTORE the Delta table to a good version)"
        ) from None
