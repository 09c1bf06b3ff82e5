"""Stage `ingest`: bronze -> silver, bad rows -> gold quarantine, with an accounting check.

Reads every input table first (an optional one only when the source sends it; a missing
required one raises `MissingTableError`, a bad schema `SchemaMismatchError`, before
anything is written), validates each with
`cvo_spark.ingest.validate.tag_rows` (owners first, so the other tables are checked against the
*valid* subscribers and accounts), checks ``rows_in = silver + quarantined + duplicates``
per table, and only then writes:

- each silver table with `TableStore.overwrite` (whole table, one commit): re-running on
  the same bronze gives the same silver; except the event logs that `cvo stream` reads
  as a Delta stream (`APPEND_ONLY_SILVER`), which get an insert-only MERGE of the rows
  they do not hold yet: a stream source must only ever see appends, and a re-run still
  adds nothing;
- all quarantined rows of the run in one `overwrite_partition` of gold ``quarantine`` on
  ``as_of``: a re-run for the same as_of replaces its rows (no duplicates, no leftovers).
  Ingest owns these partitions; another writer of quarantine must not share them.

Each tagged frame is persisted once (MEMORY_AND_DISK) so the count, the silver write and
the quarantine write do not re-validate the bronze; it is unpersisted at the end.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from functools import reduce

from pyspark import StorageLevel
from pyspark.sql import DataFrame

from cvo_spark.core import tables
from cvo_spark.core.errors import CvoError
from cvo_spark.core.io import TableStore, naming_unreadable_files
from cvo_spark.core.privacy import ID_MODE_PROPERTY, id_mode, load_pseudonym_key
from cvo_spark.core.schemas import KEY_COLUMN, OPTIONAL_INPUT_TABLES
from cvo_spark.core.stage import StageContext, StageResult
from cvo_spark.ingest.validate import (
    EARLIEST_EVENT_DATE,
    INGEST_ORDER,
    OWNER_COLUMNS,
    OWNER_TABLE,
    check_accounting,
    check_bronze_schema,
    count_outcomes,
    quarantine_rows,
    silver_rows,
    tag_rows,
)

#: Silver tables read as Delta streams: written by insert-only MERGE, never rewritten.
APPEND_ONLY_SILVER = frozenset(t for t in INGEST_ORDER if tables.table(t).mode == "insert_new")
#: The tables this stage reads (`cvo_spark.pipeline`): every bronze input it knows.
READS: tuple[str, ...] = tuple(tables.bronze(t) for t in INGEST_ORDER)
#: Read from an earlier run, so no ordering: channel responses answer the decisions of
#: earlier days (gold `decisions`, written by the offers stage after this one).
READS_PRIOR: tuple[str, ...] = ("decisions",)


class IdModeChangedError(CvoError):
    """An append-only silver table holds ids written another way (raw vs pseudonym, or another key)."""


log = logging.getLogger(__name__)


def run(ctx: StageContext) -> StageResult:
    """Validate every bronze table into silver and quarantine (see module docstring)."""
    cfg = ctx.config.ingest
    # Refuse before touching data when privacy is on but the key is not there.
    key = load_pseudonym_key(cfg.privacy.key_env) if cfg.privacy.pseudonymize else None
    return ingest(
        ctx.store,
        now=datetime.now(UTC),
        future_tolerance_hours=cfg.future_tolerance_hours,
        run_id=ctx.run_id,
        as_of=ctx.as_of,
        pseudonym_key=key,
        earliest_event_date=cfg.earliest_event_date,
    )


def check_id_mode(store: TableStore, table: str, mode: str) -> None:
    """Refuse to add ids written one way to an append-only silver table holding another.

    The other silver tables are rewritten whole on every run, so switching
    pseudonymisation on (or rotating its key) rewrites them; an append-only table would
    instead keep its old rows, raw MSISDNs beside their pseudonyms (invariant 8). A table
    written before the mode was recorded is taken as it is and labelled on this run.
    """
    if not store.has(table):
        return
    recorded = store.table_properties(table).get(ID_MODE_PROPERTY)
    if recorded is not None and recorded != mode:
        raise IdModeChangedError(
            f"silver.{table} holds subscriber ids written as {recorded}, but this run writes {mode} "
            f"(ingest.privacy changed): it is append-only for the trigger stream, so move it and the "
            f"stream's checkpoint aside, then re-run ingest"
        )


def _owners(table: str, valid: dict[str, DataFrame], store: TableStore) -> DataFrame | None:
    owner = OWNER_TABLE.get(table)
    if owner is None:
        return None
    if owner == "decisions":
        # Channel responses answer the engine's own decisions: the gold log, empty before the
        # first publish (then every response is an unknown decision, quarantined, not lost).
        if store.has("decisions"):
            return store.table("decisions").select("decision_id", "as_of")
        return store.spark.createDataFrame([], "decision_id string, as_of date")
    return valid[owner].select(KEY_COLUMN[owner], *OWNER_COLUMNS[owner])


def ingest(
    store: TableStore,
    now: datetime,
    future_tolerance_hours: float,
    run_id: str,
    as_of: date,
    pseudonym_key: bytes | None = None,
    earliest_event_date: date = EARLIEST_EVENT_DATE,
) -> StageResult:
    """Run the ingest on `store` with an explicit clock (`run` passes the wall clock)."""
    # An optional input a source does not send is skipped (its silver table, if any, stays).
    order = tuple(t for t in INGEST_ORDER if t not in OPTIONAL_INPUT_TABLES or store.has_bronze(t))
    inputs = {t: store.bronze(t) for t in order}
    extras = {t: check_bronze_schema(df, t) for t, df in inputs.items()}
    mode = id_mode(pseudonym_key)
    for table in sorted(APPEND_ONLY_SILVER):
        check_id_mode(store, table, mode)

    tagged: dict[str, DataFrame] = {}
    valid: dict[str, DataFrame] = {}
    counts: dict[str, int] = {}
    try:
        for table in order:
            frame = tag_rows(
                inputs[table],
                table,
                now,
                future_tolerance_hours,
                _owners(table, valid, store),
                pseudonym_key,
                earliest_event_date,
            ).persist(StorageLevel.MEMORY_AND_DISK)
            tagged[table] = frame
            valid[table] = silver_rows(frame, table)
            # The first actions on the bronze data: a corrupt file stops here, named, before any write.
            with naming_unreadable_files("bronze", table):
                outcome = count_outcomes(frame)
                # Counted on the bronze itself (Delta answers from its log), independent of tagging.
                rows_in = inputs[table].count()
            check_accounting(table, rows_in, outcome)
            counts.update(
                {
                    f"{table}.in": rows_in,
                    f"{table}.silver": outcome["silver"],
                    f"{table}.quarantined": outcome["quarantined"],
                    f"{table}.duplicates": outcome["duplicates"],
                }
            )
            if outcome["quarantined"]:
                log.warning("table %s: %d row(s) quarantined", table, outcome["quarantined"])

        # Every check passed: only now write, so a failing table leaves silver untouched.
        for table in order:
            # Registered modes: rebuilt whole, or an insert-only MERGE for the stream's input.
            store.write(valid[table], table)
            if table in APPEND_ONLY_SILVER and store.table_properties(table).get(ID_MODE_PROPERTY) != mode:
                store.set_table_properties(table, {ID_MODE_PROPERTY: mode})
        ingested_at = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
        quarantine = reduce(
            DataFrame.unionByName,
            [quarantine_rows(tagged[t], t, run_id, ingested_at, as_of) for t in order],
        )
        store.write(quarantine, "quarantine", as_of)
    finally:
        for frame in tagged.values():
            frame.unpersist()

    quarantined = sum(counts[f"{t}.quarantined"] for t in order)
    duplicates = sum(counts[f"{t}.duplicates"] for t in order)
    ignored = "; ".join(f"{t}: {', '.join(cols)}" for t, cols in extras.items() if cols)
    message = f"{quarantined} row(s) quarantined, {duplicates} duplicate(s) removed"
    if ignored:
        message += f"; extra columns ignored ({ignored})"
    return StageResult(row_counts=counts, checks={"accounting_identity": "ok"}, message=message)
