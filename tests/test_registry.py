"""The table registry and the stage declarations (`cvo_spark.core.tables`, `cvo_spark.pipeline`).

The grep rule (`violations`): in every ``.py`` file of ``cvo_spark/``, ``jobs/`` and
``notebooks/`` except the IO layer (``cvo_spark/core/io.py``, ``cvo_spark/core/tables.py``),
no line may

1. compare a partition column by hand: ``F.col("as_of")``, ``F.col("trained_as_of")`` or
   ``F.col(TRAINED_AS_OF)`` followed by ``==``, ``!=``, ``<``, ``<=``, ``>`` or ``>=``
   (use ``store.read_as_of`` / ``read_through`` / ``latest_as_of``, or the Column
   predicates ``partition_is`` / ``partitions_through`` / ``partitions_before``);
2. write the SQL form of one: ``as_of`` followed by a comparison and ``DATE``;
3. sniff a URI scheme: the string literal ``"://"`` (``is_uri`` / ``lake_path`` / ``under_lake``);
4. read the lake root from the config: ``config.lake`` (``store.lake_path``, ``store.lake_root``);
5. resolve a table location: a ``.ref(`` call;
6. call a (layer, name) store method with a layer literal: ``.read|exists|read_input|
   properties|set_properties|delete_where|history(`` followed by ``"bronze"``, ``"silver"``
   or ``"gold"``, or ``.overwrite_partition|overwrite|append|merge|insert_new|write_and_reread(``
   followed by one argument without commas or parentheses and then the layer literal
   (registered names go through ``store.write`` / ``store.table`` / ``store.input`` ...);
7. hold a layer literal alone on a line as a call argument (a call split over lines).

Each rule is searched in the whole text of a file (its `\\s` spans lines), and reported by line.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cvo_spark.core.tables import TABLES, table, written_by
from cvo_spark.pipeline import STAGE_MODULES, STAGES, check_order, plan, stage_io, undeclared

REPO = Path(__file__).resolve().parents[1]
IO_LAYER = {REPO / "cvo_spark" / "core" / "io.py", REPO / "cvo_spark" / "core" / "tables.py"}
_PARTITION_COLUMN = r"""F\.col\(\s*(?:["'](?:trained_)?as_of["']|TRAINED_AS_OF)\s*\)"""
_LAYER = r"[\"'](?:bronze|silver|gold)[\"']"
#: Reads and probes take (layer, name); writes take (df, layer, name). `\s` spans lines, so
#: a call split over several lines is caught too.
_LAYER_CALL = (
    r"\.(?:read|exists|read_input|properties|set_properties|delete_where|history)\(\s*" + _LAYER + "|"
    r"\.(?:overwrite_partition|overwrite|append|merge|insert_new|write_and_reread)\(\s*[^,()]+,\s*" + _LAYER
)
RULES: dict[str, re.Pattern[str]] = {
    "as_of filter": re.compile(_PARTITION_COLUMN + r"\s*(?:==|!=|<=|>=|<|>)"),
    "as_of filter (SQL)": re.compile(r"\b(?:trained_)?as_of\s*(?:=|<=|>=|<|>)\s*DATE\b"),
    "URI scheme sniffing": re.compile(r"""["']://["']"""),
    "lake root from config": re.compile(r"\bconfig\.lake\b"),
    "table location": re.compile(r"\.ref\("),
    "layer literal in a store call": re.compile(_LAYER_CALL),
    # the argument line of a call split over lines, whatever comes before it
    "layer literal as an argument": re.compile(r"^\s*" + _LAYER + r",?\s*$", re.M),
}


def violations(text: str) -> list[str]:
    """``line <n>: <rule>: <line>`` for each match in `text` of a rule of the module docstring."""
    lines = text.splitlines()
    found = []
    for rule, pattern in RULES.items():
        for match in pattern.finditer(text):
            n = text.count("\n", 0, match.start())
            found.append(f"line {n + 1}: {rule}: {lines[n].strip()}")
    return found


def _checked_files() -> list[Path]:
    files = [p for d in ("cvo_spark", "jobs", "notebooks") for p in (REPO / d).rglob("*.py")]
    return sorted(p for p in files if p not in IO_LAYER)


def test_no_module_outside_the_io_layer_builds_paths_or_filters_partitions():
    found = [
        f"{path.relative_to(REPO)}: {v}"
        for path in _checked_files()
        for v in violations(path.read_text(encoding="utf-8"))
    ]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    "planted",
    [
        'df = store.read("gold", "features").where(F.col("as_of") == F.lit(as_of))',
        "prior = frames.where(F.col('trained_as_of') < F.lit(d))",
        "kept = frame.where(F.col(TRAINED_AS_OF)>=F.lit(d))",
        'writer.option("replaceWhere", f"as_of = DATE\'{d}\'")',
        'root = lake if "://" in lake else str(Path(lake).absolute())',
        'out = f"{ctx.config.lake}/exports"',
        'path = store.ref("gold", "offers").path',
        'store.overwrite_partition(df, "gold", "scores", as_of)',
        'store.exists( "silver", "consents")',
        'ctx.store.overwrite_partition(\n    frame,\n    "gold",\n    "offers",\n    as_of,\n)',
        'ctx.store.append(\n    spark.createDataFrame(rows, SCHEMA),\n    "gold",\n    "runs",\n)',
    ],
)
def test_the_grep_catches_a_planted_violation(planted):
    assert violations(f"def f():\n    {planted}\n")


@pytest.mark.parametrize(
    "allowed",
    [
        'df = store.read_as_of("features", as_of)',
        "snapshots = segments.filter(partitions_through(as_of))",
        'store.write(df, "scores", as_of)',
        'decisions.withColumn("period", period_label(F.col("as_of"), period))',
        'ordered = w.orderBy(F.col("as_of").desc())',
    ],
)
def test_the_grep_lets_registry_calls_and_column_uses_pass(allowed):
    assert violations(allowed) == []


def test_the_registry_covers_every_table_the_code_writes():
    """Every table named in a store write of the package is registered (a write of an
    unregistered name fails at run time too: `table()` raises)."""
    write = re.compile(r"""\.(?:write|write_and_read_back)\(\s*[^,]+,\s*["'](\w+)["']""", re.S)
    named = {
        m.group(1)
        for path in (REPO / "cvo_spark").rglob("*.py")
        for m in write.finditer(path.read_text(encoding="utf-8"))
    }
    assert named, "no store.write call found: the pattern is stale"
    assert named <= set(TABLES), sorted(named - set(TABLES))
    # and every registered table has a producer that writes it
    producers = {p for t in TABLES.values() for p in t.producers}
    assert producers <= {*STAGE_MODULES, "stream", "pipeline"}, producers
    for spec in TABLES.values():
        columns = spec.columns()
        if columns is not None:
            assert set(spec.keys) <= set(columns), spec.name
            assert spec.partition is None or spec.partition in columns, spec.name
        assert spec.partition is not None or "overwrite_partition" not in spec.modes, spec.name


def test_docs_tables_names_every_registered_table_and_its_keys():
    docs = (REPO / "docs" / "tables.md").read_text(encoding="utf-8")
    registry = docs.split("## The table registry", 1)
    assert len(registry) == 2, "docs/tables.md has no '## The table registry' section"
    section = registry[1].split("\n## ", 1)[0]
    rows = {
        cells[0].strip("` "): cells
        for line in section.splitlines()
        if line.startswith("|") and (cells := [c.strip() for c in line.strip("|").split("|")])
    }
    missing = sorted(set(TABLES) - set(rows))
    assert not missing, f"docs/tables.md does not list {missing}"
    for name, spec in TABLES.items():
        cells = rows[name]
        assert cells[1] == spec.layer, name
        assert [k.strip("` ") for k in cells[2].split(",")] == list(spec.keys), name
        assert cells[3].strip("` ") == (spec.partition or "-"), name
        assert cells[4].strip("` ") == " / ".join(spec.modes), name
        assert cells[5].strip("` ") == " / ".join(spec.producers), name
    extra = sorted(set(rows) - set(TABLES) - {"table", "---"})
    assert not extra, f"docs/tables.md lists unregistered {extra}"


def test_stage_order_is_checked_against_what_stages_read():
    check_order()  # today's order is valid
    with pytest.raises(Exception, match="stage segments reads features, which stage features writes later"):
        # segments before features would read features the same run has not written
        check_order(("ingest", "segments", "features"))
    assert check_order(("segments",)) is None  # producers outside the run impose no order


def test_every_stage_declares_its_reads_and_writes_registered_tables():
    for stage in STAGE_MODULES:
        io = stage_io(stage)
        assert io.reads, stage
        for name in (*io.reads, *io.reads_prior):
            assert name.startswith("bronze.") or table(name), name
        assert io.writes == written_by(stage)
    assert stage_io("report").writes == ()


def test_plan_prints_the_graph_in_execution_order(capsys):
    from cvo_spark.cli import main

    assert main(["run", "--plan"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == plan().strip()
    positions = [out.index(f". {s}\n") for s in STAGES]
    assert positions == sorted(positions)
    assert "features (features)" in out  # segments reads what features wrote
    assert "writes: offers_staging, offers, campaign_power, allocation_constraints, decisions" in out


def test_undeclared_names_what_a_stage_touched_outside_its_declaration():
    from cvo_spark.core.io import Touched

    fine = Touched(reads={"features", "segments", "segment_profiles"}, writes={"segments"})
    assert undeclared("segments", fine) == []
    stray = Touched(reads={"features", "scores"}, writes={"segments", "offers"})
    assert undeclared("segments", stray) == ["read scores", "wrote offers"]


def test_the_store_records_what_it_reads_and_writes(spark, tmp_path):
    from datetime import date

    from cvo_spark.core.config import parse_config
    from cvo_spark.core.io import TableStore

    store = TableStore(spark, parse_config({"lake": str(tmp_path)}))
    as_of = date(2026, 6, 30)
    rows = spark.createDataFrame(
        [(as_of, "x", 0.5, 1.0)], "as_of date, metric string, value double, z double"
    )
    with store.recording() as touched:
        store.write(rows.select("as_of", "metric", "value"), "b2b_concentration", as_of)
        assert store.read_as_of("b2b_concentration", as_of).count() == 1
        assert store.latest_as_of("b2b_concentration", before=as_of) is None
    assert touched.writes == {"b2b_concentration"} and touched.reads == {"b2b_concentration"}
    # conforming: a column the registered schema lacks stops the write, naming it
    with pytest.raises(Exception, match="unregistered column z"):
        store.write(rows, "b2b_concentration", as_of)


@pytest.mark.slow
def test_each_stage_touches_only_its_declared_tables(pipeline_lake):
    """The shared lake's run (ingest..measure) recorded what each stage read and wrote."""
    assert set(pipeline_lake.results) == {s for s in STAGES if s != "report"}
    for stage, result in pipeline_lake.results.items():
        assert result.touched is not None, stage
        assert undeclared(stage, result.touched) == [], stage
        # the record is real: every stage wrote at least one of its declared tables
        assert result.touched.writes & set(stage_io(stage).writes), stage
